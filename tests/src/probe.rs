//! What a fault test runs around the fault: a SYN flood from strangers,
//! and probes that keep connecting (a granted client that must always get
//! in, a stranger that never may), each until told to stop and bounded in
//! count and time.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{ensure, Result};

use smtpgate::gate::errno::errno;

use crate::{frames::Packet, raw::RawSocket, Lab, ANSWERED, SERVER_V4, SERVER_V6, SMTP};

/// Bounds on the flood and the probes.
const MAX_FLOOD_FRAMES: u64 = 20_000_000;
const MAX_RUN: Duration = Duration::from_secs(60);
/// How long a stranger's connect waits: an answer over a veth comes in well
/// under it, the first retransmission of the SYN after it.
const STRANGER_WAIT: Duration = Duration::from_millis(300);

/// What a prober saw: connects answered, the ones that failed, and the
/// longest time between two answered ones.
#[derive(Debug, Default)]
pub struct Probed {
    pub answered: usize,
    pub failed: Vec<String>,
    pub longest_gap: Duration,
}

/// A SYN flood from the lab's client, running until [`Flood::end`].
pub struct Flood {
    stop: Arc<AtomicBool>,
    sender: JoinHandle<Result<Result<u64>>>,
}

impl Flood {
    /// Starts a flood of SYNs to port 25 from 256 IPv4 strangers in turn
    /// (203.0.113.0/24), out of the lab's client.
    pub fn start(lab: &Lab) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sender = lab.client.spawn({
            let (iface, stop) = (lab.client_iface.clone(), stop.clone());
            move || flood(&iface, &stop)
        });
        Self { stop, sender }
    }

    /// Stops the flood; how many frames it sent.
    pub fn end(self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.sender
            .join()
            .map_err(|_| anyhow::anyhow!("the flood thread panicked"))??
    }
}

/// The flood and the probes of one lab, running until [`Around::end`].
pub struct Around {
    stop: Arc<AtomicBool>,
    flood: Flood,
    granted: JoinHandle<Result<Probed>>,
    stranger: JoinHandle<Result<Probed>>,
}

/// What ran around the fault.
#[derive(Debug)]
pub struct Seen {
    /// Flood frames sent.
    pub flood: u64,
    /// The lab's client over IPv4, which the test granted.
    pub granted: Probed,
    /// The lab's client over IPv6, which holds no grant.
    pub stranger: Probed,
}

impl Around {
    /// Starts a flood of SYNs to port 25 from ever new IPv4 strangers, and
    /// probes from the lab's client: over IPv4 (the test grants it) and
    /// over IPv6 (no grant).
    pub fn start(lab: &Lab) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flood = Flood::start(lab);
        let prober = |server: &str, wait| {
            let (to, stop) = (SocketAddr::new(server.parse().unwrap(), SMTP), stop.clone());
            lab.client.spawn(move || probe(to, wait, &stop))
        };
        let granted = prober(SERVER_V4, ANSWERED);
        let stranger = prober(SERVER_V6, STRANGER_WAIT);
        Self {
            stop,
            flood,
            granted,
            stranger,
        }
    }

    /// Stops everything and says what it saw.
    pub fn end(self) -> Result<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        let joined = |handle: JoinHandle<Result<Probed>>| {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("a probe thread panicked"))?
        };
        Ok(Seen {
            flood: self.flood.end()?,
            granted: joined(self.granted)?,
            stranger: joined(self.stranger)?,
        })
    }
}

impl Seen {
    /// Prints what ran around the fault, and fails unless the flood and the
    /// probes really ran, the granted client was never refused and the
    /// stranger never answered.
    pub fn require_clean(&self) -> Result<()> {
        let (granted, stranger) = (&self.granted, &self.stranger);
        println!(
            "flood: {} SYNs; granted client: {} connects, longest gap {} ms; stranger: {} attempts",
            self.flood,
            granted.answered,
            granted.longest_gap.as_millis(),
            stranger.failed.len() + stranger.answered
        );
        ensure!(
            self.flood > 1000 && granted.answered >= 10 && stranger.failed.len() >= 2,
            "the flood or the probes hardly ran"
        );
        ensure!(
            granted.failed.is_empty(),
            "the granted client was refused: {:?}",
            granted.failed
        );
        ensure!(
            stranger.answered == 0,
            "a stranger was answered {} times",
            stranger.answered
        );
        Ok(())
    }
}

/// Connects to `to` until `stop`, each waiting at most `wait`.
fn probe(to: SocketAddr, wait: Duration, stop: &AtomicBool) -> Probed {
    let (mut probed, began) = (Probed::default(), Instant::now());
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) && began.elapsed() < MAX_RUN {
        match TcpStream::connect_timeout(&to, wait) {
            Ok(_) => {
                probed.longest_gap = probed.longest_gap.max(last.elapsed());
                last = Instant::now();
                probed.answered += 1;
            }
            Err(e) => probed.failed.push(e.to_string()),
        }
        thread::sleep(Duration::from_millis(2));
    }
    probed
}

/// The sources of [`flood`]'s SYNs, in turn.
pub fn flood_source(sent: u64) -> Ipv4Addr {
    let [_, _, c, d] = (sent as u32).to_be_bytes();
    Ipv4Addr::new(203, 0, 113, c ^ d)
}

/// SYNs to the gated port from ever new strangers until `stop`; how many
/// went out.
fn flood(iface: &str, stop: &AtomicBool) -> Result<u64> {
    let socket = RawSocket::sender(iface)?;
    let began = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) && sent < MAX_FLOOD_FRAMES && began.elapsed() < MAX_RUN {
        let source = flood_source(sent);
        match socket.send(&Packet::syn(&source.to_string(), SERVER_V4, SMTP).build()) {
            Ok(()) => sent += 1,
            // The server's receive ring was full (a busy machine, an agent
            // loading its program): the frame is lost, as on a wire.
            Err(e) if errno(&e) == Some(libc::ENOBUFS) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}
