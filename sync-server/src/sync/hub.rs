//! Loaded documents and who listens to them, on this node.
//!
//! A document is loaded from SQL when a permitted peer first syncs it, kept in a shared map with
//! the set of connections subscribed to it, and evicted when it has had no subscriber for
//! `sync_idle_secs` (the injected clock decides), so memory holds only what is in use. A
//! committed change is announced to every other subscriber on this node ([`Hub::changed`]); on
//! PostgreSQL the other nodes hear of it through `NOTIFY` and [`Hub::reload`] it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use automerge::Automerge;
use fitedge_core::sync::protocol::DocumentId;
use tokio::sync::mpsc;

use super::store;
use crate::error::Result;
use crate::state::AppState;

/// What a connection task is told.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// The document changed: generate and send a sync message.
    Changed(DocumentId),
    /// Stop syncing the document (a share was revoked, the document was deleted).
    Unsubscribe(DocumentId),
    /// Close the connection (the account was deleted).
    Close(String),
    /// Relay an ephemeral message (presence, cursors) another peer sent about the document.
    Ephemeral {
        document_id: DocumentId,
        session_id: String,
        count: u64,
        data: Vec<u8>,
    },
}

/// A loaded document.
#[derive(Debug)]
pub struct DocState {
    pub doc: Automerge,
    pub owner_id: String,
    pub kind: String,
    pub size_bytes: i64,
    pub max_seq: i64,
}

#[derive(Debug)]
pub struct DocEntry {
    pub id: DocumentId,
    pub state: tokio::sync::Mutex<DocState>,
    subscribers: Mutex<HashSet<u64>>,
    last_active: AtomicI64,
}

#[derive(Debug)]
struct ConnHandle {
    user_id: String,
    tx: mpsc::UnboundedSender<Outbound>,
}

/// The node's documents and connections. Lives in the [`AppState`].
#[derive(Debug)]
pub struct Hub {
    node_id: String,
    docs: Mutex<HashMap<DocumentId, Arc<DocEntry>>>,
    conns: Mutex<HashMap<u64, ConnHandle>>,
    next_conn: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere never makes the map unusable: the data is still consistent (every
    // critical section is a single insert/remove).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Hub {
    pub fn new(node_id: String) -> Self {
        Self {
            node_id,
            docs: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
        }
    }

    /// This node's id (random per process).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The server's peer id in the protocol.
    pub fn peer_id(&self) -> String {
        format!("fitedge-server-{}", self.node_id)
    }

    /// How many documents are in memory.
    pub fn loaded_count(&self) -> usize {
        lock(&self.docs).len()
    }

    /// Whether `id` is in memory.
    pub fn is_loaded(&self, id: &DocumentId) -> bool {
        lock(&self.docs).contains_key(id)
    }

    /// A new connection of `user_id`: its id and the channel it is told things on.
    pub fn register(&self, user_id: &str) -> (u64, mpsc::UnboundedReceiver<Outbound>) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.conns).insert(
            id,
            ConnHandle {
                user_id: user_id.to_string(),
                tx,
            },
        );
        (id, rx)
    }

    /// The connection ended: it leaves every document it listened to.
    pub fn unregister(&self, conn: u64, docs: &HashSet<DocumentId>, now_ms: i64) {
        lock(&self.conns).remove(&conn);
        let map = lock(&self.docs);
        for d in docs {
            if let Some(e) = map.get(d) {
                lock(&e.subscribers).remove(&conn);
                e.last_active.store(now_ms, Ordering::Relaxed);
            }
        }
    }

    /// Loads `id` if needed and subscribes `conn` to it, atomically with respect to eviction.
    pub async fn open(
        &self,
        state: &AppState,
        id: &DocumentId,
        conn: u64,
    ) -> Result<Option<Arc<DocEntry>>> {
        let now = state.now().as_millis();
        if let Some(e) = self.subscribe_loaded(id, conn, now) {
            return Ok(Some(e));
        }
        let Some(l) = store::load(state, id).await? else {
            return Ok(None);
        };
        let fresh = Arc::new(DocEntry {
            id: *id,
            state: tokio::sync::Mutex::new(DocState {
                doc: l.doc,
                owner_id: l.owner_id,
                kind: l.kind,
                size_bytes: l.size_bytes,
                max_seq: l.max_seq,
            }),
            subscribers: Mutex::new(HashSet::new()),
            last_active: AtomicI64::new(now),
        });
        let mut map = lock(&self.docs);
        // Someone else may have loaded it meanwhile: theirs wins.
        let e = map.entry(*id).or_insert(fresh).clone();
        lock(&e.subscribers).insert(conn);
        e.last_active.store(now, Ordering::Relaxed);
        Ok(Some(e))
    }

    fn subscribe_loaded(&self, id: &DocumentId, conn: u64, now: i64) -> Option<Arc<DocEntry>> {
        let map = lock(&self.docs);
        let e = map.get(id)?.clone();
        lock(&e.subscribers).insert(conn);
        e.last_active.store(now, Ordering::Relaxed);
        Some(e)
    }

    /// Removes `conn` from one document's subscribers.
    pub fn unsubscribe(&self, id: &DocumentId, conn: u64, now_ms: i64) {
        if let Some(e) = lock(&self.docs).get(id) {
            lock(&e.subscribers).remove(&conn);
            e.last_active.store(now_ms, Ordering::Relaxed);
        }
    }

    /// Tells every subscriber of `id` except `except` that it changed.
    pub fn changed(&self, id: &DocumentId, except: Option<u64>) {
        let subs: Vec<u64> = match lock(&self.docs).get(id) {
            Some(e) => lock(&e.subscribers).iter().copied().collect(),
            None => return,
        };
        let conns = lock(&self.conns);
        for s in subs.into_iter().filter(|s| Some(*s) != except) {
            if let Some(c) = conns.get(&s) {
                let _ = c.tx.send(Outbound::Changed(*id));
            }
        }
    }

    /// Relays an ephemeral message to every subscriber of `id` except `except`.
    pub fn ephemeral(
        &self,
        id: &DocumentId,
        except: u64,
        session_id: &str,
        count: u64,
        data: &[u8],
    ) {
        let subs: Vec<u64> = match lock(&self.docs).get(id) {
            Some(e) => lock(&e.subscribers).iter().copied().collect(),
            None => return,
        };
        let conns = lock(&self.conns);
        for s in subs.into_iter().filter(|s| *s != except) {
            if let Some(c) = conns.get(&s) {
                let _ = c.tx.send(Outbound::Ephemeral {
                    document_id: *id,
                    session_id: session_id.to_string(),
                    count,
                    data: data.to_vec(),
                });
            }
        }
    }

    /// Stops `user_id`'s connections on this node from syncing `id` (a revoked share; on
    /// PostgreSQL every node is told through `NOTIFY`, see `store::delete_share`).
    pub fn revoke(&self, id: &DocumentId, user_id: &str) {
        let conns = lock(&self.conns);
        for c in conns.values().filter(|c| c.user_id == user_id) {
            let _ = c.tx.send(Outbound::Unsubscribe(*id));
        }
    }

    /// Drops documents from memory and closes a user's connections (account deletion).
    pub fn forget_user(&self, user_id: &str, owned: &[DocumentId]) {
        {
            let conns = lock(&self.conns);
            for c in conns.values() {
                if c.user_id == user_id {
                    let _ = c.tx.send(Outbound::Close("the account was deleted".into()));
                } else {
                    for d in owned {
                        let _ = c.tx.send(Outbound::Unsubscribe(*d));
                    }
                }
            }
        }
        let mut map = lock(&self.docs);
        for d in owned {
            map.remove(d);
        }
    }

    /// Evicts documents without subscribers that were last used `idle_ms` or more before
    /// `now_ms`; how many left memory.
    pub fn evict_idle(&self, now_ms: i64, idle_ms: i64) -> usize {
        let mut map = lock(&self.docs);
        let before = map.len();
        map.retain(|_, e| {
            !lock(&e.subscribers).is_empty()
                || now_ms.saturating_sub(e.last_active.load(Ordering::Relaxed)) < idle_ms
        });
        before - map.len()
    }

    /// Another node committed a change to `id`: merge what SQL holds and tell local subscribers.
    pub async fn reload(&self, state: &AppState, id: &DocumentId) -> Result<()> {
        let entry = match lock(&self.docs).get(id) {
            Some(e) => e.clone(),
            None => return Ok(()),
        };
        let changed = {
            let mut s = entry.state.lock().await;
            let before = s.doc.get_heads();
            let after = s.max_seq;
            let mut doc = s.doc.clone();
            let max = store::refresh(state, id, &mut doc, after).await?;
            s.max_seq = max;
            let changed = doc.get_heads() != before;
            s.doc = doc;
            changed
        };
        if changed {
            self.changed(id, None);
        }
        Ok(())
    }

    /// After the listener lost its connection (notices sent meanwhile are lost): reloads every
    /// loaded document and rechecks every subscription ([`Hub::recheck_access`]).
    pub async fn resync_all(&self, state: &AppState) {
        self.reload_all(state).await;
        self.recheck_access(state).await;
    }

    /// Stops the links whose user may no longer see a document they are subscribed to (a
    /// revocation whose notice this node missed). One access query per (document, user) that
    /// is not the owner; run only after the listener reconnects, never per message.
    pub async fn recheck_access(&self, state: &AppState) {
        let entries: Vec<Arc<DocEntry>> = lock(&self.docs).values().cloned().collect();
        for e in entries {
            let subs: Vec<u64> = lock(&e.subscribers).iter().copied().collect();
            if subs.is_empty() {
                continue;
            }
            let users: HashSet<String> = {
                let conns = lock(&self.conns);
                subs.iter()
                    .filter_map(|s| conns.get(s).map(|c| c.user_id.clone()))
                    .collect()
            };
            let owner = e.state.lock().await.owner_id.clone();
            for user in users.into_iter().filter(|u| *u != owner) {
                match store::access(state, &e.id, &user).await {
                    Ok(Some(_)) => {}
                    Ok(None) => self.revoke(&e.id, &user),
                    Err(err) => {
                        tracing::warn!(document_id = %e.id, error = %err, "sync: access not rechecked");
                    }
                }
            }
        }
    }

    /// Reloads every loaded document.
    pub async fn reload_all(&self, state: &AppState) {
        let ids: Vec<DocumentId> = lock(&self.docs).keys().copied().collect();
        for id in ids {
            if let Err(e) = self.reload(state, &id).await {
                tracing::warn!(document_id = %id, error = %e, "sync: reload failed");
            }
        }
    }
}
