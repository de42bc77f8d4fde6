//! Elevation gain and loss.
//!
//! Raw altitude is noisy (GPS: metres of jitter; barometric: fractions of a metre plus drift),
//! and summing every rise would count the noise as climbing. Two steps:
//! 1. smoothing: an exponential moving average in time with time constant [`SMOOTHING_S`];
//! 2. hysteresis: a climb or descent is counted only once the smoothed altitude has moved more
//!    than the threshold from the last turning point; a smaller wobble counts for nothing.
//!
//! This is the usual approach of GPS analysis software (e.g. GoldenCheetah's elevation
//! hysteresis, Strava's thresholded gain); thresholds differ by source because GPS altitude is
//! several times noisier than barometric altitude. Barometric altitude is preferred whenever
//! the workout has it.

use crate::sample::AltitudeSource;

pub const SMOOTHING_S: f64 = 5.0;
pub const BAROMETRIC_THRESHOLD_M: f64 = 2.0;
pub const GPS_THRESHOLD_M: f64 = 5.0;

#[derive(Clone, Debug)]
pub struct Elevation {
    threshold: f64,
    smoothed: Option<(i64, f64)>,
    /// The last turning point (where the current climb or descent began).
    reference: Option<f64>,
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
            reference: None,
            gain: 0.0,
            loss: 0.0,
            min_m: None,
            max_m: None,
            samples: 0,
        }
    }

    /// Feeds one altitude at `t` (ms); `active` says whether the timer runs, since climbing
    /// while paused does not count (the smoothing still follows the altitude).
    pub fn push(&mut self, t: i64, m: f64, active: bool) {
        self.samples += 1;
        let s = match self.smoothed {
            None => m,
            Some((pt, ps)) => {
                let dt = ((t - pt) as f64 / 1000.0).max(0.0);
                let alpha = 1.0 - (-dt / SMOOTHING_S).exp();
                ps + alpha * (m - ps)
            }
        };
        self.smoothed = Some((t, s));
        self.min_m = Some(self.min_m.map_or(s, |v| v.min(s)));
        self.max_m = Some(self.max_m.map_or(s, |v| v.max(s)));
        let Some(r) = self.reference else {
            self.reference = Some(s);
            return;
        };
        if !active {
            // A paused stretch moves the reference without counting.
            self.reference = Some(s);
            return;
        }
        if s - r > self.threshold {
            self.gain += s - r;
            self.reference = Some(s);
        } else if r - s > self.threshold {
            self.loss += r - s;
            self.reference = Some(s);
        }
    }

    pub fn gain_m(&self) -> f64 {
        self.gain
    }

    pub fn loss_m(&self) -> f64 {
        self.loss
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_below_threshold_is_not_climbing() {
        let mut e = Elevation::new(AltitudeSource::Barometric);
        for i in 0..600 {
            let wobble = if i % 2 == 0 { 0.9 } else { -0.9 };
            e.push(i * 1000, 100.0 + wobble, true);
        }
        assert_eq!(e.gain_m(), 0.0);
        assert_eq!(e.loss_m(), 0.0);
    }

    #[test]
    fn a_steady_climb_and_descent_are_counted() {
        let mut e = Elevation::new(AltitudeSource::Gps);
        let mut t = 0;
        for i in 0..=500 {
            e.push(t, 100.0 + f64::from(i) * 0.2, true); // +100 m
            t += 1000;
        }
        for i in 0..=500 {
            e.push(t, 200.0 - f64::from(i) * 0.2, true); // -100 m
            t += 1000;
        }
        for _ in 0..60 {
            e.push(t, 100.0, true);
            t += 1000;
        }
        assert!((e.gain_m() - 100.0).abs() < 6.0, "{}", e.gain_m());
        assert!((e.loss_m() - 100.0).abs() < 6.0, "{}", e.loss_m());
    }

    #[test]
    fn paused_climbing_is_not_counted() {
        let mut e = Elevation::new(AltitudeSource::Barometric);
        for i in 0..=100 {
            e.push(i * 1000, 100.0 + f64::from(i as i32), false);
        }
        assert_eq!(e.gain_m(), 0.0);
    }
}
