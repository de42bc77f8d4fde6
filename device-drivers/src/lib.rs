//! fitedge-devices
//!
//! Empty until its issue lands; see README.md.
