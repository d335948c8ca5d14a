//! The SYN flood: TCP SYNs to port 25 from random sources, sent as fast as
//! the receiver takes them through a raw packet socket.
//!
//! A generator of our own rather than trafgen: trafgen's transmit ring gives
//! up at the first EAGAIN, which is exactly what a veth whose receiver runs
//! on another core answers whenever its ring is full. A blocking socket
//! behind a qdisc instead waits, so the receiver sets the pace when it is
//! the slower side and nothing is lost between the two.

use std::{
    io,
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use anyhow::{Context, Result};
use smtpgate_tests::{frames::Packet, SERVER_V4, SMTP};

/// Distinct frames cycled through; sources are drawn from 198.18.0.0/15,
/// the benchmarking range, so the gate looks up a different key each time.
const FRAMES: usize = 1 << 14;
/// Frames per sendmmsg call.
const BATCH: usize = 64;
/// How long one send may block before the stop flag is looked at again.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);

/// Where a running flood stands; shared with the thread that sends it.
#[derive(Default)]
pub struct Progress {
    pub stop: AtomicBool,
    pub sent: AtomicU64,
    /// The sending thread's CPU time, in nanoseconds, updated per batch.
    pub cpu_ns: AtomicU64,
}

/// The SYN frames, with valid checksums: the kernel's TCP stack (in the
/// runs without a filter) verifies them.
pub fn syn_frames() -> Vec<Vec<u8>> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..FRAMES)
        .map(|_| {
            let bits = random();
            let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (bits as u32 & 0x1_ffff));
            let mut frame = Packet::syn(&src.to_string(), SERVER_V4, SMTP)
                .with(|p| {
                    p.sport = 1024 + (bits >> 32) as u16 % 60000;
                    p.seq = (bits >> 16) as u32;
                })
                .build();
            fill_checksums(&mut frame);
            frame
        })
        .collect()
}

/// Sends `frames` round and round on `iface` (in the calling thread's
/// namespace) until `progress.stop` is set.
pub fn send(iface: &str, frames: &[Vec<u8>], progress: &Progress) -> Result<()> {
    let socket = PacketSocket::bind(iface)?;
    let mut next = 0;
    while !progress.stop.load(Ordering::Relaxed) {
        let batch: Vec<&[u8]> = (0..BATCH).map(|i| frames[(next + i) % frames.len()].as_slice()).collect();
        match socket.send_batch(&batch) {
            Ok(sent) => {
                next = (next + sent) % frames.len();
                progress.sent.fetch_add(sent as u64, Ordering::Relaxed);
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => return Err(e).context("sending the flood"),
        }
        progress.cpu_ns.store(crate::flood::cpu::thread_cpu_ns(), Ordering::Relaxed);
    }
    Ok(())
}

/// A raw AF_PACKET socket bound to one interface.
struct PacketSocket {
    fd: std::os::fd::OwnedFd,
}

impl PacketSocket {
    fn bind(iface: &str) -> Result<Self> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let protocol = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol)) };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("opening a packet socket");
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let name = std::ffi::CString::new(iface)?;
        // SAFETY: valid C string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        anyhow::ensure!(index != 0, "no interface {iface}");
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = index as i32;
        let timeout = libc::timeval { tv_sec: 0, tv_usec: SEND_TIMEOUT.as_micros() as libc::suseconds_t };
        // SAFETY: valid descriptor and option buffers of the stated sizes.
        let ok = unsafe {
            libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_ll).cast(), size_of_val(&addr) as u32) == 0
                && libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDTIMEO,
                    (&timeout as *const libc::timeval).cast(),
                    size_of_val(&timeout) as u32,
                ) == 0
        };
        if !ok {
            return Err(io::Error::last_os_error()).with_context(|| format!("binding a packet socket to {iface}"));
        }
        Ok(Self { fd })
    }

    /// Sends what it can of `frames` in one sendmmsg(2); how many went.
    fn send_batch(&self, frames: &[&[u8]]) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let mut iovecs: Vec<libc::iovec> =
            frames.iter().map(|f| libc::iovec { iov_base: f.as_ptr() as *mut _, iov_len: f.len() }).collect();
        let mut messages: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .map(|iov| {
                // SAFETY: zeroed msghdr is valid; it points at one iovec.
                let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
                header.msg_iov = iov;
                header.msg_iovlen = 1;
                libc::mmsghdr { msg_hdr: header, msg_len: 0 }
            })
            .collect();
        // SAFETY: every message points at a live frame for the whole call.
        let sent = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), messages.as_mut_ptr(), messages.len() as u32, 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }
}

/// Fills in the IPv4 header checksum and the TCP checksum of an untagged,
/// option-free IPv4 frame.
fn fill_checksums(frame: &mut [u8]) {
    const IP: usize = 14;
    const TCP: usize = IP + 20;
    frame[IP + 10..IP + 12].copy_from_slice(&[0, 0]);
    let ip_sum = ones_complement(&frame[IP..TCP], 0);
    frame[IP + 10..IP + 12].copy_from_slice(&ip_sum.to_be_bytes());
    let tcp_len = frame.len() - TCP;
    frame[TCP + 16..TCP + 18].copy_from_slice(&[0, 0]);
    let pseudo = ones_sum(&frame[IP + 12..IP + 20], u32::from(smtpgate_tests::frames::TCP) + tcp_len as u32);
    let tcp_sum = ones_complement(&frame[TCP..], pseudo);
    frame[TCP + 16..TCP + 18].copy_from_slice(&tcp_sum.to_be_bytes());
}

fn ones_sum(bytes: &[u8], init: u32) -> u32 {
    bytes.chunks(2).fold(init, |acc, c| acc + u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
}

fn ones_complement(bytes: &[u8], init: u32) -> u16 {
    let mut sum = ones_sum(bytes, init);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_valid_checksums_and_distinct_sources() {
        let frames = syn_frames();
        assert!(frames.iter().all(|f| smtpgate_tests::frames::checksums_valid(f)));
        let sources: std::collections::HashSet<&[u8]> = frames.iter().map(|f| &f[26..30]).collect();
        assert!(sources.len() > FRAMES * 9 / 10);
    }
}
