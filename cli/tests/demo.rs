//! `fitedge demo` end to end: an embedded server, a watch and a phone that record offline, edit
//! the same workout concurrently, reconnect and converge. The command's own exit status says
//! whether the histories (each device's `list` and `summary`), the heart rate each device opens,
//! the profile and the documents converged; this test also checks the merged text.

// Test helpers may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn the_demo_converges_and_merges_both_offline_edits() {
    let Some(fit) = fitedge_tests::fit_dir() else {
        return;
    };
    let out = Command::new(env!("CARGO_BIN_EXE_fitedge"))
        .arg("demo")
        .arg("--watch-file")
        .arg(fit.join("activity-small-fenix2-run.fit"))
        .arg("--phone-file")
        .arg(fit.join("strava-android-app-201.10-b1218918.fit"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.trim_end().ends_with("CONVERGED"), "{stdout}");
    assert!(
        stdout.contains(
            "histories identical (watch, phone, server): true; device documents identical (heads): true; server holds the same heads: true"
        ),
        "{stdout}"
    );
    // Each device opened the other's sealed heart rate with the user's shared key, and the
    // user has one profile document everywhere.
    assert!(
        stdout.contains(
            "heart rate opened from the sealed chunks, identical on both devices: true; one profile document for the user (watch, phone, server): true"
        ),
        "{stdout}"
    );
    // Both devices show the character-level merge of the two offline edits, through `summary`.
    let merged =
        "title \"Easy morning run by the harbour\", notes \"Windy. Felt good. Legs fresh.\"";
    assert_eq!(stdout.matches(merged).count(), 2, "{stdout}");
}
