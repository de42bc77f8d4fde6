//! Interoperability of OUR device sync client (`fitedge-core`, feature `net`) with the published
//! automerge-repo clients, through a live FitEdge server. The device is the real thing: a
//! [`Store`] in a temporary SQLite file, workouts stored through the store's own API (their
//! documents made by the store), and [`sync_once`] over the network, nothing mocked. Ignored by
//! default: run through `sync-server/scripts/interop.sh` (our server only: the device needs a
//! session token and `GET /api/v1/sync/docs`, which the reference server lacks).
//!
//! - `device_creates` (scenarios `device-node`, `device-samod`): the device records a workout,
//!   titles it with a fresh value and syncs; then it runs `FITEDGE_INTEROP_PEER_CMD` (the Node
//!   harness's `--scenario peer`, or samod's `samod_cross_peer`) with user 1's other session and
//!   the document's URL; the peer must find it, read the title and write the notes; the device
//!   then syncs until its store (the document and the workout's read model) has those notes.
//! - `device_peer` (scenarios `node-device`, `samod-device`): the middle peer of a scenario that
//!   Node or samod drives. A new device (empty store) must learn the document from the server's
//!   listing (it is never told the id: `FITEDGE_INTEROP_DOC_URL` is only used to check), receive
//!   it, read it (a workout through the typed reader), write `FITEDGE_INTEROP_PEER_KEY` through
//!   the store's API and sync it back; the round ends only once the server holds the change.
//!
//! Environment: `FITEDGE_INTEROP_URL` (the sync endpoint, `ws://host:port/api/v1/sync`; the
//! device's server URL is that without `/api/v1/sync`), `FITEDGE_INTEROP_TOKEN` (user 1),
//! `FITEDGE_INTEROP_TOKEN_B` (user 1's other session, handed to the peer),
//! `FITEDGE_INTEROP_TIMEOUT_MS` (bound on each wait, default 15000, also the device's per-frame
//! timeout), and for `device_peer` the task variables of `interop_common::PeerEnv`.
//!
//! Each test prints one JSON line on stdout (what it did, the sync reports) and fails with a
//! message naming what it expected and what it saw.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod interop_common;

use std::time::{Duration, Instant};

use automerge::Automerge;
use serde_json::json;

use fitedge_core::crypto::StorageKey;
use fitedge_core::db::Store;
use fitedge_core::sample::{Reading, Sample};
use fitedge_core::sync::client::{sync_once, SyncConfig, SyncReport};
use fitedge_core::sync::docs::{self, DocKind, ValidationContext, WorkoutDoc};
use fitedge_core::sync::local::LocalKind;
use fitedge_core::sync::protocol::DocumentId;
use fitedge_core::time::{Clock, SystemClock, Timestamp};
use fitedge_core::workout::{Workout, WorkoutConfig, WorkoutId};
use fitedge_core::{Profile, Sport};

use interop_common::{
    bounded, env, nonce, peer_limit, read_string, required, run_peer, wait_bound, PeerEnv,
    PeerTask, Res,
};

/// A device: its store in a temporary SQLite file and its sync configuration.
struct Device {
    name: &'static str,
    store: Store,
    config: SyncConfig,
    _dir: tempfile::TempDir,
}

impl Device {
    fn open(name: &'static str, token: String) -> Res<Self> {
        let ws = required("FITEDGE_INTEROP_URL")?;
        let server = ws
            .strip_suffix("/api/v1/sync")
            .ok_or_else(|| format!("FITEDGE_INTEROP_URL {ws} does not end in /api/v1/sync"))?
            .to_string();
        let dir = tempfile::tempdir().map_err(|e| format!("{name}: temp dir: {e}"))?;
        let key = StorageKey::new(&[0x5a; 32]).map_err(|e| format!("storage key: {e}"))?;
        let store = Store::open(&dir.path().join("device.db"), Some(key))
            .map_err(|e| format!("{name}: opening the store: {e}"))?;
        let timeout_ms = u64::try_from(wait_bound().as_millis()).unwrap_or(u64::MAX);
        Ok(Device {
            name,
            store,
            config: SyncConfig {
                timeout_ms,
                ..SyncConfig::new(server, token)
            },
            _dir: dir,
        })
    }

    /// One round, bounded as a whole too (the client bounds each frame).
    async fn sync(&self) -> Res<SyncReport> {
        bounded(
            &format!("{}: one sync round", self.name),
            sync_once(&self.store, &self.config, &SystemClock),
        )
        .await?
        .map_err(|e| format!("{}: sync round failed: {e}", self.name))
    }

    /// Sync rounds until `check` accepts the store (returning what it found) or the wait bound
    /// passes; `check` says what it saw when it does not accept. Each round is bounded by the
    /// wait bound too. Network failures are retried within the bound; anything else fails at
    /// once.
    async fn sync_until<T>(
        &self,
        expected: &str,
        mut check: impl FnMut(&Store, &SyncReport) -> Result<T, String>,
    ) -> Res<(T, Vec<SyncReport>)> {
        let bound = wait_bound();
        let start = Instant::now();
        let mut reports = Vec::new();
        let mut seen = String::from("no round completed");
        loop {
            match tokio::time::timeout(bound, sync_once(&self.store, &self.config, &SystemClock))
                .await
            {
                Ok(Ok(r)) => {
                    let verdict = check(&self.store, &r);
                    reports.push(r);
                    match verdict {
                        Ok(t) => return Ok((t, reports)),
                        Err(s) => seen = s,
                    }
                }
                Ok(Err(e)) if e.is_transient() => seen = format!("the last round failed: {e}"),
                Ok(Err(e)) => return Err(format!("{}: sync round failed: {e}", self.name)),
                Err(_) => {
                    seen = format!(
                        "{seen}; then a round did not finish within {} ms",
                        bound.as_millis()
                    );
                }
            }
            if start.elapsed() >= bound {
                return Err(format!(
                    "{}: timed out after {} ms ({} completed rounds): expected {expected}; saw {seen}",
                    self.name,
                    bound.as_millis(),
                    reports.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn report_json(r: &SyncReport) -> serde_json::Value {
    json!({
        "docs_sent": r.docs_sent, "docs_received": r.docs_received,
        "docs_discovered": r.docs_discovered, "docs_unavailable": r.docs_unavailable,
        "messages_sent": r.messages_sent, "messages_received": r.messages_received,
        "bytes_sent": r.bytes_sent, "bytes_received": r.bytes_received,
        "blobs_uploaded": r.blobs_uploaded, "blobs_downloaded": r.blobs_downloaded,
        "errors": r.errors,
    })
}

fn no_errors(who: &str, r: &SyncReport) -> Res<()> {
    if r.errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{who}: the round reported problems (expected none): {:?}",
            r.errors
        ))
    }
}

fn ctx() -> ValidationContext {
    ValidationContext {
        now: SystemClock.now(),
    }
}

/// Records and stores a finished workout of `minutes` (heart rate and power every second)
/// through the workout aggregate, as the recorder does; the store makes its document.
fn record_workout(store: &Store, start_ms: i64, minutes: i64) -> Res<String> {
    let mut w = Workout::new(
        WorkoutId::random(),
        Some(Sport::Cycling),
        Profile::default().resolve(),
        WorkoutConfig::import(),
    );
    w.start(Timestamp(start_ms))
        .map_err(|e| format!("start: {e}"))?;
    for i in 0..minutes * 60 {
        let t = Timestamp(start_ms + i * 1000);
        w.record(Sample::new(t, Reading::HeartRate { bpm: 131.0 }))
            .map_err(|e| format!("record: {e}"))?;
        #[allow(clippy::cast_precision_loss)]
        let watts = 175.0 + (i % 17) as f64;
        w.record(Sample::new(t, Reading::Power { w: watts }))
            .map_err(|e| format!("record: {e}"))?;
    }
    let s = w
        .complete(Timestamp(start_ms + minutes * 60_000))
        .map_err(|e| format!("complete: {e}"))?
        .clone();
    store
        .save_workout(&s, &w.take_samples(), SystemClock.now())
        .map_err(|e| format!("saving the workout: {e}"))?;
    Ok(s.id.0)
}

fn load(store: &Store, id: &DocumentId) -> Res<Automerge> {
    store
        .load_document(id)
        .map_err(|e| format!("loading {id}: {e}"))
}

async fn device_creates_scenario() -> Res<()> {
    let peer_cmd = required("FITEDGE_INTEROP_PEER_CMD")?;
    let token = required("FITEDGE_INTEROP_TOKEN")?;
    let token_b = env("FITEDGE_INTEROP_TOKEN_B").unwrap_or_else(|| token.clone());
    let device = Device::open("device", token)?;
    let now = SystemClock.now();
    let workout = record_workout(&device.store, now.0 - 2 * 3_600_000, 3)?;
    let title = format!("from-device-{}", nonce());
    device
        .store
        .set_workout_text(&workout, Some(&title), None, now)
        .map_err(|e| format!("device: titling the workout: {e}"))?;
    let doc_id = device
        .store
        .workout_document_id(&workout)
        .map_err(|e| format!("device: the workout's document: {e}"))?;

    let first = device.sync().await?;
    no_errors("device, first round", &first)?;
    // The profile document has one id per user (ADR 0012) and identical first changes on every
    // device: when an earlier scenario's device of this user stored it, this one has nothing of
    // it to send. The new workout is always sent.
    if first.docs_sent < 1 || first.blobs_uploaded < 2 {
        return Err(format!(
            "device, first round: expected the workout document sent (and the profile document \
             unless another device of this user stored it first) and the workout's 2 chunks \
             uploaded; saw docs_sent {}, blobs_uploaded {}",
            first.docs_sent, first.blobs_uploaded
        ));
    }

    let value = format!("from-peer-{}", nonce());
    let doc_url = format!("automerge:{doc_id}");
    let peer_out = run_peer(
        &peer_cmd,
        &PeerTask {
            token: &token_b,
            doc_url: &doc_url,
            doc_kind: "fitedge.workout",
            expect_key: "title",
            expect: &title,
            peer_key: "notes",
            peer_value: &value,
        },
        peer_limit(),
    )
    .await
    .map_err(|e| format!("device: the peer failed on {doc_url}: {e}"))?;
    eprintln!("---- peer stdout (tail) ----\n{peer_out}");

    let ((notes, model), reports) = device
        .sync_until(
            &format!("the peer's notes {value:?} in the workout's document and read model"),
            |store, _| {
                let doc = load(store, &doc_id)?;
                let w = WorkoutDoc::read(&doc, &ctx())
                    .map_err(|e| format!("the merged workout document does not read: {e}"))?;
                let model = store
                    .summary(&workout)
                    .map_err(|e| format!("summary: {e}"))?
                    .notes;
                if w.notes.as_deref() == Some(value.as_str())
                    && model.as_deref() == Some(value.as_str())
                {
                    Ok((w.notes, model))
                } else {
                    Err(format!(
                        "document notes {:?}, read model notes {model:?}",
                        w.notes
                    ))
                }
            },
        )
        .await?;
    for r in &reports {
        no_errors("device, later round", r)?;
    }
    println!(
        "{}",
        json!({
            "scenario": "device_creates", "ok": true, "doc_url": doc_url, "workout": workout,
            "title": title, "peer_value": value, "notes_in_document": notes,
            "notes_in_read_model": model, "first_round": report_json(&first),
            "rounds_until_seen": reports.len(),
            "last_round": reports.last().map(report_json),
        })
    );
    Ok(())
}

async fn device_peer_scenario() -> Res<()> {
    let token = required("FITEDGE_INTEROP_TOKEN")?;
    let task = PeerEnv::read()?;
    let id: DocumentId = task
        .doc_url
        .trim_start_matches("automerge:")
        .parse()
        .map_err(|e| format!("FITEDGE_INTEROP_DOC_URL {}: {e}", task.doc_url))?;
    let device = Device::open("device peer", token)?;
    let fresh = device
        .store
        .documents()
        .map_err(|e| format!("device peer: listing its documents: {e}"))?;
    if fresh.iter().any(|d| d.doc_id == id.to_string()) {
        return Err(format!("device peer: a new store already holds {id}"));
    }

    let mut discovered = 0;
    let (kind, reports) = device
        .sync_until(
            &format!(
                "{id} listed by the server, received, with {} = {:?}",
                task.expect_key, task.expect
            ),
            |store, report| {
                discovered += report.docs_discovered;
                let docs = store.documents().map_err(|e| format!("documents: {e}"))?;
                let Some(info) = docs.iter().find(|d| d.doc_id == id.to_string()) else {
                    return Err(format!(
                        "not in the store: the server's listing did not name it ({} documents held)",
                        docs.len()
                    ));
                };
                if info.heads.is_empty() {
                    return Err("listed, but no content received yet".into());
                }
                let doc = load(store, &id)?;
                match read_string(&doc, &task.expect_key) {
                    Some(v) if v == task.expect => Ok(info.kind),
                    other => Err(format!("{} reads {other:?}", task.expect_key)),
                }
            },
        )
        .await?;
    for r in &reports {
        no_errors("device peer", r)?;
    }
    if discovered == 0 {
        return Err("device peer: expected the listing to name documents new to it; none".into());
    }

    // Read it as the app would: the kind the store decided, and a workout through the typed
    // reader (the numbers, text and lists another implementation wrote).
    let doc = load(&device.store, &id)?;
    let (doc_kind, _) = docs::kind_of(&doc).map_err(|e| format!("device peer: kind: {e}"))?;
    if let Some(want) = &task.doc_kind {
        if doc_kind.as_str() != want {
            return Err(format!(
                "device peer: expected a {want} document, the store reads {}",
                doc_kind.as_str()
            ));
        }
    }
    let mut detail = json!({ "kind": doc_kind.as_str(), "local_kind": kind.as_str() });
    let workout_id = if doc_kind == DocKind::Workout {
        let w = WorkoutDoc::read(&doc, &ctx()).map_err(|e| {
            format!("device peer: the workout document the peer made does not read: {e}")
        })?;
        let info = device
            .store
            .documents()
            .map_err(|e| format!("documents: {e}"))?
            .into_iter()
            .find(|d| d.doc_id == id.to_string());
        let workout_id = info.as_ref().and_then(|d| d.workout_id.clone());
        if kind != LocalKind::Workout || workout_id.as_deref() != Some(&w.id.to_string()) {
            return Err(format!(
                "device peer: expected the store to file it as workout {}; saw kind {}, workout {workout_id:?}",
                w.id,
                kind.as_str()
            ));
        }
        detail["workout"] = json!({
            "id": w.id.to_string(), "sport": w.sport.as_str(), "state": w.state.as_str(),
            "title": w.title, "start_time": w.start_time.0, "end_time": w.end_time.map(|t| t.0),
            "elapsed_s": w.summary.map(|s| s.elapsed_s), "distance_m": w.summary.and_then(|s| s.distance_m),
        });
        workout_id
    } else {
        None
    };

    // Write through the store's API: title and notes of a workout as the app edits them,
    // anything else as a text field of the document.
    let now = SystemClock.now();
    let wrote = match (&workout_id, task.peer_key.as_str()) {
        (Some(w), "notes") => device
            .store
            .set_workout_text(w, None, Some(&task.peer_value), now),
        (Some(w), "title") => device
            .store
            .set_workout_text(w, Some(&task.peer_value), None, now),
        _ => device.store.edit_document(&id, now, |d| {
            docs::set_text(d, &task.peer_key, &task.peer_value)
        }),
    };
    let heads = wrote.map_err(|e| format!("device peer: writing {}: {e}", task.peer_key))?;
    let last = device.sync().await?;
    no_errors("device peer, sending its change", &last)?;
    // The round ends when the server's shared heads are ours: it holds the change now.
    let after = load(&device.store, &id)?;
    if last.docs_sent == 0 || read_string(&after, &task.peer_key) != Some(task.peer_value.clone()) {
        return Err(format!(
            "device peer: expected its change ({} = {:?}) sent; docs_sent {}, {} reads {:?}",
            task.peer_key,
            task.peer_value,
            last.docs_sent,
            task.peer_key,
            read_string(&after, &task.peer_key)
        ));
    }
    println!(
        "{}",
        json!({
            "scenario": "device_peer", "ok": true, "doc_url": task.doc_url, "document": detail,
            "discovered": discovered, "rounds_until_received": reports.len(),
            "first_round": reports.first().map(report_json),
            "wrote": { "key": task.peer_key, "value": task.peer_value, "heads": heads.len() },
            "sending_round": report_json(&last),
        })
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by sync-server/scripts/interop.sh with FITEDGE_INTEROP_PEER_CMD (device-node, device-samod)"]
async fn device_creates() -> Res<()> {
    device_creates_scenario().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as the middle peer by interop.mjs --scenario cross and samod_creates (node-device, samod-device)"]
async fn device_peer() -> Res<()> {
    device_peer_scenario().await
}
