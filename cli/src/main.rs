//! `fitedge`: import, inspect and export workouts on the command line.
//!
//! Exit codes (for scripts):
//! - 0: everything worked;
//! - 1: at least one file could not be read (the others were still imported);
//! - 2: bad usage (unknown flag, missing argument);
//! - 3: part of at least one file was not used: a damaged file only partly recovered, or
//!   samples outside its sessions or past the 24-hour limit (each loss is reported);
//! - 4: the local database could not be opened or written (for `import`: the files that could
//!   not be stored are reported, the others are still imported).
//!
//! When several apply, the most serious wins: 4, then 1, then 3.

#![allow(clippy::print_stdout, clippy::print_stderr)]

/// `fitedge serve` is the server too, so it takes the server's allocator: jemalloc gives back
/// the memory that evicting idle sync documents frees, where glibc's malloc kept it (ADR 0009).
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `println!` for the command's output: a closed pipe (`fitedge list | head`) ends the
/// command quietly instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(0);
        }
    }};
}

mod decode;
mod demo;
mod history;
mod import;
mod keyfile;
mod replay;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fitedge_core::{Profile, Sex};

#[derive(Debug, Parser)]
#[command(
    name = "fitedge",
    version,
    about = "FitEdge: your workouts, on your machine"
)]
struct Cli {
    /// The local database. Default: $FITEDGE_DB, else $XDG_DATA_HOME/fitedge/fitedge.db
    /// (~/.local/share/fitedge/fitedge.db).
    #[arg(long, global = true, env = "FITEDGE_DB")]
    db: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import FIT, GPX or TCX files: compute every session with the FitEdge engine, store it, print it.
    #[command(after_help = import::AFTER_HELP)]
    Import(ImportArgs),
    /// List stored workouts, newest first.
    List(history::ListArgs),
    /// Everything about one workout (an id or a unique prefix of one).
    Summary {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Totals and averages per week, month or year, and streaks (needs 5 workouts).
    Stats {
        #[arg(long, default_value = "week")]
        period: fitedge_core::store::Period,
        #[arg(long)]
        sport: Option<fitedge_core::Sport>,
        #[arg(long)]
        json: bool,
    },
    /// Personal records.
    Records {
        #[arg(long)]
        json: bool,
    },
    /// Export a workout as GPX or TCX (to stdout, or -o FILE).
    Export {
        id: String,
        #[arg(long)]
        format: Option<fitedge_core::formats::Format>,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Shoes, bikes and other gear, and their wear.
    #[command(subcommand)]
    Gear(history::GearCommand),
    /// Run the FitEdge server (the same flags as `fitedge-server serve`).
    Serve(fitedge_server::Config),
    /// Decode raw sensor payloads (a GATT characteristic or ANT+ pages), for people who build
    /// or debug sensors.
    Decode(decode::DecodeArgs),
    /// Replay a FIT recording through synthesised sensor notifications, the sensor hub and a
    /// new recording, and print the resulting summary.
    Replay(replay::ReplayArgs),
    /// Offline-first sync end to end: an embedded server, a watch and a phone of one user that
    /// record offline, edit the same workout concurrently, reconnect and converge.
    Demo(demo::DemoArgs),
}

#[derive(Debug, clap::Args)]
struct ImportArgs {
    /// FIT files to import.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print one JSON array, one object per session (in file order), instead of a table.
    #[arg(long)]
    json: bool,
    /// Body weight in kg (else the file's profile, else 70 kg).
    #[arg(long, value_parser = parse_range::<f64>(20.0, 400.0))]
    weight: Option<f64>,
    /// Age in years (else the file's profile, else 35).
    #[arg(long, value_parser = parse_range::<u32>(5, 120))]
    age: Option<u32>,
    /// male or female (else the file's profile, else unknown).
    #[arg(long)]
    sex: Option<Sex>,
    /// Measured maximum heart rate, bpm (else the file's zones, else 220 - age).
    #[arg(long, value_parser = parse_range::<u16>(100, 250))]
    hr_max: Option<u16>,
    /// Resting heart rate, bpm (else the file's profile, else 60).
    #[arg(long, value_parser = parse_range::<u16>(25, 120))]
    hr_rest: Option<u16>,
    /// Functional threshold power, W (else the file's own threshold; without it no IF or TSS).
    #[arg(long, value_parser = parse_range::<u16>(30, 700))]
    ftp: Option<u16>,
}

fn parse_range<T>(lo: T, hi: T) -> impl Fn(&str) -> Result<T, String> + Clone
where
    T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display + Send + Sync + 'static,
{
    move |s: &str| {
        let v: T = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
        if v < lo || v > hi {
            return Err(format!("{v} is outside {lo}..={hi}"));
        }
        Ok(v)
    }
}

impl ImportArgs {
    fn profile(&self) -> Profile {
        Profile {
            weight_kg: self.weight,
            age_years: self.age,
            sex: self.sex,
            hr_max_bpm: self.hr_max,
            hr_rest_bpm: self.hr_rest,
            ftp_w: self.ftp,
        }
    }
}

fn default_db() -> PathBuf {
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("fitedge").join("fitedge.db")
}

/// Opens the database with the storage key (created on first use).
pub(crate) fn open_store(db: &std::path::Path) -> anyhow::Result<fitedge_core::store::Store> {
    use anyhow::Context;
    let key = keyfile::load_or_create(db)?;
    fitedge_core::store::Store::open(db, Some(key))
        .with_context(|| format!("cannot open the database {}", db.display()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let db = cli.db.clone().unwrap_or_else(default_db);
    let done = |r: anyhow::Result<()>| match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("fitedge: {e:#}");
            1
        }
    };
    let code = match &cli.command {
        Command::Import(args) => import::run(&db, args),
        Command::List(a) => done(history::list(&db, a)),
        Command::Summary { id, json } => done(history::summary(&db, id, *json)),
        Command::Stats {
            period,
            sport,
            json,
        } => done(history::stats(&db, *period, *sport, *json)),
        Command::Records { json } => done(history::records(&db, *json)),
        Command::Export { id, format, output } => {
            done(history::export(&db, id, *format, output.as_ref()))
        }
        Command::Gear(cmd) => done(history::gear(&db, cmd)),
        Command::Serve(config) => match fitedge_server::run(config.clone()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("fitedge serve: {e:#}");
                1
            }
        },
        Command::Decode(a) => decode::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Demo(a) => demo::run(a),
    };
    ExitCode::from(code)
}
