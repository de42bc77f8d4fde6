//! fitedge-server
//!
//! Empty until its issue lands; see README.md.
