-- The address a document's owner typed to share it (NULL when shared by user id). The share
-- list shows this, never the account's own address: sharing by id must not tell the owner
-- whose email is behind an id. Kept in step with the other backend's copy.
ALTER TABLE sync_acl ADD COLUMN email TEXT;
