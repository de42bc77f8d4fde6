//! Heart-rate statistics: time-weighted average, maximum, time in zones, TRIMP.

use serde::{Deserialize, Serialize};

use crate::profile::{ResolvedProfile, Sex};

/// Zone lower bounds as fractions (zone 1 starts at 50 %, zone 5 at 90 %); below zone 1 is
/// zone 0. The five-zone model of %HRmax is the one ACSM and most watches use; the same bounds
/// are applied to heart-rate reserve (Karvonen 1957: HRrest + f x (HRmax - HRrest)).
pub const ZONE_BOUNDS: [f64; 5] = [0.5, 0.6, 0.7, 0.8, 0.9];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeartZones {
    /// Seconds in zones 0..=5 by percent of maximum heart rate.
    pub percent_max_s: [f64; 6],
    /// Seconds in zones 0..=5 by percent of heart-rate reserve.
    pub reserve_s: [f64; 6],
}

fn zone(fraction: f64) -> usize {
    ZONE_BOUNDS.iter().filter(|&&b| fraction >= b).count()
}

#[derive(Clone, Debug, Default)]
pub struct Heart {
    weighted_sum: f64,
    seconds: f64,
    pub max_bpm: Option<f64>,
    pub zones: HeartZones,
    pub trimp: f64,
    /// Keytel energy (kcal), integrated as the samples come.
    pub keytel_kcal: f64,
}

impl Heart {
    /// A held interval of `secs` at `bpm`, while the timer ran.
    pub fn interval(&mut self, bpm: f64, secs: f64, p: &ResolvedProfile) {
        self.weighted_sum += bpm * secs;
        self.seconds += secs;
        let max = p.hr_max_bpm;
        let rest = p.hr_rest_bpm;
        self.zones.percent_max_s[zone(bpm / max)] += secs;
        let reserve = ((bpm - rest) / (max - rest)).clamp(0.0, 1.0);
        self.zones.reserve_s[zone(reserve)] += secs;
        self.trimp += trimp_rate(reserve, p.sex) * secs / 60.0;
        self.keytel_kcal += keytel_kcal_per_min(bpm, p) * secs / 60.0;
    }

    pub fn peak(&mut self, bpm: f64) {
        self.max_bpm = Some(self.max_bpm.map_or(bpm, |m| m.max(bpm)));
    }

    pub fn average_bpm(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.weighted_sum / self.seconds)
    }

    pub fn seconds(&self) -> f64 {
        self.seconds
    }
}

/// Banister's TRIMP per minute: HRr x 0.64 e^(1.92 HRr) for men, 0.86 e^(1.67 HRr) for women
/// (Banister 1991, in "Physiological Testing of the High-Performance Athlete"); the mean of the
/// two when sex is unknown.
pub fn trimp_rate(hrr: f64, sex: Option<Sex>) -> f64 {
    let male = 0.64 * (1.92 * hrr).exp();
    let female = 0.86 * (1.67 * hrr).exp();
    hrr * match sex {
        Some(Sex::Male) => male,
        Some(Sex::Female) => female,
        None => (male + female) / 2.0,
    }
}

/// Energy expenditure from heart rate, kcal/min: Keytel et al. 2005, "Prediction of energy
/// expenditure from heart rate monitoring during submaximal exercise", J. Sports Sci.
/// 23(3):289-297, the equations without VO2max:
/// men   (-55.0969 + 0.6309 HR + 0.1988 W + 0.2017 A) / 4.184,
/// women (-20.4022 + 0.4472 HR - 0.1263 W + 0.0740 A) / 4.184.
/// The equations were fitted on exercise heart rates; at rest they go negative, so the result is
/// never below resting metabolism (1 MET = 1 kcal/kg/h).
pub fn keytel_kcal_per_min(bpm: f64, p: &ResolvedProfile) -> f64 {
    let (w, a) = (p.weight_kg, f64::from(p.age_years));
    let male = (-55.0969 + 0.6309 * bpm + 0.1988 * w + 0.2017 * a) / 4.184;
    let female = (-20.4022 + 0.4472 * bpm - 0.1263 * w + 0.074 * a) / 4.184;
    let v = match p.sex {
        Some(Sex::Male) => male,
        Some(Sex::Female) => female,
        None => (male + female) / 2.0,
    };
    v.max(w / 60.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;

    fn p() -> ResolvedProfile {
        Profile {
            weight_kg: Some(70.0),
            age_years: Some(30),
            sex: Some(Sex::Male),
            hr_max_bpm: Some(190),
            hr_rest_bpm: Some(50),
            ftp_w: None,
        }
        .resolve()
    }

    #[test]
    fn zone_boundaries() {
        assert_eq!(zone(0.4999), 0);
        assert_eq!(zone(0.5), 1);
        assert_eq!(zone(0.8999), 4);
        assert_eq!(zone(0.9), 5);
        assert_eq!(zone(1.2), 5);
    }

    #[test]
    fn keytel_reference_value() {
        // Man, 70 kg, 30 y, 150 bpm: (-55.0969 + 94.635 + 13.916 + 6.051) / 4.184 = 14.222
        let v = keytel_kcal_per_min(150.0, &p());
        assert!((v - 14.222).abs() < 0.01, "{v}");
        // At rest the floor of 1 kcal/kg/h applies.
        assert!((keytel_kcal_per_min(50.0, &p()) - 70.0 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn trimp_of_an_hour_at_half_reserve() {
        // 60 min at HRr 0.5 for a man: 60 x 0.5 x 0.64 x e^0.96 = 50.15
        let t = trimp_rate(0.5, Some(Sex::Male)) * 60.0;
        assert!((t - 50.15).abs() < 0.05, "{t}");
    }

    #[test]
    fn time_weighted_average() {
        let mut h = Heart::default();
        h.interval(100.0, 30.0, &p());
        h.interval(160.0, 10.0, &p());
        assert_eq!(h.average_bpm(), Some(115.0));
        assert_eq!(h.zones.percent_max_s[1], 30.0); // 100/190 = 53 %
        assert_eq!(h.zones.percent_max_s[4], 10.0); // 160/190 = 84 %
    }
}
