//! Sync with the FitEdge server and the offline REST outbox (core feature `net`).
//!
//! The methods here block: each runs the core's async client on a small tokio runtime the engine
//! creates on first use and keeps. **Call them from a background thread (a Kotlin coroutine on
//! `Dispatchers.IO`, a Swift `Task.detached`, a Python thread), never from the UI thread.** Times
//! come from the engine's clock (the system clock, or the `EngineClock` given to
//! `open_with_clock`).

use std::future::Future;
use std::sync::OnceLock;

use fitedge_core::sync::client::{self, SyncConfig, SyncError};
use fitedge_core::sync::outbox;
use fitedge_core::time::Clock;

use crate::engine::Engine;
use crate::error::FitEdgeError;

/// What one sync round did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncReport {
    /// Documents (workouts, the profile) this round sent changes of.
    pub docs_sent: u64,
    /// Documents this round received changes of (edits or workouts from other devices).
    pub docs_received: u64,
    /// Documents the server listed that this device had never seen; they were asked for in the
    /// same round (a new device learns the other devices' workouts this way).
    pub docs_discovered: u64,
    /// Documents the server does not have or will not share.
    pub docs_unavailable: u64,
    /// Sync messages sent over the WebSocket.
    pub messages_sent: u64,
    /// Sync messages received over the WebSocket.
    pub messages_received: u64,
    /// WebSocket payload bytes sent (the CBOR sync messages; blobs not included).
    pub bytes_sent: u64,
    /// WebSocket payload bytes received (the CBOR sync messages; blobs not included).
    pub bytes_received: u64,
    /// Sample chunk blobs uploaded (`PUT /api/v1/blobs/{sha256}`).
    pub blobs_uploaded: u64,
    /// Sample chunk blobs downloaded and checked against their SHA-256.
    pub blobs_downloaded: u64,
    /// Workouts recorded on other devices that entered this device's history this round
    /// (`list_workouts` shows them).
    pub workouts_added: u64,
    /// History entries that changed this round (edited on another device, samples arrived).
    pub workouts_updated: u64,
    /// History entries removed this round (cancelled or deleted on another device).
    pub workouts_removed: u64,
    /// Problems that did not stop the round (a blob the server refused or lacks, ...), one
    /// human-readable line each. Empty when all went well.
    pub problems: Vec<String>,
}

impl From<client::SyncReport> for SyncReport {
    fn from(r: client::SyncReport) -> Self {
        Self {
            docs_sent: r.docs_sent,
            docs_received: r.docs_received,
            docs_discovered: r.docs_discovered,
            docs_unavailable: r.docs_unavailable,
            messages_sent: r.messages_sent,
            messages_received: r.messages_received,
            bytes_sent: r.bytes_sent,
            bytes_received: r.bytes_received,
            blobs_uploaded: r.blobs_uploaded,
            blobs_downloaded: r.blobs_downloaded,
            workouts_added: r.workouts_added,
            workouts_updated: r.workouts_updated,
            workouts_removed: r.workouts_removed,
            problems: r.errors,
        }
    }
}

/// Where an outbox command stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum OutboxStatus {
    /// Waiting to be sent (never tried, or tried and waiting for `next_attempt_ms`).
    Pending,
    /// The server answered 2xx; `response_status` and `response_body` hold its answer.
    Sent,
    /// Given up: the server refused it (4xx), or it failed too many times.
    Failed,
}

impl From<outbox::OutboxStatus> for OutboxStatus {
    fn from(s: outbox::OutboxStatus) -> Self {
        match s {
            outbox::OutboxStatus::Pending => OutboxStatus::Pending,
            outbox::OutboxStatus::Sent => OutboxStatus::Sent,
            outbox::OutboxStatus::Failed => OutboxStatus::Failed,
        }
    }
}

/// A server command queued while offline (kudos, a comment, a booking...) and what became of
/// it. Commands are sent in queue order, each with its idempotency key, so a retry never acts
/// twice.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct OutboxCommand {
    /// Position in the queue (sending order); increases with every enqueue.
    pub seq: i64,
    /// POST, PUT, PATCH or DELETE.
    pub method: String,
    /// Path and query on the server, e.g. `/api/v1/workouts/{id}/kudos`.
    pub path: String,
    /// The JSON body, if any.
    pub body_json: Option<String>,
    /// A UUID made at enqueue, sent as `X-Idempotency-Key` on every attempt.
    pub idempotency_key: String,
    pub status: OutboxStatus,
    /// When the command was queued, milliseconds since the Unix epoch (engine clock).
    pub created_at_ms: i64,
    /// Attempts made so far (0 until the first send).
    pub attempts: u32,
    /// Earliest time of the next attempt, milliseconds since the Unix epoch (engine clock).
    /// Meaningful while `status` is `Pending`.
    pub next_attempt_ms: i64,
    /// The HTTP status of the last answer, if the server answered.
    pub last_http_status: Option<u16>,
    /// The body of the last answer, if the server answered.
    pub response_body: Option<String>,
    /// Why the last attempt failed without an answer (connection refused, timeout...).
    pub last_error: Option<String>,
}

impl From<outbox::OutboxCommand> for OutboxCommand {
    fn from(c: outbox::OutboxCommand) -> Self {
        Self {
            seq: c.seq,
            method: c.method,
            path: c.path,
            body_json: c.body,
            idempotency_key: c.idempotency_key,
            status: c.status.into(),
            created_at_ms: c.created_at.0,
            attempts: c.attempts,
            next_attempt_ms: c.next_attempt_at.0,
            last_http_status: c.response_status,
            response_body: c.response_body,
            last_error: c.last_error,
        }
    }
}

/// What one `outbox_flush` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct OutboxFlushReport {
    /// Commands the server accepted (2xx) during this flush.
    pub sent: u64,
    /// Commands given up during this flush (refused, or too many failures).
    pub failed: u64,
    /// Commands still pending after the flush (waiting for their next attempt).
    pub pending: u64,
}

impl From<client::OutboxFlushReport> for OutboxFlushReport {
    fn from(r: client::OutboxFlushReport) -> Self {
        Self {
            sent: r.sent,
            failed: r.failed,
            pending: r.pending,
        }
    }
}

impl From<SyncError> for FitEdgeError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Network(m) => FitEdgeError::Network(m),
            SyncError::Unauthorized { status } => FitEdgeError::Unauthorized(format!(
                "the server refused the token (HTTP {status}); sign in again"
            )),
            SyncError::Storage(m) => FitEdgeError::Storage(m),
            SyncError::Protocol(m) => FitEdgeError::Network(format!("sync protocol: {m}")),
            SyncError::Config(m) => FitEdgeError::InvalidInput(m),
        }
    }
}

/// The runtime the blocking methods run on: one thread-less (current-thread) tokio runtime per
/// engine, made on first use. `block_on` may be called from several threads at once.
pub(crate) type SyncRuntime = OnceLock<tokio::runtime::Runtime>;

impl Engine {
    fn block_on<T>(
        &self,
        f: impl Future<Output = Result<T, SyncError>>,
    ) -> Result<T, FitEdgeError> {
        // Blocking inside an async runtime would panic in tokio: refuse instead.
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(FitEdgeError::InvalidState(
                "sync methods block: call them from a background thread, not from async code"
                    .into(),
            ));
        }
        let rt = match self.runtime().get() {
            Some(rt) => rt,
            None => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| FitEdgeError::Storage(format!("cannot start the runtime: {e}")))?;
                // Another thread may have won the race; either runtime will do.
                let _ = self.runtime().set(rt);
                self.runtime().get().ok_or_else(|| {
                    FitEdgeError::InvalidState("the sync runtime is unavailable".into())
                })?
            }
        };
        Ok(rt.block_on(f)?)
    }

    fn config(&self, server_url: String, token: String) -> SyncConfig {
        SyncConfig {
            extra_root_pem: crate::engine::lock(self.sync_roots()).clone(),
            ..SyncConfig::new(server_url, token)
        }
    }
}

#[uniffi::export]
impl Engine {
    /// One sync round with the server at `server_url` (`https://host[:port]`, or `http://` for
    /// development) as the user of
    /// `token` (the access token from login): chunk blobs up, documents both ways (workouts and
    /// their titles/notes, the profile), blobs down. Everything received is stored before this
    /// returns; an interrupted round keeps what it got and the next one resumes.
    ///
    /// Blocks until the round ends (up to 30 s without an answer): call it from a background
    /// thread, never the UI thread.
    ///
    /// `https://` is verified against Mozilla's root certificates (built in) and any set with
    /// `set_sync_root_certificates`; verification cannot be turned off.
    ///
    /// Errors: `Network` (unreachable, dropped, timed out, a TLS certificate that does not
    /// verify, or the server broke the protocol: "sync protocol: ..."): retry later;
    /// `Unauthorized`: sign in again; `InvalidInput`: a bad URL; `Storage`.
    pub fn sync_now(&self, server_url: String, token: String) -> Result<SyncReport, FitEdgeError> {
        let config = self.config(server_url, token);
        let store = self.store();
        let clock: &dyn Clock = &**self.clock_ref();
        self.block_on(client::sync_once(store, &config, clock))
            .map(Into::into)
    }

    /// Trusts the sync server's certificates when they chain to one of these roots, besides the
    /// public CAs: PEM text with one or more `-----BEGIN CERTIFICATE-----` blocks (a self-hosted
    /// server's private CA). `null` goes back to the public CAs only. Applies to the next
    /// `sync_now` and `outbox_flush`.
    ///
    /// Errors: `InvalidInput` when the text holds no usable certificate (nothing is changed).
    #[uniffi::method(default(pem = None))]
    pub fn set_sync_root_certificates(&self, pem: Option<String>) -> Result<(), FitEdgeError> {
        if let Some(p) = &pem {
            client::check_extra_root_pem(p)?;
        }
        *crate::engine::lock(self.sync_roots()) = pem;
        Ok(())
    }

    /// Queues a server command to send later, in order, with a fresh idempotency key. Works
    /// offline: nothing is sent until `outbox_flush`. `method` is POST, PUT, PATCH or DELETE;
    /// `path` starts with `/`; `body_json` is JSON text (at most 256 KiB).
    ///
    /// Errors: `InvalidInput` (method, path or body refused), `Storage`.
    #[uniffi::method(default(body_json = None))]
    pub fn outbox_enqueue(
        &self,
        method: String,
        path: String,
        body_json: Option<String>,
    ) -> Result<OutboxCommand, FitEdgeError> {
        Ok(self
            .store()
            .outbox_enqueue(&method, &path, body_json.as_deref(), self.clock_ref().now())?
            .into())
    }

    /// Every queued command, in sending order, with its outcome so far (sent and failed ones
    /// included).
    pub fn outbox_list(&self) -> Result<Vec<OutboxCommand>, FitEdgeError> {
        Ok(self
            .store()
            .outbox_list()?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Sends the due outbox commands, in order, to the server at `server_url` as the user of
    /// `token`. A command that fails on the network or with 5xx/408/409/429 stays `Pending` and
    /// waits (2 s, 4 s, ... up to an hour, or the server's `Retry-After`), holding back the ones
    /// behind it; 2xx makes it `Sent`, another 4xx `Failed`. Network failures are recorded on the
    /// command, not raised.
    ///
    /// Blocks: call it from a background thread, never the UI thread.
    ///
    /// Errors: `Unauthorized` (401/403; the command stays as it was), `InvalidInput` (bad URL),
    /// `Storage`.
    pub fn outbox_flush(
        &self,
        server_url: String,
        token: String,
    ) -> Result<OutboxFlushReport, FitEdgeError> {
        let config = self.config(server_url, token);
        let store = self.store();
        let clock: &dyn Clock = &**self.clock_ref();
        self.block_on(client::outbox_flush(store, &config, clock))
            .map(Into::into)
    }

    /// Sets a stored workout's title and/or notes (null leaves a field as it is). The edit goes
    /// through the workout's synced document as a text diff, so an edit made concurrently on
    /// another device merges with this one at the next `sync_now`.
    ///
    /// Errors: `NotFound` (no such workout), `InvalidInput`, `Storage`.
    #[uniffi::method(default(title = None, notes = None))]
    pub fn set_workout_text(
        &self,
        workout_id: String,
        title: Option<String>,
        notes: Option<String>,
    ) -> Result<(), FitEdgeError> {
        let store = self.store();
        store.ensure_documents(self.clock_ref().now())?;
        store.set_workout_text(
            &workout_id,
            title.as_deref(),
            notes.as_deref(),
            self.clock_ref().now(),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::test_support::{engine, T0};

    /// A local port nothing listens on.
    fn closed_port_url() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{port}")
    }

    #[test]
    fn outbox_enqueue_and_list_offline_in_order() {
        let (_dir, clock, e) = engine();
        let a = e
            .outbox_enqueue("post".into(), "/api/v1/a".into(), Some(r#"{"x":1}"#.into()))
            .unwrap();
        clock.0.store(T0 + 5, Ordering::SeqCst);
        let b = e
            .outbox_enqueue("DELETE".into(), "/api/v1/b".into(), None)
            .unwrap();
        assert_eq!(a.method, "POST");
        assert_eq!(a.created_at_ms, T0, "the engine's clock stamps the command");
        assert_eq!(b.created_at_ms, T0 + 5);
        let list = e.outbox_list().unwrap();
        assert_eq!(list, vec![a.clone(), b.clone()]);
        assert!(a.seq < b.seq);
        assert_ne!(a.idempotency_key, b.idempotency_key);
        for c in &list {
            assert_eq!(c.status, OutboxStatus::Pending);
            assert_eq!(c.attempts, 0);
            assert_eq!(c.idempotency_key.len(), 36, "a UUID");
        }
        assert_eq!(list[0].body_json.as_deref(), Some(r#"{"x":1}"#));
    }

    #[test]
    fn outbox_refuses_bad_commands_as_invalid_input() {
        let (_dir, _clock, e) = engine();
        for (m, p, b) in [
            ("GET", "/x", None),
            ("POST", "x", None),
            ("POST", "/x", Some("{not json")),
        ] {
            let r = e.outbox_enqueue(m.into(), p.into(), b.map(Into::into));
            assert!(
                matches!(r, Err(FitEdgeError::InvalidInput(_))),
                "{m} {p}: {r:?}"
            );
        }
        assert!(e.outbox_list().unwrap().is_empty());
    }

    #[test]
    fn sync_to_a_closed_port_is_a_network_error() {
        let (_dir, _clock, e) = engine();
        let r = e.sync_now(closed_port_url(), "token".into());
        assert!(matches!(r, Err(FitEdgeError::Network(_))), "{r:?}");
    }

    #[test]
    fn https_is_spoken_and_extra_roots_are_checked_when_set() {
        let (_dir, _clock, e) = engine();
        // https:// is in this build: a closed port is a network failure, not a refused URL.
        let https = closed_port_url().replace("http://", "https://");
        let r = e.sync_now(https, "token".into());
        assert!(matches!(r, Err(FitEdgeError::Network(_))), "{r:?}");

        let bad = e.set_sync_root_certificates(Some("not a certificate".into()));
        assert!(matches!(bad, Err(FitEdgeError::InvalidInput(_))), "{bad:?}");
        assert_eq!(
            *crate::engine::lock(e.sync_roots()),
            None,
            "nothing changed"
        );

        let ca = rcgen::CertificateParams::new(vec!["fitedge test CA".into()])
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem();
        e.set_sync_root_certificates(Some(ca.clone())).unwrap();
        assert_eq!(
            e.config("https://h".into(), "t".into()).extra_root_pem,
            Some(ca),
            "the next round trusts it"
        );
        e.set_sync_root_certificates(None).unwrap();
        assert_eq!(
            e.config("https://h".into(), "t".into()).extra_root_pem,
            None
        );
    }

    #[test]
    fn a_bad_url_is_invalid_input() {
        let (_dir, _clock, e) = engine();
        for url in [
            "not a url",
            "ftp://host",
            "https://",
            "wss://u@host",
            "http://:80",
        ] {
            let r = e.sync_now(url.into(), "token".into());
            assert!(
                matches!(r, Err(FitEdgeError::InvalidInput(_))),
                "{url}: {r:?}"
            );
            let r = e.outbox_flush(url.into(), "token".into());
            assert!(
                matches!(r, Err(FitEdgeError::InvalidInput(_))),
                "{url}: {r:?}"
            );
        }
    }

    #[test]
    fn flushing_to_a_closed_port_keeps_the_commands_pending() {
        let (_dir, _clock, e) = engine();
        e.outbox_enqueue("POST".into(), "/api/v1/a".into(), None)
            .unwrap();
        e.outbox_enqueue("POST".into(), "/api/v1/b".into(), None)
            .unwrap();
        let r = e.outbox_flush(closed_port_url(), "t".into()).unwrap();
        assert_eq!(
            r,
            OutboxFlushReport {
                sent: 0,
                failed: 0,
                pending: 2
            }
        );
        let list = e.outbox_list().unwrap();
        assert!(list.iter().all(|c| c.status == OutboxStatus::Pending));
        // The head was tried once and waits (2 s on the engine's clock); the other was held back.
        assert_eq!(list[0].attempts, 1);
        assert!(list[0].last_error.is_some());
        assert!(list[0].next_attempt_ms > T0);
        assert_eq!(list[1].attempts, 0);
    }

    #[test]
    fn set_workout_text_of_an_unknown_workout_is_not_found() {
        let (_dir, _clock, e) = engine();
        let r = e.set_workout_text("ffffffff".into(), Some("x".into()), None);
        assert!(matches!(r, Err(FitEdgeError::NotFound(_))), "{r:?}");
    }

    #[test]
    fn set_workout_text_edits_the_document_and_the_summary() {
        let (_dir, clock, e) = engine();
        e.start_workout(Some(crate::Sport::Running)).unwrap();
        clock.0.store(T0 + 120_000, Ordering::SeqCst);
        let id = e.complete_workout().unwrap().id;
        e.set_workout_text(id.clone(), Some("Morning run".into()), Some("easy".into()))
            .unwrap();
        assert_eq!(
            e.workout_summary(id.clone()).unwrap().title.as_deref(),
            Some("Morning run")
        );
        // null leaves the title alone.
        e.set_workout_text(id.clone(), None, Some("hard".into()))
            .unwrap();
        assert_eq!(
            e.workout_summary(id).unwrap().title.as_deref(),
            Some("Morning run")
        );
    }

    #[test]
    fn calling_from_async_code_is_refused_not_a_panic() {
        let (_dir, _clock, e) = engine();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r = rt.block_on(async { e.sync_now(closed_port_url(), "t".into()) });
        assert!(matches!(r, Err(FitEdgeError::InvalidState(_))), "{r:?}");
    }

    #[test]
    fn an_engine_that_synced_may_be_dropped_inside_async_code() {
        let (_dir, _clock, e) = engine();
        // A round (here refused: nothing listens) makes the engine's runtime.
        assert!(e.sync_now(closed_port_url(), "t".into()).is_err());
        assert!(e.runtime().get().is_some());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // Before: "Cannot drop a runtime in a context where blocking is not allowed".
        rt.block_on(async move { drop(e) });
    }

    #[test]
    fn every_sync_error_maps_to_its_public_error() {
        let cases = [
            (SyncError::Network("x".into()), "network"),
            (SyncError::Unauthorized { status: 401 }, "unauthorized"),
            (SyncError::Storage("x".into()), "storage"),
            (SyncError::Protocol("bad frame".into()), "network"),
            (SyncError::Config("x".into()), "invalid input"),
        ];
        for (e, prefix) in cases {
            let m = FitEdgeError::from(e).to_string();
            assert!(m.starts_with(prefix), "{m}");
        }
        let m = FitEdgeError::from(SyncError::Protocol("bad frame".into())).to_string();
        assert_eq!(m, "network: sync protocol: bad frame");
    }
}
