//! The GPS track filter and geodesic distance.
//!
//! Fixes arrive already judged one by one ([`crate::validation`]); here they are judged against
//! their neighbours. A fix that implies a speed faster than the sport allows is held back for one
//! fix: if the next fix agrees with the held one and not with the track, the athlete really is
//! somewhere else (a tunnel, a lost fix, a train): a **jump**, and the track goes on from the new
//! place in a new segment without counting the leap. Otherwise the held fix was a lone
//! **outlier** and is dropped from distance. Both are counted in the validation report.
//!
//! Distances are geodesics on the WGS-84 ellipsoid (Karney 2013, "Algorithms for geodesics",
//! J. Geodesy 87:43-55, through the `geo` crate's `Geodesic`), not great circles: the
//! spherical error reaches 0.5 %.

use geo::{Distance, Geodesic, Point};

use crate::validation::Reason;

pub fn geodesic_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    Geodesic.distance(Point::new(a.1, a.0), Point::new(b.1, b.0))
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fix {
    pub t: i64,
    pub lat: f64,
    pub lon: f64,
}

/// What the filter decided about earlier fixes once it could.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TrackEvent {
    /// A step along the track: the distance from the previous kept fix.
    Step { from: Fix, to: Fix, metres: f64 },
    /// A fix kept out of distance, and why.
    Excluded { fix: Fix, why: Reason },
    /// A new segment begins at `at` (after a jump); no distance is counted to reach it.
    NewSegment { at: Fix },
}

#[derive(Clone, Debug)]
pub struct TrackFilter {
    max_speed_mps: f64,
    last: Option<Fix>,
    pending: Option<Fix>,
}

/// Fixes closer in time than this are judged on a 1 s baseline, so that two fixes in the same
/// second do not imply an infinite speed.
const MIN_DT_S: f64 = 1.0;
/// GPS positions wander by a few metres even when standing still; a move shorter than this is
/// never called impossible.
const NOISE_M: f64 = 20.0;

impl TrackFilter {
    pub fn new(max_speed_mps: f64) -> Self {
        Self {
            max_speed_mps,
            last: None,
            pending: None,
        }
    }

    fn plausible(&self, a: Fix, b: Fix) -> (bool, f64) {
        let d = geodesic_m((a.lat, a.lon), (b.lat, b.lon));
        let dt = ((b.t - a.t) as f64 / 1000.0).max(MIN_DT_S);
        (d <= NOISE_M || d / dt <= self.max_speed_mps, d)
    }

    pub fn push(&mut self, fix: Fix, out: &mut impl FnMut(TrackEvent)) {
        let Some(last) = self.last else {
            self.last = Some(fix);
            out(TrackEvent::NewSegment { at: fix });
            return;
        };
        if let Some(held) = self.pending.take() {
            let (from_last, d_last) = self.plausible(last, fix);
            let (from_held, d_held) = self.plausible(held, fix);
            if from_held && !from_last {
                // The held fix was right: the athlete jumped.
                out(TrackEvent::Excluded {
                    fix: held,
                    why: Reason::Jump,
                });
                out(TrackEvent::NewSegment { at: held });
                out(TrackEvent::Step {
                    from: held,
                    to: fix,
                    metres: d_held,
                });
                self.last = Some(fix);
                return;
            }
            out(TrackEvent::Excluded {
                fix: held,
                why: Reason::ImpossibleSpeed,
            });
            if from_last {
                out(TrackEvent::Step {
                    from: last,
                    to: fix,
                    metres: d_last,
                });
                self.last = Some(fix);
            } else {
                self.pending = Some(fix);
            }
            return;
        }
        let (ok, d) = self.plausible(last, fix);
        if ok {
            out(TrackEvent::Step {
                from: last,
                to: fix,
                metres: d,
            });
            self.last = Some(fix);
        } else {
            self.pending = Some(fix);
        }
    }

    /// At the end a still-held fix has no witness: it is treated as an outlier.
    pub fn finish(&mut self, out: &mut impl FnMut(TrackEvent)) {
        if let Some(held) = self.pending.take() {
            out(TrackEvent::Excluded {
                fix: held,
                why: Reason::ImpossibleSpeed,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(fixes: &[(i64, f64, f64)]) -> (f64, Vec<Reason>, usize) {
        let mut f = TrackFilter::new(12.5);
        let mut dist = 0.0;
        let mut excluded = vec![];
        let mut segments = 0;
        let mut out = |e| match e {
            TrackEvent::Step { metres, .. } => dist += metres,
            TrackEvent::Excluded { why, .. } => excluded.push(why),
            TrackEvent::NewSegment { .. } => segments += 1,
        };
        for &(t, lat, lon) in fixes {
            f.push(
                Fix {
                    t: t * 1000,
                    lat,
                    lon,
                },
                &mut out,
            );
        }
        f.finish(&mut out);
        (dist, excluded, segments)
    }

    #[test]
    fn geodesic_matches_reference() {
        // One degree of latitude at the equator on WGS-84 is 110,574.4 m.
        let d = geodesic_m((0.0, 10.0), (1.0, 10.0));
        assert!((d - 110_574.4).abs() < 0.5, "{d}");
    }

    #[test]
    fn lone_spike_is_an_outlier() {
        // ~3.3 m/s eastwards at the equator, one fix thrown 1 km north.
        let step = 3.0e-5;
        let (d, ex, seg) = run(&[
            (0, 0.001, 0.0),
            (1, 0.001, step),
            (2, 0.010, 2.0 * step),
            (3, 0.001, 3.0 * step),
        ]);
        assert_eq!(ex, vec![Reason::ImpossibleSpeed]);
        assert_eq!(seg, 1);
        assert!((d - 3.0 * 3.34).abs() < 0.1, "{d}");
    }

    #[test]
    fn consistent_jump_starts_a_new_segment() {
        let step = 3.0e-5;
        let (d, ex, seg) = run(&[
            (0, 0.001, 0.0),
            (1, 0.001, step),
            (2, 0.101, step),
            (3, 0.101, 2.0 * step),
            (4, 0.101, 3.0 * step),
        ]);
        assert_eq!(ex, vec![Reason::Jump]);
        assert_eq!(seg, 2);
        assert!((d - 3.0 * 3.34).abs() < 0.1, "{d}");
    }

    #[test]
    fn speed_just_inside_and_outside_the_limit() {
        // 12.4 m/s is kept, 12.6 m/s (held, then refuted) is not. 1e-4 deg lon ~ 11.13 m.
        let m_per_deg = geodesic_m((0.0, 0.0), (0.0, 1.0));
        let deg = |m: f64| m / m_per_deg;
        let (_, ex, _) = run(&[(0, 0.0, 0.1), (2, 0.0, 0.1 + deg(24.8))]);
        assert!(ex.is_empty());
        let (_, ex, _) = run(&[(0, 0.0, 0.1), (2, 0.0, 0.1 + deg(25.2)), (3, 0.0, 0.1)]);
        assert_eq!(ex, vec![Reason::ImpossibleSpeed]);
    }
}
