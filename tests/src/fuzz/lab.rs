//! The fuzzer's lab: a [`Lab`] whose client side owns whole address pools,
//! so the client kernel answers every stray SYN-ACK with a RST and the
//! server's SYN queue stays clean, with listeners on the gated ports and on
//! an ungated one, and optionally the real agent on one hook.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context, Result};

use super::shape::Shape;
use crate::{
    frames::{CLIENT_MAC, SERVER_MAC},
    Lab, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6, UNGATED,
};

/// The ports the agent gates in every fuzz lab.
pub const GATED_PORTS: [u16; 2] = [25, 587];
/// A port with a listener that the gate leaves alone.
pub const UNGATED_PORT: u16 = UNGATED;

/// Sources with a grant while a gate runs (one per family).
pub const GRANTED_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const GRANTED_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x200, 0, 0, 0, 0, 1);
/// The client's source prefixes (the granted ones, then the strangers'),
/// each local to the client and routed to it by the server.
const CLIENT_NETS: [(&str, &str); 4] = [
    ("203.0.113.0/24", CLIENT_V4),
    ("2001:db8:200::/64", CLIENT_V6),
    ("198.51.100.0/24", CLIENT_V4),
    ("2001:db8:100::/64", CLIENT_V6),
];

pub fn stranger_v4(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, host)
}

pub fn stranger_v6(interface_id: u64) -> Ipv6Addr {
    Ipv6Addr::from((0x2001_0db8_0100_0000_u128 << 64) | u128::from(interface_id))
}

/// The server's second address: it listens there too.
const SECOND_V4: &str = "192.0.2.3";
const SECOND_V6: &str = "2001:db8::3";
/// On the link, but no host's.
const OFF_HOST_V4: &str = "192.0.2.99";
const OFF_HOST_V6: &str = "2001:db8::99";

/// Where cases are sent: the listening address, the server's second
/// address, and one no host answers for.
pub fn destinations(v6: bool) -> [IpAddr; 3] {
    let addrs = if v6 {
        [SERVER_V6, SECOND_V6, OFF_HOST_V6]
    } else {
        [SERVER_V4, SECOND_V4, OFF_HOST_V4]
    };
    addrs.map(|a| a.parse().expect("a literal address"))
}

/// Whether a SYN-ACK to this case, with a gate in place, breaks the
/// invariant: it went to a gated port from a source without a grant.
pub fn gated(shape: &Shape) -> bool {
    let granted = [IpAddr::V4(GRANTED_V4), IpAddr::V6(GRANTED_V6)].contains(&shape.src());
    GATED_PORTS.contains(&shape.tcp.dport) && !granted
}

/// Where the agent attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    Tc,
}

impl Hook {
    pub const BOTH: [Hook; 2] = [Hook::Xdp, Hook::Tc];

    pub fn name(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::Tc => "tc",
        }
    }
}

/// Reassembly memory per namespace: a burst of thousands of incomplete
/// datagrams must not push out the ones still completing (the default is
/// 4 MiB).
const FRAG_MEMORY: &str = "67108864";

pub struct FuzzLab {
    pub lab: Lab,
}

impl FuzzLab {
    /// A lab with no gate (`None`) or the agent in enforce mode on `hook`,
    /// gating [`GATED_PORTS`], with grants for the granted sources.
    pub fn new(gate: Option<Hook>) -> Result<Self> {
        let mut lab = Lab::new()?;
        address_plan(&lab)?;
        lab.server.run(|| -> Result<()> {
            for knob in ["ipv4/ipfrag_high_thresh", "ipv6/ip6frag_high_thresh"] {
                fs::write(format!("/proc/sys/net/{knob}"), FRAG_MEMORY)
                    .with_context(|| format!("setting {knob}"))?;
            }
            Ok(())
        })??;
        for port in GATED_PORTS.into_iter().chain([UNGATED_PORT]) {
            lab.echo_server(port)?;
        }
        if let Some(hook) = gate {
            let ports: Vec<String> = GATED_PORTS.iter().map(u16::to_string).collect();
            let mut flags = vec!["--attach", hook.name()];
            for port in &ports {
                flags.extend(["--port", port]);
            }
            lab.start_agent(&flags)?;
            for granted in [GRANTED_V4.to_string(), GRANTED_V6.to_string()] {
                lab.smtpgate_ok(&["allow", &granted, "--ttl", "1h"])?;
            }
        }
        Ok(Self { lab })
    }
}

/// Fixed MACs (so that a case's frames are the same bytes in every lab),
/// the server's second addresses, the client's source prefixes with their
/// routes, and static neighbours (no resolution delay or queue limit in a
/// burst).
fn address_plan(lab: &Lab) -> Result<()> {
    let (server, client) = (&lab.server, &lab.client);
    let sides = [
        (server, lab.server_iface.as_str(), SERVER_MAC),
        (client, lab.client_iface.as_str(), CLIENT_MAC),
    ];
    for (ns, iface, mac) in sides {
        ns.ip(&["link", "set", "dev", iface, "address", &mac_text(mac)])?;
    }
    let [(_, server_iface, _), (_, client_iface, _)] = sides;
    for second in [format!("{SECOND_V4}/24"), format!("{SECOND_V6}/64")] {
        server.ip(&["addr", "add", &second, "dev", server_iface, "nodad"])?;
    }
    for (net, via) in CLIENT_NETS {
        server.ip(&["route", "add", net, "via", via])?;
        client.ip(&["route", "add", "local", net, "dev", "lo"])?;
    }
    let neighbours = [
        (
            server,
            server_iface,
            CLIENT_MAC,
            &[CLIENT_V4, CLIENT_V6][..],
        ),
        (
            client,
            client_iface,
            SERVER_MAC,
            &[SERVER_V4, SERVER_V6, SECOND_V4, SECOND_V6][..],
        ),
    ];
    for (ns, iface, mac, addrs) in neighbours {
        for addr in addrs {
            let lladdr = mac_text(mac);
            ns.ip(&[
                "neigh",
                "replace",
                addr,
                "lladdr",
                &lladdr,
                "dev",
                iface,
                "nud",
                "permanent",
            ])?;
        }
    }
    Ok(())
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}
