//! The UniFFI binding generator, pinned to the workspace's UniFFI version:
//! `cargo run -p fitedge-ffi --features bindgen --bin uniffi-bindgen -- generate --library ...`.
fn main() {
    uniffi::uniffi_bindgen_main()
}
