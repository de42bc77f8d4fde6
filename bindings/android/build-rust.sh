#!/usr/bin/env bash
# Cross-compiles libfitedge_ffi.so for the Android ABIs into fitedge/src/main/jniLibs with
# cargo-ndk. Needs the Android NDK (ANDROID_NDK_HOME) and, once:
#   cargo install cargo-ndk
#   rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-ndk >/dev/null || { echo "cargo-ndk not found: cargo install cargo-ndk" >&2; exit 1; }
[ -n "${ANDROID_NDK_HOME:-}" ] || { echo "set ANDROID_NDK_HOME to the Android NDK" >&2; exit 1; }
cargo ndk --manifest-path ../../Cargo.toml \
    -t arm64-v8a -t armeabi-v7a -t x86_64 \
    -o fitedge/src/main/jniLibs \
    build --release -p fitedge-ffi
echo "jniLibs: $(find fitedge/src/main/jniLibs -name '*.so' | sort | tr '\n' ' ')"
