//! The login socket's report parser: no panic, and a report it accepts
//! names a customer's address, the one its first field holds, and reads
//! back the same from the line `notify` writes for it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smtpgate_logins::{customer_address, Report};

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let Ok(report) = Report::parse(text) else {
        return;
    };
    assert_eq!(customer_address(report.ip), Ok(()));
    let first = text
        .split_ascii_whitespace()
        .next()
        .expect("an accepted report has fields");
    assert_eq!(
        first
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.to_canonical()),
        Ok(report.ip)
    );
    assert!(text.split_ascii_whitespace().count() <= 3);
    if let Some(line) = report.to_line() {
        assert_eq!(
            Report::parse(line.strip_suffix('\n').expect("a line ends with \\n")),
            Ok(report)
        );
    }
});
