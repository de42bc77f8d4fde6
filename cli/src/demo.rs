//! `fitedge demo`: offline-first sync end to end, on this machine, in under a minute.
//!
//! 1. An embedded server (SQLite in a temporary directory, dev mode) on a free local port.
//! 2. One user registered, verified and signed in twice: a watch and a phone, each with its own
//!    session and its own encrypted device database.
//! 3. Offline, each device records a workout by replaying a real recording through synthesised
//!    sensor notifications, the sensor hub and a crash-safe store recording.
//! 4. Both devices sync (WebSocket, automerge-repo protocol; sample chunks as blobs).
//! 5. Offline again, both edit the title and notes of the same workout.
//! 6. They reconnect and sync until nothing moves; their histories (each device's own `list`
//!    and `summary`, the read path a user has) and the server's documents are compared, with the
//!    heart rate each device opens from the sealed chunks and the user's one profile document.
//!    The exit status is 0 only when everything converged.
//!
//! Both devices hold the same storage key, as the host app's keystore would give every device
//! of one user; without it a device lists the other's workouts but cannot open their heart rate.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use automerge::Automerge;
use fitedge_core::crypto::StorageKey;
use fitedge_core::fit;
use fitedge_core::gear::AthleteProfile;
use fitedge_core::recording::Recording;
use fitedge_core::sample::{Channel, Sample};
use fitedge_core::store::{ListFilter, Store};
use fitedge_core::sync::client::{sync_once, SyncConfig, SyncReport};
use fitedge_core::sync::docs::{DocKind, ProfileDoc, ValidationContext, WorkoutDoc};
use fitedge_core::sync::local::LocalKind;
use fitedge_core::sync::protocol::DocumentId;
use fitedge_core::time::{Clock, ManualClock, SystemClock, Timestamp};
use fitedge_core::workout::{
    Command, Outcome, SampleSink, WorkoutConfig, WorkoutError, WorkoutState, WorkoutSummary,
};
use fitedge_core::{Profile, ResolvedProfile, Sport};
use fitedge_devices::hub::{HubConfig, SensorHub};
use fitedge_devices::transport::replay::{devices, synthesize, ReplayTransport};
use fitedge_devices::transport::{self, ControlAction};
use serde_json::{json, Value};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The recording the watch replays (default: a fēnix 2 run from the shared recordings).
    #[arg(long)]
    watch_file: Option<PathBuf>,
    /// The recording the phone replays (default: a Strava Android recording).
    #[arg(long)]
    phone_file: Option<PathBuf>,
    /// Keep the temporary directory (server and device databases) and print where it is.
    #[arg(long)]
    keep: bool,
}

const WATCH_DEFAULT: &str = "activity-small-fenix2-run.fit";
const PHONE_DEFAULT: &str = "strava-android-app-201.10-b1218918.fit";

fn fit_dir() -> PathBuf {
    std::env::var_os("FITEDGE_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared"))
        .join("data")
        .join("fit")
}

pub fn run(args: &DemoArgs) -> u8 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fitedge demo: cannot start the runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(demo(args)) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("fitedge demo: {e:#}");
            1
        }
    }
}

/// One simulated device: its database and its session.
struct Device {
    name: &'static str,
    store: Arc<Store>,
    sync: SyncConfig,
}

fn step(n: u32, t0: Instant, text: &str) {
    outln!("\n[{:5.1} s] step {n}: {text}", t0.elapsed().as_secs_f64());
}

async fn demo(args: &DemoArgs) -> Result<bool> {
    let t0 = Instant::now();
    let watch_file = args
        .watch_file
        .clone()
        .unwrap_or_else(|| fit_dir().join(WATCH_DEFAULT));
    let phone_file = args
        .phone_file
        .clone()
        .unwrap_or_else(|| fit_dir().join(PHONE_DEFAULT));
    for f in [&watch_file, &phone_file] {
        if !f.is_file() {
            bail!(
                "cannot find the recording {} (set FITEDGE_SHARED_DIR to the shared folder, or pass --watch-file/--phone-file)",
                f.display()
            );
        }
    }
    let tmp = tempfile::Builder::new().prefix("fitedge-demo-").tempdir()?;
    let dir = tmp.path().to_path_buf();

    step(
        1,
        t0,
        "start an embedded server (SQLite, dev mode) on a free local port",
    );
    let db = dir.join("server.db");
    let mut config = fitedge_server::Config::with_database(format!("sqlite://{}", db.display()));
    config.dev = true;
    let state = fitedge_server::state_from_config(config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fitedge_server::serve_on(
        state.clone(),
        listener,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let base = format!("http://{addr}");
    outln!("  server at {base}, database {}", db.display());

    step(2, t0, "register a user (dev mode: the verification token comes back in the answer), sign in on a watch and a phone");
    let email = "demo.athlete@example.com";
    let password = "demo password, long enough";
    let r = http(&state, "POST", "/api/v1/auth/register", None, json!({
        "email": email, "password": password, "birth_date": "1990-04-01", "display_name": "Demo Athlete"
    }))
    .await?;
    let dev_token = r["dev_token"]
        .as_str()
        .ok_or_else(|| anyhow!("no dev_token in {r}"))?;
    http(
        &state,
        "POST",
        "/api/v1/auth/verify-email",
        None,
        json!({ "token": dev_token }),
    )
    .await?;
    // One key for the user's devices (the host app's keystore shares it).
    let key = random_key()?;
    let mut devices_ = vec![];
    for name in ["watch", "phone"] {
        let r = http(
            &state,
            "POST",
            "/api/v1/auth/login",
            None,
            json!({ "email": email, "password": password }),
        )
        .await?;
        let token = r["access_token"]
            .as_str()
            .ok_or_else(|| anyhow!("no access_token in {r}"))?
            .to_string();
        let store = Arc::new(Store::open(
            &dir.join(format!("{name}.db")),
            Some(StorageKey::new(&key).map_err(|e| anyhow!("{e}"))?),
        )?);
        devices_.push(Device {
            name,
            store,
            sync: SyncConfig::new(base.clone(), token),
        });
        outln!(
            "  {name}: signed in, own database {name}.db (health channels encrypted with the user's key)"
        );
    }
    let [watch, phone] = <[Device; 2]>::try_from(devices_).map_err(|_| anyhow!("two devices"))?;

    step(
        3,
        t0,
        "offline: each device sets up the athlete's profile and records a workout by replaying a real recording through its sensors",
    );
    watch.store.update_profile(
        0,
        &AthleteProfile {
            weight_kg: Some(68.0),
            hr_max_bpm: Some(186),
            ..AthleteProfile::default()
        },
    )?;
    phone.store.update_profile(
        0,
        &AthleteProfile {
            weight_kg: Some(68.5),
            ftp_w: Some(240),
            ..AthleteProfile::default()
        },
    )?;
    outln!(
        "  watch: profile weight 68 kg, maximum heart rate 186; phone: weight 68.5 kg, FTP 240 W"
    );
    let watch_workout = record(&watch, &watch_file).await?;
    let phone_workout = record(&phone, &phone_file).await?;
    for (d, w) in [(&watch, &watch_workout), (&phone, &phone_workout)] {
        outln!(
            "  {}: recorded {} ({}), {:.2} km, {} samples",
            d.name,
            short(&w.id.0),
            w.metrics.sport,
            w.metrics.distance_m.unwrap_or(0.0) / 1000.0,
            w.samples
        );
    }

    watch.store.set_workout_text(
        &watch_workout.id.0,
        Some("Morning run"),
        Some("Felt good."),
        SystemClock.now(),
    )?;
    outln!("  watch: titled its workout \"Morning run\", notes \"Felt good.\"");

    step(
        4,
        t0,
        "online: both devices sync (WebSocket, automerge-repo protocol v1; sample chunks as blobs)",
    );
    sync_until_quiet(&[&watch, &phone]).await?;
    for d in [&watch, &phone] {
        let (title, notes) = text_of(&d.store, &watch_workout.id.0)?;
        outln!(
            "  {} now holds {} workouts; the watch's is titled {title:?}, notes {notes:?}",
            d.name,
            history(&d.store)?.len()
        );
    }

    step(
        5,
        t0,
        "offline again: both edit the title and notes of the watch's workout at the same time",
    );
    let now = SystemClock.now();
    watch.store.set_workout_text(
        &watch_workout.id.0,
        Some("Morning run by the harbour"),
        Some("Felt good. Legs fresh."),
        now,
    )?;
    phone.store.set_workout_text(
        &watch_workout.id.0,
        Some("Easy morning run"),
        Some("Windy. Felt good."),
        now,
    )?;
    for d in [&watch, &phone] {
        let (title, notes) = text_of(&d.store, &watch_workout.id.0)?;
        outln!("  {} sees title {title:?}, notes {notes:?}", d.name);
    }

    step(
        6,
        t0,
        "reconnect: sync until nothing moves (character-level merge of both edits)",
    );
    sync_until_quiet(&[&watch, &phone]).await?;
    for d in [&watch, &phone] {
        let (title, notes) = text_of(&d.store, &watch_workout.id.0)?;
        outln!("  {} now shows title {title:?}, notes {notes:?}", d.name);
    }

    step(
        7,
        t0,
        "compare: each device's own history (`list` and `summary`), the heart rate it opens, its profile, and the server's documents",
    );
    let mut views = vec![];
    for d in [&watch, &phone] {
        let h = history(&d.store)?;
        outln!("  {} (`fitedge list`):", d.name);
        for w in &h {
            outln!(
                "    {}  {}  {:>6.2} km  {:>7.1} s  avg HR {:>5}  {:?}  notes {:?}",
                w["start_time"].as_str().unwrap_or(""),
                w["sport"].as_str().unwrap_or(""),
                w["distance_m"].as_f64().unwrap_or(0.0) / 1000.0,
                w["timer_s"].as_f64().unwrap_or(0.0),
                w["avg_hr"]
                    .as_f64()
                    .map_or_else(|| "-".to_string(), |v| format!("{v:.1}")),
                w["title"].as_str().unwrap_or(""),
                w["notes"].as_str().unwrap_or("")
            );
        }
        for w in &h {
            outln!(
                "    {}: {} heart-rate samples opened from its sealed chunks",
                short(w["id"].as_str().unwrap_or("")),
                w["hr_samples"]
            );
        }
        let profiles = profile_documents(&d.store)?;
        views.push(json!({
            "history": h, "documents": documents(&d.store)?, "profiles": profiles.0,
            "physiology": profiles.1,
        }));
    }
    let (server_docs, server_history, server_profiles) = server_view(&state).await?;
    outln!(
        "  server: {} documents, {} workouts, profile documents {:?}",
        server_docs.as_object().map_or(0, |m| m.len()),
        server_history.len(),
        server_profiles
    );
    outln!("  profile on both devices: {}", views[0]["physiology"]);
    // Compared on what the server's documents carry.
    let shared_fields = |h: &Value| -> Value {
        Value::Array(
            h.as_array()
                .map(|a| {
                    a.iter()
                        .map(|w| {
                            let mut w = w.clone();
                            if let Some(m) = w.as_object_mut() {
                                m.remove("avg_hr");
                                m.remove("hr_samples");
                            }
                            w
                        })
                        .collect()
                })
                .unwrap_or_default(),
        )
    };
    let same_histories = views[0]["history"] == views[1]["history"]
        && json!(server_history) == shared_fields(&views[0]["history"])
        && server_history.len() == 2;
    let same_docs = views[0]["documents"] == views[1]["documents"];
    let server_same = views[0]["documents"] == server_docs;
    let hr_opened = same_heart_rate(&watch.store, &phone.store)?;
    let one_profile = views[0]["profiles"] == views[1]["profiles"]
        && views[0]["profiles"] == json!(server_profiles)
        && server_profiles.len() == 1
        && views[0]["physiology"] == views[1]["physiology"];
    outln!(
        "\n  histories identical (watch, phone, server): {same_histories}; device documents identical (heads): {same_docs}; server holds the same heads: {server_same}"
    );
    outln!(
        "  heart rate opened from the sealed chunks, identical on both devices: {hr_opened}; one profile document for the user (watch, phone, server): {one_profile}"
    );

    let _ = stop_tx.send(());
    server.await??;
    if args.keep {
        let kept = tmp.keep();
        outln!("  kept {}", kept.display());
    }
    let ok = same_histories && same_docs && server_same && hr_opened && one_profile;
    outln!(
        "\n[{:5.1} s] {}",
        t0.elapsed().as_secs_f64(),
        if ok { "CONVERGED" } else { "NOT CONVERGED" }
    );
    Ok(ok)
}

/// A fresh 32-byte storage key for the simulated user.
fn random_key() -> Result<[u8; 32]> {
    use ring::rand::SecureRandom;
    let mut k = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut k)
        .map_err(|_| anyhow!("no system randomness for a storage key"))?;
    Ok(k)
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// A JSON call to the embedded server's HTTP application (account setup only; the devices
/// talk to the server over its socket).
async fn http(
    state: &fitedge_server::AppState,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> Result<Value> {
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("x-idempotency-key", uuid::Uuid::new_v4().to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            0,
        ))))
        .body(axum::body::Body::from(body.to_string()))?;
    let resp = fitedge_server::app(state.clone()).oneshot(req).await?;
    let status = resp.status();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await?
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{method} {path}: HTTP {status}: {v}");
    }
    Ok(v)
}

/// Replays `file` (its first session) into a new crash-safe recording in the device's store.
async fn record(d: &Device, file: &Path) -> Result<WorkoutSummary> {
    let name = file.display().to_string();
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {name}"))?;
    let imp = fit::import(&bytes, Profile::default(), &name)?;
    let session = imp
        .sessions
        .first()
        .ok_or_else(|| anyhow!("{name} holds no session"))?;
    let m = &session.summary.metrics;
    let circumference = 2.105;
    let mut rec = StoreRecorder {
        store: d.store.clone(),
        clock: Arc::new(ManualClock::new(session.summary.start_time)),
        sport: (!m.sport_detected).then_some(m.sport),
        profile: session.profile.resolve(),
        rec: None,
        summary: None,
        failure: None,
    };
    let mut hub = SensorHub::new(HubConfig::default());
    for dev in devices(circumference) {
        hub.register(dev);
    }
    let mut t = ReplayTransport::new(synthesize(session, circumference), None);
    let report = transport::run(&mut t, &mut hub, &mut rec).await;
    if let Some(e) = rec.failure {
        return Err(e.context(format!("recording {name}")));
    }
    if rec.summary.is_none() {
        if let Some(r) = rec.rec.as_mut() {
            rec.clock.set(session.summary.end_time);
            rec.summary = Some(r.complete()?);
        }
    }
    outln!(
        "  {}: replayed {} sensor notifications ({} readings) from {}",
        d.name,
        report.notifications,
        report.recorded,
        file.file_name()
            .map_or(name.clone(), |n| n.to_string_lossy().into_owned())
    );
    for e in &report.control_errors {
        outln!("  {}: refused workout command: {e}", d.name);
    }
    rec.summary
        .ok_or_else(|| anyhow!("{name}: the replay did not produce a workout"))
}

/// The devices' recording driver over a store-backed [`Recording`]: the replay's time is the
/// recording's clock.
struct StoreRecorder {
    store: Arc<Store>,
    clock: Arc<ManualClock>,
    sport: Option<Sport>,
    profile: ResolvedProfile,
    rec: Option<Recording>,
    summary: Option<WorkoutSummary>,
    failure: Option<anyhow::Error>,
}

impl SampleSink for StoreRecorder {
    fn record(&mut self, sample: Sample) -> std::result::Result<Outcome, WorkoutError> {
        self.clock.set(sample.t);
        match self.rec.as_mut() {
            Some(r) => SampleSink::record(r, sample),
            None => Err(WorkoutError::InvalidTransition {
                state: WorkoutState::NotStarted,
                command: Command::Record,
            }),
        }
    }
}

impl transport::Recording for StoreRecorder {
    fn control(
        &mut self,
        action: ControlAction,
        at: Timestamp,
    ) -> std::result::Result<(), WorkoutError> {
        self.clock.set(at);
        let r = match (action, self.rec.as_mut()) {
            (ControlAction::Start, None) => Recording::start(
                self.store.clone(),
                self.clock.clone(),
                self.sport,
                self.profile,
                WorkoutConfig::import(),
            )
            .map(|r| self.rec = Some(r)),
            (ControlAction::Pause, Some(r)) => r.pause(),
            (ControlAction::Resume, Some(r)) => r.resume(),
            (ControlAction::Lap, Some(r)) => r.lap(),
            (ControlAction::Stop, Some(r)) if self.summary.is_none() => {
                r.complete().map(|s| self.summary = Some(s))
            }
            // Anything else is a command in the wrong state: say so (the replay report counts
            // it as a control error) rather than drop it.
            (action, rec) => {
                let state = match (rec, &self.summary) {
                    (None, _) => WorkoutState::NotStarted,
                    (Some(_), Some(_)) => WorkoutState::Completed,
                    (Some(r), None) => r.state(),
                };
                let command = match action {
                    ControlAction::Start => Command::Start,
                    ControlAction::Pause => Command::Pause,
                    ControlAction::Resume => Command::Resume,
                    ControlAction::Lap => Command::Lap,
                    ControlAction::Stop => Command::Complete,
                };
                return Err(WorkoutError::InvalidTransition { state, command });
            }
        };
        match r {
            Ok(()) => Ok(()),
            Err(fitedge_core::Error::Workout(e)) => Err(e),
            Err(e) => {
                self.failure = Some(e.into());
                Ok(())
            }
        }
    }
}

async fn sync_until_quiet(devices: &[&Device]) -> Result<()> {
    for round in 1..=4 {
        let mut moved = 0;
        for d in devices {
            let r: SyncReport = sync_once(&d.store, &d.sync, &SystemClock)
                .await
                .with_context(|| format!("{} sync", d.name))?;
            outln!(
                "  round {round}, {}: sent changes of {} docs, received {}; {} bytes up, {} down; blobs {} up, {} down{}",
                d.name,
                r.docs_sent,
                r.docs_received,
                r.bytes_sent,
                r.bytes_received,
                r.blobs_uploaded,
                r.blobs_downloaded,
                if r.errors.is_empty() { String::new() } else { format!("; problems: {:?}", r.errors) }
            );
            moved += r.docs_received + r.blobs_downloaded + r.docs_sent + r.blobs_uploaded;
        }
        if moved == 0 {
            return Ok(());
        }
    }
    Ok(())
}

/// The title and notes a device shows for a workout (its `summary`).
fn text_of(store: &Store, workout_id: &str) -> Result<(String, String)> {
    let s = store.summary(workout_id)?;
    Ok((s.title.unwrap_or_default(), s.notes.unwrap_or_default()))
}

fn ctx() -> ValidationContext {
    ValidationContext {
        now: SystemClock.now(),
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn sort_history(out: &mut [Value]) {
    out.sort_by(|a, b| {
        (a["start_time"].as_str(), a["id"].as_str())
            .cmp(&(b["start_time"].as_str(), b["id"].as_str()))
    });
}

/// The server's workout documents as a comparable history, oldest first.
fn history_of<'a>(docs: impl Iterator<Item = &'a Automerge>) -> Vec<Value> {
    let mut out: Vec<Value> = docs
        .filter_map(|d| WorkoutDoc::read(d, &ctx()).ok())
        .map(|w| {
            json!({
                "id": w.id.to_string(),
                "start_time": w.start_time.to_rfc3339(),
                "sport": w.sport.to_string(),
                "distance_m": w.summary.and_then(|s| s.distance_m).map(round1),
                "timer_s": w.summary.map(|s| round1(s.timer_s)),
                "title": w.title.filter(|t| !t.is_empty()),
                "notes": w.notes.filter(|t| !t.is_empty()),
            })
        })
        .collect();
    sort_history(&mut out);
    out
}

/// A device's history as its user sees it: `list`, with the notes from `summary` and the number
/// of heart-rate samples `samples` opens, oldest first.
fn history(store: &Store) -> Result<Vec<Value>> {
    let mut out = vec![];
    for w in store.list(&ListFilter::default(), 1000, None)?.items {
        let notes = store.summary(&w.id)?.notes;
        let hr = store.samples_of(&w.id, &[Channel::HeartRate])?.len();
        out.push(json!({
            "id": w.id,
            "start_time": w.start_time.to_rfc3339(),
            "sport": w.sport.to_string(),
            "distance_m": w.distance_m.map(round1),
            "timer_s": round1(w.timer_s),
            "title": w.title,
            "notes": notes,
            "avg_hr": w.avg_hr.map(round1),
            "hr_samples": hr,
        }));
    }
    sort_history(&mut out);
    Ok(out)
}

/// Every workout's heart-rate samples are the same on both devices, and some workout has
/// them (the recording device sealed them; the other opened them with the user's key).
fn same_heart_rate(a: &Store, b: &Store) -> Result<bool> {
    let mut seen = 0;
    for w in a.list(&ListFilter::default(), 1000, None)?.items {
        let (ha, hb) = (
            a.samples_of(&w.id, &[Channel::HeartRate])?,
            b.samples_of(&w.id, &[Channel::HeartRate])?,
        );
        if ha != hb {
            return Ok(false);
        }
        seen += ha.len();
    }
    Ok(seen > 0)
}

/// The ids of a device's profile documents, and the physiology of the user's one.
fn profile_documents(store: &Store) -> Result<(Vec<String>, Value)> {
    let ids: Vec<String> = store
        .documents()?
        .into_iter()
        .filter(|d| d.kind == LocalKind::Profile)
        .map(|d| d.doc_id)
        .collect();
    let physiology = match store.profile_document_id()? {
        Some(id) => {
            let p = ProfileDoc::read(&store.load_document(&id)?, &ctx())?.physiology;
            json!({
                "weight_kg": p.weight_kg, "hr_max_bpm": p.hr_max_bpm, "ftp_w": p.ftp_w,
            })
        }
        None => Value::Null,
    };
    Ok((ids, physiology))
}

/// Document id -> heads, for every document the device holds.
fn documents(store: &Store) -> Result<Value> {
    let mut m = serde_json::Map::new();
    for d in store.documents()? {
        let mut h = d.heads.clone();
        h.sort();
        m.insert(d.doc_id.clone(), json!(h));
    }
    Ok(Value::Object(m))
}

/// Document id -> heads, the history and the profile documents' ids, for every document the
/// server stores (read from its SQL chunks, as another node would load them).
async fn server_view(state: &fitedge_server::AppState) -> Result<(Value, Vec<Value>, Vec<String>)> {
    let ids = fitedge_server::sync::store::all_ids(state).await?;
    let mut heads = serde_json::Map::new();
    let mut docs = vec![];
    let mut profiles = vec![];
    for id in ids {
        let doc_id: DocumentId = id.parse().map_err(|e| anyhow!("{e}"))?;
        let loaded = fitedge_server::sync::store::load(state, &doc_id)
            .await?
            .ok_or_else(|| anyhow!("document {id} vanished"))?;
        let mut h: Vec<String> = loaded
            .doc
            .get_heads()
            .iter()
            .map(|h| h.to_string())
            .collect();
        h.sort();
        if matches!(
            fitedge_core::sync::docs::kind_of(&loaded.doc),
            Ok((DocKind::Profile, _))
        ) {
            profiles.push(id.clone());
        }
        heads.insert(id, json!(h));
        docs.push(loaded.doc);
    }
    profiles.sort();
    Ok((Value::Object(heads), history_of(docs.iter()), profiles))
}
