//! Elevation gain and loss.
//!
//! Raw altitude is noisy (GPS: metres of jitter; barometric: fractions of a metre plus drift),
//! and summing every rise would count the noise as climbing. Two steps:
//! 1. smoothing: an exponential moving average in time with time constant [`SMOOTHING_S`];
//! 2. hysteresis: the smoothed altitude is split into alternating climbs and descents at its
//!    turning points, and a climb (descent) counts, whole, from its lowest (highest) point to
//!    its highest (lowest) once it is larger than the threshold; a smaller wobble counts for
//!    nothing. This is the two-threshold switch of a Schmitt trigger (O. H. Schmitt, "A
//!    thermionic trigger", J. Sci. Instrum. 15:24-26, 1938) applied to altitude: the state
//!    (climbing or descending) changes only when the signal moves back by more than the
//!    threshold from its extreme, so noise smaller than the threshold cannot toggle it. A
//!    simpler dead-band counter (count a rise only in steps larger than the threshold) loses
//!    the last step of every climb, up to a threshold each time: on rolling terrain a
//!    quarter of the real climbing.
//!
//! Thresholds differ by source because GPS altitude is several times noisier than barometric
//! altitude (the usual practice of analysis software, e.g. GoldenCheetah's elevation
//! hysteresis). Barometric altitude is preferred whenever the workout has it.
//!
//! Only climbing while the timer runs counts. A stop (the timer not running at a sample, or
//! stopped at any moment since the previous sample) ends the current climb or descent where it
//! stood, and the next climb starts from the first altitude after the stop, with the smoothing
//! restarted there: the pressure drift of a long stop (weather, a warming device) is not
//! climbing, and a device that records nothing while paused would otherwise add the whole
//! difference across the stop.

use crate::sample::AltitudeSource;

use super::timer::TimerLog;

pub const SMOOTHING_S: f64 = 5.0;
pub const BAROMETRIC_THRESHOLD_M: f64 = 2.0;
pub const GPS_THRESHOLD_M: f64 = 5.0;

/// Where the smoothed altitude is heading.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Heading {
    /// Not yet known: the lowest and highest altitude since the last turning point.
    Unknown { lo: f64, hi: f64 },
    /// Climbing from `from` (the last low point); `top` is the highest altitude since.
    Up { from: f64, top: f64 },
    /// Descending from `from` (the last high point); `bottom` is the lowest altitude since.
    Down { from: f64, bottom: f64 },
}

#[derive(Clone, Debug)]
pub struct Elevation {
    threshold: f64,
    smoothed: Option<(i64, f64)>,
    heading: Option<Heading>,
    gain: f64,
    loss: f64,
    pub min_m: Option<f64>,
    pub max_m: Option<f64>,
    pub samples: u64,
}

impl Elevation {
    pub fn new(source: AltitudeSource) -> Self {
        Self {
            threshold: match source {
                AltitudeSource::Barometric => BAROMETRIC_THRESHOLD_M,
                AltitudeSource::Gps => GPS_THRESHOLD_M,
            },
            smoothed: None,
            heading: None,
            gain: 0.0,
            loss: 0.0,
            min_m: None,
            max_m: None,
            samples: 0,
        }
    }

    /// Feeds one altitude at `t` (ms), with the timer that says when the workout was running.
    pub fn push(&mut self, t: i64, m: f64, timer: &TimerLog) {
        self.samples += 1;
        let active = timer.is_active(t);
        let running = active
            && self
                .smoothed
                .is_none_or(|(pt, _)| t <= pt || timer.active_ms(pt, t) == t - pt);
        let s = match self.smoothed {
            Some((pt, ps)) if running => {
                let dt = ((t - pt) as f64 / 1000.0).max(0.0);
                let alpha = 1.0 - (-dt / SMOOTHING_S).exp();
                ps + alpha * (m - ps)
            }
            _ => m,
        };
        self.smoothed = Some((t, s));
        self.min_m = Some(self.min_m.map_or(s, |v| v.min(s)));
        self.max_m = Some(self.max_m.map_or(s, |v| v.max(s)));
        if !running {
            self.close();
            if active {
                self.heading = Some(Heading::Unknown { lo: s, hi: s });
            }
            return;
        }
        let th = self.threshold;
        self.heading = Some(match self.heading {
            None => Heading::Unknown { lo: s, hi: s },
            Some(Heading::Unknown { lo, hi }) => {
                let (lo, hi) = (lo.min(s), hi.max(s));
                if s - lo > th {
                    Heading::Up { from: lo, top: s }
                } else if hi - s > th {
                    Heading::Down {
                        from: hi,
                        bottom: s,
                    }
                } else {
                    Heading::Unknown { lo, hi }
                }
            }
            Some(Heading::Up { from, top }) => {
                if top - s > th {
                    self.gain += top - from;
                    Heading::Down {
                        from: top,
                        bottom: s,
                    }
                } else {
                    Heading::Up {
                        from,
                        top: top.max(s),
                    }
                }
            }
            Some(Heading::Down { from, bottom }) => {
                if s - bottom > th {
                    self.loss += from - bottom;
                    Heading::Up {
                        from: bottom,
                        top: s,
                    }
                } else {
                    Heading::Down {
                        from,
                        bottom: bottom.min(s),
                    }
                }
            }
        });
    }

    /// Ends the current climb or descent where it stands (at a stop).
    fn close(&mut self) {
        match self.heading.take() {
            Some(Heading::Up { from, top }) => self.gain += top - from,
            Some(Heading::Down { from, bottom }) => self.loss += from - bottom,
            _ => {}
        }
    }

    /// Climbing so far, including a climb still under way once it is past the threshold.
    pub fn gain_m(&self) -> f64 {
        match self.heading {
            Some(Heading::Up { from, top }) => self.gain + (top - from),
            _ => self.gain,
        }
    }

    pub fn loss_m(&self) -> f64 {
        match self.heading {
            Some(Heading::Down { from, bottom }) => self.loss + (from - bottom),
            _ => self.loss,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> TimerLog {
        TimerLog::new(0)
    }

    #[test]
    fn noise_below_threshold_is_not_climbing() {
        let mut e = Elevation::new(AltitudeSource::Barometric);
        for i in 0..600 {
            let wobble = if i % 2 == 0 { 0.9 } else { -0.9 };
            e.push(i * 1000, 100.0 + wobble, &running());
        }
        assert_eq!(e.gain_m(), 0.0);
        assert_eq!(e.loss_m(), 0.0);
    }

    #[test]
    fn a_steady_climb_and_descent_are_counted() {
        let mut e = Elevation::new(AltitudeSource::Gps);
        let mut t = 0;
        for i in 0..=500 {
            e.push(t, 100.0 + f64::from(i) * 0.2, &running()); // +100 m
            t += 1000;
        }
        for i in 0..=500 {
            e.push(t, 200.0 - f64::from(i) * 0.2, &running()); // -100 m
            t += 1000;
        }
        for _ in 0..60 {
            e.push(t, 100.0, &running());
            t += 1000;
        }
        assert!((e.gain_m() - 100.0).abs() < 6.0, "{}", e.gain_m());
        assert!((e.loss_m() - 100.0).abs() < 6.0, "{}", e.loss_m());
    }

    #[test]
    fn paused_climbing_is_not_counted() {
        let mut stopped = TimerLog::new(0);
        stopped.set(0, false);
        let mut e = Elevation::new(AltitudeSource::Barometric);
        for i in 0..=100 {
            e.push(i * 1000, 100.0 + f64::from(i as i32), &stopped);
        }
        assert_eq!(e.gain_m(), 0.0);
    }

    /// Feeds `alts` at 1 Hz without smoothing effects mattering (long flat holds between).
    fn profile(alts: &[f64]) -> Elevation {
        let mut e = Elevation::new(AltitudeSource::Barometric);
        let mut t = 0;
        for &a in alts {
            // Hold each level for a minute so the smoothing settles on it.
            for _ in 0..60 {
                e.push(t, a, &running());
                t += 1000;
            }
        }
        e
    }

    #[test]
    fn a_climb_counts_whole_once_past_the_threshold() {
        // 100 -> 102.1 -> 100: one climb of 2.1 m (just outside the 2 m threshold), counted
        // from its foot to its top, and the descent after it.
        let e = profile(&[100.0, 102.1, 100.0]);
        assert!((e.gain_m() - 2.1).abs() < 1e-3, "{}", e.gain_m());
        assert!((e.loss_m() - 2.1).abs() < 1e-3, "{}", e.loss_m());
        // Just inside: 1.9 m up and down is noise.
        let e = profile(&[100.0, 101.9, 100.0]);
        assert_eq!((e.gain_m(), e.loss_m()), (0.0, 0.0));
    }

    #[test]
    fn small_steps_of_a_long_climb_are_not_lost() {
        // Five 1.5 m steps up (each under the threshold), then down: 7.5 m of climbing. A
        // dead-band counter would count 6 m (2 x 3 m) and lose the last 1.5 m.
        let e = profile(&[100.0, 101.5, 103.0, 104.5, 106.0, 107.5, 100.0]);
        assert!((e.gain_m() - 7.5).abs() < 1e-3, "{}", e.gain_m());
        assert!((e.loss_m() - 7.5).abs() < 1e-3, "{}", e.loss_m());
    }

    #[test]
    fn a_climb_still_under_way_counts_live() {
        let e = profile(&[100.0, 105.0]);
        assert!((e.gain_m() - 5.0).abs() < 1e-3, "{}", e.gain_m());
    }

    #[test]
    fn altitude_change_across_a_stop_is_not_climbing() {
        // Climb 5 m, stop for ten minutes with nothing recorded, resume 30 m higher (pressure
        // drift), climb 5 m more: 10 m.
        let mut timer = TimerLog::new(0);
        timer.set(120_000, false);
        timer.set(720_000, true);
        let mut e = Elevation::new(AltitudeSource::Barometric);
        for i in 0..120 {
            let a = 100.0 + 5.0 * (f64::from(i) / 60.0).min(1.0);
            e.push(i64::from(i) * 1000, a, &timer);
        }
        for i in 0..120 {
            let a = 135.0 + 5.0 * (f64::from(i) / 60.0).min(1.0);
            e.push(720_000 + i64::from(i) * 1000, a, &timer);
        }
        assert!((e.gain_m() - 10.0).abs() < 0.05, "{}", e.gain_m());
    }
}
