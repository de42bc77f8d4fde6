//! The athlete's profile and gear, in the local store.
//!
//! Profile edits use optimistic locking (RULES.md, Identity): an update names the version it
//! was based on and is refused with a conflict when someone else changed it in between.
//! Gear (shoes, bikes, other) accumulates distance and time from the workouts assigned to it;
//! shoes wear out after 800-1000 km (RULES.md), and a replacement is recommended at 70 % wear.

use chrono::Datelike;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::event::DomainEvent;
use crate::profile::{Profile, Sex};
use crate::store::Store;
use crate::time::Timestamp;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Units {
    #[default]
    Metric,
    Imperial,
}

/// RULES.md: new profiles and activities are private until changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Privacy {
    #[default]
    Private,
    Friends,
    Public,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AthleteProfile {
    pub weight_kg: Option<f64>,
    pub sex: Option<Sex>,
    pub birth_year: Option<i32>,
    pub hr_max_bpm: Option<u16>,
    pub hr_rest_bpm: Option<u16>,
    pub ftp_w: Option<u16>,
    /// Upper bounds (bpm) of heart-rate zones 1-5 when the athlete set their own.
    pub hr_zones_bpm: Option<[u16; 5]>,
    pub units: Units,
    pub privacy: Privacy,
}

impl AthleteProfile {
    /// What the metrics need, with the age as of `now`.
    pub fn to_profile(&self, now: Timestamp) -> Profile {
        let year = chrono::DateTime::from_timestamp_millis(now.0).map_or(1970, |d| d.year());
        Profile {
            weight_kg: self.weight_kg,
            age_years: self
                .birth_year
                .map(|b| (year - b).max(0) as u32)
                .filter(|a| *a > 0),
            sex: self.sex,
            hr_max_bpm: self.hr_max_bpm,
            hr_rest_bpm: self.hr_rest_bpm,
            ftp_w: self.ftp_w,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Invalid(m.to_string()));
        if self.weight_kg.is_some_and(|w| !(20.0..=400.0).contains(&w)) {
            return bad("weight must be 20-400 kg");
        }
        if self.birth_year.is_some_and(|y| !(1900..=2100).contains(&y)) {
            return bad("birth year must be 1900-2100");
        }
        if self.hr_max_bpm.is_some_and(|h| !(100..=250).contains(&h)) {
            return bad("maximum heart rate must be 100-250 bpm");
        }
        if self.hr_rest_bpm.is_some_and(|h| !(25..=120).contains(&h)) {
            return bad("resting heart rate must be 25-120 bpm");
        }
        if let (Some(max), Some(rest)) = (self.hr_max_bpm, self.hr_rest_bpm) {
            if rest >= max {
                return bad("resting heart rate must be below the maximum");
            }
        }
        if let Some(z) = self.hr_zones_bpm {
            if z.windows(2).any(|w| w[0] >= w[1]) {
                return bad("heart-rate zone bounds must increase");
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GearKind {
    Shoes,
    Bike,
    Other,
}

impl std::str::FromStr for GearKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "shoes" => Ok(GearKind::Shoes),
            "bike" => Ok(GearKind::Bike),
            "other" => Ok(GearKind::Other),
            _ => Err(format!(
                "unknown gear kind {s:?}; expected shoes, bike or other"
            )),
        }
    }
}

impl GearKind {
    fn as_str(self) -> &'static str {
        match self {
            GearKind::Shoes => "shoes",
            GearKind::Bike => "bike",
            GearKind::Other => "other",
        }
    }
}

/// Shoes: RULES.md says 800-1000 km; the default takes the conservative end.
pub const SHOE_LIFE_KM: f64 = 800.0;
pub const SHOE_LIFE_RANGE_KM: (f64, f64) = (800.0, 1000.0);
/// Recommend a replacement at this share of the service life (RULES.md: 70 %).
pub const REPLACE_AT: f64 = 0.70;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gear {
    pub id: String,
    pub kind: GearKind,
    pub name: String,
    pub service_life_km: Option<f64>,
    pub retired: bool,
    pub workouts: u64,
    pub distance_m: f64,
    pub timer_s: f64,
    /// Distance as a share of the service life, in percent; none without a service life.
    pub wear_pct: Option<f64>,
    pub replace_recommended: bool,
}

impl Store {
    /// The profile and its version (0 before the first save).
    pub fn profile(&self) -> Result<(AthleteProfile, i64)> {
        let row: Option<(i64, String)> = self.read(|c| {
            Ok(
                c.query_row("SELECT version, json FROM profile WHERE id = 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?,
            )
        })?;
        match row {
            None => Ok((AthleteProfile::default(), 0)),
            Some((v, json)) => Ok((
                serde_json::from_str(&json).map_err(|e| Error::Corrupt(format!("profile: {e}")))?,
                v,
            )),
        }
    }

    /// Saves the profile if it is still at `expected_version`; returns the new version.
    pub fn update_profile(&self, expected_version: i64, p: &AthleteProfile) -> Result<i64> {
        p.validate()?;
        let json = serde_json::to_string(p).map_err(|e| Error::Corrupt(e.to_string()))?;
        self.write(|tx| {
            let current: i64 = tx
                .query_row("SELECT version FROM profile WHERE id = 1", [], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            if current != expected_version {
                return Err(Error::Conflict(format!(
                    "the profile changed (version {current}, this edit was based on {expected_version}); reload and retry"
                )));
            }
            tx.execute(
                "INSERT INTO profile (id, version, json) VALUES (1, ?1, ?2)
                 ON CONFLICT(id) DO UPDATE SET version = excluded.version, json = excluded.json",
                params![current + 1, json],
            )?;
            Ok(current + 1)
        })
    }

    pub fn add_gear(
        &self,
        kind: GearKind,
        name: &str,
        service_life_km: Option<f64>,
        now: Timestamp,
    ) -> Result<Gear> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(Error::Invalid("gear name must be 1-100 characters".into()));
        }
        let life = match (kind, service_life_km) {
            (GearKind::Shoes, None) => Some(SHOE_LIFE_KM),
            (GearKind::Shoes, Some(l))
                if !(SHOE_LIFE_RANGE_KM.0..=SHOE_LIFE_RANGE_KM.1).contains(&l) =>
            {
                return Err(Error::Invalid(format!(
                    "shoe service life must be {}-{} km",
                    SHOE_LIFE_RANGE_KM.0, SHOE_LIFE_RANGE_KM.1
                )))
            }
            (_, Some(l)) if l <= 0.0 => {
                return Err(Error::Invalid("service life must be positive".into()))
            }
            (_, l) => l,
        };
        let id = uuid::Uuid::new_v4().to_string();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO gear (id, kind, name, service_life_km, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, kind.as_str(), name, life, now.0],
            )?;
            Ok(())
        })?;
        self.gear(&id)
    }

    pub fn gear(&self, id: &str) -> Result<Gear> {
        self.list_gear(true)?
            .into_iter()
            .find(|g| g.id == id || (id.len() >= 4 && g.id.starts_with(id)))
            .ok_or_else(|| Error::NotFound(format!("gear {id}")))
    }

    pub fn list_gear(&self, include_retired: bool) -> Result<Vec<Gear>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT g.id, g.kind, g.name, g.service_life_km, g.retired,
                        COUNT(w.id), TOTAL(w.distance_m), TOTAL(w.timer_s)
                 FROM gear g LEFT JOIN workouts w ON w.gear_id = g.id
                 WHERE ?1 OR g.retired = 0
                 GROUP BY g.id ORDER BY g.created_at",
            )?;
            let rows = stmt.query_map([include_retired], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<f64>>(3)?,
                    r.get::<_, bool>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, f64>(6)?,
                    r.get::<_, f64>(7)?,
                ))
            })?;
            let mut out = vec![];
            for row in rows {
                let (id, kind, name, life, retired, n, distance, timer) = row?;
                let wear = life.map(|l| distance / (l * 1000.0) * 100.0);
                out.push(Gear {
                    id,
                    kind: kind.parse().map_err(Error::Corrupt)?,
                    name,
                    service_life_km: life,
                    retired,
                    workouts: n as u64,
                    distance_m: distance,
                    timer_s: timer,
                    wear_pct: wear,
                    replace_recommended: wear.is_some_and(|w| w >= REPLACE_AT * 100.0),
                });
            }
            Ok(out)
        })
    }

    /// Assigns a workout to gear (or, with `None`, to none) and recomputes the gear's wear.
    pub fn assign_gear(
        &self,
        workout_id: &str,
        gear_id: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>> {
        let workout = self.resolve_id(workout_id)?;
        let gear = gear_id.map(|g| self.gear(g)).transpose()?;
        self.write(|tx| {
            tx.execute(
                "UPDATE workouts SET gear_id = ?2 WHERE id = ?1",
                params![workout, gear.as_ref().map(|g| g.id.as_str())],
            )?;
            Ok(())
        })?;
        let Some(g) = gear else { return Ok(vec![]) };
        let g = self.gear(&g.id)?;
        Ok(vec![DomainEvent::WearLevelCalculated {
            gear_id: g.id,
            at: now,
            distance_m: g.distance_m,
            wear_pct: g.wear_pct,
            replace_recommended: g.replace_recommended,
        }])
    }

    pub fn retire_gear(&self, id: &str) -> Result<()> {
        let g = self.gear(id)?;
        self.write(|tx| {
            tx.execute("UPDATE gear SET retired = 1 WHERE id = ?1", [&g.id])?;
            Ok(())
        })
    }
}
