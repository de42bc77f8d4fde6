//! Helpers for the end-to-end tests: finding the shared device recordings.
//!
//! The recordings live outside the repository (their licences stay with them), in `../shared/`
//! beside the checkout, or wherever `FITEDGE_SHARED_DIR` points. A test that needs them and
//! cannot find them fails loudly, naming the path it tried; set `FITEDGE_SKIP_SHARED=1` to
//! turn that failure into a loud skip on a machine that really has no copy (CI always has it).

// Test support prints on purpose: a skip must be loud.
#![allow(clippy::print_stderr)]

use std::path::PathBuf;

/// The shared directory, or `None` after printing a loud warning when skipping is allowed.
/// Panics (failing the test) when it is missing and skipping was not asked for.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("FITEDGE_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    if dir.join("data/fit/MANIFEST.json").is_file() {
        return Some(dir);
    }
    let msg = format!(
        "the shared device recordings were not found at {} (set FITEDGE_SHARED_DIR to the \
         shared/ directory that holds data/fit/MANIFEST.json)",
        dir.display()
    );
    if std::env::var_os("FITEDGE_SKIP_SHARED").is_some() {
        eprintln!("\n!!!!!!!! SKIPPED: {msg} !!!!!!!!\n");
        None
    } else {
        panic!("{msg}; set FITEDGE_SKIP_SHARED=1 to skip loudly instead");
    }
}

pub fn fit_dir() -> Option<PathBuf> {
    shared_dir().map(|d| d.join("data/fit"))
}
