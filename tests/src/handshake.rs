//! A client's TCP handshake as its own wire saw it: the SYNs it sent and
//! the SYN-ACK that answered them, captured on the client's veth, and
//! whether its kernel had to retransmit the SYN.

use std::{
    io,
    mem::size_of,
    net::TcpStream,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};

use crate::{
    frames::{tcp_fields, tcp_options, ACK, SYN},
    raw::RawSocket,
    Lab, SMTP,
};

/// TCP option kinds the handshake negotiates.
const MSS: u8 = 2;
const WINDOW_SCALE: u8 = 3;
const SACK_PERMITTED: u8 = 4;
const TIMESTAMPS: u8 = 8;

/// Every frame on the client's veth, from before the client connects.
pub struct Capture {
    socket: RawSocket,
}

/// One captured segment.
#[derive(Debug)]
pub struct Segment {
    pub seq: u32,
    pub ack: u32,
    pub options: Vec<(u8, Vec<u8>)>,
    /// When it passed the client's veth.
    pub stamp: Duration,
}

impl Segment {
    fn option(&self, kind: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, data)| data.as_slice())
    }

    /// The timestamp option's (TSval, TSecr).
    fn timestamps(&self) -> Option<(u32, u32)> {
        let ts = self.option(TIMESTAMPS)?;
        Some((
            u32::from_be_bytes(ts.get(..4)?.try_into().ok()?),
            u32::from_be_bytes(ts.get(4..8)?.try_into().ok()?),
        ))
    }
}

/// The SYNs of one connection and the SYN-ACK to it.
#[derive(Debug)]
pub struct Handshake {
    /// Every SYN the client sent, first first.
    pub syns: Vec<Segment>,
    pub syn_ack: Segment,
}

impl Capture {
    pub fn start(lab: &Lab) -> Result<Self> {
        let iface = lab.client_iface.clone();
        let socket = lab
            .client
            .run(move || RawSocket::bind(&iface)?.stamping())??;
        Ok(Self { socket })
    }

    /// The handshake of the client's connection from port `port` (any
    /// port: the first connection seen) to port 25, read until its SYN-ACK
    /// comes (at most `wait`).
    pub fn handshake(&self, port: Option<u16>, wait: Duration) -> Result<Handshake> {
        let deadline = Instant::now() + wait;
        let mut port = port;
        let mut syns = Vec::new();
        let mut buf = vec![0u8; 2048];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(n) = self.socket.recv(&mut buf, left)? else {
                continue;
            };
            let frame = &buf[..n];
            let Some((sport, dport, seq, ack, flags)) = tcp_fields(frame) else {
                continue;
            };
            let segment = || -> Result<Segment> {
                let options = tcp_options(frame).context("unreadable TCP options")?;
                let stamp = self.socket.last_stamp()?;
                Ok(Segment {
                    seq,
                    ack,
                    options,
                    stamp,
                })
            };
            match (sport, dport, flags & (SYN | ACK)) {
                (p, SMTP, SYN) if *port.get_or_insert(p) == p => syns.push(segment()?),
                (SMTP, p, f) if port == Some(p) && f == SYN | ACK => {
                    return Ok(Handshake {
                        syns,
                        syn_ack: segment()?,
                    })
                }
                _ => {}
            }
        }
        anyhow::bail!("no SYN-ACK to port {port:?} within {wait:?} (SYNs seen: {syns:?})")
    }
}

impl Handshake {
    /// From the first SYN on the wire to the SYN-ACK.
    pub fn delay(&self) -> Duration {
        let first = self
            .syns
            .first()
            .map_or(self.syn_ack.stamp, |syn| syn.stamp);
        self.syn_ack.stamp.saturating_sub(first)
    }

    /// Fails unless the SYN-ACK answers the first SYN the client sent, and
    /// agrees with it on every option the two negotiate: MSS, window
    /// scaling, SACK and timestamps, whose echo names that very SYN.
    pub fn require_answered_first_syn(&self) -> Result<()> {
        let syn = self.syns.first().context("no SYN captured")?;
        let answer = &self.syn_ack;
        ensure!(
            answer.ack == syn.seq.wrapping_add(1),
            "the SYN-ACK acknowledges {}, the SYN was {}",
            answer.ack,
            syn.seq
        );
        ensure!(answer.option(MSS).is_some(), "no MSS in {answer:?}");
        for kind in [WINDOW_SCALE, SACK_PERMITTED, TIMESTAMPS] {
            ensure!(
                syn.option(kind).is_some() == answer.option(kind).is_some(),
                "option {kind}: SYN {syn:?}, SYN-ACK {answer:?}"
            );
        }
        if let (Some((sent, _)), Some((_, echoed))) = (syn.timestamps(), answer.timestamps()) {
            ensure!(
                echoed == sent,
                "the SYN-ACK echoes timestamp {echoed}, the first SYN sent {sent} ({} SYNs)",
                self.syns.len()
            );
        }
        Ok(())
    }
}

/// How many times the kernel retransmitted on `stream` (its SYN included).
pub fn retransmissions(stream: &TcpStream) -> Result<u32> {
    // SAFETY: all-zero is a valid tcp_info.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: TCP_INFO into a tcp_info of the stated size.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("TCP_INFO");
    }
    Ok(info.tcpi_total_retrans)
}
