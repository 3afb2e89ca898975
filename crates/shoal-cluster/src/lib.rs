//! A primary that runs N workers sharing listening sockets.
//!
//! # Layout
//!
//! (Filled in as the modules land.)
