#![no_main]
//! Arbitrary bytes through the GPX and TCX importers: they must refuse or import, never panic.
//! Crashers go into ../regressions/xml_import/, which a normal test replays.

use fitedge_core::formats::{import, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [Format::Gpx, Format::Tcx] {
        let _ = import(format, data, fitedge_core::Profile::default(), "fuzz");
    }
});
