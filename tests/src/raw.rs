//! Raw Ethernet frames over AF_PACKET: how the tests put VLAN-tagged frames
//! on a veth (this kernel cannot create VLAN sub-interfaces) and watch what
//! reaches the other end.

use std::{
    io,
    mem::{size_of, zeroed},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// An AF_PACKET socket bound to one interface, seeing every protocol.
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSocket {
    /// Opens the socket; call it on a thread inside the interface's namespace.
    pub fn bind(iface: &str) -> Result<Self> {
        Self::open(iface, libc::ETH_P_ALL as u16)
    }

    /// A socket that only sends: bound to no protocol, it queues nothing.
    pub fn sender(iface: &str) -> Result<Self> {
        Self::open(iface, 0)
    }

    /// A socket that sees only the frames arriving on `iface` (not those
    /// sent from it), with room to queue `buffer` bytes of them while
    /// nobody reads.
    pub fn sniffer(iface: &str, buffer: usize) -> Result<Self> {
        let socket = Self::open(iface, libc::ETH_P_ALL as u16)?;
        socket
            .set_option(libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)
            .context("PACKET_IGNORE_OUTGOING")?;
        let buffer = i32::try_from(buffer).context("receive buffer too large")?;
        socket
            .set_option(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, buffer)
            .context("SO_RCVBUFFORCE")?;
        Ok(socket)
    }

    fn open(iface: &str, protocol: u16) -> Result<Self> {
        let name = std::ffi::CString::new(iface)?;
        // SAFETY: plain libc calls with valid arguments; the fd is owned at once.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
        anyhow::ensure!(ifindex != 0, "no interface {iface}");
        let protocol = protocol.to_be();
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol)) };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("AF_PACKET socket");
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = ifindex;
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("binding AF_PACKET socket");
        }
        Ok(Self { fd, ifindex })
    }

    fn set_option<T>(&self, level: i32, name: i32, value: T) -> io::Result<()> {
        // SAFETY: `value` lives across the call and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                &value as *const T as *const libc::c_void,
                size_of::<T>() as u32,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn send(&self, frame: &[u8]) -> Result<()> {
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: valid buffer and address.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error()).context("sending raw frame");
        }
        Ok(())
    }

    /// Whether a frame containing `marker` arrives within `wait`.
    pub fn saw(&self, marker: &[u8], wait: Duration) -> Result<bool> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 2048];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(n) = self.recv(&mut buf, left)? {
                if buf[..n].windows(marker.len()).any(|w| w == marker) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Has the kernel stamp each frame as it passes, for
    /// [`RawSocket::last_stamp`]: the socket's first stamp request turns
    /// stamping on (and finds no frame yet).
    pub fn stamping(self) -> Result<Self> {
        let _ = self.stamp_request();
        Ok(self)
    }

    /// When the frame [`RawSocket::recv`] returned last passed the
    /// interface, by the kernel's clock (`CLOCK_REALTIME`), on a socket
    /// that is [`RawSocket::stamping`].
    pub fn last_stamp(&self) -> Result<Duration> {
        self.stamp_request().context("SIOCGSTAMPNS")
    }

    fn stamp_request(&self) -> io::Result<Duration> {
        /// `SIOCGSTAMPNS`, which answers a `timespec` on 64-bit machines.
        const SIOCGSTAMPNS: libc::c_ulong = 0x8907;
        let mut stamp = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: the ioctl writes one timespec into valid memory.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), SIOCGSTAMPNS as _, &mut stamp) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Duration::new(stamp.tv_sec as u64, stamp.tv_nsec as u32))
    }

    /// The next frame into `buf`, waiting at most `wait`; `None` if none came.
    pub fn recv(&self, buf: &mut [u8], wait: Duration) -> Result<Option<usize>> {
        let timeout = libc::timeval {
            tv_sec: wait.as_secs() as _,
            tv_usec: wait.subsec_micros().max(1) as _,
        };
        self.set_option(libc::SOL_SOCKET, libc::SO_RCVTIMEO, timeout)
            .context("SO_RCVTIMEO")?;
        // SAFETY: valid buffer of the given length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
            ) {
                return Ok(None);
            }
            return Err(err).context("receiving raw frame");
        }
        Ok(Some(n as usize))
    }
}

/// The MAC address of `iface` in namespace `ns`.
pub fn mac_of(ns: &crate::Netns, iface: &str) -> Result<[u8; 6]> {
    let out = ns.ip(&["link", "show", "dev", iface])?;
    let text = out.split("link/ether ").nth(1).context("no link/ether")?;
    let mut mac = [0u8; 6];
    for (byte, part) in mac
        .iter_mut()
        .zip(text.split_whitespace().next().unwrap_or("").split(':'))
    {
        *byte = u8::from_str_radix(part, 16)?;
    }
    Ok(mac)
}
