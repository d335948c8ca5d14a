//! The bench's address plan: where granted and refused sources come from,
//! in the per-packet cases and in the flood alike, and an allowlist that
//! covers none of them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use smtpgate_tests::fuzz::rng::Rng;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// A range of source addresses: granted ones or ones the map never holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Sources {
    Granted,
    Ungranted,
}

/// The first address of a range. Addresses of a range differ only in their
/// last four bytes, `first + index`. Grants go to 100.64.0.0/10
/// (carrier-grade NAT space, where an ISP's customers live) and
/// 2001:db8:1::/96; refused sources come from 198.18.0.0/15 (the
/// benchmarking range, which the flood's generator in bench-ebpf draws from
/// too) and 2001:db8:2::/96.
pub fn first(sources: Sources, family: Family) -> IpAddr {
    match (family, sources) {
        (Family::V4, Sources::Granted) => Ipv4Addr::new(100, 64, 0, 0).into(),
        (Family::V4, Sources::Ungranted) => Ipv4Addr::new(198, 18, 0, 0).into(),
        (Family::V6, Sources::Granted) => Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0).into(),
        (Family::V6, Sources::Ungranted) => Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0).into(),
    }
}

/// The `index`th address of a range.
pub fn nth(sources: Sources, family: Family, index: u32) -> IpAddr {
    match first(sources, family) {
        IpAddr::V4(base) => Ipv4Addr::from(u32::from(base) + index).into(),
        IpAddr::V6(base) => Ipv6Addr::from(u128::from(base) + u128::from(index)).into(),
    }
}

/// What the scattered allowlist keeps clear of: the blocks the bench's
/// sources and servers live in (a prefix there would let a refused source
/// through), and the special-purpose blocks (RFC 6890) that no operator
/// would put on an allowlist.
const KEEP_CLEAR: [&str; 14] = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/3",
    "2001:db8::/32",
];

/// Fixed, so that every run loads the same allowlist.
const ALLOWLIST_SEED: u64 = 0xa11a_1157;

/// `count` allowlist prefixes of the kind an ISP lists (its own networks,
/// partner relays): every tenth an IPv6 /48 from 2000::/3, the others IPv4
/// /24s, all distinct, drawn from public unicast space by a fixed seed,
/// none overlapping [`KEEP_CLEAR`]. The first `n` of a longer list are the
/// list of `n`, so a gate's allowlist can be topped up.
pub fn scattered_allowlist(count: usize) -> Vec<IpNet> {
    let keep_clear: Vec<IpNet> = KEEP_CLEAR
        .iter()
        .map(|net| net.parse().expect("KEEP_CLEAR parses"))
        .collect();
    let overlaps = |net: &IpNet| {
        keep_clear
            .iter()
            .any(|clear| clear.contains(net) || net.contains(clear))
    };
    let mut rng = Rng::new(ALLOWLIST_SEED);
    let mut nets: Vec<IpNet> = Vec::with_capacity(count);
    while nets.len() < count {
        let net = if nets.len() % 10 == 9 {
            // The top three bits 001: global unicast.
            let high = (rng.next_u64() >> 3) | (1 << 61);
            IpNet::new(Ipv6Addr::from(u128::from(high) << 64).into(), 48)
        } else {
            IpNet::new(Ipv4Addr::from(rng.u32()).into(), 24)
        }
        .expect("prefix lengths in range")
        .trunc();
        if !overlaps(&net) && !nets.contains(&net) {
            nets.push(net);
        }
    }
    nets
}

#[cfg(test)]
mod tests {
    use smtpgate_common::address_block;

    use super::*;

    #[test]
    fn the_allowlist_covers_no_source_of_the_bench() {
        let nets = scattered_allowlist(1000);
        assert_eq!(nets.len(), 1000);
        assert_eq!(nets.iter().filter(|n| n.addr().is_ipv6()).count(), 100);
        for sources in [Sources::Granted, Sources::Ungranted] {
            for family in [Family::V4, Family::V6] {
                for index in [0, 1 << 16, (1 << 17) - 1] {
                    let source = nth(sources, family, index);
                    assert!(
                        !nets.iter().any(|net| net.contains(&source)),
                        "{source} is allowlisted"
                    );
                }
            }
        }
    }

    /// The per-packet report says a refused source skips the allowlist's
    /// trie: its filter bit (its IPv4 /16, its IPv6 /32 hashed) is one that
    /// no prefix of the list sets. A /24 or a /48 sets the bit of its
    /// network address alone.
    #[test]
    fn refused_sources_find_their_allowlist_filter_bit_clear() {
        let bit = |ip: IpAddr| {
            address_block::bit(smtpgate_common::KeyWords::of(&smtpgate::gate::addr::key(
                ip,
            )))
        };
        let set: Vec<u32> = scattered_allowlist(1000)
            .iter()
            .map(|net| bit(net.network()))
            .collect();
        for family in [Family::V4, Family::V6] {
            for index in [0, 1 << 16, (1 << 17) - 1] {
                let source = nth(Sources::Ungranted, family, index);
                assert!(
                    !set.contains(&bit(source)),
                    "{source} shares its filter bit with an allowlisted prefix"
                );
            }
        }
    }

    #[test]
    fn a_shorter_allowlist_is_the_start_of_a_longer_one() {
        assert_eq!(scattered_allowlist(10), scattered_allowlist(1000)[..10]);
    }
}
