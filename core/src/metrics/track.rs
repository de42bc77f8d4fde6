//! A cumulative-distance track from one source (distance sensor, speed integral or GPS), with
//! everything derived from distance over timer time: splits, best efforts, moving time and the
//! speed statistics the energy models need.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Running best-effort distances (m): 400 m, 1 km, 1 mile, 5 km, 10 km, half and full marathon.
pub const BEST_EFFORT_DISTANCES_M: [(f64, &str); 7] = [
    (400.0, "400m"),
    (1000.0, "1km"),
    (1609.344, "1mile"),
    (5000.0, "5km"),
    (10_000.0, "10km"),
    (21_097.5, "half_marathon"),
    (42_195.0, "marathon"),
];

/// The preferred walk-to-run transition speed of adults, ~2.0 m/s (Hreljac 1993, J. Biomech.
/// 26:63-69); decides which ACSM equation (walking or running) applies to a stretch.
pub const WALK_RUN_MPS: f64 = 2.0;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Split {
    /// 1-based index of the km or mile.
    pub index: u32,
    pub distance_m: f64,
    /// Timer time spent on this split.
    pub duration_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestEffort {
    pub name: String,
    pub distance_m: f64,
    pub duration_s: f64,
}

#[derive(Clone, Debug)]
struct EffortWindow {
    distance: f64,
    left: u64,
    best: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct Track {
    moving_threshold: f64,
    total: f64,
    /// (timer seconds, cumulative distance) at the last point.
    last: Option<(f64, f64)>,
    points: VecDeque<(f64, f64)>,
    /// Global index of `points[0]`.
    base: u64,
    efforts: Vec<EffortWindow>,
    km_splits: Vec<Split>,
    mile_splits: Vec<Split>,
    pub moving_s: f64,
    pub walk_m: f64,
    pub run_m: f64,
    /// Integral of v^3 dt over timer time (m^3/s^2), for aerodynamic drag work.
    pub v3_integral: f64,
    pub max_speed_mps: f64,
    /// (timer seconds, cumulative distance) over the last few seconds: the maximum speed is
    /// taken over at least [`MAX_SPEED_WINDOW_S`], however often points come.
    speed_window: VecDeque<(f64, f64)>,
    pub current_speed_mps: f64,
    pub points_seen: u64,
}

/// A single 1 s step of GPS is too noisy for a maximum; a maximum needs this much support.
const MAX_SPEED_WINDOW_S: f64 = 3.0;

impl Track {
    pub fn new(moving_threshold: f64) -> Self {
        Self {
            moving_threshold,
            total: 0.0,
            last: None,
            points: VecDeque::new(),
            base: 0,
            efforts: BEST_EFFORT_DISTANCES_M
                .iter()
                .map(|&(d, _)| EffortWindow {
                    distance: d,
                    left: 0,
                    best: None,
                })
                .collect(),
            km_splits: vec![],
            mile_splits: vec![],
            moving_s: 0.0,
            walk_m: 0.0,
            run_m: 0.0,
            v3_integral: 0.0,
            max_speed_mps: 0.0,
            speed_window: VecDeque::new(),
            current_speed_mps: 0.0,
            points_seen: 0,
        }
    }

    pub fn total_m(&self) -> f64 {
        self.total
    }

    /// Adds `delta` metres covered, ending at timer time `timer_s`.
    pub fn advance(&mut self, timer_s: f64, delta: f64) {
        let delta = delta.max(0.0);
        self.points_seen += 1;
        let prev_total = self.total;
        self.total += delta;
        if let Some((pt, _)) = self.last {
            let dt = timer_s - pt;
            if dt > 0.0 {
                let v = delta / dt;
                self.current_speed_mps = v;
                if v >= self.moving_threshold {
                    self.moving_s += dt;
                }
                if v < WALK_RUN_MPS {
                    self.walk_m += delta;
                } else {
                    self.run_m += delta;
                }
                self.v3_integral += v * v * v * dt;
            } else {
                self.walk_m += delta;
            }
            self.splits(pt, prev_total, timer_s);
        } else {
            self.walk_m += delta;
        }
        self.last = Some((timer_s, self.total));
        // Keep the latest point at least the window back, and everything after it.
        self.speed_window.push_back((timer_s, self.total));
        while self
            .speed_window
            .get(1)
            .is_some_and(|p| p.0 <= timer_s - MAX_SPEED_WINDOW_S)
        {
            self.speed_window.pop_front();
        }
        if let Some(&(t0, d0)) = self.speed_window.front() {
            let dt = timer_s - t0;
            if dt >= MAX_SPEED_WINDOW_S {
                self.max_speed_mps = self.max_speed_mps.max((self.total - d0) / dt);
            }
        }
        // Standing still adds nothing an effort could end on, and as a start the latest of equal
        // points is the best: replace instead of growing (bounds memory on long stops).
        let len = self.points.len();
        if let Some(back) = self.points.back_mut() {
            if back.1 == self.total && len > 1 {
                back.0 = timer_s;
                return;
            }
        }
        self.points.push_back((timer_s, self.total));
        self.efforts_step();
    }

    fn splits(&mut self, pt: f64, prev_total: f64, t: f64) {
        for (unit, list) in [
            (1000.0, &mut self.km_splits),
            (1609.344, &mut self.mile_splits),
        ] {
            let mut next = (list.len() as f64 + 1.0) * unit;
            while self.total >= next && self.total > prev_total {
                let frac = (next - prev_total) / (self.total - prev_total);
                let at = pt + (t - pt) * frac;
                let started: f64 = list.iter().map(|s| s.duration_s).sum();
                list.push(Split {
                    index: list.len() as u32 + 1,
                    distance_m: unit,
                    duration_s: at - started,
                });
                next += unit;
            }
        }
    }

    fn efforts_step(&mut self) {
        let i = self.base + self.points.len() as u64 - 1;
        let (ti, di) = self.points[(i - self.base) as usize];
        for w in &mut self.efforts {
            if di - self.points[0].1 < w.distance {
                continue;
            }
            // Advance `left` while the next point still leaves at least `distance` to cover.
            while w.left + 1 < i {
                let next = self.points[(w.left + 1 - self.base) as usize];
                if di - next.1 >= w.distance {
                    w.left += 1;
                } else {
                    break;
                }
            }
            let (tl, dl) = self.points[(w.left - self.base) as usize];
            if di - dl < w.distance {
                continue;
            }
            let (tn, dn) = self.points[(w.left + 1 - self.base) as usize];
            let target = di - w.distance;
            let start = if dn > dl {
                tl + (tn - tl) * ((target - dl) / (dn - dl)).clamp(0.0, 1.0)
            } else {
                tl
            };
            let dur = ti - start;
            if dur > 0.0 && w.best.is_none_or(|b| dur < b) {
                w.best = Some(dur);
            }
        }
        // Points left of every window (and not needed by an unfilled one) can go.
        let keep_from = self
            .efforts
            .iter()
            .map(|w| if w.best.is_some() { w.left } else { self.base })
            .min()
            .unwrap_or(self.base);
        while self.base < keep_from && self.points.len() > 2 {
            self.points.pop_front();
            self.base += 1;
        }
    }

    pub fn km_splits(&self) -> &[Split] {
        &self.km_splits
    }

    pub fn mile_splits(&self) -> &[Split] {
        &self.mile_splits
    }

    pub fn best_efforts(&self) -> Vec<BestEffort> {
        self.efforts
            .iter()
            .zip(BEST_EFFORT_DISTANCES_M)
            .filter_map(|(w, (d, name))| {
                w.best.map(|b| BestEffort {
                    name: name.to_string(),
                    distance_m: d,
                    duration_s: b,
                })
            })
            .collect()
    }

    /// Points currently retained (bounded by the longest effort window).
    pub fn retained_points(&self) -> usize {
        self.points.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_efforts_on_steady_pace() {
        let mut t = Track::new(0.3);
        t.advance(0.0, 0.0);
        for s in 1..=3000 {
            // 4 m/s for 3000 s = 12 km
            t.advance(f64::from(s), 4.0);
        }
        assert!((t.total_m() - 12_000.0).abs() < 1e-6);
        assert_eq!(t.km_splits().len(), 12);
        assert!(t
            .km_splits()
            .iter()
            .all(|s| (s.duration_s - 250.0).abs() < 1e-6));
        assert_eq!(t.mile_splits().len(), 7);
        let e = t.best_efforts();
        let km = e.iter().find(|e| e.name == "1km").unwrap();
        assert!((km.duration_s - 250.0).abs() < 1e-6);
        let ten = e.iter().find(|e| e.name == "10km").unwrap();
        assert!((ten.duration_s - 2500.0).abs() < 1e-6);
        assert!(!e.iter().any(|e| e.name == "half_marathon"));
        assert_eq!(t.moving_s, 3000.0);
        assert!(t.retained_points() < 3002);
    }

    /// 1 Hz points (a phone's GPS) used to leave the maximum at 0: it needs 3 s of support,
    /// taken now over a window of points rather than from one step.
    #[test]
    fn max_speed_over_three_seconds_at_one_hertz() {
        let mut t = Track::new(0.3);
        t.advance(0.0, 0.0);
        for s in 1..=10 {
            t.advance(f64::from(s), 4.0);
        }
        assert!((t.max_speed_mps - 4.0).abs() < 1e-9, "{}", t.max_speed_mps);
        // A one-second spike is averaged with its neighbours, not taken alone.
        t.advance(11.0, 20.0);
        assert!(
            (t.max_speed_mps - 28.0 / 3.0).abs() < 1e-9,
            "{}",
            t.max_speed_mps
        );
        // Just inside the window: 2.9 s of points is not yet a maximum.
        let mut t = Track::new(0.3);
        t.advance(0.0, 0.0);
        t.advance(1.45, 10.0);
        t.advance(2.9, 10.0);
        assert_eq!(t.max_speed_mps, 0.0);
        t.advance(3.0, 1.0);
        assert!((t.max_speed_mps - 7.0).abs() < 1e-9, "{}", t.max_speed_mps);
    }

    #[test]
    fn best_effort_finds_the_fast_stretch() {
        let mut t = Track::new(0.3);
        t.advance(0.0, 0.0);
        let mut s = 0.0;
        // 2 km slow (2 m/s), 1 km fast (5 m/s), 2 km slow.
        for (metres, speed) in [(2000.0, 2.0), (1000.0, 5.0), (2000.0, 2.0)] {
            let steps = (metres / speed) as i32;
            for _ in 0..steps {
                s += 1.0;
                t.advance(s, speed);
            }
        }
        let km = t
            .best_efforts()
            .into_iter()
            .find(|e| e.name == "1km")
            .unwrap();
        assert!((km.duration_s - 200.0).abs() < 1e-6, "{km:?}");
        let fivek = t
            .best_efforts()
            .into_iter()
            .find(|e| e.name == "5km")
            .unwrap();
        assert!((fivek.duration_s - 2200.0).abs() < 1e-6);
    }
}
