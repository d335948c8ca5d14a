//! The frames of the per-packet benchmark, and the source addresses the
//! harness rotates through while each is measured.

use std::net::IpAddr;

use smtpgate_common::Counter;
use smtpgate_tests::{
    frames::{Packet, ACK, ETH_P_8021Q, UDP},
    testrun::{XDP_DROP, XDP_PASS},
    SMTP, UNGATED,
};

use crate::sources::{self, Family, Sources};

/// One kind of frame, as the gate sees it.
pub struct Case {
    pub name: &'static str,
    /// Whether the gate decides on this frame (a SYN to a gated port):
    /// only then does the grant map's size matter.
    pub gated: bool,
    /// Where the rotated sources come from.
    pub sources: Sources,
    pub packet: Packet,
    /// The gate's verdict on every run, and the counter that counts it.
    pub verdict: u32,
    pub counter: Counter,
}

const SERVER_V4: &str = "192.0.2.1";
const SERVER_V6: &str = "2001:db8::1";

/// The cases of the issue: the bulk of traffic that is not gated, then gated
/// SYNs with and without a grant, plain, VLAN-tagged and over IPv6.
pub fn all() -> Vec<Case> {
    let v4 = |range| sources::first(range, Family::V4).to_string();
    let v6 = |range| sources::first(range, Family::V6).to_string();
    let passed = |name, sources, packet| Case {
        name,
        gated: false,
        sources,
        packet,
        verdict: XDP_PASS,
        counter: Counter::Frames,
    };
    let granted = |name, packet| Case {
        name,
        gated: true,
        sources: Sources::Granted,
        packet,
        verdict: XDP_PASS,
        counter: Counter::AllowedGrant,
    };
    let refused = |name, packet| Case {
        name,
        gated: true,
        sources: Sources::Ungranted,
        packet,
        verdict: XDP_DROP,
        counter: Counter::DroppedNoGrant,
    };
    let vlan = |p: &mut Packet| p.vlan_tags = vec![ETH_P_8021Q];
    let not_syn = |p: &mut Packet| p.tcp_flags = ACK;
    use Sources::*;
    vec![
        passed(
            "non-TCP (UDP)",
            Ungranted,
            Packet::syn(&v4(Ungranted), SERVER_V4, 53).with(|p| p.protocol = UDP),
        ),
        passed(
            "TCP without SYN",
            Ungranted,
            Packet::syn(&v4(Ungranted), SERVER_V4, SMTP).with(not_syn),
        ),
        passed(
            "SYN to an ungated port",
            Ungranted,
            Packet::syn(&v4(Ungranted), SERVER_V4, UNGATED),
        ),
        granted(
            "gated SYN, live grant",
            Packet::syn(&v4(Granted), SERVER_V4, SMTP),
        ),
        refused(
            "gated SYN, no grant",
            Packet::syn(&v4(Ungranted), SERVER_V4, SMTP),
        ),
        granted(
            "VLAN gated SYN, live grant",
            Packet::syn(&v4(Granted), SERVER_V4, SMTP).with(vlan),
        ),
        refused(
            "VLAN gated SYN, no grant",
            Packet::syn(&v4(Ungranted), SERVER_V4, SMTP).with(vlan),
        ),
        passed(
            "IPv6 TCP without SYN",
            Ungranted,
            Packet::syn(&v6(Ungranted), SERVER_V6, SMTP).with(not_syn),
        ),
        granted(
            "IPv6 gated SYN, live grant",
            Packet::syn(&v6(Granted), SERVER_V6, SMTP),
        ),
        refused(
            "IPv6 gated SYN, no grant",
            Packet::syn(&v6(Ungranted), SERVER_V6, SMTP),
        ),
    ]
}

/// How many refused sources a case rotates through: all of 198.18.0.0/15.
const UNGRANTED_SOURCES: u32 = 1 << 17;

/// What the harness writes into a case's frame.
#[derive(Clone, Copy)]
pub struct Rotation {
    /// Offset of the source address's last four bytes in the frame.
    pub offset: u32,
    /// Their value for index 0.
    pub base: u32,
    pub count: u32,
}

impl Case {
    /// A gated SYN the gate drops: no grant, not allowlisted.
    pub fn refused(&self) -> bool {
        self.gated && self.verdict == XDP_DROP
    }

    pub fn family(&self) -> Family {
        if self.packet.src.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The rotation through this case's sources when the map holds
    /// `granted_per_family` grants of each family; `None` when the case
    /// needs a grant and there is none.
    pub fn rotation(&self, granted_per_family: u32) -> Option<Rotation> {
        let count = match self.sources {
            Sources::Granted => granted_per_family,
            Sources::Ungranted => UNGRANTED_SOURCES,
        };
        if count == 0 {
            return None;
        }
        let (_, boundaries) = self.packet.build_with_boundaries();
        let network = boundaries[1 + self.packet.vlan_tags.len()];
        // IPv4: source at 12..16. IPv6: source at 8..24, last four at 20.
        let (offset, base) = match sources::first(self.sources, self.family()) {
            IpAddr::V4(a) => (network + 12, u32::from(a)),
            IpAddr::V6(a) => (network + 20, u128::from(a) as u32),
        };
        Some(Rotation {
            offset: offset as u32,
            base,
            count,
        })
    }
}

impl Rotation {
    /// The same frame with one source only: a key that stays in the cache.
    pub fn hot(&self) -> Rotation {
        Rotation { count: 1, ..*self }
    }
}
