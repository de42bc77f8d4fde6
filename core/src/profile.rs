//! The athlete's profile: what the metrics need to know about the person.
//!
//! Every field is optional. [`Profile::resolve`] fills the gaps with documented defaults and
//! remembers which values were defaulted, because some formulas (Keytel's heart-rate calories)
//! are only trustworthy with the person's real figures.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Male,
    Female,
}

impl FromStr for Sex {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "male" | "m" => Ok(Sex::Male),
            "female" | "f" => Ok(Sex::Female),
            _ => Err(format!("unknown sex {s:?}; expected male or female")),
        }
    }
}

impl fmt::Display for Sex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Sex::Male => "male",
            Sex::Female => "female",
        })
    }
}

/// What the person told us (or what a file carried). `None` means unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub weight_kg: Option<f64>,
    pub age_years: Option<u32>,
    pub sex: Option<Sex>,
    /// A measured maximum heart rate (bpm). When known it replaces 220 - age everywhere.
    pub hr_max_bpm: Option<u16>,
    pub hr_rest_bpm: Option<u16>,
    /// Functional threshold power (W); IF and TSS need it.
    pub ftp_w: Option<u16>,
}

/// Defaults used where the profile is silent.
pub mod defaults {
    /// ICRP reference adult body mass (ICRP Publication 89, 2002).
    pub const WEIGHT_KG: f64 = 70.0;
    /// A middle-of-the-range adult age; only used for 220 - age when nothing better is known.
    pub const AGE_YEARS: u32 = 35;
    /// A typical adult resting heart rate (AHA: 60-100 bpm, lower in trained people).
    pub const HR_REST_BPM: u16 = 60;
}

impl Profile {
    /// Fills unknown fields from `other` (used to layer CLI overrides > file profile).
    pub fn or(self, other: Profile) -> Profile {
        Profile {
            weight_kg: self.weight_kg.or(other.weight_kg),
            age_years: self.age_years.or(other.age_years),
            sex: self.sex.or(other.sex),
            hr_max_bpm: self.hr_max_bpm.or(other.hr_max_bpm),
            hr_rest_bpm: self.hr_rest_bpm.or(other.hr_rest_bpm),
            ftp_w: self.ftp_w.or(other.ftp_w),
        }
    }

    pub fn resolve(&self) -> ResolvedProfile {
        let age = self.age_years.unwrap_or(defaults::AGE_YEARS);
        ResolvedProfile {
            weight_kg: self.weight_kg.unwrap_or(defaults::WEIGHT_KG),
            age_years: age,
            sex: self.sex,
            hr_max_bpm: self
                .hr_max_bpm
                .map(f64::from)
                .unwrap_or_else(|| 220.0 - f64::from(age)),
            hr_max_measured: self.hr_max_bpm.is_some(),
            hr_rest_bpm: f64::from(self.hr_rest_bpm.unwrap_or(defaults::HR_REST_BPM)),
            ftp_w: self.ftp_w.map(f64::from),
            known_weight: self.weight_kg.is_some(),
            known_age: self.age_years.is_some(),
        }
    }
}

/// A profile with every value the formulas need, and which of them are the person's own.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedProfile {
    pub weight_kg: f64,
    pub age_years: u32,
    pub sex: Option<Sex>,
    pub hr_max_bpm: f64,
    pub hr_max_measured: bool,
    pub hr_rest_bpm: f64,
    pub ftp_w: Option<f64>,
    pub known_weight: bool,
    pub known_age: bool,
}

impl ResolvedProfile {
    /// Keytel's equations need the person's own sex, weight and age.
    pub fn allows_keytel(&self) -> bool {
        self.sex.is_some() && self.known_weight && self.known_age
    }

    /// The heart-rate range RULES.md calls valid: 40 to 220 - age, or to the measured maximum.
    pub fn hr_valid_range(&self) -> (f64, f64) {
        (40.0, self.hr_max_bpm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_gaps_and_are_marked() {
        let r = Profile::default().resolve();
        assert_eq!(r.weight_kg, defaults::WEIGHT_KG);
        assert_eq!(r.hr_max_bpm, 185.0);
        assert!(!r.hr_max_measured && !r.known_weight && !r.allows_keytel());
    }

    #[test]
    fn measured_max_replaces_age_formula() {
        let p = Profile {
            age_years: Some(30),
            hr_max_bpm: Some(201),
            ..Profile::default()
        };
        assert_eq!(p.resolve().hr_valid_range(), (40.0, 201.0));
        let p = Profile {
            age_years: Some(30),
            ..Profile::default()
        };
        assert_eq!(p.resolve().hr_valid_range(), (40.0, 190.0));
    }

    #[test]
    fn overrides_win_over_file_values() {
        let cli = Profile {
            weight_kg: Some(80.0),
            ..Profile::default()
        };
        let file = Profile {
            weight_kg: Some(60.0),
            sex: Some(Sex::Female),
            ..Profile::default()
        };
        let p = cli.or(file);
        assert_eq!(p.weight_kg, Some(80.0));
        assert_eq!(p.sex, Some(Sex::Female));
    }
}
