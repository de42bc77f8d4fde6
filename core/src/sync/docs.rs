//! The typed Automerge documents: one **profile** document per user and one **workout** document
//! per workout (design brief, "What lives where").
//!
//! Every typed document carries at its root
//!
//! | key | value |
//! |---|---|
//! | `type` | `"fitedge.profile"` or `"fitedge.workout"` ([`PROFILE_TYPE`], [`WORKOUT_TYPE`]) |
//! | `schemaVersion` | unsigned integer, currently [`PROFILE_SCHEMA_VERSION`] / [`WORKOUT_SCHEMA_VERSION`] |
//!
//! A document without a `type` key is *untyped* (a document some other application made); the
//! server accepts those as private, size-limited documents and validates nothing inside them.
//!
//! ## Profile (schema version 2)
//! ```text
//! { type, schemaVersion,
//!   settings:   { units: "metric"|"imperial", language?: string },
//!   privacy:    { profileVisibility: "public"|"friends"|"private", workoutVisibility: same },
//!   physiology: { weightKg?, birthYear?, hrMaxBpm?, hrRestBpm?, ftpW? },   numbers
//!   zones:      { hrBpm: [upper bound, ...], powerW: [upper bound, ...] }, ascending lists
//!   gear:       { <gear id>: { name, kind: "shoes"|"bike"|"other", retired: bool, distanceM } },
//!   plans:      { <plan id>: { name, startDate: "YYYY-MM-DD", weeks } } }
//! ```
//! Version 1 kept the physiology fields at the root; [`migrate`] moves them.
//!
//! There is one profile document per user, at the id [`profile_document_id`] derives from the
//! server's user id, and every device starts it from the same first change
//! ([`new_user_profile`]: a fixed actor, time 0), so two devices that make it without having
//! seen each other's copy still share its root objects and their own writes merge field by
//! field (`docs/adr/0012-one-profile-document-per-user.md`). That first change is frozen:
//! changing [`new_profile`]'s skeleton would give devices of different builds different first
//! changes, so later schema versions go through [`migrate`] instead.
//!
//! ## Workout (schema version 2)
//! ```text
//! { type, schemaVersion, id: uuid, sport: Sport::as_str, state: "recording"|"completed"|"cancelled",
//!   title: text, notes: text, startTime: ms since epoch, endTime?: ms since epoch,
//!   summary:    { elapsedS, timerS, movingS, caloriesKcal, distanceM?, ascentM?, avgSpeedMps?,
//!                 maxSpeedMps?, avgHrBpm?, maxHrBpm?, avgPowerW?, maxPowerW?, avgCadenceRpm?,
//!                 maxCadenceRpm?, minSpo2Pct? },
//!   laps:       [ { startTime, endTime, timerS, distanceM } ],
//!   validation: { samples, rejected, flagged },
//!   chunks:     [ { sha256: 64 lowercase hex, channel: Channel::as_str, startTime, endTime, count,
//!                   seq?: integer >= 0, sealed?: bool } ],
//!   sportDetected?: bool }
//! ```
//! `title` and `notes` are Automerge text objects, so concurrent edits on two devices merge
//! character by character; readers also accept a plain string (what version 1 wrote).
//! Version 1 stored `start` and `end` in seconds (floats); [`migrate`] converts them.
//!
//! A chunk's `seq` is the recording device's sequence number of the chunk within its channel,
//! and `sealed` says whether its bytes are sealed (AES-256-GCM, `nonce || ciphertext || tag`)
//! under the user's storage key; absent, `sealed` means "a health channel"
//! ([`Channel::is_health`]), which is what the store seals. The associated data of a sealed
//! chunk is `fitedge/chunk/v1/<workout id>/<channel>/<seq>`, so another device of the same user
//! (holding the same key: the host app's keystore shares it, FitEdge does no key exchange)
//! opens a chunk only with its `seq`. `seq`, `sealed` and `sportDetected` (the sport was guessed
//! by the engine, not chosen; personal records need `false`) were added without a version
//! bump: they are optional, older readers ignore them, and documents written before them still
//! read (their chunks cannot be opened elsewhere until the recording device fills `seq` in,
//! which it does for its own chunks).
//!
//! Numbers are read leniently (integer, unsigned or float), because the JavaScript library writes
//! every number as a float unless told otherwise; they are written as floats, times as integers.
//!
//! ## Validation
//! [`validate`] reads a document, decides its kind and checks it against the same rules the
//! recorder enforces ([`crate::validation::limits`], [`crate::workout::WorkoutConfig`],
//! [`crate::metrics::energy::MAX_KCAL_PER_HOUR_PER_KG`]); [`validate_update`] also checks that an
//! update keeps the document's kind and never lowers its schema version, which the server needs
//! so that a typed document cannot escape validation by being retyped. Problems are collected,
//! not short-circuited, each with the path of the offending field.
//!
//! ## Migration and concurrency
//! Two devices may migrate the same old document while offline. [`migrate`] makes the migration
//! change with an actor id derived from the document's heads and a zero timestamp, so two devices
//! migrating the same state produce byte-identical changes that merge into one (a test holds it
//! to that) instead of two competing copies of every migrated field.

use std::collections::BTreeMap;
use std::fmt;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};

use crate::metrics::energy::MAX_KCAL_PER_HOUR_PER_KG;
use crate::sample::Channel;
use crate::sport::Sport;
use crate::sync::protocol::DocumentId;
use crate::time::Timestamp;
use crate::validation::limits;
use crate::workout::WorkoutConfig;

pub const PROFILE_TYPE: &str = "fitedge.profile";
pub const WORKOUT_TYPE: &str = "fitedge.workout";
pub const PROFILE_SCHEMA_VERSION: u64 = 2;
pub const WORKOUT_SCHEMA_VERSION: u64 = 2;

/// Body mass accepted in a profile (kg). Generous on purpose: only the impossible is refused.
pub const WEIGHT_KG: (f64, f64) = (20.0, 400.0);
/// Minimum age (RULES.md, Registration), checked against the profile's birth year.
pub const MIN_AGE_YEARS: i64 = 13;
/// Oldest birth year accepted.
pub const MIN_BIRTH_YEAR: i64 = 1900;
/// A workout may end at most this far after the validator's `now` (device clocks drift).
pub const CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;
/// Tolerance when comparing a summary's elapsed time with its start and end (s).
pub const ELAPSED_TOLERANCE_S: f64 = 1.0;
/// Longest title and notes (characters).
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_NOTES_CHARS: usize = 10_000;
/// Most sample-chunk references in one workout (a 24 h recording in one-minute chunks on every
/// channel stays well below this).
pub const MAX_CHUNKS: usize = 100_000;

/// What a document is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DocKind {
    Profile,
    Workout,
    /// No `type` at the root: not ours to validate.
    Untyped,
}

impl DocKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Profile => PROFILE_TYPE,
            DocKind::Workout => WORKOUT_TYPE,
            DocKind::Untyped => "untyped",
        }
    }
}

/// One broken rule, with the path of the field (`summary.avgHrBpm`, `laps[2].endTime`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a document was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    /// The document breaks one or more rules; every problem found is listed.
    #[error("invalid {kind} document: {}", join(.problems))]
    Invalid {
        kind: &'static str,
        problems: Vec<Problem>,
    },
    /// `type` names a FitEdge document type this build does not know.
    #[error("unknown document type {0:?}")]
    UnknownType(String),
    /// The schema version is newer than this build understands (update the app).
    #[error("{kind} schema version {found} is newer than {supported}")]
    TooNew {
        kind: &'static str,
        found: u64,
        supported: u64,
    },
    /// An update changed the document's kind or lowered its schema version.
    #[error("update refused: {0}")]
    Transition(String),
    /// Automerge refused an operation (only from the writers and [`migrate`]).
    #[error("automerge: {0}")]
    Automerge(String),
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<automerge::AutomergeError> for DocError {
    fn from(e: automerge::AutomergeError) -> Self {
        DocError::Automerge(e.to_string())
    }
}

/// What the validators need from outside the document: the current time (injected, never read
/// from the system clock here).
#[derive(Clone, Copy, Debug)]
pub struct ValidationContext {
    pub now: Timestamp,
}

// ---------------------------------------------------------------------------------------------
// Reading helpers: lenient about number encodings, strict about types.

/// Collects problems while reading, so that one pass reports everything.
#[derive(Debug, Default)]
struct Reader {
    problems: Vec<Problem>,
}

impl Reader {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn get<'a, D: ReadDoc>(
        &mut self,
        doc: &'a D,
        obj: &ObjId,
        key: &str,
        path: &str,
    ) -> Option<(Value<'a>, ObjId)> {
        match doc.get(obj, key) {
            Ok(v) => v,
            Err(e) => {
                self.problem(path, format!("unreadable: {e}"));
                None
            }
        }
    }

    fn number<D: ReadDoc>(&mut self, doc: &D, obj: &ObjId, key: &str, path: &str) -> Option<f64> {
        let (v, _) = self.get(doc, obj, key, path)?;
        match v.as_scalar() {
            Some(ScalarValue::Null) => None,
            Some(s) => match scalar_f64(s) {
                Some(n) if n.is_finite() => Some(n),
                Some(_) => {
                    self.problem(path, "not a finite number");
                    None
                }
                None => {
                    self.problem(path, "expected a number");
                    None
                }
            },
            None => {
                self.problem(path, "expected a number, found an object");
                None
            }
        }
    }

    fn required_number<D: ReadDoc>(&mut self, doc: &D, obj: &ObjId, key: &str, path: &str) -> f64 {
        let before = self.problems.len();
        match self.number(doc, obj, key, path) {
            Some(n) => n,
            None => {
                if self.problems.len() == before {
                    self.problem(path, "missing");
                }
                0.0
            }
        }
    }

    /// An integer (a float with no fractional part is accepted: JavaScript writes floats).
    fn int<D: ReadDoc>(&mut self, doc: &D, obj: &ObjId, key: &str, path: &str) -> Option<i64> {
        let n = self.number(doc, obj, key, path)?;
        if n.fract() != 0.0 || n.abs() > 9.007_199_254_740_991e15 {
            self.problem(path, "expected an integer");
            return None;
        }
        #[allow(clippy::cast_possible_truncation)]
        Some(n as i64)
    }

    fn string<D: ReadDoc>(
        &mut self,
        doc: &D,
        obj: &ObjId,
        key: &str,
        path: &str,
    ) -> Option<String> {
        let (v, id) = self.get(doc, obj, key, path)?;
        match v {
            Value::Scalar(s) => match s.as_ref() {
                ScalarValue::Str(s) => Some(s.to_string()),
                ScalarValue::Null => None,
                _ => {
                    self.problem(path, "expected a string");
                    None
                }
            },
            Value::Object(ObjType::Text) => match doc.text(&id) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.problem(path, format!("unreadable text: {e}"));
                    None
                }
            },
            Value::Object(_) => {
                self.problem(path, "expected a string, found an object");
                None
            }
        }
    }

    fn bool<D: ReadDoc>(&mut self, doc: &D, obj: &ObjId, key: &str, path: &str) -> Option<bool> {
        let (v, _) = self.get(doc, obj, key, path)?;
        match v.as_scalar() {
            Some(ScalarValue::Boolean(b)) => Some(*b),
            Some(ScalarValue::Null) => None,
            _ => {
                self.problem(path, "expected a boolean");
                None
            }
        }
    }

    fn object<D: ReadDoc>(
        &mut self,
        doc: &D,
        obj: &ObjId,
        key: &str,
        ty: ObjType,
        path: &str,
    ) -> Option<ObjId> {
        let (v, id) = self.get(doc, obj, key, path)?;
        match v {
            Value::Object(t) if t == ty || (ty == ObjType::Map && t == ObjType::Table) => Some(id),
            _ => {
                self.problem(path, format!("expected a {}", obj_type_name(ty)));
                None
            }
        }
    }

    /// List elements that are maps, with their paths.
    fn maps_in_list<D: ReadDoc>(
        &mut self,
        doc: &D,
        list: &ObjId,
        path: &str,
    ) -> Vec<(ObjId, String)> {
        let mut out = Vec::new();
        for i in 0..doc.length(list) {
            let p = format!("{path}[{i}]");
            match doc.get(list, i) {
                Ok(Some((Value::Object(ObjType::Map | ObjType::Table), id))) => out.push((id, p)),
                Ok(_) => self.problem(p, "expected a map"),
                Err(e) => self.problem(p, format!("unreadable: {e}")),
            }
        }
        out
    }

    fn numbers_in_list<D: ReadDoc>(&mut self, doc: &D, list: &ObjId, path: &str) -> Vec<f64> {
        let mut out = Vec::new();
        for i in 0..doc.length(list) {
            let p = format!("{path}[{i}]");
            match doc.get(list, i) {
                Ok(Some((v, _))) => match v.as_scalar().and_then(scalar_f64) {
                    Some(n) if n.is_finite() => out.push(n),
                    _ => self.problem(p, "expected a finite number"),
                },
                Ok(None) => {}
                Err(e) => self.problem(p, format!("unreadable: {e}")),
            }
        }
        out
    }
}

fn obj_type_name(t: ObjType) -> &'static str {
    match t {
        ObjType::Map | ObjType::Table => "map",
        ObjType::List => "list",
        ObjType::Text => "text",
    }
}

#[allow(clippy::cast_precision_loss)]
fn scalar_f64(s: &ScalarValue) -> Option<f64> {
    match *s {
        ScalarValue::F64(f) => Some(f),
        ScalarValue::Int(i) | ScalarValue::Timestamp(i) => Some(i as f64),
        ScalarValue::Uint(u) => Some(u as f64),
        _ => None,
    }
}

fn in_range(r: &mut Reader, path: &str, v: Option<f64>, (lo, hi): (f64, f64)) {
    if let Some(v) = v {
        if !(lo..=hi).contains(&v) {
            r.problem(path, format!("{v} is outside {lo}..={hi}"));
        }
    }
}

fn not_above(r: &mut Reader, path: &str, avg: Option<f64>, max: Option<f64>, max_name: &str) {
    if let (Some(a), Some(m)) = (avg, max) {
        if a > m {
            r.problem(path, format!("average {a} is above {max_name} {m}"));
        }
    }
}

/// The document's kind and schema version, from its root.
pub fn kind_of<D: ReadDoc>(doc: &D) -> Result<(DocKind, u64), DocError> {
    let mut r = Reader::default();
    let ty = match doc.get(ROOT, "type") {
        Ok(None) => return Ok((DocKind::Untyped, 0)),
        Ok(Some(_)) => r.string(doc, &ROOT, "type", "type"),
        Err(e) => return Err(DocError::Automerge(e.to_string())),
    };
    let kind = match ty.as_deref() {
        Some(PROFILE_TYPE) => DocKind::Profile,
        Some(WORKOUT_TYPE) => DocKind::Workout,
        Some(other) if other.starts_with("fitedge.") => {
            return Err(DocError::UnknownType(other.to_string()))
        }
        // Another application's `type` field: not one of ours.
        Some(_) => return Ok((DocKind::Untyped, 0)),
        None => {
            return Err(DocError::Invalid {
                kind: "typed",
                problems: r.problems,
            })
        }
    };
    let version = r.int(doc, &ROOT, "schemaVersion", "schemaVersion");
    match version {
        Some(v) if v >= 1 => Ok((kind, v.unsigned_abs())),
        _ => {
            if r.problems.is_empty() {
                r.problem("schemaVersion", "missing or below 1");
            }
            Err(DocError::Invalid {
                kind: kind.as_str(),
                problems: r.problems,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Profile

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Units {
    #[default]
    Metric,
    Imperial,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Visibility {
    Public,
    Friends,
    #[default]
    Private,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Friends => "friends",
            Visibility::Private => "private",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "public" => Some(Visibility::Public),
            "friends" => Some(Visibility::Friends),
            "private" => Some(Visibility::Private),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Physiology {
    pub weight_kg: Option<f64>,
    pub birth_year: Option<i64>,
    pub hr_max_bpm: Option<f64>,
    pub hr_rest_bpm: Option<f64>,
    pub ftp_w: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GearKind {
    Shoes,
    Bike,
    Other,
}

impl GearKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GearKind::Shoes => "shoes",
            GearKind::Bike => "bike",
            GearKind::Other => "other",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "shoes" => Some(GearKind::Shoes),
            "bike" => Some(GearKind::Bike),
            "other" => Some(GearKind::Other),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct GearItem {
    pub name: String,
    pub kind: GearKind,
    pub retired: bool,
    pub distance_m: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub name: String,
    pub start_date: String,
    pub weeks: u32,
}

/// A profile document, read and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileDoc {
    pub schema_version: u64,
    pub units: Units,
    pub language: Option<String>,
    pub profile_visibility: Visibility,
    pub workout_visibility: Visibility,
    pub physiology: Physiology,
    pub hr_zones_bpm: Vec<f64>,
    pub power_zones_w: Vec<f64>,
    pub gear: BTreeMap<String, GearItem>,
    pub plans: BTreeMap<String, Plan>,
}

fn year_of(t: Timestamp) -> i64 {
    use chrono::Datelike;
    chrono::DateTime::from_timestamp_millis(t.as_millis()).map_or(1970, |d| i64::from(d.year()))
}

impl ProfileDoc {
    /// Reads and validates a profile document of the current schema version.
    pub fn read<D: ReadDoc>(doc: &D, ctx: &ValidationContext) -> Result<Self, DocError> {
        let (kind, version) = kind_of(doc)?;
        if kind != DocKind::Profile {
            return Err(DocError::Invalid {
                kind: PROFILE_TYPE,
                problems: vec![Problem {
                    path: "type".into(),
                    message: format!("expected {PROFILE_TYPE}, found {}", kind.as_str()),
                }],
            });
        }
        check_version(PROFILE_TYPE, version, PROFILE_SCHEMA_VERSION)?;
        let mut r = Reader::default();
        let mut p = ProfileDoc {
            schema_version: version,
            units: Units::Metric,
            language: None,
            profile_visibility: Visibility::Private,
            workout_visibility: Visibility::Private,
            physiology: Physiology::default(),
            hr_zones_bpm: Vec::new(),
            power_zones_w: Vec::new(),
            gear: BTreeMap::new(),
            plans: BTreeMap::new(),
        };
        if let Some(s) = r.object(doc, &ROOT, "settings", ObjType::Map, "settings") {
            match r.string(doc, &s, "units", "settings.units").as_deref() {
                None | Some("metric") => {}
                Some("imperial") => p.units = Units::Imperial,
                Some(u) => r.problem("settings.units", format!("unknown units {u:?}")),
            }
            p.language = r.string(doc, &s, "language", "settings.language");
            if let Some(l) = &p.language {
                if l.is_empty()
                    || l.len() > 35
                    || !l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                {
                    r.problem("settings.language", "expected a BCP 47 language tag");
                }
            }
        }
        if let Some(pr) = r.object(doc, &ROOT, "privacy", ObjType::Map, "privacy") {
            for (key, slot) in [
                ("profileVisibility", &mut p.profile_visibility),
                ("workoutVisibility", &mut p.workout_visibility),
            ] {
                let path = format!("privacy.{key}");
                if let Some(v) = r.string(doc, &pr, key, &path) {
                    match Visibility::parse(&v) {
                        Some(v) => *slot = v,
                        None => r.problem(path, format!("unknown visibility {v:?}")),
                    }
                }
            }
        }
        if let Some(ph) = r.object(doc, &ROOT, "physiology", ObjType::Map, "physiology") {
            p.physiology = read_physiology(&mut r, doc, &ph, "physiology.");
        }
        if let Some(z) = r.object(doc, &ROOT, "zones", ObjType::Map, "zones") {
            if let Some(l) = r.object(doc, &z, "hrBpm", ObjType::List, "zones.hrBpm") {
                p.hr_zones_bpm = r.numbers_in_list(doc, &l, "zones.hrBpm");
            }
            if let Some(l) = r.object(doc, &z, "powerW", ObjType::List, "zones.powerW") {
                p.power_zones_w = r.numbers_in_list(doc, &l, "zones.powerW");
            }
        }
        if let Some(g) = r.object(doc, &ROOT, "gear", ObjType::Map, "gear") {
            for id in doc.keys(&g).collect::<Vec<_>>() {
                let path = format!("gear.{id}");
                let Some(item) = r.object(doc, &g, &id, ObjType::Map, &path) else {
                    continue;
                };
                let name = r.string(doc, &item, "name", &format!("{path}.name"));
                let kind = r.string(doc, &item, "kind", &format!("{path}.kind"));
                let kind = match kind.as_deref().map(GearKind::parse) {
                    Some(Some(k)) => k,
                    _ => {
                        r.problem(format!("{path}.kind"), "expected shoes, bike or other");
                        GearKind::Other
                    }
                };
                let retired = r
                    .bool(doc, &item, "retired", &format!("{path}.retired"))
                    .unwrap_or(false);
                let distance_m = r
                    .number(doc, &item, "distanceM", &format!("{path}.distanceM"))
                    .unwrap_or(0.0);
                p.gear.insert(
                    id,
                    GearItem {
                        name: name.unwrap_or_default(),
                        kind,
                        retired,
                        distance_m,
                    },
                );
            }
        }
        if let Some(pl) = r.object(doc, &ROOT, "plans", ObjType::Map, "plans") {
            for id in doc.keys(&pl).collect::<Vec<_>>() {
                let path = format!("plans.{id}");
                let Some(item) = r.object(doc, &pl, &id, ObjType::Map, &path) else {
                    continue;
                };
                let name = r.string(doc, &item, "name", &format!("{path}.name"));
                let start_date = r.string(doc, &item, "startDate", &format!("{path}.startDate"));
                let weeks = r.int(doc, &item, "weeks", &format!("{path}.weeks"));
                p.plans.insert(
                    id,
                    Plan {
                        name: name.unwrap_or_default(),
                        start_date: start_date.unwrap_or_default(),
                        weeks: weeks.and_then(|w| u32::try_from(w).ok()).unwrap_or(0),
                    },
                );
            }
        }
        p.check(&mut r, ctx);
        if r.problems.is_empty() {
            Ok(p)
        } else {
            Err(DocError::Invalid {
                kind: PROFILE_TYPE,
                problems: r.problems,
            })
        }
    }

    fn check(&self, r: &mut Reader, ctx: &ValidationContext) {
        let ph = &self.physiology;
        in_range(r, "physiology.weightKg", ph.weight_kg, WEIGHT_KG);
        if let Some(y) = ph.birth_year {
            let latest = year_of(ctx.now) - MIN_AGE_YEARS;
            if y < MIN_BIRTH_YEAR || y > latest {
                r.problem(
                    "physiology.birthYear",
                    format!(
                        "{y} is outside {MIN_BIRTH_YEAR}..={latest} (minimum age {MIN_AGE_YEARS})"
                    ),
                );
            }
        }
        in_range(r, "physiology.hrMaxBpm", ph.hr_max_bpm, limits::HR_BPM);
        in_range(r, "physiology.hrRestBpm", ph.hr_rest_bpm, limits::HR_BPM);
        if let (Some(rest), Some(max)) = (ph.hr_rest_bpm, ph.hr_max_bpm) {
            if rest >= max {
                r.problem(
                    "physiology.hrRestBpm",
                    format!("resting {rest} is not below maximum {max}"),
                );
            }
        }
        if let Some(f) = ph.ftp_w {
            if !(f > 0.0 && f <= limits::POWER_W.1) {
                r.problem(
                    "physiology.ftpW",
                    format!("{f} is outside 0<..={}", limits::POWER_W.1),
                );
            }
        }
        check_zones(r, "zones.hrBpm", &self.hr_zones_bpm, limits::HR_BPM);
        if let (Some(max), Some(last)) = (ph.hr_max_bpm, self.hr_zones_bpm.last()) {
            if *last > max {
                r.problem(
                    "zones.hrBpm",
                    format!("top zone {last} is above maximum heart rate {max}"),
                );
            }
        }
        check_zones(r, "zones.powerW", &self.power_zones_w, limits::POWER_W);
        for (id, g) in &self.gear {
            if g.name.trim().is_empty() || g.name.chars().count() > MAX_TITLE_CHARS {
                r.problem(format!("gear.{id}.name"), "must be 1 to 200 characters");
            }
            if !(0.0..=limits::DISTANCE_M.1).contains(&g.distance_m) {
                r.problem(
                    format!("gear.{id}.distanceM"),
                    "outside the distance limits",
                );
            }
        }
        for (id, p) in &self.plans {
            if p.name.trim().is_empty() {
                r.problem(format!("plans.{id}.name"), "must not be empty");
            }
            if chrono::NaiveDate::parse_from_str(&p.start_date, "%Y-%m-%d").is_err() {
                r.problem(format!("plans.{id}.startDate"), "expected YYYY-MM-DD");
            }
            if !(1..=104).contains(&p.weeks) {
                r.problem(format!("plans.{id}.weeks"), "expected 1 to 104 weeks");
            }
        }
    }
}

fn read_physiology<D: ReadDoc>(r: &mut Reader, doc: &D, obj: &ObjId, prefix: &str) -> Physiology {
    Physiology {
        weight_kg: r.number(doc, obj, "weightKg", &format!("{prefix}weightKg")),
        birth_year: r.int(doc, obj, "birthYear", &format!("{prefix}birthYear")),
        hr_max_bpm: r.number(doc, obj, "hrMaxBpm", &format!("{prefix}hrMaxBpm")),
        hr_rest_bpm: r.number(doc, obj, "hrRestBpm", &format!("{prefix}hrRestBpm")),
        ftp_w: r.number(doc, obj, "ftpW", &format!("{prefix}ftpW")),
    }
}

fn check_zones(r: &mut Reader, path: &str, zones: &[f64], range: (f64, f64)) {
    for (i, z) in zones.iter().enumerate() {
        in_range(r, &format!("{path}[{i}]"), Some(*z), range);
        if i > 0 && zones[i - 1] >= *z {
            r.problem(format!("{path}[{i}]"), "zone bounds must ascend");
        }
    }
}

fn check_version(kind: &'static str, found: u64, supported: u64) -> Result<(), DocError> {
    if found > supported {
        return Err(DocError::TooNew {
            kind,
            found,
            supported,
        });
    }
    if found < supported {
        return Err(DocError::Invalid {
            kind,
            problems: vec![Problem {
                path: "schemaVersion".into(),
                message: format!("version {found} must be migrated to {supported} first"),
            }],
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Workout

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkoutDocState {
    Recording,
    Completed,
    Cancelled,
}

impl WorkoutDocState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkoutDocState::Recording => "recording",
            WorkoutDocState::Completed => "completed",
            WorkoutDocState::Cancelled => "cancelled",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "recording" => Some(WorkoutDocState::Recording),
            "completed" => Some(WorkoutDocState::Completed),
            "cancelled" => Some(WorkoutDocState::Cancelled),
            _ => None,
        }
    }
}

/// The summary figures a workout document carries (a subset of the core's `MetricsSummary`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DocSummary {
    pub elapsed_s: f64,
    pub timer_s: f64,
    pub moving_s: f64,
    pub calories_kcal: f64,
    pub distance_m: Option<f64>,
    pub ascent_m: Option<f64>,
    pub avg_speed_mps: Option<f64>,
    pub max_speed_mps: Option<f64>,
    pub avg_hr_bpm: Option<f64>,
    pub max_hr_bpm: Option<f64>,
    pub avg_power_w: Option<f64>,
    pub max_power_w: Option<f64>,
    pub avg_cadence_rpm: Option<f64>,
    pub max_cadence_rpm: Option<f64>,
    pub min_spo2_pct: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DocLap {
    pub start_time: Timestamp,
    pub end_time: Timestamp,
    pub timer_s: f64,
    pub distance_m: f64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DocValidationCounts {
    pub samples: u64,
    pub rejected: u64,
    pub flagged: u64,
}

/// A reference to an immutable sample chunk (content-addressed by SHA-256).
#[derive(Clone, Debug, PartialEq)]
pub struct ChunkRef {
    /// 64 lowercase hex digits.
    pub sha256: String,
    pub channel: Channel,
    pub start_time: Timestamp,
    pub end_time: Timestamp,
    pub count: u64,
}

/// Where a chunk belongs and how it is stored: see the module documentation. Kept apart from
/// [`ChunkRef`] so that code building chunk references stays as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPlace {
    /// The recording device's sequence number within the channel; `None` in documents written
    /// before it was carried.
    pub seq: Option<u64>,
    pub sealed: bool,
}

/// A workout document, read and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkoutDoc {
    pub schema_version: u64,
    pub id: uuid::Uuid,
    pub sport: Sport,
    pub state: WorkoutDocState,
    pub title: Option<String>,
    pub notes: Option<String>,
    pub start_time: Timestamp,
    pub end_time: Option<Timestamp>,
    pub summary: Option<DocSummary>,
    pub laps: Vec<DocLap>,
    pub validation: DocValidationCounts,
    pub chunks: Vec<ChunkRef>,
    /// One per entry of `chunks`, in the same order.
    pub chunk_places: Vec<ChunkPlace>,
    /// `None` when the document does not say (written before the field existed).
    pub sport_detected: Option<bool>,
}

/// True for exactly 64 lowercase hexadecimal digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn channel_from_str(s: &str) -> Option<Channel> {
    Channel::ALL.into_iter().find(|c| c.as_str() == s)
}

impl WorkoutDoc {
    /// Reads and validates a workout document of the current schema version.
    pub fn read<D: ReadDoc>(doc: &D, ctx: &ValidationContext) -> Result<Self, DocError> {
        let (kind, version) = kind_of(doc)?;
        if kind != DocKind::Workout {
            return Err(DocError::Invalid {
                kind: WORKOUT_TYPE,
                problems: vec![Problem {
                    path: "type".into(),
                    message: format!("expected {WORKOUT_TYPE}, found {}", kind.as_str()),
                }],
            });
        }
        check_version(WORKOUT_TYPE, version, WORKOUT_SCHEMA_VERSION)?;
        let mut r = Reader::default();
        let id = match r.string(doc, &ROOT, "id", "id") {
            Some(s) => uuid::Uuid::parse_str(&s).unwrap_or_else(|_| {
                r.problem("id", "expected a UUID");
                uuid::Uuid::nil()
            }),
            None => {
                r.problem("id", "missing");
                uuid::Uuid::nil()
            }
        };
        let sport = match r.string(doc, &ROOT, "sport", "sport") {
            Some(s) => s.parse::<Sport>().unwrap_or_else(|_| {
                r.problem("sport", format!("unknown sport {s:?}"));
                Sport::Other
            }),
            None => {
                r.problem("sport", "missing");
                Sport::Other
            }
        };
        let state = match r.string(doc, &ROOT, "state", "state") {
            Some(s) => WorkoutDocState::parse(&s).unwrap_or_else(|| {
                r.problem("state", format!("unknown state {s:?}"));
                WorkoutDocState::Recording
            }),
            None => {
                r.problem("state", "missing");
                WorkoutDocState::Recording
            }
        };
        let title = r.string(doc, &ROOT, "title", "title");
        let notes = r.string(doc, &ROOT, "notes", "notes");
        let start_time = match r.int(doc, &ROOT, "startTime", "startTime") {
            Some(t) => Timestamp(t),
            None => {
                r.problem("startTime", "missing");
                Timestamp(0)
            }
        };
        let end_time = r.int(doc, &ROOT, "endTime", "endTime").map(Timestamp);
        let summary = match doc.get(ROOT, "summary") {
            Ok(Some(_)) => r
                .object(doc, &ROOT, "summary", ObjType::Map, "summary")
                .map(|s| read_summary(&mut r, doc, &s)),
            _ => None,
        };
        let mut laps = Vec::new();
        if let Ok(Some(_)) = doc.get(ROOT, "laps") {
            if let Some(l) = r.object(doc, &ROOT, "laps", ObjType::List, "laps") {
                for (lap, path) in r.maps_in_list(doc, &l, "laps") {
                    let s = r.required_number(doc, &lap, "startTime", &format!("{path}.startTime"));
                    let e = r.required_number(doc, &lap, "endTime", &format!("{path}.endTime"));
                    #[allow(clippy::cast_possible_truncation)]
                    laps.push(DocLap {
                        start_time: Timestamp(s as i64),
                        end_time: Timestamp(e as i64),
                        timer_s: r.required_number(doc, &lap, "timerS", &format!("{path}.timerS")),
                        distance_m: r
                            .number(doc, &lap, "distanceM", &format!("{path}.distanceM"))
                            .unwrap_or(0.0),
                    });
                }
            }
        }
        let mut validation = DocValidationCounts::default();
        if let Ok(Some(_)) = doc.get(ROOT, "validation") {
            if let Some(v) = r.object(doc, &ROOT, "validation", ObjType::Map, "validation") {
                let count = |key: &str, r: &mut Reader| {
                    let path = format!("validation.{key}");
                    match r.int(doc, &v, key, &path) {
                        Some(n) if n >= 0 => n.unsigned_abs(),
                        Some(_) => {
                            r.problem(path, "must not be negative");
                            0
                        }
                        None => 0,
                    }
                };
                validation.samples = count("samples", &mut r);
                validation.rejected = count("rejected", &mut r);
                validation.flagged = count("flagged", &mut r);
            }
        }
        let mut chunks = Vec::new();
        let mut chunk_places = Vec::new();
        if let Ok(Some(_)) = doc.get(ROOT, "chunks") {
            if let Some(l) = r.object(doc, &ROOT, "chunks", ObjType::List, "chunks") {
                if doc.length(&l) > MAX_CHUNKS {
                    r.problem("chunks", format!("more than {MAX_CHUNKS} chunk references"));
                } else {
                    for (c, path) in r.maps_in_list(doc, &l, "chunks") {
                        let sha = r
                            .string(doc, &c, "sha256", &format!("{path}.sha256"))
                            .unwrap_or_default();
                        let channel = r.string(doc, &c, "channel", &format!("{path}.channel"));
                        let channel = match channel.as_deref().and_then(channel_from_str) {
                            Some(ch) => ch,
                            None => {
                                r.problem(
                                    format!("{path}.channel"),
                                    format!("unknown channel {channel:?}"),
                                );
                                Channel::HeartRate
                            }
                        };
                        let s = r
                            .int(doc, &c, "startTime", &format!("{path}.startTime"))
                            .unwrap_or(0);
                        let e = r
                            .int(doc, &c, "endTime", &format!("{path}.endTime"))
                            .unwrap_or(0);
                        let n = r
                            .int(doc, &c, "count", &format!("{path}.count"))
                            .unwrap_or(0);
                        let seq = match r.int(doc, &c, "seq", &format!("{path}.seq")) {
                            Some(q) if q >= 0 => Some(q.unsigned_abs()),
                            Some(_) => {
                                r.problem(format!("{path}.seq"), "must not be negative");
                                None
                            }
                            None => None,
                        };
                        let sealed = r
                            .bool(doc, &c, "sealed", &format!("{path}.sealed"))
                            .unwrap_or_else(|| channel.is_health());
                        chunk_places.push(ChunkPlace { seq, sealed });
                        chunks.push(ChunkRef {
                            sha256: sha,
                            channel,
                            start_time: Timestamp(s),
                            end_time: Timestamp(e),
                            count: n.max(0).unsigned_abs(),
                        });
                    }
                }
            }
        }
        let w = WorkoutDoc {
            schema_version: version,
            id,
            sport,
            state,
            title,
            notes,
            start_time,
            end_time,
            summary,
            laps,
            validation,
            chunks,
            chunk_places,
            sport_detected: r.bool(doc, &ROOT, "sportDetected", "sportDetected"),
        };
        w.check(&mut r, ctx);
        if r.problems.is_empty() {
            Ok(w)
        } else {
            Err(DocError::Invalid {
                kind: WORKOUT_TYPE,
                problems: r.problems,
            })
        }
    }

    fn check(&self, r: &mut Reader, ctx: &ValidationContext) {
        if self
            .title
            .as_ref()
            .is_some_and(|t| t.chars().count() > MAX_TITLE_CHARS)
        {
            r.problem("title", format!("longer than {MAX_TITLE_CHARS} characters"));
        }
        if self
            .notes
            .as_ref()
            .is_some_and(|t| t.chars().count() > MAX_NOTES_CHARS)
        {
            r.problem("notes", format!("longer than {MAX_NOTES_CHARS} characters"));
        }
        let start = self.start_time.as_millis();
        if start < 0 {
            r.problem("startTime", "before 1970");
        }
        let latest = ctx.now.as_millis().saturating_add(CLOCK_SKEW_MS);
        if start > latest {
            r.problem("startTime", "in the future");
        }
        let max_elapsed_ms = (WorkoutConfig::MAX_ELAPSED_S * 1000.0) as i64;
        if let Some(end) = self.end_time.map(Timestamp::as_millis) {
            if end < start {
                r.problem("endTime", "before startTime");
            } else if end - start > max_elapsed_ms {
                r.problem("endTime", "more than 24 hours after startTime (RULES.md)");
            }
            if end > latest {
                r.problem("endTime", "in the future");
            }
        }
        if self.state == WorkoutDocState::Completed {
            if self.end_time.is_none() {
                r.problem("endTime", "a completed workout needs an end time");
            }
            if self.summary.is_none() {
                r.problem("summary", "a completed workout needs a summary");
            }
        }
        if let Some(s) = &self.summary {
            check_summary(r, s, self);
        }
        let end = self.end_time.map_or(i64::MAX, Timestamp::as_millis);
        let mut prev_end = i64::MIN;
        let mut lap_distance = 0.0;
        for (i, lap) in self.laps.iter().enumerate() {
            let p = format!("laps[{i}]");
            let (ls, le) = (lap.start_time.as_millis(), lap.end_time.as_millis());
            if le < ls {
                r.problem(format!("{p}.endTime"), "before the lap's start");
            }
            if ls < start || le > end {
                r.problem(&p, "outside the workout's start and end");
            }
            if ls < prev_end {
                r.problem(format!("{p}.startTime"), "overlaps the previous lap");
            }
            prev_end = le;
            #[allow(clippy::cast_precision_loss)]
            let lap_s = (le - ls).max(0) as f64 / 1000.0;
            if !(0.0..=lap_s + ELAPSED_TOLERANCE_S).contains(&lap.timer_s) {
                r.problem(format!("{p}.timerS"), "outside 0..=the lap's duration");
            }
            if !(0.0..=limits::DISTANCE_M.1).contains(&lap.distance_m) {
                r.problem(format!("{p}.distanceM"), "outside the distance limits");
            }
            lap_distance += lap.distance_m;
        }
        if let Some(d) = self.summary.and_then(|s| s.distance_m) {
            if lap_distance > d + 1.0 {
                r.problem(
                    "laps",
                    format!("lap distances sum to {lap_distance} m, above the total {d} m"),
                );
            }
        }
        let v = self.validation;
        if v.rejected.saturating_add(v.flagged) > v.samples {
            r.problem("validation", "rejected + flagged exceeds samples");
        }
        let mut seen = std::collections::HashSet::new();
        let mut places = std::collections::HashSet::new();
        for (i, (c, place)) in self.chunks.iter().zip(&self.chunk_places).enumerate() {
            if c.channel.is_health() && !place.sealed {
                r.problem(
                    format!("chunks[{i}].sealed"),
                    "health channels are stored sealed",
                );
            }
            if let Some(seq) = place.seq {
                if !places.insert((c.channel, seq)) {
                    r.problem(
                        format!("chunks[{i}].seq"),
                        format!("another {} chunk has seq {seq}", c.channel.as_str()),
                    );
                }
            }
        }
        for (i, c) in self.chunks.iter().enumerate() {
            let p = format!("chunks[{i}]");
            if !is_sha256_hex(&c.sha256) {
                r.problem(
                    format!("{p}.sha256"),
                    "expected 64 lowercase hexadecimal digits",
                );
            } else if !seen.insert(c.sha256.as_str()) {
                r.problem(format!("{p}.sha256"), "referenced twice");
            }
            let (cs, ce) = (c.start_time.as_millis(), c.end_time.as_millis());
            if ce < cs {
                r.problem(format!("{p}.endTime"), "before the chunk's start");
            }
            if cs < start || ce > end {
                r.problem(&p, "outside the workout's start and end");
            }
            if c.count == 0 {
                r.problem(format!("{p}.count"), "a chunk holds at least one sample");
            }
        }
    }
}

fn read_summary<D: ReadDoc>(r: &mut Reader, doc: &D, s: &ObjId) -> DocSummary {
    let n = |key: &str, r: &mut Reader| r.number(doc, s, key, &format!("summary.{key}"));
    DocSummary {
        elapsed_s: r.required_number(doc, s, "elapsedS", "summary.elapsedS"),
        timer_s: r.required_number(doc, s, "timerS", "summary.timerS"),
        moving_s: r.required_number(doc, s, "movingS", "summary.movingS"),
        calories_kcal: r.required_number(doc, s, "caloriesKcal", "summary.caloriesKcal"),
        distance_m: n("distanceM", r),
        ascent_m: n("ascentM", r),
        avg_speed_mps: n("avgSpeedMps", r),
        max_speed_mps: n("maxSpeedMps", r),
        avg_hr_bpm: n("avgHrBpm", r),
        max_hr_bpm: n("maxHrBpm", r),
        avg_power_w: n("avgPowerW", r),
        max_power_w: n("maxPowerW", r),
        avg_cadence_rpm: n("avgCadenceRpm", r),
        max_cadence_rpm: n("maxCadenceRpm", r),
        min_spo2_pct: n("minSpo2Pct", r),
    }
}

fn check_summary(r: &mut Reader, s: &DocSummary, w: &WorkoutDoc) {
    for (path, v) in [
        ("summary.elapsedS", s.elapsed_s),
        ("summary.timerS", s.timer_s),
        ("summary.movingS", s.moving_s),
        ("summary.caloriesKcal", s.calories_kcal),
    ] {
        if v < 0.0 {
            r.problem(path, "must not be negative");
        }
    }
    if s.elapsed_s > WorkoutConfig::MAX_ELAPSED_S + ELAPSED_TOLERANCE_S {
        r.problem("summary.elapsedS", "more than 24 hours (RULES.md)");
    }
    if let Some(end) = w.end_time {
        let span = end.secs_since(w.start_time);
        if (s.elapsed_s - span).abs() > ELAPSED_TOLERANCE_S {
            r.problem(
                "summary.elapsedS",
                format!(
                    "{} s does not match endTime - startTime = {span} s",
                    s.elapsed_s
                ),
            );
        }
    }
    if s.timer_s > s.elapsed_s + ELAPSED_TOLERANCE_S {
        r.problem("summary.timerS", "above elapsed time");
    }
    if s.moving_s > s.timer_s + ELAPSED_TOLERANCE_S {
        r.problem("summary.movingS", "above timer time");
    }
    if w.state == WorkoutDocState::Completed && s.timer_s < WorkoutConfig::MIN_TIMER_S {
        r.problem(
            "summary.timerS",
            "a completed workout lasts at least one minute (RULES.md)",
        );
    }
    let hours = s.elapsed_s.max(0.0) / 3600.0;
    let kcal_max = MAX_KCAL_PER_HOUR_PER_KG * WEIGHT_KG.1 * hours;
    if s.calories_kcal > kcal_max {
        r.problem(
            "summary.caloriesKcal",
            format!("above the plausible {kcal_max:.0} kcal"),
        );
    }
    in_range(r, "summary.distanceM", s.distance_m, limits::DISTANCE_M);
    in_range(
        r,
        "summary.ascentM",
        s.ascent_m,
        (0.0, limits::DISTANCE_M.1),
    );
    in_range(r, "summary.avgSpeedMps", s.avg_speed_mps, limits::SPEED_MPS);
    in_range(r, "summary.maxSpeedMps", s.max_speed_mps, limits::SPEED_MPS);
    not_above(
        r,
        "summary.avgSpeedMps",
        s.avg_speed_mps,
        s.max_speed_mps,
        "maximum",
    );
    in_range(r, "summary.avgHrBpm", s.avg_hr_bpm, limits::HR_BPM);
    in_range(r, "summary.maxHrBpm", s.max_hr_bpm, limits::HR_BPM);
    not_above(r, "summary.avgHrBpm", s.avg_hr_bpm, s.max_hr_bpm, "maximum");
    in_range(r, "summary.avgPowerW", s.avg_power_w, limits::POWER_W);
    in_range(r, "summary.maxPowerW", s.max_power_w, limits::POWER_W);
    not_above(
        r,
        "summary.avgPowerW",
        s.avg_power_w,
        s.max_power_w,
        "maximum",
    );
    in_range(
        r,
        "summary.avgCadenceRpm",
        s.avg_cadence_rpm,
        limits::CADENCE_RPM,
    );
    in_range(
        r,
        "summary.maxCadenceRpm",
        s.max_cadence_rpm,
        limits::CADENCE_RPM,
    );
    not_above(
        r,
        "summary.avgCadenceRpm",
        s.avg_cadence_rpm,
        s.max_cadence_rpm,
        "maximum",
    );
    in_range(r, "summary.minSpo2Pct", s.min_spo2_pct, limits::SPO2_PCT);
}

// ---------------------------------------------------------------------------------------------
// Validation entry points shared by device and server

/// A document after validation.
#[derive(Clone, Debug, PartialEq)]
pub enum Validated {
    Profile(Box<ProfileDoc>),
    Workout(Box<WorkoutDoc>),
    Untyped,
}

/// Reads `doc`, decides its kind and validates it. Untyped documents pass.
pub fn validate<D: ReadDoc>(doc: &D, ctx: &ValidationContext) -> Result<Validated, DocError> {
    match kind_of(doc)?.0 {
        DocKind::Profile => ProfileDoc::read(doc, ctx).map(|p| Validated::Profile(Box::new(p))),
        DocKind::Workout => WorkoutDoc::read(doc, ctx).map(|w| Validated::Workout(Box::new(w))),
        DocKind::Untyped => Ok(Validated::Untyped),
    }
}

/// Validates `after` as an update of `before` (None for a new document): `after` must be valid,
/// a typed document keeps its kind, and its schema version never goes down. This is what the
/// server runs on a copy before committing an incoming change.
pub fn validate_update<B: ReadDoc, A: ReadDoc>(
    before: Option<&B>,
    after: &A,
    ctx: &ValidationContext,
) -> Result<Validated, DocError> {
    let (kind, version) = kind_of(after)?;
    if let Some(before) = before {
        // A stored document that no longer reads is judged by its successor alone.
        if let Ok((old_kind, old_version)) = kind_of(before) {
            if old_kind != DocKind::Untyped && old_kind != kind {
                return Err(DocError::Transition(format!(
                    "a {} document cannot become {}",
                    old_kind.as_str(),
                    kind.as_str()
                )));
            }
            if old_kind == kind && version < old_version {
                return Err(DocError::Transition(format!(
                    "schema version may not go down ({old_version} -> {version})"
                )));
            }
        }
    }
    validate(after, ctx)
}

// ---------------------------------------------------------------------------------------------
// Writers

fn map_at(doc: &mut AutoCommit, parent: &ObjId, key: &str) -> Result<ObjId, DocError> {
    match doc.get(parent, key)? {
        Some((Value::Object(ObjType::Map), id)) => Ok(id),
        _ => Ok(doc.put_object(parent, key, ObjType::Map)?),
    }
}

fn put_opt_f64(
    doc: &mut AutoCommit,
    obj: &ObjId,
    key: &str,
    v: Option<f64>,
) -> Result<(), DocError> {
    match v {
        Some(v) => doc.put(obj, key, v)?,
        None => {
            if doc.get(obj, key)?.is_some() {
                doc.delete(obj, key)?;
            }
        }
    }
    Ok(())
}

/// Sets a text field, turning a plain string into a text object, and edits it with a diff so
/// that concurrent edits of other parts of the text merge.
pub fn set_text(doc: &mut AutoCommit, key: &str, value: &str) -> Result<(), DocError> {
    let id = match doc.get(ROOT, key)? {
        Some((Value::Object(ObjType::Text), id)) => id,
        _ => doc.put_object(ROOT, key, ObjType::Text)?,
    };
    doc.update_text(&id, value)?;
    Ok(())
}

/// A new, empty profile document of the current schema version.
pub fn new_profile(actor: Option<ActorId>) -> Result<AutoCommit, DocError> {
    let mut doc = AutoCommit::new();
    if let Some(a) = actor {
        doc.set_actor(a);
    }
    doc.put(ROOT, "type", PROFILE_TYPE)?;
    doc.put(ROOT, "schemaVersion", PROFILE_SCHEMA_VERSION)?;
    let s = doc.put_object(ROOT, "settings", ObjType::Map)?;
    doc.put(&s, "units", "metric")?;
    let p = doc.put_object(ROOT, "privacy", ObjType::Map)?;
    doc.put(&p, "profileVisibility", Visibility::Private.as_str())?;
    doc.put(&p, "workoutVisibility", Visibility::Private.as_str())?;
    doc.put_object(ROOT, "physiology", ObjType::Map)?;
    let z = doc.put_object(ROOT, "zones", ObjType::Map)?;
    doc.put_object(&z, "hrBpm", ObjType::List)?;
    doc.put_object(&z, "powerW", ObjType::List)?;
    doc.put_object(ROOT, "gear", ObjType::Map)?;
    doc.put_object(ROOT, "plans", ObjType::Map)?;
    // Time 0 and no message: `new_user_profile` relies on this change being the same wherever
    // it is made.
    doc.commit_with(CommitOptions::default().with_time(0));
    Ok(doc)
}

/// The id of a user's profile document: the first 16 bytes of SHA-256 over a fixed prefix and
/// the server's user id. Every device of the user finds the same document without asking, so
/// two devices cannot make two profiles (ADR 0012). The server can check a profile document's
/// id against its owner with this same function.
pub fn profile_document_id(user_id: &str) -> DocumentId {
    let mut seed = Vec::with_capacity(32 + user_id.len());
    seed.extend_from_slice(b"fitedge.profile/v1\0");
    seed.extend_from_slice(user_id.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &seed);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest.as_ref()[..16]);
    DocumentId::from_bytes(id)
}

/// The first change of a user's profile document, identical on every device: the
/// [`new_profile`] skeleton made by an actor derived from the document id, at time 0, with no
/// message. Two devices that each make it offline produce the same change (same hash), so
/// merging their copies keeps one `settings`, one `physiology`, ... and their later writes merge
/// field by field instead of one device's whole map hiding the other's.
pub fn new_user_profile(user_id: &str) -> Result<(DocumentId, AutoCommit), DocError> {
    let id = profile_document_id(user_id);
    let mut seed = Vec::with_capacity(48);
    seed.extend_from_slice(b"fitedge.profile.skeleton/v1\0");
    seed.extend_from_slice(id.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA256, &seed);
    let actor = ActorId::from(&digest.as_ref()[..16]);
    let doc = new_profile(Some(actor))?;
    Ok((id, doc))
}

/// Writes only the physiology fields that differ, so concurrent edits of other fields merge.
pub fn set_physiology(doc: &mut AutoCommit, p: &Physiology) -> Result<(), DocError> {
    let ph = map_at(doc, &ROOT, "physiology")?;
    let mut r = Reader::default();
    let current = read_physiology(&mut r, doc, &ph, "");
    #[allow(clippy::cast_precision_loss)]
    let fields = [
        ("weightKg", current.weight_kg, p.weight_kg),
        (
            "birthYear",
            current.birth_year.map(|y| y as f64),
            p.birth_year.map(|y| y as f64),
        ),
        ("hrMaxBpm", current.hr_max_bpm, p.hr_max_bpm),
        ("hrRestBpm", current.hr_rest_bpm, p.hr_rest_bpm),
        ("ftpW", current.ftp_w, p.ftp_w),
    ];
    for (key, old, new) in fields {
        if old != new {
            if key == "birthYear" {
                match p.birth_year {
                    Some(y) => doc.put(&ph, key, y)?,
                    None => put_opt_f64(doc, &ph, key, None)?,
                }
            } else {
                put_opt_f64(doc, &ph, key, new)?;
            }
        }
    }
    Ok(())
}

/// Writes the physiology fields that are set in `p` and differ from the document's, leaving
/// the others alone (unlike [`set_physiology`], an unset field is not removed). Returns whether
/// anything was written.
pub fn put_physiology(doc: &mut AutoCommit, p: &Physiology) -> Result<bool, DocError> {
    let ph = map_at(doc, &ROOT, "physiology")?;
    let mut r = Reader::default();
    let current = read_physiology(&mut r, doc, &ph, "");
    let mut wrote = false;
    if let Some(y) = p.birth_year.filter(|y| current.birth_year != Some(*y)) {
        doc.put(&ph, "birthYear", y)?;
        wrote = true;
    }
    for (key, old, new) in [
        ("weightKg", current.weight_kg, p.weight_kg),
        ("hrMaxBpm", current.hr_max_bpm, p.hr_max_bpm),
        ("hrRestBpm", current.hr_rest_bpm, p.hr_rest_bpm),
        ("ftpW", current.ftp_w, p.ftp_w),
    ] {
        if let Some(v) = new.filter(|v| old != Some(*v)) {
            doc.put(&ph, key, v)?;
            wrote = true;
        }
    }
    Ok(wrote)
}

/// Adds or replaces one piece of gear.
pub fn put_gear(doc: &mut AutoCommit, id: &str, g: &GearItem) -> Result<(), DocError> {
    let gear = map_at(doc, &ROOT, "gear")?;
    let item = map_at(doc, &gear, id)?;
    doc.put(&item, "name", g.name.as_str())?;
    doc.put(&item, "kind", g.kind.as_str())?;
    doc.put(&item, "retired", g.retired)?;
    doc.put(&item, "distanceM", g.distance_m)?;
    Ok(())
}

/// A new workout document in the `recording` state.
pub fn new_workout(
    actor: Option<ActorId>,
    id: uuid::Uuid,
    sport: Sport,
    start: Timestamp,
) -> Result<AutoCommit, DocError> {
    let mut doc = AutoCommit::new();
    if let Some(a) = actor {
        doc.set_actor(a);
    }
    doc.put(ROOT, "type", WORKOUT_TYPE)?;
    doc.put(ROOT, "schemaVersion", WORKOUT_SCHEMA_VERSION)?;
    doc.put(ROOT, "id", id.to_string())?;
    doc.put(ROOT, "sport", sport.as_str())?;
    doc.put(ROOT, "state", WorkoutDocState::Recording.as_str())?;
    doc.put_object(ROOT, "title", ObjType::Text)?;
    doc.put_object(ROOT, "notes", ObjType::Text)?;
    doc.put(ROOT, "startTime", start.as_millis())?;
    doc.put_object(ROOT, "laps", ObjType::List)?;
    let v = doc.put_object(ROOT, "validation", ObjType::Map)?;
    for k in ["samples", "rejected", "flagged"] {
        doc.put(&v, k, 0_u64)?;
    }
    doc.put_object(ROOT, "chunks", ObjType::List)?;
    doc.commit();
    Ok(doc)
}

/// Appends a sample-chunk reference.
pub fn push_chunk(doc: &mut AutoCommit, c: &ChunkRef) -> Result<(), DocError> {
    let list = match doc.get(ROOT, "chunks")? {
        Some((Value::Object(ObjType::List), id)) => id,
        _ => doc.put_object(ROOT, "chunks", ObjType::List)?,
    };
    let at = doc.length(&list);
    let m = doc.insert_object(&list, at, ObjType::Map)?;
    doc.put(&m, "sha256", c.sha256.as_str())?;
    doc.put(&m, "channel", c.channel.as_str())?;
    doc.put(&m, "startTime", c.start_time.as_millis())?;
    doc.put(&m, "endTime", c.end_time.as_millis())?;
    doc.put(&m, "count", c.count)?;
    Ok(())
}

/// Appends a sample-chunk reference with its place (sequence number and sealing), which another
/// device of the user needs to open it.
pub fn push_chunk_at(
    doc: &mut AutoCommit,
    c: &ChunkRef,
    seq: u64,
    sealed: bool,
) -> Result<(), DocError> {
    push_chunk(doc, c)?;
    let list = match doc.get(ROOT, "chunks")? {
        Some((Value::Object(ObjType::List), id)) => id,
        _ => return Err(DocError::Automerge("chunks is not a list".into())),
    };
    let at = doc.length(&list).saturating_sub(1);
    set_chunk_place(doc, at, seq, sealed)
}

/// Sets the place of the chunk reference at `index` (for references written before `seq`
/// existed; only the recording device knows it).
pub fn set_chunk_place(
    doc: &mut AutoCommit,
    index: usize,
    seq: u64,
    sealed: bool,
) -> Result<(), DocError> {
    let list = match doc.get(ROOT, "chunks")? {
        Some((Value::Object(ObjType::List), id)) => id,
        _ => return Err(DocError::Automerge("chunks is not a list".into())),
    };
    let m = match doc.get(&list, index)? {
        Some((Value::Object(ObjType::Map), id)) => id,
        _ => return Err(DocError::Automerge(format!("chunks[{index}] is not a map"))),
    };
    doc.put(&m, "seq", seq)?;
    doc.put(&m, "sealed", sealed)?;
    Ok(())
}

/// Says whether the workout's sport was guessed by the engine.
pub fn set_sport_detected(doc: &mut AutoCommit, detected: bool) -> Result<(), DocError> {
    doc.put(ROOT, "sportDetected", detected)?;
    Ok(())
}

/// Appends a lap.
pub fn push_lap(doc: &mut AutoCommit, lap: &DocLap) -> Result<(), DocError> {
    let list = match doc.get(ROOT, "laps")? {
        Some((Value::Object(ObjType::List), id)) => id,
        _ => doc.put_object(ROOT, "laps", ObjType::List)?,
    };
    let at = doc.length(&list);
    let m = doc.insert_object(&list, at, ObjType::Map)?;
    doc.put(&m, "startTime", lap.start_time.as_millis())?;
    doc.put(&m, "endTime", lap.end_time.as_millis())?;
    doc.put(&m, "timerS", lap.timer_s)?;
    doc.put(&m, "distanceM", lap.distance_m)?;
    Ok(())
}

/// Completes the workout: end time, summary and validation counts.
pub fn complete_workout(
    doc: &mut AutoCommit,
    end: Timestamp,
    s: &DocSummary,
    counts: DocValidationCounts,
) -> Result<(), DocError> {
    doc.put(ROOT, "state", WorkoutDocState::Completed.as_str())?;
    doc.put(ROOT, "endTime", end.as_millis())?;
    write_summary(doc, s)?;
    let v = map_at(doc, &ROOT, "validation")?;
    doc.put(&v, "samples", counts.samples)?;
    doc.put(&v, "rejected", counts.rejected)?;
    doc.put(&v, "flagged", counts.flagged)?;
    Ok(())
}

/// Writes the summary figures (absent figures are removed).
pub fn write_summary(doc: &mut AutoCommit, s: &DocSummary) -> Result<(), DocError> {
    let m = map_at(doc, &ROOT, "summary")?;
    doc.put(&m, "elapsedS", s.elapsed_s)?;
    doc.put(&m, "timerS", s.timer_s)?;
    doc.put(&m, "movingS", s.moving_s)?;
    doc.put(&m, "caloriesKcal", s.calories_kcal)?;
    for (k, v) in [
        ("distanceM", s.distance_m),
        ("ascentM", s.ascent_m),
        ("avgSpeedMps", s.avg_speed_mps),
        ("maxSpeedMps", s.max_speed_mps),
        ("avgHrBpm", s.avg_hr_bpm),
        ("maxHrBpm", s.max_hr_bpm),
        ("avgPowerW", s.avg_power_w),
        ("maxPowerW", s.max_power_w),
        ("avgCadenceRpm", s.avg_cadence_rpm),
        ("maxCadenceRpm", s.max_cadence_rpm),
        ("minSpo2Pct", s.min_spo2_pct),
    ] {
        put_opt_f64(doc, &m, k, v)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Migration

/// What [`migrate`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Migration {
    /// Already at the current version (or untyped): nothing written.
    Current,
    /// Migrated from this version to the current one in one change.
    From(u64),
}

/// Brings a typed document to the current schema version. The migration is one change, made
/// with an actor id derived from the document's heads and a zero timestamp, so that devices
/// migrating the same state make the identical change (see the module documentation).
pub fn migrate(doc: &mut AutoCommit) -> Result<Migration, DocError> {
    let (kind, version) = kind_of(doc)?;
    let current = match kind {
        DocKind::Profile => PROFILE_SCHEMA_VERSION,
        DocKind::Workout => WORKOUT_SCHEMA_VERSION,
        DocKind::Untyped => return Ok(Migration::Current),
    };
    if version == current {
        return Ok(Migration::Current);
    }
    check_version(kind.as_str(), version, current).or_else(|e| match e {
        DocError::Invalid { .. } => Ok(()),
        other => Err(other),
    })?;
    doc.commit();
    let heads = doc.get_heads();
    let mut seed = Vec::with_capacity(32 + heads.len() * 32);
    seed.extend_from_slice(b"fitedge.migration/");
    seed.extend_from_slice(kind.as_str().as_bytes());
    let mut sorted = heads.clone();
    sorted.sort();
    for h in &sorted {
        seed.extend_from_slice(h.as_ref());
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &seed);
    let actor = ActorId::from(&digest.as_ref()[..16]);
    let own = doc.get_actor().clone();
    doc.set_actor(actor);
    let result = match kind {
        DocKind::Profile => migrate_profile_v1(doc),
        DocKind::Workout => migrate_workout_v1(doc),
        DocKind::Untyped => Ok(()),
    };
    match result {
        Ok(()) => {
            doc.commit_with(CommitOptions::default().with_time(0).with_message(format!(
                "migrate {} v{version} -> v{current}",
                kind.as_str()
            )));
            doc.set_actor(own);
            Ok(Migration::From(version))
        }
        Err(e) => {
            doc.rollback();
            doc.set_actor(own);
            Err(e)
        }
    }
}

/// Profile v1 -> v2: physiology fields move from the root into `physiology`.
fn migrate_profile_v1(doc: &mut AutoCommit) -> Result<(), DocError> {
    let mut r = Reader::default();
    let old = read_physiology(&mut r, doc, &ROOT, "");
    let ph = map_at(doc, &ROOT, "physiology")?;
    for key in ["weightKg", "hrMaxBpm", "hrRestBpm", "ftpW"] {
        let v = r.number(doc, &ROOT, key, key);
        if let Some(v) = v {
            doc.put(&ph, key, v)?;
        }
        if doc.get(ROOT, key)?.is_some() {
            doc.delete(ROOT, key)?;
        }
    }
    if let Some(y) = old.birth_year {
        doc.put(&ph, "birthYear", y)?;
    }
    if doc.get(ROOT, "birthYear")?.is_some() {
        doc.delete(ROOT, "birthYear")?;
    }
    for (key, ty) in [
        ("settings", ObjType::Map),
        ("privacy", ObjType::Map),
        ("gear", ObjType::Map),
        ("plans", ObjType::Map),
    ] {
        if doc.get(ROOT, key)?.is_none() {
            doc.put_object(ROOT, key, ty)?;
        }
    }
    if doc.get(ROOT, "zones")?.is_none() {
        let z = doc.put_object(ROOT, "zones", ObjType::Map)?;
        doc.put_object(&z, "hrBpm", ObjType::List)?;
        doc.put_object(&z, "powerW", ObjType::List)?;
    }
    doc.put(ROOT, "schemaVersion", PROFILE_SCHEMA_VERSION)?;
    Ok(())
}

/// Workout v1 -> v2: `start`/`end` in seconds become `startTime`/`endTime` in milliseconds, and a
/// plain-string title or notes becomes a text object.
fn migrate_workout_v1(doc: &mut AutoCommit) -> Result<(), DocError> {
    let mut r = Reader::default();
    #[allow(clippy::cast_possible_truncation)]
    for (old, new) in [("start", "startTime"), ("end", "endTime")] {
        if let Some(s) = r.number(doc, &ROOT, old, old) {
            doc.put(ROOT, new, (s * 1000.0).round() as i64)?;
        }
        if doc.get(ROOT, old)?.is_some() {
            doc.delete(ROOT, old)?;
        }
    }
    for key in ["title", "notes"] {
        let text = r.string(doc, &ROOT, key, key).unwrap_or_default();
        if !matches!(doc.get(ROOT, key)?, Some((Value::Object(ObjType::Text), _))) {
            let t = doc.put_object(ROOT, key, ObjType::Text)?;
            doc.splice_text(&t, 0, 0, &text)?;
        }
    }
    doc.put(ROOT, "schemaVersion", WORKOUT_SCHEMA_VERSION)?;
    Ok(())
}
