//! Client addresses as servers print them.

use std::net::IpAddr;

/// Parses an IPv4 or IPv6 address that must fill `text` entirely.
///
/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.10`, as dual-stack servers
/// such as Courier print them) become plain IPv4: the gate matches the
/// address the client's SMTP connection arrives from, which the kernel
/// reports as IPv4. Zone indices (`fe80::1%eth0`) and anything else that is
/// not a bare address are rejected.
pub(crate) fn parse_ip(text: &[u8]) -> Option<IpAddr> {
    // The longest textual IPv6 address (with an embedded IPv4 tail) has 45
    // characters; refusing longer input keeps the parse cheap on junk.
    if text.is_empty() || text.len() > 45 {
        return None;
    }
    let text = std::str::from_utf8(text).ok()?;
    text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_v6_becomes_v4() {
        assert_eq!(
            parse_ip(b"::ffff:192.0.2.10"),
            Some("192.0.2.10".parse().unwrap())
        );
        assert_eq!(
            parse_ip(b"::FFFF:c000:20a"),
            Some("192.0.2.10".parse().unwrap())
        );
    }

    #[test]
    fn plain_addresses() {
        assert_eq!(parse_ip(b"192.0.2.10"), Some("192.0.2.10".parse().unwrap()));
        assert_eq!(
            parse_ip(b"2001:db8::7"),
            Some("2001:db8::7".parse().unwrap())
        );
    }

    #[test]
    fn junk_is_rejected() {
        for junk in [
            &b""[..],
            b"192.0.2.10 ",
            b" 192.0.2.10",
            b"192.0.2.10]",
            b"fe80::1%eth0",
            b"host.example",
            b"\xff\xfe",
            b"1.2.3.4.5",
        ] {
            assert_eq!(parse_ip(junk), None, "{junk:?}");
        }
    }
}
