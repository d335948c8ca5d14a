//! The oracle: sends every case of a phase from the client's veth in one
//! burst, then reads what the server answered for a bounded time and maps
//! each SYN-ACK back to its case by its key.
//!
//! A SYN-ACK is proof that the server's kernel took the case as a
//! connection-opening segment and a listener accepted it; with a gate in
//! front, it is proof that the gate let it through.

use std::{
    collections::HashMap,
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use super::{Case, Key};
use crate::{
    frames::{self, ACK, ETH_P_IP, ETH_P_IPV6, SYN, TCP},
    raw::RawSocket,
    Lab,
};

/// Frames sent back to back before a short pause, so the receive queues of
/// the veth (1000 frames of backlog) never overflow.
const BURST: usize = 64;
const PAUSE: Duration = Duration::from_micros(300);
/// Collecting stops once nothing arrived for this long...
const QUIET: Duration = Duration::from_millis(300);
/// ...or this long after the last frame went out, whichever comes first.
const COLLECT_AT_MOST: Duration = Duration::from_secs(3);
/// Room for the answers to queue while the burst is still being sent.
const SNIFF_BUFFER: usize = 64 << 20;

/// What the server sent back to one case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// A SYN-ACK acknowledging the case's SYN.
    pub syn_ack: bool,
    /// Any TCP segment to the case's source address and port (a SYN-ACK,
    /// or the RST a listener sends to a stray ACK).
    pub tcp: bool,
}

pub struct Answers {
    pub per_case: Vec<Answer>,
    /// SYN-ACKs that matched no case: should be none.
    pub strays: usize,
    pub frames_sent: usize,
}

/// Sends `cases` in order and collects the server's answers.
pub fn answers(lab: &Lab, cases: &[Case]) -> Result<Answers> {
    let mut by_key: HashMap<Key, usize> = HashMap::with_capacity(cases.len());
    let mut by_peer: HashMap<(IpAddr, u16), Vec<usize>> = HashMap::new();
    for (i, case) in cases.iter().enumerate() {
        if by_key.insert(case.key, i).is_some() {
            bail!("two cases share the key {}", case.key);
        }
        by_peer
            .entry((case.key.src, case.key.sport))
            .or_default()
            .push(i);
    }
    let iface = lab.client_iface.clone();
    let (sender, sniffer) = lab.client.run(move || -> Result<_> {
        Ok((
            RawSocket::sender(&iface)?,
            RawSocket::sniffer(&iface, SNIFF_BUFFER)?,
        ))
    })??;
    let mut frames_sent = 0;
    for (i, case) in cases.iter().enumerate() {
        for frame in &case.frames {
            sender
                .send(frame)
                .with_context(|| format!("sending case {i} ({} bytes)", frame.len()))?;
            frames_sent += 1;
            if frames_sent % BURST == 0 {
                thread::sleep(PAUSE);
            }
        }
    }
    let mut per_case = vec![Answer::default(); cases.len()];
    let mut strays = 0;
    let deadline = Instant::now() + COLLECT_AT_MOST;
    let mut buf = vec![0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(n) = sniffer.recv(&mut buf, left.min(QUIET))? else {
            break;
        };
        let Some(reply) = Reply::parse(&buf[..n]) else {
            continue;
        };
        for &i in by_peer
            .get(&(reply.to, reply.to_port))
            .into_iter()
            .flatten()
        {
            per_case[i].tcp = true;
        }
        if reply.flags & (SYN | ACK) == SYN | ACK {
            let key = Key {
                src: reply.to,
                sport: reply.to_port,
                seq: reply.ack.wrapping_sub(1),
            };
            match by_key.get(&key) {
                Some(&i) => per_case[i].syn_ack = true,
                None => strays += 1,
            }
        }
    }
    Ok(Answers {
        per_case,
        strays,
        frames_sent,
    })
}

/// A TCP segment the server sent: whom to, and what it acknowledges.
struct Reply {
    to: IpAddr,
    to_port: u16,
    ack: u32,
    flags: u8,
}

impl Reply {
    /// The server's own frames are untagged, without IPv4 options or IPv6
    /// extension headers.
    fn parse(frame: &[u8]) -> Option<Self> {
        let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
        let (protocol, to) = match ethertype {
            ETH_P_IP => (
                *frame.get(23)?,
                IpAddr::from(<[u8; 4]>::try_from(frame.get(30..34)?).ok()?),
            ),
            ETH_P_IPV6 => (
                *frame.get(20)?,
                IpAddr::from(<[u8; 16]>::try_from(frame.get(38..54)?).ok()?),
            ),
            _ => return None,
        };
        if protocol != TCP {
            return None;
        }
        let (_, to_port, _, ack, flags) = frames::tcp_fields(frame)?;
        Some(Self {
            to,
            to_port,
            ack,
            flags,
        })
    }
}
