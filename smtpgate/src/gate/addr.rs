//! Conversion between IP addresses and the grant map's 16-byte keys.

use std::net::{IpAddr, Ipv6Addr};

use anyhow::{anyhow, Result};
use smtpgate_common::{v4_key, AddrKey};

/// Parses an address given on the command line. `::ffff:a.b.c.d` is taken as
/// the IPv4 address it maps, which is how the grant map stores IPv4 anyway.
pub fn parse(text: &str) -> Result<IpAddr> {
    let ip: IpAddr = text
        .trim()
        .parse()
        .map_err(|_| anyhow!("'{text}' is not an IPv4 or IPv6 address"))?;
    Ok(ip.to_canonical())
}

/// The grant map key of `ip`.
pub fn key(ip: IpAddr) -> AddrKey {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4_key(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The first address of `ip`'s `/prefix` (at most 128).
pub fn v6_prefix_start(ip: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0);
    Ipv6Addr::from(u128::from(ip) & mask)
}

/// The address a grant map key stands for.
pub fn from_key(key: AddrKey) -> IpAddr {
    Ipv6Addr::from(key).to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_start_keeps_only_the_prefix() {
        let ip: Ipv6Addr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(
            v6_prefix_start(ip, 64),
            "2001:db8:1:2::".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            v6_prefix_start(ip, 56),
            "2001:db8:1::".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(v6_prefix_start(ip, 128), ip);
        assert_eq!(v6_prefix_start(ip, 0), Ipv6Addr::UNSPECIFIED);
    }

    #[test]
    fn ipv4_round_trips_through_its_mapped_key() {
        let ip = parse("192.0.2.7").unwrap();
        let k = key(ip);
        assert_eq!(&k[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(&k[12..], &[192, 0, 2, 7]);
        assert_eq!(from_key(k), ip);
    }

    #[test]
    fn mapped_ipv6_is_normalised_to_ipv4() {
        assert_eq!(
            parse("::ffff:198.51.100.9").unwrap().to_string(),
            "198.51.100.9"
        );
    }

    #[test]
    fn ipv6_round_trips() {
        let ip = parse("2001:db8::25").unwrap();
        assert_eq!(from_key(key(ip)), ip);
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = parse("192.0.2.300").unwrap_err().to_string();
        assert_eq!(err, "'192.0.2.300' is not an IPv4 or IPv6 address");
    }
}
