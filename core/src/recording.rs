//! A live recording that survives the app being killed.
//!
//! Every command (start, pause, resume, lap, update) is written through to the database as it
//! happens. Samples are buffered per channel and flushed as chunks when the recording clock has
//! moved [`FLUSH_EVERY_MS`] since the last flush (or a buffer fills), so a crash loses at most
//! the last second of samples. Every [`COMPACT_EVERY`] flushes the small chunks of the last
//! stretch are merged into one per channel, so a long workout does not leave thousands of tiny
//! chunks; completion merges the rest, writes the summary and personal records in one
//! transaction, and the recording becomes an ordinary workout.
//!
//! After a restart, [`Recording::recover`] finds every unfinished recording and rebuilds it by
//! replaying its commands and stored samples through the same aggregate: the app can go on
//! recording or complete it.

use std::sync::Arc;

use rusqlite::params;

use crate::error::{Error, Result};
use crate::event::DomainEvent;
use crate::metrics::LiveMetrics;
use crate::profile::ResolvedProfile;
use crate::sample::{Channel, Reading, Sample};
use crate::sport::Sport;
use crate::store::{get_samples, insert_workout_row, put_chunk, to_json, Store};
use crate::time::{Clock, Timestamp};
use crate::validation::Verdict;
use crate::workout::{
    SampleSink, Workout, WorkoutConfig, WorkoutError, WorkoutId, WorkoutState, WorkoutSummary,
};

/// The loss bound: buffered samples reach the disk within this much recording time.
pub const FLUSH_EVERY_MS: i64 = 1_000;
/// A buffer this full is flushed at once (bounds memory when samples arrive very fast).
pub const MAX_BUFFERED: usize = 65_536;
/// Look at the clock when sample time has moved this much since the last look...
pub const CHECK_EVERY_MS: i64 = 250;
/// ...or after this many samples (a burst of samples from the past).
pub const CHECK_EVERY_SAMPLES: u32 = 256;
/// Merge the small chunks of the last stretch after this many flushes.
pub const COMPACT_EVERY: u32 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
enum Journal {
    Start,
    Pause,
    Resume,
    Lap,
    Cancel,
}

pub struct Recording {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    workout: Workout,
    buffers: Vec<Vec<Sample>>,
    buffered: usize,
    /// Next chunk sequence number per channel.
    seq: Vec<i64>,
    /// First sequence number per channel not yet compacted.
    compact_from: Vec<i64>,
    flushes_since_compaction: u32,
    last_flush: Timestamp,
    /// Sample time at the last look at the clock, and samples since: the clock (which may be
    /// the host app's, behind an FFI call) is read only when a flush could be due.
    last_check_t: i64,
    since_check: u32,
    /// The clock's time at the last look, to judge samples dated ahead of it.
    clock_seen: Timestamp,
    /// Rejected samples counted in the database (the workout's count when it is current).
    saved_rejected: u64,
    journal_seq: i64,
    events: Vec<DomainEvent>,
    /// The workout was stored or the recording deleted: nothing more to write.
    settled: bool,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("id", self.workout.id())
            .field("state", &self.workout.state())
            .field("buffered", &self.buffered)
            .finish()
    }
}

impl Recording {
    /// Starts a new recording now.
    pub fn start(
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        sport: Option<Sport>,
        profile: ResolvedProfile,
        config: WorkoutConfig,
    ) -> Result<Self> {
        let now = clock.now();
        let mut workout = Workout::new(WorkoutId::random(), sport, profile, config);
        workout.start(now)?;
        let id = workout.id().0.clone();
        store.write(|tx| {
            tx.execute(
                "INSERT INTO recordings (id, sport, profile_json, config_json, started_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![id, sport.map(Sport::as_str), to_json(&profile)?, to_json(&config)?, now.0],
            )?;
            tx.execute(
                "INSERT INTO recording_commands (recording_id, seq, at, command) VALUES (?1, 0, ?2, ?3)",
                params![id, now.0, to_json(&Journal::Start)?],
            )?;
            Ok(())
        })?;
        let mut r = Self::new(store, clock, workout, now);
        r.journal_seq = 1;
        Ok(r)
    }

    fn new(store: Arc<Store>, clock: Arc<dyn Clock>, workout: Workout, now: Timestamp) -> Self {
        let n = Channel::ALL.len();
        Self {
            store,
            clock,
            workout,
            buffers: vec![Vec::new(); n],
            buffered: 0,
            seq: vec![0; n],
            compact_from: vec![0; n],
            flushes_since_compaction: 0,
            last_flush: now,
            last_check_t: now.0,
            since_check: 0,
            clock_seen: now,
            saved_rejected: 0,
            journal_seq: 0,
            events: vec![],
            settled: false,
        }
    }

    pub fn id(&self) -> &WorkoutId {
        self.workout.id()
    }

    pub fn state(&self) -> WorkoutState {
        self.workout.state()
    }

    pub fn workout(&self) -> &Workout {
        &self.workout
    }

    pub fn live(&self) -> Option<LiveMetrics> {
        self.workout.live(self.clock.now())
    }

    /// Drains the domain events so far (the aggregate's and the store's).
    pub fn take_events(&mut self) -> Vec<DomainEvent> {
        let mut e = std::mem::take(&mut self.events);
        e.extend(self.workout.take_events());
        e
    }

    fn journal(&mut self, command: Journal, at: Timestamp) -> Result<()> {
        // Flush first: the journal must never run ahead of the samples before it.
        self.flush()?;
        let id = self.workout.id().0.clone();
        let seq = self.journal_seq;
        let json = serde_json::to_string(&command).map_err(|e| Error::Corrupt(e.to_string()))?;
        self.store.write(|tx| {
            tx.execute(
                "INSERT INTO recording_commands (recording_id, seq, at, command) VALUES (?1, ?2, ?3, ?4)",
                params![id, seq, at.0, json],
            )?;
            Ok(())
        })?;
        self.journal_seq += 1;
        Ok(())
    }

    pub fn pause(&mut self) -> Result<()> {
        let now = self.clock.now();
        let r = self.workout.pause(now);
        self.settle(r)?;
        self.journal(Journal::Pause, now)
    }

    pub fn resume(&mut self) -> Result<()> {
        let now = self.clock.now();
        let r = self.workout.resume(now);
        self.settle(r)?;
        self.journal(Journal::Resume, now)
    }

    pub fn lap(&mut self) -> Result<()> {
        let now = self.clock.now();
        let r = self.workout.lap(now);
        self.settle(r)?;
        self.journal(Journal::Lap, now)
    }

    /// Passes a command's or sample's outcome through; when the workout stopped on its own
    /// (the 24-hour limit, which any late command or sample can find passed), the recording
    /// becomes a stored workout first, or is deleted when the workout was too short to record.
    fn settle<T>(&mut self, r: std::result::Result<T, WorkoutError>) -> Result<T> {
        if r.is_err() && !self.settled {
            match self.workout.state() {
                WorkoutState::Completed => {
                    self.finish_completed()?;
                }
                WorkoutState::Cancelled => self.delete_recording()?,
                _ => {}
            }
        }
        Ok(r?)
    }

    /// The clock's time for judging a sample dated `t`: the last reading, unless `t` is ahead of
    /// it by more than the allowance, and only then a fresh look (the clock may sit behind an
    /// FFI call, and live samples are rarely ahead of the last look).
    fn clock_for(&mut self, t: Timestamp) -> Timestamp {
        if t.secs_since(self.clock_seen) > crate::workout::MAX_AHEAD_OF_CLOCK_S {
            self.clock_seen = self.clock.now();
        }
        self.clock_seen
    }

    /// Judges one live sample against the clock and the workout, and buffers what the workout
    /// kept; no flush.
    fn take_in(&mut self, sample: Sample) -> Result<Verdict> {
        let now = self.clock_for(sample.t);
        let r = self.workout.record_live(sample, now);
        let verdict = self.settle(r)?;
        for s in self.workout.take_samples() {
            self.buffers[s.channel().index()].push(s);
            self.buffered += 1;
        }
        Ok(verdict)
    }

    /// Takes one sample, and flushes when a second has passed since the last flush.
    pub fn record(&mut self, sample: Sample) -> Result<Verdict> {
        let verdict = self.take_in(sample)?;
        // Live samples carry the time they were taken, so a flush can only be due when sample
        // time has moved on, or after a burst: look at the clock then, not on every sample.
        self.since_check += 1;
        // A rejected sample's time is not trusted: one dated 2085 (a jumped sensor clock) would
        // put the next look at the clock decades away.
        let t = if verdict.usable() {
            sample.t.0
        } else {
            self.last_check_t
        };
        if t - self.last_check_t >= CHECK_EVERY_MS
            || self.since_check >= CHECK_EVERY_SAMPLES
            || self.buffered >= MAX_BUFFERED
        {
            self.last_check_t = t;
            self.since_check = 0;
            self.maybe_flush()?;
        }
        Ok(verdict)
    }

    /// Takes a batch of samples (an app that buffers its sensors, a replay) and looks at the
    /// clock once for the whole batch. Returns each sample's verdict, in order.
    pub fn record_batch(
        &mut self,
        samples: impl IntoIterator<Item = Sample>,
    ) -> Result<Vec<Verdict>> {
        let mut out = Vec::new();
        for sample in samples {
            let verdict = self.take_in(sample)?;
            if self.buffered >= MAX_BUFFERED {
                self.flush()?;
            }
            out.push(verdict);
        }
        self.since_check = 0;
        self.maybe_flush()?;
        Ok(out)
    }

    pub fn record_now(&mut self, reading: Reading) -> Result<Verdict> {
        let now = self.clock.now();
        self.record(Sample::new(now, reading))
    }

    /// Flushes if the loss bound requires it; call it on a timer too when samples stop coming.
    pub fn maybe_flush(&mut self) -> Result<()> {
        let now = self.clock.now();
        self.clock_seen = now;
        let pending = self.buffered > 0 || self.unsaved_rejections();
        if self.buffered >= MAX_BUFFERED || (pending && now.0 - self.last_flush.0 >= FLUSH_EVERY_MS)
        {
            self.flush()?;
        }
        if self.workout.tick(now) {
            self.settle(Err::<(), _>(WorkoutError::TimeLimitReached))
                .or_else(|e| match e {
                    Error::Workout(WorkoutError::TimeLimitReached) => Ok(()),
                    e => Err(e),
                })?;
        }
        Ok(())
    }

    fn unsaved_rejections(&self) -> bool {
        self.workout.report().total_rejected() != self.saved_rejected
    }

    /// Writes every buffered sample now, one chunk per channel, and the rejected-sample counts,
    /// in one transaction.
    pub fn flush(&mut self) -> Result<()> {
        self.last_flush = self.clock.now();
        if self.buffered == 0 && !self.unsaved_rejections() {
            return Ok(());
        }
        let rejected = self.workout.report().total_rejected();
        let rejected_json = to_json(&self.workout.rejected_counts())?;
        let id = self.workout.id().0.clone();
        let key = self.store.key();
        let now = self.last_flush;
        let (buffers, seq) = (&self.buffers, &mut self.seq);
        let compact = self.flushes_since_compaction + 1 >= COMPACT_EVERY;
        let compact_from = &mut self.compact_from;
        self.store.write(|tx| {
            for ch in Channel::ALL {
                let buf = &buffers[ch.index()];
                if buf.is_empty() {
                    continue;
                }
                put_chunk(tx, key, &id, ch, seq[ch.index()], buf)?;
                seq[ch.index()] += 1;
            }
            if compact {
                compact_chunks(tx, key, &id, seq, compact_from)?;
            }
            tx.execute(
                "UPDATE recordings SET updated_at = ?2, rejected_json = ?3 WHERE id = ?1",
                params![id, now.0, rejected_json],
            )?;
            Ok(())
        })?;
        for b in &mut self.buffers {
            b.clear();
        }
        self.buffered = 0;
        self.saved_rejected = rejected;
        self.flushes_since_compaction = if compact {
            0
        } else {
            self.flushes_since_compaction + 1
        };
        Ok(())
    }

    /// Completes the workout and turns the recording into a stored workout.
    pub fn complete(&mut self) -> Result<WorkoutSummary> {
        let now = self.clock.now();
        // Past the 24-hour limit the workout completes at the limit, or is cancelled there
        // when too short (an error, and the recording is deleted).
        let r = self.workout.complete(now).map(|_| ());
        self.settle(r)?;
        self.finish_completed()
    }

    fn finish_completed(&mut self) -> Result<WorkoutSummary> {
        for s in self.workout.take_samples() {
            self.buffers[s.channel().index()].push(s);
            self.buffered += 1;
        }
        self.flush()?;
        let summary = self
            .workout
            .summary()
            .cloned()
            .ok_or_else(|| Error::Corrupt("completed workout without a summary".into()))?;
        let id = summary.id.0.clone();
        let key = self.store.key();
        let now = self.clock.now();
        let (seq, compact_from) = (&self.seq, &mut self.compact_from);
        let events = self.store.write(|tx| {
            compact_chunks(tx, key, &id, seq, compact_from)?;
            let events = insert_workout_row(tx, &summary, None, None, now)?;
            tx.execute("DELETE FROM recordings WHERE id = ?1", [&id])?;
            Ok(events)
        })?;
        self.events.extend(events);
        self.settled = true;
        Ok(summary)
    }

    /// Cancels: the recording and its samples are deleted.
    pub fn cancel(&mut self) -> Result<()> {
        let now = self.clock.now();
        self.workout.cancel(now)?;
        self.delete_recording()
    }

    fn delete_recording(&mut self) -> Result<()> {
        let id = self.workout.id().0.clone();
        self.store.write(|tx| {
            tx.execute("DELETE FROM sample_chunks WHERE workout_id = ?1", [&id])?;
            tx.execute("DELETE FROM recordings WHERE id = ?1", [&id])?;
            Ok(())
        })?;
        for b in &mut self.buffers {
            b.clear();
        }
        self.buffered = 0;
        self.settled = true;
        Ok(())
    }

    /// Every recording the app did not finish (it was killed, or the phone died), rebuilt from
    /// its journal and stored samples.
    pub fn recover(store: Arc<Store>, clock: Arc<dyn Clock>) -> Result<Vec<Recording>> {
        type Row = (String, Option<String>, String, String, Option<String>);
        let rows: Vec<Row> = store.read(|c| {
            let mut stmt = c.prepare(
                "SELECT id, sport, profile_json, config_json, rejected_json FROM recordings ORDER BY started_at",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?;
            Ok(rows.collect::<std::result::Result<_, _>>()?)
        })?;
        let mut out = vec![];
        for (id, sport, profile, config, rejected) in rows {
            let corrupt = |e: serde_json::Error| Error::Corrupt(format!("recording {id}: {e}"));
            let sport: Option<Sport> = sport
                .map(|s| s.parse().map_err(Error::Corrupt))
                .transpose()?;
            let profile: ResolvedProfile = serde_json::from_str(&profile).map_err(corrupt)?;
            let config: WorkoutConfig = serde_json::from_str(&config).map_err(corrupt)?;
            let journal: Vec<(i64, i64, String)> = store.read(|c| {
                let mut stmt = c.prepare(
                    "SELECT seq, at, command FROM recording_commands WHERE recording_id = ?1 ORDER BY seq",
                )?;
                let rows = stmt.query_map([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                Ok(rows.collect::<std::result::Result<_, _>>()?)
            })?;
            let samples = store.read(|c| get_samples(c, store.key(), &id, &[]))?;
            // Per channel: the next free sequence number, and where the not yet full-size chunks
            // begin (after the last full-size one).
            let chunk_seqs: Vec<(i64, i64, i64)> = store.read(|c| {
                let mut stmt = c.prepare(
                    "SELECT channel, MAX(seq),
                            COALESCE(MAX(CASE WHEN count >= ?2 THEN seq END) + 1, 0)
                     FROM sample_chunks WHERE workout_id = ?1 GROUP BY channel",
                )?;
                let rows = stmt
                    .query_map(params![&id, crate::store::CHUNK_SAMPLES as i64], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?;
                Ok(rows.collect::<std::result::Result<_, _>>()?)
            })?;
            let mut w = Workout::new(WorkoutId(id.clone()), sport, profile, config);
            let mut commands = journal.iter().peekable();
            let replay = |w: &mut Workout, cmd: &(i64, i64, String)| -> Result<()> {
                let j: Journal = serde_json::from_str(&cmd.2).map_err(corrupt)?;
                let at = Timestamp(cmd.1);
                let r = match j {
                    Journal::Start => w.start(at),
                    Journal::Pause => w.pause(at),
                    Journal::Resume => w.resume(at),
                    Journal::Lap => w.lap(at),
                    Journal::Cancel => w.cancel(at),
                };
                // Auto-pause may already have put the workout where a command takes it.
                match r {
                    Ok(()) | Err(WorkoutError::InvalidTransition { .. }) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            };
            for s in &samples {
                while let Some(cmd) = commands.next_if(|c| c.1 <= s.t.0) {
                    replay(&mut w, cmd)?;
                }
                let _ = w.record(*s);
            }
            for cmd in commands {
                replay(&mut w, cmd)?;
            }
            w.take_samples();
            // The replay's events (a start, past alerts) were raised before the crash; the app
            // must not hear them again as new.
            let _ = w.take_events();
            // NULL: recorded by a build before v5, or never flushed; the replay's counts stand.
            if let Some(json) = rejected {
                let saved: crate::workout::RejectedCounts =
                    serde_json::from_str(&json).map_err(corrupt)?;
                w.restore_rejected(&saved);
            }
            let now = clock.now();
            let mut r = Recording::new(store.clone(), clock.clone(), w, now);
            r.saved_rejected = r.workout.report().total_rejected();
            r.journal_seq = journal.last().map_or(0, |c| c.0 + 1);
            for (ch, max, open_from) in chunk_seqs {
                if let Some(i) = usize::try_from(ch).ok().filter(|i| *i < r.seq.len()) {
                    r.seq[i] = max + 1;
                    r.compact_from[i] = open_from;
                }
            }
            // The recording may have outlived the 24-hour limit while the app was dead.
            if r.workout.tick(now) {
                match r.settle(Err::<(), _>(WorkoutError::TimeLimitReached)) {
                    Err(Error::Workout(WorkoutError::TimeLimitReached)) => {}
                    other => other?,
                }
            }
            out.push(r);
        }
        Ok(out)
    }
}

impl SampleSink for Recording {
    fn record(&mut self, sample: Sample) -> std::result::Result<Verdict, WorkoutError> {
        match Recording::record(self, sample) {
            Ok(v) => Ok(v),
            Err(Error::Workout(e)) => Err(e),
            // A storage failure must not look like a refused sample; the workout keeps the
            // sample in memory and the next flush retries.
            Err(_) => Ok(Verdict::Accepted),
        }
    }
}

/// Merges the chunks of each channel from `from[ch]` up to `seq[ch]` into one chunk.
fn compact_chunks(
    tx: &rusqlite::Transaction<'_>,
    key: Option<&crate::crypto::StorageKey>,
    id: &str,
    seq: &[i64],
    from: &mut [i64],
) -> Result<()> {
    for ch in Channel::ALL {
        let i = ch.index();
        if seq[i] - from[i] < 2 {
            continue;
        }
        let samples = get_range(tx, key, id, ch, from[i], seq[i])?;
        tx.execute(
            "DELETE FROM sample_chunks WHERE workout_id = ?1 AND channel = ?2 AND seq >= ?3 AND seq < ?4",
            params![id, ch.index() as i64, from[i], seq[i]],
        )?;
        // The merged chunk takes the first slot and keeps growing at each compaction until it
        // is full size; then it is left alone and the next stretch starts after it. So a day of
        // recording ends as full-size chunks, and each compaction re-encodes at most one.
        put_chunk(tx, key, id, ch, from[i], &samples)?;
        if samples.len() >= crate::store::CHUNK_SAMPLES {
            from[i] = seq[i];
        }
    }
    Ok(())
}

fn get_range(
    tx: &rusqlite::Transaction<'_>,
    key: Option<&crate::crypto::StorageKey>,
    id: &str,
    ch: Channel,
    from: i64,
    to: i64,
) -> Result<Vec<Sample>> {
    crate::store::get_chunk_range(tx, key, id, ch, from, to)
}
