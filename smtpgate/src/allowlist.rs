//! The static allowlist: source prefixes whose SYNs always pass (loopback,
//! the ISP's own networks, partner relays), kept in an LPM trie.
//!
//! Each entry remembers where it came from. Entries from the configuration
//! are re-synchronised on every `run` (one removed from the file disappears
//! from the map), entries added with `smtpgate allowlist add` stay until
//! `smtpgate allowlist del`.

use std::net::IpAddr;

use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{lpm_trie::Key, LpmTrie, Map, MapData};
use ipnet::IpNet;
use smtpgate_common::AddrKey;

use crate::addr;

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
        if value == Origin::Config as u8 { Origin::Config } else { Origin::Cli }
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
        Err(_) => text
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| anyhow!("'{text}' is not an address prefix like 192.0.2.0/24 or 2001:db8::/32"))?,
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
    let len = if ip.is_ipv4() { len.saturating_sub(96) } else { len };
    IpNet::new(ip, len as u8).unwrap_or_else(|_| IpNet::from(ip))
}

pub struct Allowlist {
    map: LpmTrie<MapData, AddrKey, u8>,
}

impl Allowlist {
    pub fn new(map: Map) -> Result<Self> {
        let map = map.try_into().context("the allowlist map has an unexpected type")?;
        Ok(Self { map })
    }

    pub fn add(&mut self, net: IpNet, origin: Origin) -> Result<()> {
        self.map.insert(&key(net), origin as u8, 0).with_context(|| format!("adding {net} to the allowlist"))
    }

    /// Removes `net`; false if it was not on the list.
    pub fn remove(&mut self, net: IpNet) -> Result<bool> {
        let key = key(net);
        // An exact-match check: LPM `get` would also find a covering prefix.
        if !self.entries()?.iter().any(|(n, _)| *n == net) {
            return Ok(false);
        }
        self.map.remove(&key).with_context(|| format!("removing {net} from the allowlist"))?;
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
        let mut wanted = wanted.to_vec();
        wanted.extend(BUILT_IN.iter().map(|p| parse_prefix(p).expect("built-in prefixes parse")));
        for &net in &wanted {
            self.add(net, Origin::Config)?;
        }
        for (net, origin) in self.entries()? {
            if origin == Origin::Config && !wanted.contains(&net) {
                self.map.remove(&key(net)).with_context(|| format!("removing {net} from the allowlist"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_normalise() {
        assert_eq!(parse_prefix("192.0.2.0/24").unwrap().to_string(), "192.0.2.0/24");
        assert_eq!(parse_prefix("198.51.100.7").unwrap().to_string(), "198.51.100.7/32");
        assert_eq!(parse_prefix("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
        assert_eq!(parse_prefix("::ffff:203.0.113.0/120").unwrap().to_string(), "203.0.113.0/24");
    }

    #[test]
    fn host_bits_and_garbage_are_clear_errors() {
        let err = parse_prefix("192.0.2.1/24").unwrap_err().to_string();
        assert_eq!(err, "'192.0.2.1/24' has host bits set; did you mean 192.0.2.0/24?");
        assert!(parse_prefix("192.0.2.0/33").unwrap_err().to_string().contains("not an address prefix"));
    }

    #[test]
    fn keys_round_trip() {
        for text in ["192.0.2.0/24", "0.0.0.0/0", "2001:db8::/32", "::1/128", "203.0.113.9/32"] {
            let net = parse_prefix(text).unwrap();
            assert_eq!(net_of(&key(net)), net, "{text}");
        }
        assert_eq!(key(parse_prefix("192.0.2.0/24").unwrap()).prefix_len(), 120);
    }
}
