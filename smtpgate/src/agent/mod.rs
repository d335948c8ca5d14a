//! The agent, the service `smtpgate run` starts. On resolved
//! [`settings::Settings`] it attaches the gate ([`run`]), turns logins into
//! grants ([`watch`]), removes expired grants ([`sweep`]), counts recipients
//! against quotas for Postfix ([`policy`]) and serves metrics ([`metrics`]).
//! It builds on the gate layer only; where a setting came
//! from is the command line's business.

pub mod accept;
pub mod metrics;
pub mod policy;
pub mod policy_protocol;
pub mod privileges;
pub mod quota;
pub mod run;
pub mod settings;
pub mod sweep;
pub mod throttle;
pub mod unix_socket;
pub mod watch;
