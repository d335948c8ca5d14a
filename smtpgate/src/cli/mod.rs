//! The command line.
pub mod args;
pub mod check_log;
pub mod commands;
pub mod notify;
pub mod settings;
