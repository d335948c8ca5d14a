//! The TC hook reads headers only from the linear part of a socket buffer,
//! which it pulls up to 256 bytes. A SYN whose headers reach further, in the
//! buffer's paged data, could be one; the gate must refuse it unless its
//! source holds a grant. XDP sees whole frames and has no such case.
//!
//! A frame larger than a page, sent from an AF_PACKET socket, arrives with
//! only its Ethernet header linear, so a jumbo MTU and an IPv6 chain of
//! about 4 KiB of destination options put the TCP header out of reach.

use anyhow::{ensure, Result};
use smtpgate_tests::{
    fuzz::{
        lab::{stranger_v6, FuzzLab, Hook, GRANTED_V6},
        oracle,
        shape::{Ext, Ids, Shape},
        Case,
    },
    SERVER_V6,
};

const JUMBO_MTU: &str = "9000";

/// An IPv6 SYN to port 25 behind four 1 KiB destination-options headers.
fn deep_syn(src: std::net::Ipv6Addr, n: u32) -> Case {
    let chain = vec![Ext::dest_opts(1024); 4];
    let shape = Shape::syn(
        src.into(),
        SERVER_V6.parse().expect("a literal address"),
        32000 + n as u16,
        25,
    )
    .chain(chain);
    Case::new(
        &shape,
        Ids {
            seq: 0x0600_0000 | n,
            ip_id: n as u16,
            frag_id: 0x0600_0000 | n,
        },
    )
}

/// Whether each case got a SYN-ACK, in a lab with jumbo frames.
fn answered(gate: Option<Hook>, cases: &[Case]) -> Result<(Vec<bool>, Option<u64>)> {
    let lab = FuzzLab::new(gate)?;
    lab.lab.server.ip(&[
        "link",
        "set",
        "dev",
        &lab.lab.server_iface,
        "mtu",
        JUMBO_MTU,
    ])?;
    lab.lab.client.ip(&[
        "link",
        "set",
        "dev",
        &lab.lab.client_iface,
        "mtu",
        JUMBO_MTU,
    ])?;
    let answers = oracle::answers(&lab.lab, cases)?;
    let refused = gate
        .map(|_| lab.lab.counter("refused_unparsed_nonlinear"))
        .transpose()?;
    Ok((
        answers.per_case.iter().map(|a| a.syn_ack).collect(),
        refused,
    ))
}

#[test]
fn headers_beyond_the_linear_part_are_refused_unless_granted() -> Result<()> {
    let cases = [deep_syn(stranger_v6(0x6000), 1), deep_syn(GRANTED_V6, 2)];
    let (kernel, _) = answered(None, &cases)?;
    ensure!(
        kernel == [true, true],
        "with no gate the kernel must answer both SYNs (it answered {kernel:?})"
    );
    let (gated, refused) = answered(Some(Hook::Tc), &cases)?;
    ensure!(
        gated == [false, true],
        "through the TC gate: stranger answered {}, granted answered {}",
        gated[0],
        gated[1]
    );
    ensure!(
        refused == Some(1),
        "refused_unparsed_nonlinear is {refused:?}, expected 1"
    );
    Ok(())
}
