//! Offline-first sync: the CRDT documents a device shares and the wire protocol that moves them.
//!
//! Two parts shared by device and server, both free of I/O so that both run the very same code:
//!
//! - [`docs`]: the typed Automerge documents of the design brief (one profile document per user,
//!   one workout document per workout), each with `type` and `schemaVersion` at its root, typed
//!   accessors and writers, the validators the server runs before committing a change, and the
//!   migration ladder from older schema versions.
//! - [`protocol`]: the automerge-repo sync protocol, version 1 (CBOR messages over a binary
//!   WebSocket) with document ids as automerge-repo makes them, and a per-peer state machine on
//!   top of `automerge::sync`. The module documentation holds a runnable two-peer example.
//!
//! The device side lives here too, next to the store:
//!
//! - [`local`]: the device's documents, sync states and blobs in SQLite (schema v3, v4);
//! - [`apply`]: workout documents from other devices into the store's read models (v4);
//! - [`outbox`]: the offline REST outbox and its state machine;
//! - [`backoff`]: the retry schedule;
//! - `client` (cargo feature `net`, the only I/O): one sync round over the WebSocket, blobs and the
//!   outbox sender over HTTP. See `docs/adr/0010-device-sync-client.md`.
//!
//! The WebSocket endpoint, storage and access control of the server live in `fitedge-server`
//! (`src/sync/`).

pub mod apply;
pub mod backoff;
#[cfg(feature = "net")]
pub mod client;
pub mod docs;
pub mod local;
#[cfg(feature = "net")]
mod net;
pub mod outbox;
pub mod protocol;
