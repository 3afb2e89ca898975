//! HTTP and TCP reverse proxy with nginx's upstream semantics.
//!
//! # Layout
//!
//! (Filled in as the modules land.)
