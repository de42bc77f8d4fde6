#![no_main]
//! Arbitrary bytes through the FIT importer: it must refuse or recover, never panic.
//! Crashers go into ../regressions/fit_import/, which a normal test replays.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fitedge_core::fit::import(data, fitedge_core::Profile::default(), "fuzz");
});
