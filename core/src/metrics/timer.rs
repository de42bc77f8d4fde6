//! The timer: when the workout clock was running. Pauses (manual or automatic) stop it.

use serde::{Deserialize, Serialize};

/// Transitions of the timer, in time order: `(ms, running)`. The first is the start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TimerLog {
    transitions: Vec<(i64, bool)>,
    /// Running time accumulated before each transition (ms), so timer time is O(1) for recent t.
    cumulative: Vec<i64>,
}

impl TimerLog {
    pub fn new(start_ms: i64) -> Self {
        Self {
            transitions: vec![(start_ms, true)],
            cumulative: vec![0],
        }
    }

    pub fn start_ms(&self) -> Option<i64> {
        self.transitions.first().map(|t| t.0)
    }

    pub fn running(&self) -> bool {
        self.transitions.last().is_some_and(|t| t.1)
    }

    /// Records a change; a repeat of the current state or a step back in time is ignored
    /// (the aggregate refuses those before they get here).
    pub fn set(&mut self, at_ms: i64, running: bool) {
        match self.transitions.last() {
            Some(&(t, r)) if r == running || at_ms < t => {}
            Some(&(t, r)) => {
                let before = self.cumulative.last().copied().unwrap_or(0);
                self.cumulative.push(before + if r { at_ms - t } else { 0 });
                self.transitions.push((at_ms, running));
            }
            None => {
                self.cumulative.push(0);
                self.transitions.push((at_ms, running));
            }
        }
    }

    pub fn transitions(&self) -> &[(i64, bool)] {
        &self.transitions
    }

    pub fn is_active(&self, t: i64) -> bool {
        // Scan from the end: queries are almost always about the present.
        for &(at, running) in self.transitions.iter().rev() {
            if t >= at {
                return running;
            }
        }
        false
    }

    /// Calls `f(from, to)` for every running part of `[a, b)`, in order.
    pub fn for_each_active(&self, a: i64, b: i64, mut f: impl FnMut(i64, i64)) {
        if b <= a {
            return;
        }
        // Find the first transition at or before `a`, scanning from the end.
        let n = self.transitions.len();
        let mut i = n;
        while i > 0 && self.transitions[i - 1].0 > a {
            i -= 1;
        }
        // Segment k spans [transitions[k].0, transitions[k+1].0).
        let mut k = i.saturating_sub(1);
        if i == 0 {
            // `a` is before the start; begin with the first segment.
            k = 0;
        }
        while k < n {
            let (seg_start, running) = self.transitions[k];
            let seg_end = self.transitions.get(k + 1).map_or(i64::MAX, |t| t.0);
            if seg_start >= b {
                break;
            }
            let lo = seg_start.max(a);
            let hi = seg_end.min(b);
            if running && hi > lo {
                f(lo, hi);
            }
            k += 1;
        }
    }

    pub fn active_ms(&self, a: i64, b: i64) -> i64 {
        let mut total = 0;
        self.for_each_active(a, b, |lo, hi| total += hi - lo);
        total
    }

    /// Timer time from the start to `end`.
    pub fn timer_ms(&self, end: i64) -> i64 {
        for (k, &(at, running)) in self.transitions.iter().enumerate().rev() {
            if end >= at {
                return self.cumulative[k] + if running { end - at } else { 0 };
            }
        }
        0
    }
}

/// Sample-and-hold time weighting: each value holds until the next sample of its channel, for
/// at most `cap_ms` (a longer silence is a gap, not a reading), and only while the timer runs.
#[derive(Clone, Debug)]
pub struct Held {
    cap_ms: i64,
    last: Option<(i64, f64)>,
}

impl Held {
    pub fn new(cap_ms: i64) -> Self {
        Self { cap_ms, last: None }
    }

    pub fn last(&self) -> Option<(i64, f64)> {
        self.last
    }

    /// Feeds a new value at `t`; `f(from, to, value)` receives the running intervals over which
    /// the previous value held.
    pub fn push(&mut self, t: i64, v: f64, timer: &TimerLog, f: impl FnMut(i64, i64, f64)) {
        self.flush(t, timer, f);
        self.last = Some((t, v));
    }

    /// Closes the hold of the last value at `end` without a new value.
    pub fn flush(&mut self, end: i64, timer: &TimerLog, mut f: impl FnMut(i64, i64, f64)) {
        if let Some((pt, pv)) = self.last {
            let to = end.min(pt + self.cap_ms);
            timer.for_each_active(pt, to, |a, b| f(a, b, pv));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> TimerLog {
        let mut l = TimerLog::new(0);
        l.set(10_000, false);
        l.set(20_000, true);
        l
    }

    #[test]
    fn active_overlap() {
        let l = log();
        assert_eq!(l.active_ms(0, 30_000), 20_000);
        assert_eq!(l.active_ms(5_000, 25_000), 10_000);
        assert_eq!(l.active_ms(12_000, 18_000), 0);
        assert_eq!(l.active_ms(-5_000, 5_000), 5_000);
        assert_eq!(l.timer_ms(30_000), 20_000);
        assert_eq!(l.timer_ms(15_000), 10_000);
        assert_eq!(l.timer_ms(5_000), 5_000);
        assert_eq!(l.timer_ms(-5), 0);
        assert!(l.is_active(9_999) && !l.is_active(10_000) && l.is_active(20_000));
        assert!(!l.is_active(-1));
    }

    #[test]
    fn held_values_stop_at_cap_and_pauses() {
        let l = log();
        let mut h = Held::new(5_000);
        let mut got = vec![];
        h.push(8_000, 1.0, &l, |a, b, v| got.push((a, b, v)));
        h.push(9_000, 2.0, &l, |a, b, v| got.push((a, b, v)));
        h.push(30_000, 3.0, &l, |a, b, v| got.push((a, b, v)));
        assert_eq!(got, vec![(8_000, 9_000, 1.0), (9_000, 10_000, 2.0)]);
    }
}
