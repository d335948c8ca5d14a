//! The agent, the service `smtpgate run` starts. On resolved
//! [`settings::Settings`] it attaches the gate ([`run`]), turns logins into
//! grants ([`watch`]) for a [`sink`], removes expired grants ([`sweep`]),
//! applies the grants other hosts publish ([`stream`]), counts recipients
//! against quotas for Postfix ([`policy`]) and serves metrics ([`metrics`]).
//! On a POP host, `smtpgate watch` ([`pop_host`]) publishes its logins'
//! grants instead. It builds on the gate layer only; where a
//! setting came from is the command line's business.

pub mod accept;
pub mod interfaces;
pub mod metrics;
pub mod policy;
pub mod policy_protocol;
pub mod pop_host;
pub mod privileges;
pub mod quota;
pub mod run;
pub mod settings;
pub mod sink;
pub mod stream;
pub mod sweep;
pub mod throttle;
pub mod unix_socket;
pub mod watch;
