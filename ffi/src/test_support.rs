//! What the crate's unit tests share: a settable clock and an engine on a temporary database.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::engine::{Engine, EngineClock};

pub(crate) const T0: i64 = 1_763_700_000_000;

#[derive(Debug)]
pub(crate) struct TestClock(pub(crate) AtomicI64);

impl EngineClock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// An engine on a fresh database in a temporary directory (keep the directory alive), on a
/// clock at [`T0`].
pub(crate) fn engine() -> (tempfile::TempDir, Arc<TestClock>, Arc<Engine>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(TestClock(AtomicI64::new(T0)));
    let db = dir.path().join("e.db").to_string_lossy().into_owned();
    let e = Engine::open_with_clock(db, vec![7; 32], None, clock.clone()).unwrap();
    (dir, clock, e)
}
