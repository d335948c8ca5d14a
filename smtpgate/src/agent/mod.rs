//! The agent: the long-running service.
pub mod accept;
pub mod metrics;
pub mod run;
pub mod settings;
pub mod sweep;
pub mod throttle;
pub mod watch;
