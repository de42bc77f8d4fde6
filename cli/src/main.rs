//! `fitedge`: import, inspect and export workouts on the command line.
//!
//! Exit codes (for scripts):
//! - 0: everything worked;
//! - 1: at least one file could not be read (the others were still imported);
//! - 2: bad usage (unknown flag, missing argument);
//! - 3: at least one file was damaged and only partly recovered (the loss is reported);
//! - 4: the local database could not be opened or written.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod import;
mod keyfile;

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
    /// Import FIT files: compute every session with the FitEdge engine, store it, print it.
    #[command(after_help = import::AFTER_HELP)]
    Import(ImportArgs),
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
    let code = match cli.command {
        Command::Import(args) => import::run(&db, &args),
    };
    ExitCode::from(code)
}
