//! Replaying the SYN the gate refused just before a grant (see
//! `smtpgate_common::replay` for the table the program fills).
//!
//! Every grant write ends in [`Replay::after_grant`]: if the grant key's
//! slot holds a SYN from a source the grant covers, refused within the
//! replay window, the slot is claimed and the SYN given back to the gate
//! program itself, which judges it as it judged the original and passes it
//! only because the grant now exists. Two ways to give it back:
//!
//! * **live frame** (Linux 5.18 and later): `BPF_PROG_TEST_RUN` with
//!   `BPF_F_TEST_XDP_LIVE_FRAMES` runs the program on the frame as if it
//!   had arrived on the interface the SYN came in on, and a frame it
//!   passes enters the stack there: the kernel cannot tell it from the
//!   client's retransmission, and rp_filter, netfilter and the SYN budget
//!   treat it alike (where the gate hooks in after XDP, TC or XDP in skb
//!   mode, it passes the hook too, and is judged twice);
//! * **judged, then raw** (older kernels): an ordinary test run of the
//!   program gives the verdict (and charges the budget); a SYN it passes is
//!   sent to the local stack through a raw socket. It arrives on the
//!   loopback device, which keeps the route it was sent on: no rp_filter
//!   or martian check applies, and the SYN-ACK is routed to the client as
//!   usual. Link-local sources are not replayed this way (their SYN-ACK
//!   would leave by the loopback device), and only SYNs to local addresses
//!   are.

use std::{
    io,
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::Ordering,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::Map,
    programs::{ProgramError, TestRun, TestRunAttrs, TestRunOptions, Xdp},
};
use aya_obj::programs::XdpAttachType;
use smtpgate_common::{
    replay::{self, slot_parts, RefusedSyn, SLOTS},
    AddrKey, KeyWords, CONFIG_MAP, REFUSED_SYNS_MAP, REPLAY_SLOTS_MAP,
};

use crate::gate::{
    addr, clock,
    mapped::MappedWords,
    maps::{open_pinned, Config},
    pins::PinDir,
};

/// Words of one record.
const RECORD_WORDS: u64 = (size_of::<RefusedSyn>() / size_of::<u64>()) as u64;
/// The verdict of an XDP program that passes a frame.
const XDP_PASS: u32 = 2;
/// One more frame than a live test run takes at once (`TEST_XDP_MAX_BATCH`).
const PROBE_BATCH: u32 = 257;
/// `SMTPGATE_REPLAY_RAW=1` replays through raw sockets even where live
/// frames work, so that the older kernels' path runs on a new one too.
const FORCE_RAW: &str = "SMTPGATE_REPLAY_RAW";

/// The table of refused SYNs, mapped into this process: each slot's word
/// and its record.
pub struct RefusedSyns {
    slots: MappedWords,
    records: MappedWords,
}

impl RefusedSyns {
    pub fn new(slots: Map, records: Map) -> Result<Self> {
        let slots = MappedWords::new(slots, "replay slots")?;
        let records = MappedWords::of_values(records, "refused SYNs", size_of::<RefusedSyn>())?;
        if slots.word_count() as u64 != u64::from(SLOTS)
            || records.word_count() as u64 != u64::from(SLOTS) * RECORD_WORDS
        {
            bail!("the replay table has an unexpected size");
        }
        Ok(Self { slots, records })
    }

    pub fn open_pinned(pins: &PinDir) -> Result<Self> {
        Self::new(
            open_pinned(&pins.map(REPLAY_SLOTS_MAP))?,
            open_pinned(&pins.map(REFUSED_SYNS_MAP))?,
        )
    }

    /// Frees every slot whose SYN was refused longer ago than `window`, so
    /// that the slot takes the next refused SYN; returns how many.
    pub fn free_expired(&self, window: Duration) -> usize {
        let now = clock::monotonic_ns();
        (0..u64::from(SLOTS))
            .map(|index| self.slots.word(index))
            .filter(|slot| {
                let word = slot.load(Ordering::Relaxed);
                word != 0
                    && older_than(slot_parts(word).0, now, window)
                    && slot
                        .compare_exchange(word, 0, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
            })
            .count()
    }

    /// Takes the SYN in the slot of grant key `key`, if it came from a
    /// source the key covers (IPv6: its first `v6_prefix` bits) and was
    /// refused within `window`; with when it was refused. The slot is
    /// freed by an exchange of its word with zero: of any number of
    /// claimants, one gets the SYN.
    pub fn claim(
        &self,
        key: &AddrKey,
        v6_prefix: u8,
        window: Duration,
    ) -> Option<(RefusedSyn, u64)> {
        let (index, tag) = replay::slot(KeyWords::of(key));
        let slot = self.slots.word(u64::from(index));
        let word = slot.load(Ordering::Acquire);
        let (refused, holder) = slot_parts(word);
        if word == 0 || holder != tag || older_than(refused, clock::monotonic_ns(), window) {
            return None;
        }
        let base = u64::from(index) * RECORD_WORDS;
        let mut words = [0u64; RECORD_WORDS as usize];
        for (i, word) in words.iter_mut().enumerate() {
            *word = self.records.word(base + i as u64).load(Ordering::Relaxed);
        }
        let syn: RefusedSyn = bytemuck::cast(words);
        if grant_key(source(&syn)?, v6_prefix) != *key {
            return None;
        }
        // The gate writes only a free slot's record, and its word last:
        // the same word now means the record read is the one it stands for.
        slot.compare_exchange(word, 0, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        Some((syn, refused))
    }
}

/// Whether `refused` lies more than `window` before `now`.
fn older_than(refused: u64, now: u64, window: Duration) -> bool {
    u128::from(now.saturating_sub(refused)) > window.as_nanos()
}

/// The key of the grant that covers `ip`, whose IPv6 grants cover a
/// `/v6_prefix`.
pub fn grant_key(ip: IpAddr, v6_prefix: u8) -> AddrKey {
    match ip.to_canonical() {
        IpAddr::V6(v6) => addr::key(IpAddr::V6(addr::v6_prefix_start(v6, v6_prefix))),
        v4 => addr::key(v4),
    }
}

/// Where the network header starts: the frame is untagged.
const NETWORK: usize = 14;

/// The recorded IP header and whether it is IPv6 (else IPv4).
fn network(syn: &RefusedSyn) -> Option<(&[u8], bool)> {
    let ipv6 = match u16::from_be_bytes([syn.frame[12], syn.frame[13]]) {
        0x0800 => false,
        0x86dd => true,
        _ => return None,
    };
    Some((&syn.frame[NETWORK..], ipv6))
}

/// The SYN's source address.
pub fn source(syn: &RefusedSyn) -> Option<IpAddr> {
    address(syn, 12, 8)
}

/// The SYN's destination address.
pub fn destination(syn: &RefusedSyn) -> Option<IpAddr> {
    address(syn, 16, 24)
}

/// The address at `v4` or `v6` bytes into the IP header.
fn address(syn: &RefusedSyn, v4: usize, v6: usize) -> Option<IpAddr> {
    let (n, ipv6) = network(syn)?;
    Some(match ipv6 {
        false => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&n[v4..v4 + 4]).ok()?)),
        true => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&n[v6..v6 + 16]).ok()?)),
    })
}

/// Where the TCP header starts, and where the headers end.
fn tcp_bounds(syn: &RefusedSyn) -> Option<(usize, usize)> {
    let (_, ipv6) = network(syn)?;
    let tcp = NETWORK + if ipv6 { 40 } else { 20 };
    let end = tcp + usize::from(syn.frame[tcp + 12] >> 4) * 4;
    (end >= tcp + 20 && end <= syn.frame.len()).then_some((tcp, end))
}

/// The SYN's source and destination port.
fn ports(syn: &RefusedSyn) -> Option<(u16, u16)> {
    let (tcp, _) = tcp_bounds(syn)?;
    let t = &syn.frame[tcp..];
    Some((
        u16::from_be_bytes([t[0], t[1]]),
        u16::from_be_bytes([t[2], t[3]]),
    ))
}

/// The SYN's Ethernet frame as it arrived, but for the TCP checksum,
/// which is computed afresh: a frame that came from a veth (or from a
/// sender that offloads checksums to hardware the frame never crossed)
/// carries only the pseudo-header's part of it, which a frame entering the
/// stack anew would fail.
pub fn frame(syn: &RefusedSyn) -> Option<Vec<u8>> {
    let (network, ipv6) = network(syn)?;
    let (tcp, end) = tcp_bounds(syn)?;
    let addresses = if ipv6 {
        &network[8..40]
    } else {
        &network[12..20]
    };
    let mut frame = syn.frame[..end].to_vec();
    let segment = &mut frame[tcp..];
    segment[16..18].fill(0);
    let pseudo = ones_sum(addresses, u32::from(IPPROTO_TCP) + segment.len() as u32);
    let checksum = !fold(ones_sum(segment, pseudo));
    segment[16..18].copy_from_slice(&checksum.to_be_bytes());
    Some(frame)
}

const IPPROTO_TCP: u8 = 6;

/// `bytes` as big-endian 16-bit words added to the one's-complement sum
/// `sum`, not yet folded.
fn ones_sum(bytes: &[u8], sum: u32) -> u32 {
    bytes.chunks(2).fold(sum, |sum, pair| {
        sum + u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]))
    })
}

/// A one's-complement sum folded into 16 bits.
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// How a replayed SYN went back to the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayPath {
    LiveFrame,
    RawSocket,
}

impl ReplayPath {
    pub fn name(self) -> &'static str {
        match self {
            ReplayPath::LiveFrame => "live_frame",
            ReplayPath::RawSocket => "raw_socket",
        }
    }
}

/// Raw sockets that hand a whole IP packet, headers and all, to the stack.
struct RawSockets {
    v4: OwnedFd,
    v6: OwnedFd,
}

impl RawSockets {
    /// Needs `CAP_NET_RAW`, which only the opening checks: the agent opens
    /// them before it drops its capabilities.
    fn open() -> Result<Self> {
        let open = |domain| -> Result<OwnedFd> {
            // SAFETY: plain socket(2); the fd is owned at once.
            let fd = unsafe {
                libc::socket(
                    domain,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::IPPROTO_RAW,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error())
                    .context("opening a raw socket for replays (needs CAP_NET_RAW)");
            }
            // SAFETY: a fresh fd nobody else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        Ok(Self {
            v4: open(libc::AF_INET)?,
            v6: open(libc::AF_INET6)?,
        })
    }

    /// Sends the IP packet `packet` to `to`, a local address.
    fn send(&self, packet: &[u8], to: IpAddr) -> Result<()> {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let (fd, len) = match to {
            IpAddr::V4(ip) => {
                // SAFETY: sockaddr_storage is large and aligned enough.
                let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_addr.s_addr = u32::from(ip).to_be();
                (&self.v4, size_of::<libc::sockaddr_in>())
            }
            IpAddr::V6(ip) => {
                // SAFETY: as above.
                let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_addr.s6_addr = ip.octets();
                (&self.v6, size_of::<libc::sockaddr_in6>())
            }
        };
        // SAFETY: a valid buffer and address of the stated lengths.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                &storage as *const _ as *const libc::sockaddr,
                len as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error()).context("sending the SYN to the local stack");
        }
        Ok(())
    }
}

/// How SYNs go back to the gate on this kernel.
enum Inject {
    LiveFrames,
    Raw(RawSockets),
}

/// Replays refused SYNs once their source's grant is written.
pub struct Replay {
    table: RefusedSyns,
    window: Duration,
    gate: Xdp,
    inject: Inject,
    on_replay: Option<Box<dyn Fn(ReplayPath) + Send + Sync>>,
}

impl Replay {
    /// Replay as the gate pinned under `pins` is configured for it:
    /// `None` when its replay window is off, or when an older gate, which
    /// records nothing, is pinned there.
    pub fn open(pins: &PinDir) -> Result<Option<Self>> {
        let config = Config::new(open_pinned(&pins.map(CONFIG_MAP))?)?.read()?;
        let (table, program) = (pins.map(REPLAY_SLOTS_MAP), pins.program());
        if config.replay_window_ms == 0 || !table.exists() || !program.exists() {
            return Ok(None);
        }
        let gate = Xdp::from_pin(&program, XdpAttachType::Interface)
            .with_context(|| format!("opening {}", program.display()))?;
        let forced_raw = std::env::var_os(FORCE_RAW).is_some_and(|v| v == "1");
        let inject = if !forced_raw && live_frames(&gate) {
            Inject::LiveFrames
        } else {
            Inject::Raw(RawSockets::open()?)
        };
        Ok(Some(Self {
            table: RefusedSyns::open_pinned(pins)?,
            window: Duration::from_millis(u64::from(config.replay_window_ms)),
            gate,
            inject,
            on_replay: None,
        }))
    }

    /// How long a refused SYN is kept.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Frees the slots of SYNs older than the window; returns how many
    /// went unreplayed so.
    pub fn free_expired(&self) -> usize {
        self.table.free_expired(self.window)
    }

    /// How SYNs are replayed here.
    pub fn path(&self) -> ReplayPath {
        match self.inject {
            Inject::LiveFrames => ReplayPath::LiveFrame,
            Inject::Raw(_) => ReplayPath::RawSocket,
        }
    }

    /// Calls `report` after each replay.
    pub fn reporting(mut self, report: impl Fn(ReplayPath) + Send + Sync + 'static) -> Self {
        self.on_replay = Some(Box::new(report));
        self
    }

    /// After the grant of key `key` (IPv6: covering `/v6_prefix`) has been
    /// written: replays the SYN recorded for it, if any. A replay that
    /// fails is logged; the client still has its retransmission.
    pub fn after_grant(&self, key: &AddrKey, v6_prefix: u8) {
        let Some((syn, refused)) = self.table.claim(key, v6_prefix, self.window) else {
            return;
        };
        let age = Duration::from_nanos(clock::monotonic_ns().saturating_sub(refused));
        let (Some(from), Some(to), Some((sport, dport)), Some(frame)) =
            (source(&syn), destination(&syn), ports(&syn), frame(&syn))
        else {
            return;
        };
        let (from, to) = (SocketAddr::new(from, sport), SocketAddr::new(to, dport));
        match self.hand_back(&syn, &frame) {
            Ok(true) => {
                let path = self.path();
                tracing::info!(
                    "replayed the SYN {from} -> {to}, refused {} ms before the grant ({})",
                    age.as_millis(),
                    path.name()
                );
                if let Some(report) = &self.on_replay {
                    report(path);
                }
            }
            Ok(false) => {
                tracing::info!("the gate refused the replay of the SYN {from} -> {to}")
            }
            Err(e) => tracing::warn!("could not replay the SYN {from} -> {to}: {e:#}"),
        }
    }

    /// Gives `frame`, the SYN `syn`, back to the gate; false if the gate
    /// refused it (as far as this path tells).
    fn hand_back(&self, syn: &RefusedSyn, frame: &[u8]) -> Result<bool> {
        match &self.inject {
            Inject::LiveFrames => {
                // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
                // rx_queue_index, egress_ifindex.
                let md = [0, frame.len() as u32, 0, syn.ifindex, 0, 0];
                let md: &[u8] = bytemuck::cast_slice(&md);
                self.gate
                    .test_run(TestRunOptions {
                        data_in: Some(frame),
                        ctx_in: Some(md),
                        attrs: TestRunAttrs::new().xdp_live_frames(1),
                        ..TestRunOptions::default()
                    })
                    .context("running the gate on the frame (live)")?;
                // A live run reports no verdict: the gate's counters have it.
                Ok(true)
            }
            Inject::Raw(sockets) => {
                let (Some(from), Some(to)) = (source(syn), destination(syn)) else {
                    return Ok(false);
                };
                if matches!(from, IpAddr::V6(v6) if v6.is_unicast_link_local()) {
                    bail!("a link-local source is not replayed through the loopback device");
                }
                // Binding fails unless the address is this host's own.
                UdpSocket::bind(SocketAddr::new(to, 0))
                    .with_context(|| format!("{to} is not a local address"))?;
                let verdict = self
                    .gate
                    .test_run(TestRunOptions {
                        data_in: Some(frame),
                        ..TestRunOptions::default()
                    })
                    .context("running the gate on the frame")?
                    .return_value;
                if verdict != XDP_PASS {
                    return Ok(false);
                }
                sockets.send(&frame[NETWORK..], to)?;
                Ok(true)
            }
        }
    }
}

/// Whether this kernel runs XDP programs on live frames (Linux 5.18): it
/// then refuses an oversized batch with E2BIG, where an older kernel
/// refuses the flag itself with EINVAL. Nothing is run either way.
fn live_frames(gate: &Xdp) -> bool {
    let probe = [0u8; 14];
    let ran = gate.test_run(TestRunOptions {
        data_in: Some(&probe),
        attrs: TestRunAttrs::new().xdp_live_frames(PROBE_BATCH),
        ..TestRunOptions::default()
    });
    match ran {
        Ok(_) => true,
        Err(ProgramError::SyscallError(e)) => e.io_error.raw_os_error() == Some(libc::E2BIG),
        Err(_) => false,
    }
}
