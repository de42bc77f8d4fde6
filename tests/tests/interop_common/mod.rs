//! Shared by the interop test binaries (`sync_interop.rs`: samod; `device_interop.rs`: our
//! device client): the environment `sync-server/scripts/interop.sh` sets, bounded waits, and
//! running another implementation as a child process (the "peer") with the document to act on.

use std::future::Future;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use automerge::{ObjType, ReadDoc, Value, ROOT};

pub type Res<T> = Result<T, String>;

pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub fn required(name: &str) -> Res<String> {
    env(name).ok_or_else(|| {
        format!("{name} is not set: run through sync-server/scripts/interop.sh (see this file's header)")
    })
}

/// The bound on each wait: `FITEDGE_INTEROP_TIMEOUT_MS`, default 15000.
pub fn wait_bound() -> Duration {
    let ms = env("FITEDGE_INTEROP_TIMEOUT_MS")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(15_000);
    Duration::from_millis(ms)
}

pub async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> Res<T> {
    let bound = wait_bound();
    tokio::time::timeout(bound, fut)
        .await
        .map_err(|_| format!("timed out after {} ms: {what}", bound.as_millis()))
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

pub fn nonce() -> String {
    format!("{:016x}", rand_u64())
}

/// A string field whether written as text (the JavaScript default) or as a scalar string.
pub fn read_string<D: ReadDoc>(doc: &D, key: &str) -> Option<String> {
    match doc.get(ROOT, key).ok()?? {
        (Value::Scalar(s), _) => s.as_str().map(str::to_owned),
        (Value::Object(ObjType::Text), id) => doc.text(&id).ok(),
        _ => None,
    }
}

/// What a peer is told about the document it must act on (environment variables):
/// find `FITEDGE_INTEROP_DOC_URL`, check that its field `FITEDGE_INTEROP_EXPECT_KEY` reads
/// `FITEDGE_INTEROP_EXPECT`, write `FITEDGE_INTEROP_PEER_VALUE` into `FITEDGE_INTEROP_PEER_KEY`,
/// make sure the server holds that change, exit 0. `FITEDGE_INTEROP_DOC_KIND` is the kind the
/// server should list it as (`fitedge.workout`, ...), when the creator knows it.
#[derive(Debug)]
pub struct PeerTask<'a> {
    pub token: &'a str,
    pub doc_url: &'a str,
    pub doc_kind: &'a str,
    pub expect_key: &'a str,
    pub expect: &'a str,
    pub peer_key: &'a str,
    pub peer_value: &'a str,
}

/// The same task, as a peer reads it from its environment (defaults: `expect` / `peer`, the
/// keys of the Node harness's untyped `cross` document).
#[derive(Debug)]
pub struct PeerEnv {
    pub doc_url: String,
    pub doc_kind: Option<String>,
    pub expect_key: String,
    pub expect: String,
    pub peer_key: String,
    pub peer_value: String,
}

impl PeerEnv {
    pub fn read() -> Res<Self> {
        Ok(PeerEnv {
            doc_url: required("FITEDGE_INTEROP_DOC_URL")?,
            doc_kind: env("FITEDGE_INTEROP_DOC_KIND"),
            expect_key: env("FITEDGE_INTEROP_EXPECT_KEY").unwrap_or_else(|| "expect".into()),
            expect: required("FITEDGE_INTEROP_EXPECT")?,
            peer_key: env("FITEDGE_INTEROP_PEER_KEY").unwrap_or_else(|| "peer".into()),
            peer_value: required("FITEDGE_INTEROP_PEER_VALUE")?,
        })
    }
}

fn tail(path: &Path, max: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let start = text.len().saturating_sub(max);
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

/// Runs `cmd` (a shell command: another implementation acting on the document) with the task in
/// its environment, in its own process group, killed after `limit`. Its stdout and stderr are
/// kept in files and returned (the stdout tail) or quoted in the error.
pub async fn run_peer(cmd: &str, task: &PeerTask<'_>, limit: Duration) -> Res<String> {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir for the peer's output: {e}"))?;
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let open = |p: &Path| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("FITEDGE_INTEROP_TOKEN", task.token)
        .env("FITEDGE_INTEROP_DOC_URL", task.doc_url)
        .env("FITEDGE_INTEROP_DOC_KIND", task.doc_kind)
        .env("FITEDGE_INTEROP_EXPECT_KEY", task.expect_key)
        .env("FITEDGE_INTEROP_EXPECT", task.expect)
        .env("FITEDGE_INTEROP_PEER_KEY", task.peer_key)
        .env("FITEDGE_INTEROP_PEER_VALUE", task.peer_value)
        .stdin(Stdio::null())
        .stdout(Stdio::from(open(&out_path)?))
        .stderr(Stdio::from(open(&err_path)?))
        .process_group(0)
        .spawn()
        .map_err(|e| format!("peer command failed to start ({cmd}): {e}"))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for the peer command: {e}")),
        }
        if start.elapsed() > limit {
            // The whole group: `sh -c` may have children of its own.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            return Err(format!(
                "peer command timed out after {} ms ({cmd}); stdout tail: {}; stderr tail: {}",
                limit.as_millis(),
                tail(&out_path, 3000),
                tail(&err_path, 3000)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (out, err) = (tail(&out_path, 6000), tail(&err_path, 6000));
    if status.success() {
        Ok(out)
    } else {
        Err(format!(
            "peer command exited with {status} ({cmd}); stdout tail: {out}; stderr tail: {err}"
        ))
    }
}

/// How long a peer process may take in all: it makes several bounded waits, and starts a
/// runtime (node, a test binary) first.
pub fn peer_limit() -> Duration {
    wait_bound() * 4 + Duration::from_secs(10)
}
