//! The operator's parts that are not the controllers themselves: leader election, the
//! metrics/health HTTP endpoint, configuration and start-up.

pub mod config;
pub mod http;
pub mod leader;
