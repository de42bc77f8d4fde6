//! fitedge-ffi
//!
//! Empty until its issue lands; see README.md.
