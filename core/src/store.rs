//! The local SQLite store (first shape; completed by the local-store issue).
