#!/usr/bin/env bash
# Builds FitEdgeFFI.xcframework (on macOS with Xcode) from the Rust library:
#   iOS devices            aarch64-apple-ios          (Tier 2)
#   iOS simulator          aarch64-apple-ios-sim, x86_64-apple-ios (Tier 2)
#   watchOS devices        arm64_32-apple-watchos, aarch64-apple-watchos (Tier 3)
#   watchOS simulator      aarch64-apple-watchos-sim  (Tier 3)
# Tier 3 targets have no prebuilt standard library: they are built with a nightly toolchain and
# -Zbuild-std (rustup toolchain install nightly --component rust-src). Set WATCHOS=0 to skip them.
set -euo pipefail
cd "$(dirname "$0")"
root=../..
lib=libfitedge_ffi.a
# FITEDGE_FFI_FEATURES=ble adds the SDK's own Bluetooth transport (btleplug over CoreBluetooth;
# untested on watchOS, so combine it with WATCHOS=0). See README.md and docs/adr/0011.
features="${FITEDGE_FFI_FEATURES:-}"
build() { cargo build --manifest-path "$root/Cargo.toml" --release -p fitedge-ffi ${features:+--features "$features"} --target "$1"; }
build_tier3() { cargo +nightly build -Zbuild-std=std,panic_abort --manifest-path "$root/Cargo.toml" --release -p fitedge-ffi ${features:+--features "$features"} --target "$1"; }

for t in aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios; do rustup target add "$t"; build "$t"; done
out="$root/target/xcframework"; rm -rf "$out" FitEdgeFFI.xcframework; mkdir -p "$out"
lipo -create "$root/target/aarch64-apple-ios-sim/release/$lib" "$root/target/x86_64-apple-ios/release/$lib" -output "$out/ios-sim-$lib"
args=(-library "$root/target/aarch64-apple-ios/release/$lib" -headers Sources/FitEdgeFFI/include
      -library "$out/ios-sim-$lib" -headers Sources/FitEdgeFFI/include)
if [ "${WATCHOS:-1}" = 1 ]; then
    for t in arm64_32-apple-watchos aarch64-apple-watchos aarch64-apple-watchos-sim; do build_tier3 "$t"; done
    lipo -create "$root/target/arm64_32-apple-watchos/release/$lib" "$root/target/aarch64-apple-watchos/release/$lib" -output "$out/watchos-$lib"
    args+=(-library "$out/watchos-$lib" -headers Sources/FitEdgeFFI/include
           -library "$root/target/aarch64-apple-watchos-sim/release/$lib" -headers Sources/FitEdgeFFI/include)
fi
xcodebuild -create-xcframework "${args[@]}" -output FitEdgeFFI.xcframework
echo "built FitEdgeFFI.xcframework"
