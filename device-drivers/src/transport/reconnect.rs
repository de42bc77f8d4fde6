//! Connect, subscribe, forward notifications, and after every drop reconnect with exponential
//! backoff and subscribe again. The radio-specific part is a [`Link`]; the loop is tested with
//! a fake link under paused tokio time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use fitedge_core::Clock;

use super::TransportEvent;
use crate::sensor::Source;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LinkError(pub String);

/// One sensor's radio link.
pub trait Link: Send {
    fn connect(&mut self) -> impl Future<Output = Result<(), LinkError>> + Send;
    /// Subscribes to every characteristic the drivers decode (and reads battery and device
    /// information, delivered as notifications too).
    fn subscribe(
        &mut self,
    ) -> impl Future<Output = Result<Vec<(Source, Vec<u8>)>, LinkError>> + Send;
    /// The next notification; an error means the link dropped.
    fn next(&mut self) -> impl Future<Output = Result<(Source, Vec<u8>), LinkError>> + Send;
    /// Closes the radio link once nobody listens any more, so the sensor is free for another
    /// central and stops spending its battery on us. Best effort: the link is being abandoned.
    fn disconnect(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before attempt `n` (0-based) of a run of failures: initial * 2^n, capped.
    pub fn delay(&self, n: u32) -> Duration {
        self.initial.saturating_mul(1u32 << n.min(16)).min(self.max)
    }
}

/// Runs one device's link until the receiving side is dropped, then disconnects it. The drop is
/// noticed at once, even while the link waits for a silent sensor or sleeps between attempts.
pub async fn supervise<L: Link>(
    device: String,
    mut link: L,
    backoff: Backoff,
    tx: mpsc::UnboundedSender<TransportEvent>,
    clock: Arc<dyn Clock>,
) {
    tokio::select! {
        () = tx.closed() => {}
        () = run(&device, &mut link, backoff, &tx, &clock) => {}
    }
    link.disconnect().await;
}

/// The connect / subscribe / forward loop; returns when the receiving side is gone.
async fn run<L: Link>(
    device: &str,
    link: &mut L,
    backoff: Backoff,
    tx: &mpsc::UnboundedSender<TransportEvent>,
    clock: &Arc<dyn Clock>,
) {
    let device = device.to_string();
    let mut failures = 0u32;
    loop {
        if tx.is_closed() {
            return;
        }
        if failures > 0 {
            tokio::time::sleep(backoff.delay(failures - 1)).await;
        }
        if link.connect().await.is_err() {
            failures += 1;
            continue;
        }
        let initial = match link.subscribe().await {
            Ok(v) => v,
            Err(_) => {
                failures += 1;
                continue;
            }
        };
        let send = |ev| tx.send(ev).is_ok();
        if !send(TransportEvent::Connected {
            device: device.clone(),
            at: clock.now(),
        }) {
            return;
        }
        for (source, bytes) in initial {
            let _ = send(TransportEvent::Notification {
                device: device.clone(),
                source,
                bytes,
                at: clock.now(),
            });
        }
        loop {
            match link.next().await {
                Ok((source, bytes)) => {
                    if !send(TransportEvent::Notification {
                        device: device.clone(),
                        source,
                        bytes,
                        at: clock.now(),
                    }) {
                        return;
                    }
                }
                Err(_) => {
                    if !send(TransportEvent::Disconnected {
                        device: device.clone(),
                        at: clock.now(),
                    }) {
                        return;
                    }
                    failures = 1;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gatt::Characteristic;
    use crate::transport::{channel, Transport};
    use fitedge_core::SystemClock;
    use std::sync::Mutex;
    use tokio::time::Instant;

    #[derive(Debug, Default)]
    struct Log {
        connects: Vec<Duration>,
        subscribes: Vec<Duration>,
    }

    /// Fails `fail_first` connects, then connects; drops after `drop_after` notifications,
    /// then fails `fail_again` connects.
    struct FakeLink {
        start: Instant,
        log: Arc<Mutex<Log>>,
        connect_plan: Vec<bool>,
        sent: u32,
        drop_after: u32,
    }

    impl Link for FakeLink {
        async fn connect(&mut self) -> Result<(), LinkError> {
            self.log
                .lock()
                .map_err(|_| LinkError("poisoned".into()))?
                .connects
                .push(self.start.elapsed());
            if self.connect_plan.is_empty() || self.connect_plan.remove(0) {
                Ok(())
            } else {
                Err(LinkError("out of range".into()))
            }
        }
        async fn subscribe(&mut self) -> Result<Vec<(Source, Vec<u8>)>, LinkError> {
            self.log
                .lock()
                .map_err(|_| LinkError("poisoned".into()))?
                .subscribes
                .push(self.start.elapsed());
            self.sent = 0;
            Ok(vec![(Source::Gatt(Characteristic::BatteryLevel), vec![80])])
        }
        async fn next(&mut self) -> Result<(Source, Vec<u8>), LinkError> {
            tokio::time::sleep(Duration::from_secs(1)).await;
            self.sent += 1;
            if self.sent > self.drop_after {
                return Err(LinkError("link lost".into()));
            }
            Ok((
                Source::Gatt(Characteristic::HeartRateMeasurement),
                vec![0, 60],
            ))
        }
    }

    /// Connects once (or never), then stays silent; counts its disconnects.
    struct SilentLink {
        connects: bool,
        disconnects: Arc<Mutex<u32>>,
    }

    impl Link for SilentLink {
        async fn connect(&mut self) -> Result<(), LinkError> {
            if self.connects {
                Ok(())
            } else {
                Err(LinkError("out of range".into()))
            }
        }
        async fn subscribe(&mut self) -> Result<Vec<(Source, Vec<u8>)>, LinkError> {
            Ok(vec![])
        }
        async fn next(&mut self) -> Result<(Source, Vec<u8>), LinkError> {
            std::future::pending().await
        }
        async fn disconnect(&mut self) {
            *self.disconnects.lock().unwrap() += 1;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_transport_stops_a_silent_link_at_once_and_disconnects_it() {
        let disconnects = Arc::new(Mutex::new(0));
        let link = SilentLink {
            connects: true,
            disconnects: disconnects.clone(),
        };
        let (tx, mut t) = channel();
        let task = tokio::spawn(supervise(
            "hrm".into(),
            link,
            Backoff::default(),
            tx,
            Arc::new(SystemClock),
        ));
        assert!(matches!(
            t.next_event().await,
            Some(TransportEvent::Connected { .. })
        ));
        let dropped_at = Instant::now();
        drop(t);
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("a silent sensor kept the loop alive after the transport was dropped")
            .unwrap();
        assert_eq!(dropped_at.elapsed(), Duration::ZERO);
        assert_eq!(*disconnects.lock().unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_transport_interrupts_the_backoff() {
        let disconnects = Arc::new(Mutex::new(0));
        let link = SilentLink {
            connects: false,
            disconnects: disconnects.clone(),
        };
        let (tx, t) = channel();
        let task = tokio::spawn(supervise(
            "hrm".into(),
            link,
            Backoff::default(),
            tx,
            Arc::new(SystemClock),
        ));
        // Several failed attempts: the loop now sleeps 16 s before the next one.
        tokio::time::sleep(Duration::from_secs(20)).await;
        let dropped_at = Instant::now();
        drop(t);
        task.await.unwrap();
        assert_eq!(dropped_at.elapsed(), Duration::ZERO);
        assert_eq!(*disconnects.lock().unwrap(), 1);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::default();
        let s: Vec<u64> = (0..7).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(s, vec![1, 2, 4, 8, 16, 30, 30]);
    }

    #[tokio::test(start_paused = true)]
    async fn reconnects_with_backoff_and_resubscribes_every_time() {
        let log = Arc::new(Mutex::new(Log::default()));
        let link = FakeLink {
            start: Instant::now(),
            log: log.clone(),
            // 3 failures, success, (drop), 2 failures, success
            connect_plan: vec![false, false, false, true, false, false, true],
            sent: 0,
            drop_after: 2,
        };
        let (tx, mut t) = channel();
        let task = tokio::spawn(supervise(
            "hrm".into(),
            link,
            Backoff::default(),
            tx,
            Arc::new(SystemClock),
        ));
        let mut kinds = vec![];
        while kinds.iter().filter(|k| **k == "connected").count() < 2 {
            match t.next_event().await {
                Some(TransportEvent::Connected { .. }) => kinds.push("connected"),
                Some(TransportEvent::Disconnected { .. }) => kinds.push("disconnected"),
                Some(TransportEvent::Notification { .. }) => kinds.push("notification"),
                _ => {}
            }
        }
        drop(t);
        task.abort();
        let log = log.lock().unwrap();
        let secs: Vec<u64> = log.connects.iter().map(|d| d.as_secs()).collect();
        // attempts at 0, +1, +2, +4 s (connected at 7 s); two notifications (8, 9 s), the
        // third read fails at 10 s; then +1, +2, +4 s -> 11, 13, 17.
        assert_eq!(secs, vec![0, 1, 3, 7, 11, 13, 17]);
        // subscribed after each successful connect, and only then
        let subs: Vec<u64> = log.subscribes.iter().map(|d| d.as_secs()).collect();
        assert_eq!(subs, vec![7, 17]);
        assert_eq!(
            kinds,
            vec![
                "connected",
                "notification",
                "notification",
                "notification",
                "disconnected",
                "connected"
            ]
        );
    }
}
