//! The public API: options, time handling, custom patterns, journal input,
//! and robustness against arbitrary bytes.

use jiff::tz::{Offset, TimeZone};
use jiff::Timestamp;
use smtpgate_logins::{Entry, Error, Format, Login, Parser, ParserOptions, Service, Verdict};

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn parser_with(configure: impl FnOnce(&mut ParserOptions)) -> Parser {
    let mut options = ParserOptions {
        timezone: TimeZone::UTC,
        ..ParserOptions::default()
    };
    configure(&mut options);
    Parser::new(options).unwrap()
}

fn parser() -> Parser {
    parser_with(|_| {})
}

fn grant(verdict: Verdict) -> Login {
    match verdict {
        Verdict::Grant(login) => login,
        Verdict::NoGrant(reason) => panic!("expected a grant, got no grant: {reason}"),
    }
}

fn reason(verdict: Verdict) -> String {
    match verdict {
        Verdict::Grant(login) => panic!("expected no grant, got {login:?}"),
        Verdict::NoGrant(reason) => reason.into(),
    }
}

const DOVECOT_DEC_31: &[u8] = b"Dec 31 23:59:58 mx dovecot: pop3-login: Login: user=<alice>, \
    method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, mpid=1, TLS, session=<a>";

#[test]
fn a_dec_31_line_read_on_jan_1_belongs_to_last_year() {
    let login = grant(parser().parse(DOVECOT_DEC_31, ts("2027-01-01T00:00:03Z")));
    assert_eq!(login.time, Some(ts("2026-12-31T23:59:58Z")));
}

#[test]
fn a_dec_31_line_read_on_dec_31_belongs_to_this_year() {
    let login = grant(parser().parse(DOVECOT_DEC_31, ts("2026-12-31T23:59:59Z")));
    assert_eq!(login.time, Some(ts("2026-12-31T23:59:58Z")));
}

#[test]
fn offset_less_stamps_are_read_in_the_configured_zone() {
    let berlin = TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
    let parser = parser_with(|options| options.timezone = berlin);
    let now = ts("2026-12-01T00:00:00Z");
    let winter =
        b"Nov 22 20:25:01 mx imapd: LOGIN, user=a, ip=[192.0.2.1], port=[1], protocol=IMAP";
    assert_eq!(
        grant(parser.parse(winter, now)).time,
        Some(ts("2026-11-22T19:25:01Z"))
    );
    let summer =
        b"Jul 22 20:25:01 mx imapd: LOGIN, user=a, ip=[192.0.2.1], port=[1], protocol=IMAP";
    assert_eq!(
        grant(parser.parse(summer, now)).time,
        Some(ts("2026-07-22T18:25:01Z"))
    );
    // A stamp with its own offset ignores the zone.
    let iso = b"2026-07-22T20:25:01-04:00 mx imapd: LOGIN, user=a, ip=[192.0.2.1], port=[1]";
    assert_eq!(
        grant(parser.parse(iso, now)).time,
        Some(ts("2026-07-23T00:25:01Z"))
    );
    // Dovecot's file stamps have no offset either.
    let file = b"2026-07-22 20:25:01 imap-login: Info: Login: user=<a>, method=PLAIN, rip=192.0.2.1, lip=192.0.2.2";
    assert_eq!(
        grant(parser.parse(file, now)).time,
        Some(ts("2026-07-22T18:25:01Z"))
    );
}

#[test]
fn ipv4_mapped_addresses_become_ipv4() {
    let parser = parser();
    let now = ts("2026-11-23T00:00:00Z");
    for line in [
        &b"Nov 22 20:25:01 mx pop3d: LOGIN, user=a, ip=[::ffff:192.0.2.10], port=[1]"[..],
        b"Nov 22 20:25:01 mx dovecot: pop3-login: Login: user=<a>, method=PLAIN, rip=::ffff:192.0.2.10, lip=::ffff:192.0.2.1",
        b"Nov 22 20:25:01 mx cyrus/pop3[1]: login: [::ffff:192.0.2.10] a plaintext User logged in",
    ] {
        let login = grant(parser.parse(line, now));
        assert_eq!(login.ip, "192.0.2.10".parse::<std::net::IpAddr>().unwrap());
        assert!(login.ip.is_ipv4());
    }
}

#[test]
fn services_not_configured_do_not_grant() {
    let parser = parser_with(|options| options.services = vec![Service::Pop3]);
    let line = b"Nov 22 20:25:01 mx dovecot: imap-login: Login: user=<a>, method=PLAIN, rip=192.0.2.1, lip=192.0.2.2";
    assert_eq!(
        reason(parser.parse(line, ts("2026-11-23T00:00:00Z"))),
        "service imap not granting"
    );
    let parser = parser_with(|options| options.services = vec![]);
    let line = b"Nov 22 20:25:01 mx pop3d: LOGIN, user=a, ip=[192.0.2.1], port=[1]";
    assert_eq!(
        reason(parser.parse(line, ts("2026-11-23T00:00:00Z"))),
        "service pop3 not granting"
    );
}

#[test]
fn custom_patterns_grant_only_when_they_match() {
    let parser = parser_with(|options| {
        options.custom_patterns = vec![
            r"^teapop: Successful login for (?P<user>\S+) .+ \[(?P<ip>[0-9.:a-f]+)\]$".into(),
            r"^spop3d: user (?P<user>\S+) authenticated - (?P<ip>\S+)$".into(),
            r"^mailgw: (?P<service>IMAP|POP3) login ok from (?P<ip>\S+)$".into(),
        ]
    });
    let now = ts("2026-11-23T00:00:00Z");
    let login = grant(parser.parse(
        b"Nov 22 20:25:01 mx teapop[77]: Successful login for alice@example.org (x) [192.0.2.7]",
        now,
    ));
    assert_eq!(
        (
            login.ip.to_string(),
            login.service,
            login.user.as_str(),
            login.server
        ),
        (
            "192.0.2.7".to_owned(),
            Service::Pop3,
            "alice@example.org",
            "custom"
        )
    );
    assert_eq!(login.time, Some(ts("2026-11-22T20:25:01Z")));

    let login = grant(parser.parse(
        b"<22>1 2026-11-22T20:25:01Z mx spop3d 9 - - user bob authenticated - 192.0.2.8",
        now,
    ));
    assert_eq!(
        (login.ip.to_string(), login.user.as_str()),
        ("192.0.2.8".to_owned(), "bob")
    );

    let login = grant(parser.parse(b"mailgw: IMAP login ok from 2001:db8::9", now));
    assert_eq!((login.service, login.user.as_str()), (Service::Imap, ""));

    // Anchored at the program: the same text in another program's line does not match.
    let other = b"Nov 22 20:25:01 mx postfix/smtpd[1]: reject: from=<teapop: Successful login for x y [6.6.6.6]>";
    assert_eq!(reason(parser.parse(other, now)), "not a login line");
    // A match whose ip group is no address does not grant.
    assert!(
        reason(parser.parse(b"spop3d: user bob authenticated - nowhere", now))
            .starts_with("custom:")
    );
}

#[test]
fn built_in_verdicts_take_precedence_over_custom_patterns() {
    let parser =
        parser_with(|options| options.custom_patterns = vec![r"rip=(?P<ip>[0-9.]+)".into()]);
    let failed = b"Nov 22 20:25:01 mx dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): \
        user=<a>, method=PLAIN, rip=192.0.2.66, lip=192.0.2.1";
    assert_eq!(
        reason(parser.parse(failed, ts("2026-11-23T00:00:00Z"))),
        "dovecot: authentication failed"
    );
}

#[test]
fn invalid_custom_patterns_are_clear_errors() {
    let build = |pattern: &str| {
        Parser::new(ParserOptions {
            custom_patterns: vec![pattern.to_owned()],
            ..ParserOptions::default()
        })
    };
    let err = build(r"login from (\S+)").unwrap_err();
    assert!(matches!(err, Error::PatternWithoutIp { .. }));
    assert_eq!(
        err.to_string(),
        r#"custom pattern "login from (\\S+)" has no named group `ip` (write it as (?P<ip>…))"#
    );
    let err = build(r"login from (?P<ip>\S+").unwrap_err();
    assert!(matches!(err, Error::InvalidPattern { .. }));
    assert_eq!(
        err.to_string(),
        r#"invalid custom pattern "login from (?P<ip>\\S+": unclosed group"#
    );
    assert!(
        err.to_string()
            .starts_with(r#"invalid custom pattern "login from (?P<ip>\\S+": "#),
        "{err}"
    );
    assert!(std::error::Error::source(&err).is_some());
    assert!(
        build(r"(?P<ipaddr>\S+)").is_err(),
        "the group must be named exactly `ip`"
    );
}

#[test]
fn journal_messages_with_a_separate_identifier_and_time() {
    let parser = parser();
    let now = ts("2026-11-22T20:30:00Z");
    let time = Some(ts("2026-11-22T20:25:01.5Z"));
    let message =
        b"imap-login: Login: user=<alice>, method=PLAIN, rip=192.0.2.5, lip=192.0.2.1, mpid=1, TLS";
    let entry = |identifier, message, time| Entry {
        identifier,
        message,
        time,
        host: None,
    };
    let login = grant(parser.parse_entry(&entry("dovecot", message, time), now));
    assert_eq!(
        (login.ip.to_string(), login.time),
        ("192.0.2.5".to_owned(), time)
    );
    let login = grant(parser.parse_entry(
        &entry(
            "pop3d[42]",
            b"LOGIN, user=b, ip=[192.0.2.6], port=[1]",
            None,
        ),
        now,
    ));
    assert_eq!((login.service, login.time), (Service::Pop3, None));
    assert_eq!(
        reason(parser.parse_entry(&entry("postfix/smtpd", message, time), now)),
        "not a login line"
    );
    assert_eq!(
        reason(parser.parse_entry(&entry("", message, time), now)),
        "unrecognised line format"
    );
}

#[test]
fn explicit_formats_only_accept_their_shape() {
    let now = ts("2026-11-23T00:00:00Z");
    let rfc5424 =
        b"<22>1 2026-11-22T20:25:01Z mx pop3d - - - LOGIN, user=a, ip=[192.0.2.1], port=[1]";
    let syslog = b"Nov 22 20:25:01 mx pop3d: LOGIN, user=a, ip=[192.0.2.1], port=[1]";
    let rfc_parser = parser_with(|options| options.format = Format::Rfc5424);
    grant(rfc_parser.parse(rfc5424, now));
    reason(rfc_parser.parse(syslog, now));
    let syslog_parser = parser_with(|options| options.format = Format::Syslog);
    grant(syslog_parser.parse(syslog, now));
    reason(syslog_parser.parse(rfc5424, now));
}

#[test]
fn names_parse_case_insensitively() {
    assert_eq!("IMAP".parse::<Service>().unwrap(), Service::Imap);
    assert_eq!("pop".parse::<Service>().unwrap(), Service::Pop3);
    assert_eq!(Service::Pop3.as_str(), "pop3");
    assert_eq!("Journal".parse::<Format>().unwrap(), Format::Journal);
    assert_eq!(
        "smtp".parse::<Service>().unwrap_err().to_string(),
        r#"unknown service "smtp" (expected pop3 or imap)"#
    );
}

/// Cutting a success line short, or replacing any byte of it, must never
/// panic nor grant an address other than the line's own.
#[test]
fn damaged_lines_never_grant_another_address() {
    let parser =
        parser_with(|options| options.timezone = TimeZone::fixed(Offset::from_hours(1).unwrap()));
    let now = ts("2026-11-23T00:00:00Z");
    let lines: [&[u8]; 7] = [
        b"Nov 22 20:25:01 mx dovecot[1]: pop3-login: Login: user=<alice>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, mpid=1, TLS, session=<a>",
        b"2026-11-22T20:25:01.123+01:00 mx dovecot: imap-login: Logged in: user=<a>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1",
        b"<22>1 2026-11-22T20:25:01Z mx dovecot 1 - [a b=\"c\"] imap-login: Login: user=<a>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1",
        b"Nov 22 20:25:01 mx imapd: LOGIN, user=a, ip=[::ffff:192.0.2.10], port=[1], protocol=IMAP",
        b"Nov 22 20:25:01 mx cyrus/imap[1]: login: h.example [192.0.2.10] a plaintext+TLS User logged in SESSIONID=<c-1>",
        b"Nov 22 20:25:01 mx ipop3d[1]: Login user=a host=h.example [192.0.2.10] nmsgs=1/2",
        b"Nov 22 20:25:01 pop3-login: Info: Login: user=<a>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1",
    ];
    let own: std::net::IpAddr = "192.0.2.10".parse().unwrap();
    for line in lines {
        assert_eq!(grant(parser.parse(line, now)).ip, own);
        for cut in 0..line.len() {
            if let Verdict::Grant(login) = parser.parse(&line[..cut], now) {
                assert_eq!(login.ip, own, "{}", String::from_utf8_lossy(&line[..cut]));
            }
        }
        for at in 0..line.len() {
            for byte in [
                0u8, b' ', b'\n', b',', b'[', b']', b'<', b'>', b'=', b':', 0xff,
            ] {
                let mut damaged = line.to_vec();
                damaged[at] = byte;
                if let Verdict::Grant(login) = parser.parse(&damaged, now) {
                    // A damaged character of the address itself may yield
                    // another address; nothing else may move it.
                    let ip_text = own.to_string();
                    let end = line
                        .windows(ip_text.len())
                        .rposition(|w| w == ip_text.as_bytes())
                        .unwrap()
                        + ip_text.len();
                    let is_address_char =
                        |b: &u8| b.is_ascii_hexdigit() || matches!(b, b':' | b'.');
                    let start = end
                        - line[..end]
                            .iter()
                            .rev()
                            .take_while(|b| is_address_char(b))
                            .count();
                    let in_address = (start..end).contains(&at);
                    assert!(
                        login.ip == own || in_address,
                        "{} granted {}",
                        String::from_utf8_lossy(&damaged),
                        login.ip
                    );
                }
            }
        }
    }
}

const DOVECOT_LOGIN: &str = "dovecot: pop3-login: Login: user=<alice>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1, mpid=1, TLS, session=<a>";

#[test]
fn logins_stamped_in_the_future_or_on_impossible_days_do_not_grant() {
    let parser = parser();
    let now = ts("2026-11-23T12:00:00Z");
    let line = |stamp: &str| format!("{stamp} mx {DOVECOT_LOGIN}");
    // Within the minute a clock may drift: granted.
    grant(parser.parse(line("Nov 23 12:00:30").as_bytes(), now));
    grant(parser.parse(line("2026-11-23T12:00:59Z").as_bytes(), now));
    for stamp in [
        // Later today: last year's line in a never-rotated log, or a wrong clock.
        "Nov 23 13:00:00",
        "2026-11-23T12:05:00Z",
        "9999-12-31T23:59:59Z",
        "Feb 30 10:00:00",
        "Dec 32 10:00:00",
    ] {
        let refused = reason(parser.parse(line(stamp).as_bytes(), now));
        assert!(
            refused.contains("future") || refused.contains("impossible"),
            "{stamp}: {refused}"
        );
    }
    // Tomorrow's date is last year's.
    let login = grant(parser.parse(line("Nov 24 13:00:00").as_bytes(), now));
    assert_eq!(login.time, Some(ts("2025-11-24T13:00:00Z")));
    // A journal entry's time is checked the same way.
    let entry = Entry {
        identifier: "dovecot",
        message: DOVECOT_LOGIN.strip_prefix("dovecot: ").unwrap().as_bytes(),
        time: Some(ts("2026-11-23T13:00:00Z")),
        host: None,
    };
    assert!(reason(parser.parse_entry(&entry, now)).contains("future"));
}

#[test]
fn only_trusted_hosts_grant_when_some_are_named() {
    let parser =
        parser_with(|options| options.trusted_hosts = vec!["mx1.example".into(), "MX2".into()]);
    let now = ts("2026-11-23T12:00:00Z");
    for host in ["mx1.example", "MX1.EXAMPLE", "mx2"] {
        let line = format!("Nov 23 11:59:00 {host} {DOVECOT_LOGIN}");
        grant(parser.parse(line.as_bytes(), now));
    }
    let stranger = format!("Nov 23 11:59:00 relay.example {DOVECOT_LOGIN}");
    assert_eq!(
        reason(parser.parse(stranger.as_bytes(), now)),
        "host relay.example is not a trusted host"
    );
    let rfc5424 = "<22>1 2026-11-23T11:59:00Z mx2 dovecot 7 - - pop3-login: Login: user=<a>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1";
    grant(parser.parse(rfc5424.as_bytes(), now));
    let no_host = "Nov 23 11:59:00 pop3-login: Info: Login: user=<a>, method=PLAIN, rip=192.0.2.10, lip=192.0.2.1";
    assert!(reason(parser.parse(no_host.as_bytes(), now)).contains("no host field"));
    let entry = Entry {
        identifier: "dovecot",
        message: DOVECOT_LOGIN.strip_prefix("dovecot: ").unwrap().as_bytes(),
        time: None,
        host: Some("mx1.example"),
    };
    grant(parser.parse_entry(&entry, now));
}

#[test]
fn the_readme_pattern_matches_the_real_line_and_not_an_outsiders_text() {
    let parser = parser_with(|options| {
        options.custom_patterns = vec![r"mypopd\[\d+\]: login ok .* from (?P<ip>\S+)".into()]
    });
    assert!(parser.warnings().is_empty(), "{:?}", parser.warnings());
    let now = ts("2026-11-23T12:00:00Z");
    let login = grant(parser.parse(
        b"Nov 23 11:59:00 mx mypopd[812]: login ok user alice from 192.0.2.7",
        now,
    ));
    assert_eq!(
        (login.ip.to_string(), login.server),
        ("192.0.2.7".to_owned(), "custom")
    );
    for outsider in [
        &b"Nov 23 11:59:01 mx postfix/smtpd[99]: NOQUEUE: reject: RCPT from unknown[198.51.100.9]: 554 5.7.1 from=<mypopd[1]: login ok x from 6.6.6.6> to=<a@example.org>"[..],
        b"Nov 23 11:59:02 mx postfix/cleanup[98]: 1A2B3C: message-id=<mypopd[1]: login ok x from 6.6.6.6>",
        b"Nov 23 11:59:03 mx mypopd[812]: login ok x from 6.6.6.6 failed",
    ] {
        reason(parser.parse(outsider, now));
    }
    let loose = parser_with(|options| {
        options.custom_patterns = vec![r"login ok .* from (?P<ip>\S+)".into()]
    });
    assert_eq!(loose.warnings().len(), 1);
}

#[test]
fn addresses_no_customer_has_do_not_grant() {
    let parser = parser();
    let now = ts("2026-11-23T12:00:00Z");
    for ip in [
        "0.0.0.0",
        "::",
        "255.255.255.255",
        "224.0.0.251",
        "ff02::fb",
        "127.0.0.1",
        "::1",
    ] {
        let line = format!("Nov 23 11:59:00 mx dovecot: imap-login: Login: user=<a>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid=1");
        reason(parser.parse(line.as_bytes(), now));
    }
}
