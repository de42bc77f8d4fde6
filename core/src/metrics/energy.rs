//! Energy (calories), the VO2max estimate and sport detection.
//!
//! Calories, in order of preference:
//! 1. **Power** (cycling with a power meter): mechanical work / gross efficiency. Gross
//!    efficiency of trained cyclists is 20-25 % (Ettema & Loras 2009, Eur. J. Appl. Physiol.
//!    105:15-21); 24 % gives the familiar "1 kJ of work ~ 1 kcal".
//! 2. **Heart rate** (Keytel 2005, see [`super::heart::keytel_kcal_per_min`]) when heart rate
//!    covers most of the workout and the profile has the person's own sex, weight and age.
//! 3. **Movement models**: on foot, the ACSM metabolic equations (ACSM's Guidelines for Exercise
//!    Testing and Prescription, 10th ed., ch. 6): walking VO2 = 0.1 v + 1.8 v G + 3.5, running
//!    VO2 = 0.2 v + 0.9 v G + 3.5 (ml/kg/min, v in m/min, G the uphill grade). Integrated over the
//!    workout, v dt becomes distance and v G dt becomes ascent, so the total oxygen cost is
//!    `0.1 d_walk + 0.2 d_run + c x ascent + 3.5 x minutes`. Cycling without power: the road
//!    cycling power model of Martin et al. 1998 (J. Appl. Biomech. 14:276-291): rolling
//!    resistance, aerodynamic drag and the change in potential energy, then the same 24 %
//!    efficiency. Martin's potential-energy term is signed (m g v sin(arctan G): a descent
//!    gives back what the climb took), so over a ride it sums to m g times the net rise, not
//!    the total ascent: on a loop the climbs are paid back on the descents, where gravity
//!    carries the rider through rolling resistance and drag. A ride that ends lower than it
//!    started counts no potential energy rather than a negative one: the rider does not get
//!    the excess back (it is braked away), and the other terms already assume pedalling
//!    throughout.
//! 4. **MET x kg x h** with Compendium of Physical Activities values (Ainsworth et al. 2011,
//!    Med. Sci. Sports Exerc. 43:1575-1581) when nothing better is possible. A Compendium MET
//!    is the cost of doing the activity, so when the distance says how long the person actually
//!    moved, the activity MET applies to the moving time and the stopped time (rest at the pool
//!    wall between intervals, waiting at a light) costs [`REST_MET`]; without a distance the
//!    whole timer is taken as moving.
//!
//! The result is checked against plausible limits: never below resting metabolism (1 MET) and
//! never above [`MAX_KCAL_PER_HOUR_PER_KG`]; a clamped value is marked.

use serde::{Deserialize, Serialize};

use crate::profile::ResolvedProfile;
use crate::sport::Sport;

pub const GROSS_EFFICIENCY: f64 = 0.24;
pub const J_PER_KCAL: f64 = 4184.0;
/// 1 MET = 3.5 ml O2/kg/min, and 1 MET-hour is taken as 1 kcal/kg (RULES.md).
pub const ML_O2_PER_MET_HOUR: f64 = 3.5 * 60.0;
/// Stopped time inside a workout: Compendium 07040, "standing quietly, standing in a line",
/// 1.3 MET (Ainsworth et al. 2011).
pub const REST_MET: f64 = 1.3;
/// ~20 MET: sustained by elite endurance athletes only.
pub const MAX_KCAL_PER_HOUR_PER_KG: f64 = 20.0;

/// Martin et al. 1998 road model constants: typical road bike and rider on the hoods.
pub mod cycling_model {
    pub const BIKE_KG: f64 = 9.0;
    pub const CRR: f64 = 0.005;
    pub const CDA_M2: f64 = 0.32;
    pub const AIR_DENSITY: f64 = 1.226;
    pub const DRIVETRAIN_EFFICIENCY: f64 = 0.976;
    pub const G: f64 = 9.806_65;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalorieMethod {
    Power,
    HeartRate,
    AcsmOnFoot,
    CyclingModel,
    Met,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct EnergyInputs {
    pub timer_s: f64,
    /// Moving time from the primary distance source (0 when there is none).
    pub moving_s: f64,
    pub power_work_j: Option<f64>,
    pub power_s: f64,
    pub hr_s: f64,
    pub keytel_kcal: f64,
    /// Distance split by the walk/run threshold, from the primary distance source.
    pub walk_m: f64,
    pub run_m: f64,
    pub ascent_m: f64,
    pub descent_m: f64,
    /// Integral of v^3 dt (m^3/s^2) from the primary distance source.
    pub v3_integral: f64,
    pub has_distance: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calories {
    pub kcal: f64,
    pub method: CalorieMethod,
    /// True when the estimate broke the plausible limits and was clamped.
    pub clamped: bool,
}

/// Compendium MET values used when no movement model applies.
pub fn met(sport: Sport) -> f64 {
    match sport {
        Sport::Running => 9.8,  // 12030, running 6 mph
        Sport::Walking => 3.5,  // 17200, walking 2.8-3.2 mph, level
        Sport::Hiking => 6.0,   // 17080, hiking cross-country
        Sport::Cycling => 7.0,  // 02010, stationary cycling, general
        Sport::Swimming => 5.8, // 18310, laps, freestyle, light/moderate
        Sport::Rowing => 7.0,   // 15230-ish, stationary rowing 100 W, moderate
        Sport::Transition => 3.5,
        Sport::Other => 4.0, // 02030-ish, general conditioning
    }
}

/// Minimum coverage of the timer by a channel before a method relies on it.
const COVERAGE: f64 = 0.5;

pub fn calories(sport: Sport, p: &ResolvedProfile, e: &EnergyInputs) -> Calories {
    let kg = p.weight_kg;
    let hours = e.timer_s / 3600.0;
    let covered = |s: f64| e.timer_s > 0.0 && s / e.timer_s >= COVERAGE;
    let (kcal, method) = match e.power_work_j {
        Some(work) if sport == Sport::Cycling && covered(e.power_s) => {
            // Scale to the whole timer when the meter missed a part.
            let work = work * (e.timer_s / e.power_s).max(1.0);
            (work / J_PER_KCAL / GROSS_EFFICIENCY, CalorieMethod::Power)
        }
        _ if covered(e.hr_s) && p.allows_keytel() => {
            let kcal = e.keytel_kcal * (e.timer_s / e.hr_s).max(1.0);
            (kcal, CalorieMethod::HeartRate)
        }
        _ if sport.on_foot() && e.has_distance => {
            let d = e.walk_m + e.run_m;
            let run_share = if d > 0.0 { e.run_m / d } else { 0.0 };
            let climb = 1.8 * (1.0 - run_share) + 0.9 * run_share;
            let o2 = 0.1 * e.walk_m + 0.2 * e.run_m + climb * e.ascent_m + 3.5 * e.timer_s / 60.0;
            (o2 / ML_O2_PER_MET_HOUR * kg, CalorieMethod::AcsmOnFoot)
        }
        _ if sport == Sport::Cycling && e.has_distance => {
            use cycling_model::*;
            let m = kg + BIKE_KG;
            let d = e.walk_m + e.run_m;
            let net_rise = (e.ascent_m - e.descent_m).max(0.0);
            let work =
                (m * G * CRR * d + 0.5 * AIR_DENSITY * CDA_M2 * e.v3_integral + m * G * net_rise)
                    / DRIVETRAIN_EFFICIENCY;
            (
                work / J_PER_KCAL / GROSS_EFFICIENCY,
                CalorieMethod::CyclingModel,
            )
        }
        _ if e.has_distance && e.moving_s > 0.0 => {
            let moving_h = e.moving_s.min(e.timer_s) / 3600.0;
            let kcal = (met(sport) * moving_h + REST_MET * (hours - moving_h)) * kg;
            (kcal, CalorieMethod::Met)
        }
        _ => (met(sport) * kg * hours, CalorieMethod::Met),
    };
    let lo = kg * hours;
    let hi = MAX_KCAL_PER_HOUR_PER_KG * kg * hours;
    let clamped_kcal = kcal.clamp(lo, hi.max(lo));
    Calories {
        kcal: clamped_kcal,
        method,
        clamped: clamped_kcal != kcal,
    }
}

/// A VO2max estimate (ml/kg/min) from one workout: the oxygen cost of the average effort
/// (ACSM equations; leg cycling VO2 = 10.8 W/kg + 7) divided by the fraction of heart-rate
/// reserve it took, since %HRR tracks %VO2 reserve (Swain & Leutholtz 1997, Med. Sci. Sports
/// Exerc. 29:410-414). Only for efforts that used 40-100 % of the reserve for 10 minutes or more:
/// outside that the relation is too loose to report.
// Each argument is one figure of the finished workout; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn vo2max_estimate(
    sport: Sport,
    p: &ResolvedProfile,
    avg_hr: Option<f64>,
    moving_s: f64,
    distance_m: Option<f64>,
    run_share: f64,
    ascent_m: f64,
    avg_power_w: Option<f64>,
) -> Option<f64> {
    let hr = avg_hr?;
    if moving_s < 600.0 {
        return None;
    }
    let reserve = (hr - p.hr_rest_bpm) / (p.hr_max_bpm - p.hr_rest_bpm);
    if !(0.4..=1.0).contains(&reserve) {
        return None;
    }
    let vo2 = if sport == Sport::Cycling {
        10.8 * avg_power_w? / p.weight_kg + 7.0
    } else if sport.on_foot() {
        let d = distance_m.filter(|d| *d > 0.0)?;
        let v = d / moving_s * 60.0;
        let grade = ascent_m / d;
        if run_share >= 0.5 {
            0.2 * v + 0.9 * v * grade + 3.5
        } else {
            0.1 * v + 1.8 * v * grade + 3.5
        }
    } else {
        return None;
    };
    Some(3.5 + (vo2 - 3.5) / reserve)
}

/// Guesses the sport when the app did not say: a power meter means cycling; otherwise the
/// average moving speed decides: under the walk-run transition (2.0 m/s) walking (hiking when it
/// climbs more than 300 m per hour), up to 6.5 m/s running (faster than a marathon world record
/// pace of 5.7 m/s is not sustained on foot), above that cycling.
pub fn detect_sport(has_power: bool, avg_moving_speed: Option<f64>, climb_m_per_h: f64) -> Sport {
    if has_power {
        return Sport::Cycling;
    }
    match avg_moving_speed {
        Some(v) if v >= 6.5 => Sport::Cycling,
        Some(v) if v >= super::track::WALK_RUN_MPS => Sport::Running,
        Some(v) if v > 0.2 && climb_m_per_h > 300.0 => Sport::Hiking,
        Some(v) if v > 0.2 => Sport::Walking,
        _ => Sport::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Profile, Sex};

    fn anon() -> ResolvedProfile {
        Profile::default().resolve()
    }

    #[test]
    fn power_method_is_work_over_efficiency() {
        let e = EnergyInputs {
            timer_s: 3600.0,
            power_work_j: Some(200.0 * 3600.0),
            power_s: 3600.0,
            ..EnergyInputs::default()
        };
        let c = calories(Sport::Cycling, &anon(), &e);
        assert_eq!(c.method, CalorieMethod::Power);
        assert!((c.kcal - 720_000.0 / 4184.0 / 0.24).abs() < 1e-6);
    }

    #[test]
    fn power_needs_half_the_timer_covered() {
        let mut e = EnergyInputs {
            timer_s: 3600.0,
            power_work_j: Some(100.0 * 1800.0),
            power_s: 1800.0,
            ..EnergyInputs::default()
        };
        assert_eq!(
            calories(Sport::Cycling, &anon(), &e).method,
            CalorieMethod::Power
        );
        e.power_s = 1799.0;
        assert_eq!(
            calories(Sport::Cycling, &anon(), &e).method,
            CalorieMethod::Met
        );
    }

    #[test]
    fn keytel_needs_the_persons_own_profile() {
        let e = EnergyInputs {
            timer_s: 3600.0,
            hr_s: 3600.0,
            keytel_kcal: 700.0,
            ..EnergyInputs::default()
        };
        assert_eq!(
            calories(Sport::Rowing, &anon(), &e).method,
            CalorieMethod::Met
        );
        let known = Profile {
            weight_kg: Some(70.0),
            age_years: Some(30),
            sex: Some(Sex::Female),
            ..Profile::default()
        }
        .resolve();
        let c = calories(Sport::Rowing, &known, &e);
        assert_eq!(c.method, CalorieMethod::HeartRate);
        assert_eq!(c.kcal, 700.0);
    }

    #[test]
    fn acsm_walking_on_the_flat() {
        // 5 km walk in 1 h: 0.1 x 5000 + 3.5 x 60 = 710 ml/kg -> 3.38 MET-h x 70 kg = 236.7
        let e = EnergyInputs {
            timer_s: 3600.0,
            walk_m: 5000.0,
            has_distance: true,
            ..EnergyInputs::default()
        };
        let c = calories(Sport::Walking, &anon(), &e);
        assert_eq!(c.method, CalorieMethod::AcsmOnFoot);
        assert!((c.kcal - 710.0 / 210.0 * 70.0).abs() < 1e-6);
    }

    #[test]
    fn cycling_model_counts_the_net_rise_only() {
        let flat = EnergyInputs {
            timer_s: 3600.0,
            walk_m: 25_000.0,
            v3_integral: 3600.0 * 7.0f64.powi(3),
            has_distance: true,
            ..EnergyInputs::default()
        };
        let kcal = |ascent_m, descent_m| {
            let e = EnergyInputs {
                ascent_m,
                descent_m,
                ..flat
            };
            let c = calories(Sport::Cycling, &anon(), &e);
            assert_eq!(c.method, CalorieMethod::CyclingModel);
            c.kcal
        };
        let base = kcal(0.0, 0.0);
        // A loop: the climbs are paid back on the descents.
        assert!((kcal(500.0, 500.0) - base).abs() < 1e-9);
        // 100 m net rise: m g h / drivetrain / efficiency, m = 70 kg rider + 9 kg bike.
        use cycling_model::*;
        let pe = 79.0 * G * 100.0 / DRIVETRAIN_EFFICIENCY / J_PER_KCAL / GROSS_EFFICIENCY;
        assert!((kcal(600.0, 500.0) - base - pe).abs() < 1e-9);
        // A net descent counts nothing, not a negative amount.
        assert!((kcal(400.0, 500.0) - base).abs() < 1e-9);
    }

    #[test]
    fn met_applies_to_moving_time_and_rest_to_stopped_time() {
        // 1 h swim, 40 min of it moving: (5.8 x 40/60 + 1.3 x 20/60) x 70 kg
        let mut e = EnergyInputs {
            timer_s: 3600.0,
            moving_s: 2400.0,
            walk_m: 2000.0,
            has_distance: true,
            ..EnergyInputs::default()
        };
        let c = calories(Sport::Swimming, &anon(), &e);
        assert_eq!(c.method, CalorieMethod::Met);
        assert!((c.kcal - (5.8 * 2.0 / 3.0 + 1.3 / 3.0) * 70.0).abs() < 1e-9);
        // Moving the whole timer (or more): the plain MET.
        e.moving_s = 3600.0;
        assert!((calories(Sport::Swimming, &anon(), &e).kcal - 5.8 * 70.0).abs() < 1e-9);
        e.moving_s = 3601.0;
        assert!((calories(Sport::Swimming, &anon(), &e).kcal - 5.8 * 70.0).abs() < 1e-9);
        // No moving time known: the whole timer at the activity MET.
        e.moving_s = 0.0;
        assert!((calories(Sport::Swimming, &anon(), &e).kcal - 5.8 * 70.0).abs() < 1e-9);
        e.moving_s = 2400.0;
        e.has_distance = false;
        assert!((calories(Sport::Swimming, &anon(), &e).kcal - 5.8 * 70.0).abs() < 1e-9);
    }

    #[test]
    fn implausible_estimates_are_clamped() {
        let e = EnergyInputs {
            timer_s: 3600.0,
            power_work_j: Some(2900.0 * 3600.0),
            power_s: 3600.0,
            ..EnergyInputs::default()
        };
        let c = calories(Sport::Cycling, &anon(), &e);
        assert!(c.clamped);
        assert_eq!(c.kcal, 20.0 * 70.0);
        let idle = EnergyInputs {
            timer_s: 3600.0,
            power_work_j: Some(0.0),
            power_s: 3600.0,
            ..EnergyInputs::default()
        };
        let c = calories(Sport::Cycling, &anon(), &idle);
        assert!(c.clamped);
        assert_eq!(c.kcal, 70.0);
    }

    #[test]
    fn detection_thresholds() {
        assert_eq!(detect_sport(true, Some(1.0), 0.0), Sport::Cycling);
        assert_eq!(detect_sport(false, Some(6.5), 0.0), Sport::Cycling);
        assert_eq!(detect_sport(false, Some(6.49), 0.0), Sport::Running);
        assert_eq!(detect_sport(false, Some(2.0), 0.0), Sport::Running);
        assert_eq!(detect_sport(false, Some(1.99), 0.0), Sport::Walking);
        assert_eq!(detect_sport(false, Some(1.2), 301.0), Sport::Hiking);
        assert_eq!(detect_sport(false, None, 0.0), Sport::Other);
    }

    #[test]
    fn vo2max_from_a_steady_run() {
        let p = Profile {
            hr_max_bpm: Some(190),
            hr_rest_bpm: Some(50),
            ..Profile::default()
        }
        .resolve();
        // 10 km in 50 min at 162 bpm (80 % HRR): VO2 = 0.2 x 200 + 3.5 = 43.5 -> 3.5 + 40/0.8 = 53.5
        let v = vo2max_estimate(
            Sport::Running,
            &p,
            Some(162.0),
            3000.0,
            Some(10_000.0),
            1.0,
            0.0,
            None,
        );
        assert!((v.unwrap() - 53.5).abs() < 1e-9);
        assert!(vo2max_estimate(
            Sport::Running,
            &p,
            Some(100.0),
            3000.0,
            Some(10_000.0),
            1.0,
            0.0,
            None
        )
        .is_none());
        assert!(vo2max_estimate(
            Sport::Running,
            &p,
            Some(162.0),
            599.0,
            Some(2000.0),
            1.0,
            0.0,
            None
        )
        .is_none());
    }
}
