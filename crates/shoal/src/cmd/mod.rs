//! One thin module per subcommand: parse its arguments, build the library's
//! config, run it.

pub mod bench;
pub mod broker;
pub mod cluster;
pub mod ctl;
pub mod dgram;
pub mod proxy;
pub mod stats;
