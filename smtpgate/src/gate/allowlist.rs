//! The static allowlist: source prefixes whose SYNs always pass (loopback,
//! the ISP's own networks, partner relays), kept in an LPM trie with a
//! filter in front of it (`smtpgate_common::allow_filter`), which lets the
//! gate refuse a flood's sources without walking the trie.
//!
//! Each entry remembers where it came from. Entries from the configuration
//! are re-synchronised on every `run` (one removed from the file disappears
//! from the map), entries added with `smtpgate allowlist add` stay until
//! `smtpgate allowlist del`.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::atomic::Ordering::SeqCst,
};

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{lpm_trie::Key, LpmTrie, Map, MapData};
use ipnet::IpNet;
use smtpgate_common::{address_block, allow_filter, AddrKey, ALLOWLIST_MAP, ALLOW_FILTER_MAP};

use crate::gate::{addr, mapped::MappedWords, maps::open_pinned, pins::PinDir};

/// Who put an entry on the allowlist (the map value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Origin {
    /// `smtpgate allowlist add`.
    Cli = 1,
    /// The configuration (`allowlist = [...]`) or the built-in loopback entries.
    Config = 2,
}

impl Origin {
    fn from_value(value: u8) -> Origin {
        if value == Origin::Config as u8 {
            Origin::Config
        } else {
            Origin::Cli
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Origin::Cli => "cli",
            Origin::Config => "config",
        }
    }
}

/// Loopback always passes: the gate never stands between a host and itself.
pub const BUILT_IN: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// Parses `a.b.c.d/n`, `2001:db8::/32` or a bare address (a host route).
/// Host bits must be clear, so a typo cannot silently widen or narrow an entry.
pub fn parse_prefix(text: &str) -> Result<IpNet> {
    let text = text.trim();
    let net: IpNet = match text.parse() {
        Ok(net) => net,
        Err(_) => text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
            anyhow!("'{text}' is not an address prefix like 192.0.2.0/24 or 2001:db8::/32")
        })?,
    };
    if net.trunc() != net {
        bail!("'{text}' has host bits set; did you mean {}?", net.trunc());
    }
    Ok(canonical(net))
}

/// `::ffff:a.b.c.d/n` (n >= 96) is the IPv4 prefix it maps.
fn canonical(net: IpNet) -> IpNet {
    match (net.addr().to_canonical(), net.prefix_len()) {
        (IpAddr::V4(v4), len) if net.addr().is_ipv6() && len >= 96 => {
            IpNet::new(IpAddr::V4(v4), len - 96).expect("length within 0..=32")
        }
        _ => net,
    }
}

fn key(net: IpNet) -> Key<AddrKey> {
    let len = match net {
        IpNet::V4(v4) => 96 + u32::from(v4.prefix_len()),
        IpNet::V6(v6) => u32::from(v6.prefix_len()),
    };
    Key::new(len, addr::key(net.addr()))
}

fn net_of(key: &Key<AddrKey>) -> IpNet {
    let ip = addr::from_key(key.data());
    let len = key.prefix_len();
    let len = if ip.is_ipv4() {
        len.saturating_sub(96)
    } else {
        len
    };
    IpNet::new(ip, len as u8).unwrap_or_else(|_| IpNet::from(ip))
}

/// The allowlist: the LPM trie the gate looks sources up in, and the
/// filter in front of it.
pub struct Allowlist {
    map: LpmTrie<MapData, AddrKey, u8>,
    filter: AllowFilter,
    /// Locked around every change: see [`allow_filter`].
    pins: PinDir,
}

impl Allowlist {
    /// The allowlist of the gate pinned under `pins`, from its two maps. A
    /// filter not yet built (a gate loaded just now, or pinned by a version
    /// without it) is built here, before anyone relies on it.
    pub fn new(map: Map, filter: Map, pins: &PinDir) -> Result<Self> {
        let map = map
            .try_into()
            .context("the allowlist map has an unexpected type")?;
        let filter = AllowFilter::new(filter)?;
        let list = Self {
            map,
            filter,
            pins: pins.clone(),
        };
        if !list.filter.is_ready() {
            let _lock = list.pins.lock()?;
            list.rebuild_filter()?;
        }
        Ok(list)
    }

    pub fn open_pinned(pins: &PinDir) -> Result<Self> {
        Self::new(
            open_pinned(&pins.map(ALLOWLIST_MAP))?,
            open_pinned(&pins.map(ALLOW_FILTER_MAP))?,
            pins,
        )
    }

    pub fn add(&mut self, net: IpNet, origin: Origin) -> Result<()> {
        let _lock = self.pins.lock()?;
        self.insert(net, origin)
    }

    /// Removes `net`; false if it was not on the list.
    pub fn remove(&mut self, net: IpNet) -> Result<bool> {
        let _lock = self.pins.lock()?;
        // An exact-match check: LPM `get` would also find a covering prefix.
        if !self.entries()?.iter().any(|(n, _)| *n == net) {
            return Ok(false);
        }
        self.delete(net)?;
        self.rebuild_filter()?;
        Ok(true)
    }

    /// Every entry with its origin, sorted.
    pub fn entries(&self) -> Result<Vec<(IpNet, Origin)>> {
        let mut entries = Vec::new();
        for entry in self.map.iter() {
            let (key, value) = entry.context("reading the allowlist")?;
            entries.push((net_of(&key), Origin::from_value(value)));
        }
        entries.sort();
        Ok(entries)
    }

    /// Makes the configuration's entries exactly `wanted` (plus loopback),
    /// leaving entries added from the command line alone.
    pub fn sync_config(&mut self, wanted: &[IpNet]) -> Result<()> {
        let _lock = self.pins.lock()?;
        let mut wanted = wanted.to_vec();
        wanted.extend(
            BUILT_IN
                .iter()
                .map(|p| parse_prefix(p).expect("built-in prefixes parse")),
        );
        for &net in &wanted {
            self.insert(net, Origin::Config)?;
        }
        for (net, origin) in self.entries()? {
            if origin == Origin::Config && !wanted.contains(&net) {
                self.delete(net)?;
            }
        }
        self.rebuild_filter()
    }

    /// Inserts `net`, its filter bits first: the gate must never find a
    /// prefix in the trie that the filter denies.
    fn insert(&mut self, net: IpNet, origin: Origin) -> Result<()> {
        self.filter.cover(&[net]);
        self.map
            .insert(&key(net), origin as u8, 0)
            .with_context(|| format!("adding {net} to the allowlist"))
    }

    fn delete(&mut self, net: IpNet) -> Result<()> {
        self.map
            .remove(&key(net))
            .with_context(|| format!("removing {net} from the allowlist"))
    }

    /// Recomputes the filter from the trie: clears the bits of prefixes
    /// gone (only ever after they left the trie).
    fn rebuild_filter(&self) -> Result<()> {
        let nets: Vec<IpNet> = self.entries()?.into_iter().map(|(net, _)| net).collect();
        self.filter.store(&nets);
        Ok(())
    }
}

/// The writers' side of the allowlist filter (layout in
/// [`smtpgate_common::allow_filter`]).
struct AllowFilter {
    words: MappedWords,
}

impl AllowFilter {
    fn new(map: Map) -> Result<Self> {
        let words = MappedWords::new(map, "allowlist filter")?;
        if words.word_count() != allow_filter::MAP_WORDS as usize {
            bail!(
                "the allowlist filter map has an unexpected layout ({} words)",
                words.word_count()
            );
        }
        Ok(Self { words })
    }

    fn is_ready(&self) -> bool {
        self.words.word(allow_filter::READY.into()).load(SeqCst) != 0
    }

    /// Sets the bits of `nets`, leaving every other bit as it is.
    fn cover(&self, nets: &[IpNet]) {
        for (index, bits) in filter_bits(nets) {
            self.words.word(index).fetch_or(bits, SeqCst);
        }
    }

    /// Makes the bits exactly those of `nets`, and the filter ready.
    fn store(&self, nets: &[IpNet]) {
        let mut exact = vec![0u64; allow_filter::MAP_WORDS as usize];
        for (index, bits) in filter_bits(nets) {
            exact[index as usize] |= bits;
        }
        for (index, &bits) in exact
            .iter()
            .enumerate()
            .skip(allow_filter::HEADER_WORDS as usize)
        {
            self.words.word(index as u64).store(bits, SeqCst);
        }
        self.words.word(allow_filter::READY.into()).store(1, SeqCst);
    }
}

/// Every (word, bits) the filter needs set so that each address in `nets`
/// finds its bit set, whatever its family.
fn filter_bits(nets: &[IpNet]) -> impl Iterator<Item = (u64, u64)> + '_ {
    nets.iter()
        .flat_map(|&net| filter_bits_of(canonical(net)))
        .map(|bit| {
            let (index, mask) = allow_filter::word_and_mask(bit);
            (u64::from(index), mask)
        })
}

/// The filter bits of one prefix: the IPv4 /16 blocks it touches, or the
/// hashed IPv6 /32 blocks; an IPv6 prefix that holds `::ffff:0:0/96` (say
/// `::/0`) covers every IPv4-mapped key too.
fn filter_bits_of(net: IpNet) -> Vec<u32> {
    match net {
        IpNet::V4(v4) => {
            let first = u32::from(v4.network()) >> (32 - address_block::V4_BLOCK_LEN);
            blocks(first, v4.prefix_len(), address_block::V4_BLOCK_LEN).collect()
        }
        IpNet::V6(v6) => {
            let mut bits = Vec::new();
            if v6.prefix_len() <= 96 && v6.contains(&Ipv4Addr::UNSPECIFIED.to_ipv6_mapped()) {
                bits.extend(0..address_block::V4_BITS);
            }
            let first =
                (u128::from(v6.network()) >> (128 - u32::from(address_block::V6_BLOCK_LEN))) as u32;
            if address_block::V6_BLOCK_LEN - v6.prefix_len().min(address_block::V6_BLOCK_LEN)
                > V6_MAX_SPREAD
            {
                // Hashing more blocks than there are bits sets them all.
                bits.extend(
                    address_block::V4_BITS..address_block::V4_BITS + address_block::V6_BITS,
                );
            } else {
                let hashed = blocks(first, v6.prefix_len(), address_block::V6_BLOCK_LEN);
                bits.extend(
                    hashed.map(|block| address_block::V4_BITS + address_block::v6_block_bit(block)),
                );
            }
            bits
        }
    }
}

/// An IPv6 prefix shorter than a block by more bits than this spans more
/// blocks than the filter has bits for them.
const V6_MAX_SPREAD: u8 = 16;

/// The blocks of `block_len` bits that a prefix of `prefix_len` bits,
/// starting in block `first`, covers.
fn blocks(first: u32, prefix_len: u8, block_len: u8) -> std::ops::RangeInclusive<u32> {
    let spread = block_len.saturating_sub(prefix_len);
    first..=first + ((1u64 << spread) - 1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_normalise() {
        assert_eq!(
            parse_prefix("192.0.2.0/24").unwrap().to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            parse_prefix("198.51.100.7").unwrap().to_string(),
            "198.51.100.7/32"
        );
        assert_eq!(
            parse_prefix("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(
            parse_prefix("::ffff:203.0.113.0/120").unwrap().to_string(),
            "203.0.113.0/24"
        );
    }

    #[test]
    fn host_bits_and_garbage_are_clear_errors() {
        let err = parse_prefix("192.0.2.1/24").unwrap_err().to_string();
        assert_eq!(
            err,
            "'192.0.2.1/24' has host bits set; did you mean 192.0.2.0/24?"
        );
        assert!(parse_prefix("192.0.2.0/33")
            .unwrap_err()
            .to_string()
            .contains("not an address prefix"));
    }

    #[test]
    fn keys_round_trip() {
        for text in [
            "192.0.2.0/24",
            "0.0.0.0/0",
            "2001:db8::/32",
            "::1/128",
            "203.0.113.9/32",
        ] {
            let net = parse_prefix(text).unwrap();
            assert_eq!(net_of(&key(net)), net, "{text}");
        }
        assert_eq!(key(parse_prefix("192.0.2.0/24").unwrap()).prefix_len(), 120);
    }

    /// SplitMix64: a seeded source of test prefixes and addresses.
    fn random(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn is_set(words: &[u64], ip: IpAddr) -> bool {
        let (index, mask) = allow_filter::word_and_mask(address_block::bit(
            smtpgate_common::KeyWords::of(&addr::key(ip)),
        ));
        words[index as usize] & mask != 0
    }

    fn computed(nets: &[IpNet]) -> Vec<u64> {
        let mut words = vec![0u64; allow_filter::MAP_WORDS as usize];
        for (index, bits) in filter_bits(nets) {
            words[index as usize] |= bits;
        }
        words
    }

    /// The filter's one promise: every address that an allowlisted prefix
    /// covers finds its bit set, for prefixes of every length and family
    /// (IPv4, IPv6, and IPv6 prefixes that hold the IPv4-mapped range).
    #[test]
    fn every_covered_address_finds_its_bit() {
        let seed = 0x5107_6a7e;
        let mut state = seed;
        for round in 0..4000 {
            let bits = random(&mut state);
            let net = match round % 3 {
                0 => IpNet::new(
                    Ipv4Addr::from(bits as u32).into(),
                    (random(&mut state) % 33) as u8,
                ),
                1 => IpNet::new(
                    std::net::Ipv6Addr::from(u128::from(bits) << 64).into(),
                    (random(&mut state) % 129) as u8,
                ),
                // Short IPv6 prefixes around `::`, which hold the mapped range.
                _ => IpNet::new(
                    std::net::Ipv6Addr::UNSPECIFIED.into(),
                    (random(&mut state) % 97) as u8,
                ),
            }
            .unwrap()
            .trunc();
            let words = computed(&[net]);
            for _ in 0..8 {
                let host = u128::from(random(&mut state)) << 64 | u128::from(random(&mut state));
                let inside: IpAddr = match net {
                    IpNet::V4(v4) => Ipv4Addr::from(
                        u32::from(v4.network()) | (host as u32 & !u32::from(v4.netmask())),
                    )
                    .into(),
                    IpNet::V6(v6) => std::net::Ipv6Addr::from(
                        u128::from(v6.network()) | (host & !u128::from(v6.netmask())),
                    )
                    .into(),
                };
                assert!(net.contains(&inside));
                assert!(
                    is_set(&words, inside.to_canonical()),
                    "seed {seed:#x}, round {round}: {inside} in {net} finds its bit clear"
                );
            }
        }
    }

    /// And it is worth having: with a thousand scattered /24s allowlisted,
    /// nearly every other IPv4 or IPv6 source finds its bit clear, and
    /// skips the trie.
    #[test]
    fn most_other_sources_skip_the_trie() {
        let mut state = 0xf100d;
        let mut nets: Vec<IpNet> = (0..1000)
            .map(|_| {
                IpNet::new(Ipv4Addr::from(random(&mut state) as u32).into(), 24)
                    .unwrap()
                    .trunc()
            })
            .collect();
        nets.push(parse_prefix("2001:db8::/32").unwrap());
        let words = computed(&nets);
        let samples = 10_000;
        let set = (0..samples)
            .filter(|i| {
                let bits = random(&mut state);
                let ip: IpAddr = if i % 2 == 0 {
                    Ipv4Addr::from(bits as u32).into()
                } else {
                    std::net::Ipv6Addr::from(u128::from(bits) << 64).into()
                };
                !nets.iter().any(|net| net.contains(&ip)) && is_set(&words, ip)
            })
            .count();
        assert!(
            set * 100 < samples * 3,
            "{set} of {samples} uncovered sources still find their bit set"
        );
    }
}
