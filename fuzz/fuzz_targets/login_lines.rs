//! The login parser on what servers write: a client's fields inside each
//! supported server's real formats (Dovecot's user and IMAP ID values, UW's
//! user and authentication names, Cyrus's host and user, Courier's and
//! Qpopper's user), through what the server and rsyslog do to them, judged
//! line by line as one log. A grant may only name the address in the
//! client-address field of a successful login's line.

#![no_main]

use std::sync::OnceLock;

use jiff::{tz::TimeZone, Timestamp};
use libfuzzer_sys::fuzz_target;
use smtpgate_fuzz::{written, CLIENT};
use smtpgate_logins::{Parser, ParserOptions, Verdict};

fn parser() -> &'static Parser {
    static PARSER: OnceLock<Parser> = OnceLock::new();
    PARSER.get_or_init(|| {
        Parser::new(ParserOptions {
            timezone: TimeZone::UTC,
            ..ParserOptions::default()
        })
        .expect("default options")
    })
}

fuzz_target!(|input: &[u8]| {
    let Some(written) = written(input) else {
        return;
    };
    let now: Timestamp = "2026-12-01T17:00:00Z".parse().expect("a time");
    let mut log = parser().stream();
    for line in &written.lines {
        if let Verdict::Grant(login) = log.judge(line, now) {
            assert!(
                written.success,
                "a line that records no login granted {}: {:?}",
                login.ip,
                String::from_utf8_lossy(line)
            );
            assert_eq!(
                login.ip,
                CLIENT,
                "granted another address than the client's: {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
});
