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

/// Refuses, with the reason, an address that cannot be a customer's: the
/// source of an SMTP connection is never unspecified (`0.0.0.0`, `::`),
/// broadcast or multicast, and loopback always passes the gate, so a login
/// from it (a webmail on the host, a proxy that hides the client) names no
/// customer.
pub fn customer_address(ip: IpAddr) -> Result<(), &'static str> {
    let ip = ip.to_canonical();
    if ip.is_unspecified() {
        return Err("unspecified address: no client has it");
    }
    if ip.is_multicast() {
        return Err("multicast address: no client connects from it");
    }
    if matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
        return Err("broadcast address: no client connects from it");
    }
    if ip.is_loopback() {
        return Err("loopback address: it always passes the gate (a local webmail or proxy?)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_customer_addresses() {
        for ip in [
            "192.0.2.10",
            "2001:db8::7",
            "::ffff:198.51.100.1",
            "fe80::1",
        ] {
            assert_eq!(customer_address(ip.parse().unwrap()), Ok(()), "{ip}");
        }
        for ip in [
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "ff02::1",
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(customer_address(ip.parse().unwrap()).is_err(), "{ip}");
        }
    }

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
