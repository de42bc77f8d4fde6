//! Power: 1 Hz resampling, average, normalized power, intensity factor, TSS, best powers.
//!
//! Normalized power (Coggan, in Allen & Coggan, "Training and Racing with a Power Meter", 2nd
//! ed. 2010): "starting at the 30 s mark", the 30 s rolling average of 1 s power, raised to the
//! fourth power, averaged, and the fourth root taken. The 1 s series is the timer's running
//! seconds. A rolling average is an average of the preceding 30 s of riding, so it does not
//! reach across a stretch without power data longer than its own 30 s (a stop with the timer
//! paused, a meter that dropped out): the riding after such a gap starts its own 30 s mark.
//! Across a shorter gap (a two-second pause at a light) the window runs on over the recorded
//! seconds as if the gap were not there. A window across a long stop would average efforts
//! minutes apart that no 30 s of the ride ever held; on a stop-and-go ride it lowers NP by
//! 2 % and TSS, which squares it, by 4 % (the ELEMNT file of the accuracy table).
//! IF = NP / FTP. TSS = (t x NP x IF) / (FTP x 3600) x 100 with t the timer time.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Best-power windows for cycling (s).
pub const BEST_POWER_WINDOWS_S: [(usize, &str); 5] = [
    (5, "5s"),
    (60, "1min"),
    (300, "5min"),
    (1200, "20min"),
    (3600, "60min"),
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestPower {
    pub name: String,
    pub duration_s: f64,
    pub watts: f64,
}

/// Averages time-weighted intervals into whole-second bins and hands each finished bin on.
#[derive(Clone, Debug, Default)]
pub struct SecondBins {
    current: Option<i64>,
    sum: f64,
    weight: f64,
}

impl SecondBins {
    /// Adds `[a, b)` (ms) at value `v`; `out(second, bin_mean)` for every bin finished.
    pub fn add(&mut self, a: i64, b: i64, v: f64, out: &mut impl FnMut(i64, f64)) {
        let mut lo = a;
        while lo < b {
            let sec = lo.div_euclid(1000);
            let hi = ((sec + 1) * 1000).min(b);
            if self.current != Some(sec) {
                self.finish(out);
                self.current = Some(sec);
            }
            let w = (hi - lo) as f64;
            self.sum += v * w;
            self.weight += w;
            lo = hi;
        }
    }

    pub fn finish(&mut self, out: &mut impl FnMut(i64, f64)) {
        if let (true, Some(sec)) = (self.weight > 0.0, self.current) {
            out(sec, self.sum / self.weight);
        }
        self.sum = 0.0;
        self.weight = 0.0;
        self.current = None;
    }

    /// The mean of the unfinished bin, if any.
    pub fn pending(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| self.sum / self.weight)
    }
}

#[derive(Clone, Debug)]
pub struct Power {
    bins: SecondBins,
    /// Joules over timer time.
    pub work_j: f64,
    pub seconds: f64,
    pub max_w: Option<f64>,
    ring: VecDeque<f64>,
    window_sums: [f64; BEST_POWER_WINDOWS_S.len()],
    best: [Option<f64>; BEST_POWER_WINDOWS_S.len()],
    np_sum4: f64,
    np_count: u64,
    /// Seconds of power since the last gap longer than the NP window.
    np_run: usize,
    last_sec: Option<i64>,
    bins_seen: u64,
}

impl Default for Power {
    fn default() -> Self {
        Self {
            bins: SecondBins::default(),
            work_j: 0.0,
            seconds: 0.0,
            max_w: None,
            ring: VecDeque::with_capacity(3601),
            window_sums: [0.0; BEST_POWER_WINDOWS_S.len()],
            best: [None; BEST_POWER_WINDOWS_S.len()],
            np_sum4: 0.0,
            np_count: 0,
            np_run: 0,
            last_sec: None,
            bins_seen: 0,
        }
    }
}

const NP_WINDOW: usize = 30;
/// The longest gap (s) between two seconds of power that a rolling NP window reaches across:
/// the window's own length.
const NP_MAX_GAP_S: i64 = NP_WINDOW as i64;
const RING: usize = 3600;

impl Power {
    pub fn interval(&mut self, a: i64, b: i64, w: f64) {
        let secs = (b - a) as f64 / 1000.0;
        self.work_j += w * secs;
        self.seconds += secs;
        let mut bins = std::mem::take(&mut self.bins);
        bins.add(a, b, w, &mut |sec, m| self.bin(sec, m));
        self.bins = bins;
    }

    pub fn peak(&mut self, w: f64) {
        self.max_w = Some(self.max_w.map_or(w, |m| m.max(w)));
    }

    fn bin(&mut self, sec: i64, w: f64) {
        self.bins_seen += 1;
        // Seconds 1 apart are consecutive: a gap of g seconds skips g - 1 of them.
        if self.last_sec.is_some_and(|p| sec - p - 1 > NP_MAX_GAP_S) {
            self.np_run = 0;
        }
        self.last_sec = Some(sec);
        self.np_run += 1;
        self.ring.push_back(w);
        let n = self.ring.len();
        for (k, &(len, _)) in BEST_POWER_WINDOWS_S.iter().enumerate() {
            self.window_sums[k] += w;
            if n > len {
                self.window_sums[k] -= self.ring[n - 1 - len];
            }
            if n >= len {
                let avg = self.window_sums[k] / len as f64;
                if self.best[k].is_none_or(|b| avg > b) {
                    self.best[k] = Some(avg);
                }
            }
        }
        if self.np_run >= NP_WINDOW {
            let rolling: f64 = self.ring.iter().rev().take(NP_WINDOW).sum::<f64>() / 30.0;
            self.np_sum4 += rolling.powi(4);
            self.np_count += 1;
        }
        if self.ring.len() > RING {
            self.ring.pop_front();
        }
    }

    /// Closes the last partial second (at completion).
    pub fn finish(&mut self) {
        let mut bins = std::mem::take(&mut self.bins);
        bins.finish(&mut |sec, m| self.bin(sec, m));
        self.bins = bins;
    }

    pub fn average_w(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.work_j / self.seconds)
    }

    pub fn normalized_w(&self) -> Option<f64> {
        (self.np_count > 0).then(|| (self.np_sum4 / self.np_count as f64).powf(0.25))
    }

    pub fn best_powers(&self) -> Vec<BestPower> {
        BEST_POWER_WINDOWS_S
            .iter()
            .zip(self.best)
            .filter_map(|(&(len, name), b)| {
                b.map(|w| BestPower {
                    name: name.to_string(),
                    duration_s: len as f64,
                    watts: w,
                })
            })
            .collect()
    }
}

pub fn intensity_factor(np: f64, ftp: f64) -> f64 {
    np / ftp
}

pub fn tss(timer_s: f64, np: f64, ftp: f64) -> f64 {
    let f = intensity_factor(np, ftp);
    timer_s * np * f / (ftp * 3600.0) * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tss_of_one_hour_at_ftp_is_100() {
        assert!((tss(3600.0, 250.0, 250.0) - 100.0).abs() < 1e-9);
    }

    #[test]
    fn steady_power_has_np_equal_to_average() {
        let mut p = Power::default();
        for s in 0..600 {
            p.interval(s * 1000, (s + 1) * 1000, 200.0);
        }
        p.finish();
        assert!((p.average_w().unwrap() - 200.0).abs() < 1e-9);
        assert!((p.normalized_w().unwrap() - 200.0).abs() < 1e-9);
        let b = p.best_powers();
        assert_eq!(b.len(), 3); // 5 s, 1 min, 5 min
        assert!(b.iter().all(|b| (b.watts - 200.0).abs() < 1e-9));
    }

    #[test]
    fn variable_power_has_np_above_average() {
        let mut p = Power::default();
        for s in 0..1200 {
            // 60 s at 300 W, 60 s at 100 W
            let w = if (s / 60) % 2 == 0 { 300.0 } else { 100.0 };
            p.interval(s * 1000, (s + 1) * 1000, w);
        }
        p.finish();
        let np = p.normalized_w().unwrap();
        assert!((p.average_w().unwrap() - 200.0).abs() < 1e-9);
        assert!(np > 220.0 && np < 260.0, "{np}");
        let best5 = &p.best_powers()[0];
        assert_eq!(best5.watts, 300.0);
    }

    #[test]
    fn four_hz_samples_average_into_one_second_bins() {
        let mut bins = SecondBins::default();
        let mut out = vec![];
        for q in 0..8 {
            let w = if q % 2 == 0 { 100.0 } else { 300.0 };
            bins.add(q * 250, (q + 1) * 250, w, &mut |sec, m| out.push((sec, m)));
        }
        bins.finish(&mut |sec, m| out.push((sec, m)));
        assert_eq!(out, vec![(0, 200.0), (1, 200.0)]);
    }

    /// 60 s at 300 W, a gap of `gap_s` seconds without power, 60 s at 100 W.
    fn two_efforts(gap_s: i64) -> Power {
        let mut p = Power::default();
        for s in 0..60 {
            p.interval(s * 1000, (s + 1) * 1000, 300.0);
        }
        for s in 60 + gap_s..120 + gap_s {
            p.interval(s * 1000, (s + 1) * 1000, 100.0);
        }
        p.finish();
        p
    }

    #[test]
    fn the_np_window_reaches_across_a_gap_of_its_own_length_only() {
        // Within 30 s the windows run on as if the gap were not there: 91 windows, 29 of them
        // mixing the two efforts.
        let within = two_efforts(NP_MAX_GAP_S);
        let none = two_efforts(0);
        assert_eq!(within.np_count, 91);
        assert_eq!(within.normalized_w(), none.normalized_w());
        // One second more and each effort is its own series: 31 + 31 full windows, none mixed.
        let beyond = two_efforts(NP_MAX_GAP_S + 1);
        assert_eq!(beyond.np_count, 62);
        let expect = ((31.0 * 300f64.powi(4) + 31.0 * 100f64.powi(4)) / 62.0).powf(0.25);
        assert!((beyond.normalized_w().unwrap() - expect).abs() < 1e-9);
        // Best powers still look across the gap (the same 120 s of bins).
        assert_eq!(beyond.best_powers().len(), none.best_powers().len());
    }
}
