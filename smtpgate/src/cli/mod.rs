//! The command line: the flags ([`args`]), their resolution with the
//! configuration file into the agent's settings ([`settings`]), and the
//! commands ([`commands`], [`check_log`], [`notify`]), and where their log
//! lines go ([`logging`]). The one-shot
//! commands act on the pinned gate directly, so they work whether or not
//! an agent runs.

pub mod args;
pub mod check_log;
pub mod commands;
pub mod generate;
pub mod logging;
pub mod notify;
pub mod settings;
