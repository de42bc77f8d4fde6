//! `fitedge replay FILE.fit [--speed 60]`: drives the replay transport through the sensor hub
//! into a recording and prints the resulting summary, beside the file's own import.
//!
//! Each session of the file becomes the notifications its sensors would have sent (heart-rate
//! strap, power meter, speed and cadence sensor or foot pod, pulse oximeter; GPS and altitude
//! from the host), played at `--speed` times real time (as fast as possible without it).

use std::path::PathBuf;

use serde_json::json;

use fitedge_core::fit;
use fitedge_core::Profile;
use fitedge_devices::transport::replay::replay_session;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// A FIT recording.
    file: PathBuf,
    /// Playback speed: 1 is real time, 60 a minute per second. Default: as fast as possible.
    #[arg(long)]
    speed: Option<f64>,
    /// Wheel circumference in millimetres.
    #[arg(long, default_value_t = 2105, value_parser = clap::value_parser!(u32).range(500..=4000))]
    wheel_mm: u32,
    /// One JSON array, one object per session.
    #[arg(long)]
    json: bool,
}

fn r1(v: Option<f64>) -> serde_json::Value {
    v.map_or(serde_json::Value::Null, |x| {
        json!((x * 10.0).round() / 10.0)
    })
}

pub fn run(args: &ReplayArgs) -> u8 {
    let name = args.file.display().to_string();
    let bytes = match std::fs::read(&args.file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("fitedge: cannot read {name}: {e}");
            return 1;
        }
    };
    let imp = match fit::import(&bytes, Profile::default(), &name) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("fitedge: {name}: {e}");
            return 1;
        }
    };
    if args.speed.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
        eprintln!("fitedge: --speed must be a positive number");
        return 2;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fitedge: cannot start the runtime: {e}");
            return 1;
        }
    };
    let circ = f64::from(args.wheel_mm) / 1000.0;
    let mut out = vec![];
    for s in &imp.sessions {
        let r = rt.block_on(replay_session(s, circ, args.speed));
        let Some(sum) = r.summary else { continue };
        let (m, i) = (&sum.metrics, &s.summary.metrics);
        out.push(json!({
            "file": name,
            "session": s.index,
            "sport": m.sport,
            "start_time": sum.start_time.to_rfc3339(),
            "elapsed_s": r1(Some(m.elapsed_s)),
            "timer_s": r1(Some(m.timer_s)),
            "distance_m": r1(m.distance_m),
            "avg_hr": r1(m.avg_hr_bpm),
            "max_hr": r1(m.max_hr_bpm),
            "avg_power_w": r1(m.avg_power_w),
            "normalized_power_w": r1(m.normalized_power_w),
            "calories_kcal": r1(Some(m.calories_kcal)),
            "samples": sum.samples,
            "rejected": sum.rejected,
            "replay": {
                "notifications": r.report.notifications,
                "recorded": r.report.recorded,
                "host_samples": r.report.host_samples,
                "decode_errors": r.report.decode_errors,
            },
            "import": {
                "distance_m": r1(i.distance_m),
                "timer_s": r1(Some(i.timer_s)),
                "avg_hr": r1(i.avg_hr_bpm),
                "normalized_power_w": r1(i.normalized_power_w),
                "calories_kcal": r1(Some(i.calories_kcal)),
            },
        }));
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        for o in &out {
            outln!(
                "{} session {}: {} | elapsed {} s, timer {} s, distance {} m, HR avg {} max {}, power avg {} NP {} W, {} kcal",
                o["file"].as_str().unwrap_or(""),
                o["session"], o["sport"], o["elapsed_s"], o["timer_s"], o["distance_m"], o["avg_hr"], o["max_hr"],
                o["avg_power_w"], o["normalized_power_w"], o["calories_kcal"]
            );
            outln!(
                "  replayed {} notifications ({} readings recorded, {} host samples); import: distance {} m, timer {} s, HR avg {}, NP {} W, {} kcal",
                o["replay"]["notifications"], o["replay"]["recorded"], o["replay"]["host_samples"],
                o["import"]["distance_m"], o["import"]["timer_s"], o["import"]["avg_hr"],
                o["import"]["normalized_power_w"], o["import"]["calories_kcal"]
            );
        }
    }
    0
}
