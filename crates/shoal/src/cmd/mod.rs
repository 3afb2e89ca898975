//! One thin module per subcommand: parse its arguments, build the library's
//! config, run it.

pub mod bench;
pub mod bench_amqp;
pub mod broker;
pub mod cluster;
pub mod ctl;
pub mod ctl_broker;
pub mod dgram;
pub mod proxy;
pub mod stats;
