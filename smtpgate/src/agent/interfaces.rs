//! Interfaces that go away and come back. A gated interface that is
//! deleted takes the program's attachment with it; when an interface of
//! that name appears again (a driver reload, a re-created VLAN or bond),
//! the agent attaches the gate to it at once. The kernel says so on the
//! routing netlink socket's link group, so the agent hears of it within
//! moments, without polling.

use std::{
    collections::HashMap,
    io,
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{Context, Result};
use aya::Ebpf;
use tokio::io::unix::AsyncFd;

use crate::gate::{
    attach,
    options::{Hook, XdpMode},
    pins::PinDir,
};

/// `RTM_NEWLINK` and `RTM_DELLINK` from `linux/rtnetlink.h`.
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
/// `IFLA_IFNAME`.
const IFLA_IFNAME: u16 = 3;
/// `RTMGRP_LINK`.
const RTMGRP_LINK: u32 = 1;
/// `struct nlmsghdr` and `struct ifinfomsg`.
const NLMSG_HEADER: usize = 16;
const IFINFO: usize = 16;

/// What a link message said of an interface.
#[derive(Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// It exists (new, or changed) with this index.
    Present {
        name: String,
        index: i32,
    },
    Gone {
        name: String,
    },
}

/// The link notifications of this network namespace.
pub struct LinkEvents {
    socket: AsyncFd<OwnedFd>,
}

impl LinkEvents {
    /// Subscribes to link notifications; needs no capability.
    pub fn open() -> Result<Self> {
        // SAFETY: plain socket calls; the fd is owned right away.
        let socket = unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error()).context("opening a routing netlink socket");
            }
            OwnedFd::from_raw_fd(fd)
        };
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = RTMGRP_LINK;
        // SAFETY: a valid socket and address of the size given.
        let bound = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if bound != 0 {
            return Err(io::Error::last_os_error()).context("subscribing to link notifications");
        }
        // SAFETY: the socket stays open and owned by the AsyncFd for as long
        // as it is registered.
        let socket = unsafe { AsyncFd::register(socket) }
            .map_err(|e| e.into_parts().1)
            .context("registering the netlink socket")?;
        Ok(Self { socket })
    }

    /// The events of the next datagram.
    pub async fn next(&mut self) -> Result<Vec<LinkEvent>> {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            let mut guard = self.socket.readable().await?;
            // SAFETY: recv into a buffer of the length given.
            let n = unsafe {
                libc::recv(
                    guard.get_inner().as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    continue;
                }
                // ENOBUFS: notifications were lost; the caller re-checks.
                return Err(err).context("reading link notifications");
            }
            return Ok(parse(&buffer[..n as usize]));
        }
    }
}

/// The link events in one netlink datagram; malformed parts are skipped.
pub fn parse(mut datagram: &[u8]) -> Vec<LinkEvent> {
    let mut events = Vec::new();
    while datagram.len() >= NLMSG_HEADER {
        let len = u32::from_ne_bytes(datagram[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(datagram[4..6].try_into().unwrap());
        if len < NLMSG_HEADER || len > datagram.len() {
            break;
        }
        let message = &datagram[NLMSG_HEADER..len];
        if let (Some(event), RTM_NEWLINK | RTM_DELLINK) = (link(message, kind), kind) {
            events.push(event);
        }
        datagram = &datagram[align(len).min(datagram.len())..];
    }
    events
}

/// One `ifinfomsg` and its attributes.
fn link(message: &[u8], kind: u16) -> Option<LinkEvent> {
    let index = i32::from_ne_bytes(message.get(4..8)?.try_into().ok()?);
    let mut attributes = message.get(IFINFO..)?;
    while attributes.len() >= 4 {
        let len = u16::from_ne_bytes(attributes[0..2].try_into().ok()?) as usize;
        let kind_of_attribute = u16::from_ne_bytes(attributes[2..4].try_into().ok()?);
        if len < 4 || len > attributes.len() {
            return None;
        }
        if kind_of_attribute == IFLA_IFNAME {
            let value = &attributes[4..len];
            let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
            let name = String::from_utf8_lossy(&value[..end]).into_owned();
            return Some(match kind {
                RTM_DELLINK => LinkEvent::Gone { name },
                _ => LinkEvent::Present { name, index },
            });
        }
        attributes = &attributes[align(len).min(attributes.len())..];
    }
    None
}

/// Netlink lengths are padded to four bytes.
fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The gate on its interfaces: the loaded program, how it is attached, and
/// the index of each interface as last attached, so that a notification
/// about an interface already served changes nothing.
pub struct Interfaces {
    ebpf: Ebpf,
    hook: Hook,
    xdp_mode: XdpMode,
    events: LinkEvents,
    index: HashMap<String, i32>,
}

impl Interfaces {
    /// Follows `ifaces`, which `ebpf`'s program is attached to.
    pub fn follow(ebpf: Ebpf, ifaces: &[String], hook: Hook, xdp_mode: XdpMode) -> Result<Self> {
        let events = LinkEvents::open()?;
        let index = ifaces
            .iter()
            .filter_map(|iface| Some((iface.clone(), index_of(iface)?)))
            .collect();
        Ok(Self {
            ebpf,
            hook,
            xdp_mode,
            events,
            index,
        })
    }

    /// Waits for link notifications and attaches the gate to every gated
    /// interface that came back; returns after each batch.
    pub async fn keep_attached(&mut self, pins: &PinDir) -> Result<()> {
        let events = match self.events.next().await {
            Ok(events) => events,
            // Notifications were lost (a burst overran the socket): look.
            Err(e) => {
                tracing::debug!("{e:#}; checking every gated interface");
                self.index
                    .keys()
                    .filter_map(|name| {
                        Some(LinkEvent::Present {
                            name: name.clone(),
                            index: index_of(name)?,
                        })
                    })
                    .collect()
            }
        };
        for event in events {
            match event {
                LinkEvent::Present { name, index } => {
                    if self.index.get(&name).is_some_and(|&known| known != index) {
                        attach::attach(&mut self.ebpf, pins, &name, self.hook, self.xdp_mode)
                            .with_context(|| format!("attaching the gate to {name} again"))?;
                        self.index.insert(name.clone(), index);
                        tracing::info!("{name} is back; the gate is attached to it again");
                    }
                }
                LinkEvent::Gone { name } => {
                    if let Some(known) = self.index.get_mut(&name) {
                        *known = 0;
                        tracing::warn!(
                            "{name} went away; the gate attaches to it again when it returns"
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

fn index_of(iface: &str) -> Option<i32> {
    let name = std::ffi::CString::new(iface).ok()?;
    // SAFETY: a valid C string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One netlink message of `kind` about interface `index` named `name`.
    fn message(kind: u16, index: i32, name: &str) -> Vec<u8> {
        let mut attribute = Vec::new();
        let value_len = name.len() + 1;
        attribute.extend_from_slice(&((4 + value_len) as u16).to_ne_bytes());
        attribute.extend_from_slice(&IFLA_IFNAME.to_ne_bytes());
        attribute.extend_from_slice(name.as_bytes());
        attribute.push(0);
        attribute.resize(align(attribute.len()), 0);
        let mut info = vec![0u8; IFINFO];
        info[4..8].copy_from_slice(&index.to_ne_bytes());
        let len = NLMSG_HEADER + info.len() + attribute.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&[0; 10]);
        out.extend(info);
        out.extend(attribute);
        out
    }

    #[test]
    fn link_messages_parse_and_garbage_is_skipped() {
        let mut datagram = message(RTM_NEWLINK, 7, "eth0");
        datagram.extend(message(RTM_DELLINK, 8, "veth1"));
        // Another kind of message is not a link event.
        datagram.extend(message(20, 9, "addr"));
        assert_eq!(
            parse(&datagram),
            [
                LinkEvent::Present {
                    name: "eth0".into(),
                    index: 7
                },
                LinkEvent::Gone {
                    name: "veth1".into()
                },
            ]
        );
        // A length past the end stops the walk without a panic.
        let mut broken = message(RTM_NEWLINK, 7, "eth0");
        broken[0] = 0xff;
        assert_eq!(parse(&broken), []);
        assert_eq!(parse(&[1, 2, 3]), []);
    }
}
