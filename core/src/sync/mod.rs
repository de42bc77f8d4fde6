//! Offline-first sync: the CRDT documents a device shares and the wire protocol that moves them.
//!
//! Two parts, both free of I/O so that the device and the server run the very same code:
//!
//! - [`docs`]: the typed Automerge documents of the design brief (one profile document per user,
//!   one workout document per workout), each with `type` and `schemaVersion` at its root, typed
//!   accessors and writers, the validators the server runs before committing a change, and the
//!   migration ladder from older schema versions.
//! - [`protocol`]: the automerge-repo sync protocol, version 1 (CBOR messages over a binary
//!   WebSocket) with document ids as automerge-repo makes them, and a per-peer state machine on
//!   top of `automerge::sync`. The module documentation holds a runnable two-peer example.
//!
//! The WebSocket endpoint, storage and access control live in the server (`fitedge-server`,
//! `src/sync/`); the device's sync client and outbox will live in this crate next to the store.

pub mod backoff;
#[cfg(feature = "net")]
pub mod client;
pub mod docs;
pub mod local;
#[cfg(feature = "net")]
mod net;
pub mod outbox;
pub mod protocol;
