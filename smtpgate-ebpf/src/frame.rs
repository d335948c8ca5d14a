//! Bounds-checked access to the packet, and the wire layout of the headers
//! the gate reads.
//!
//! Every read is preceded by two checks: against the end of the bytes the
//! program may touch, which lets the verifier prove the access safe, and
//! against the end of the packet as its own headers declare it, which is
//! what the kernel's stack will use.

use core::mem::size_of;

/// Why a header could not be read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The packet ends before the header does.
    Packet,
    /// The header lies within the packet but past the bytes the program can
    /// read directly (TC: in a socket buffer's paged data).
    Linear,
}

/// The packet between `data` and `data_end`, `len` bytes long in all.
#[derive(Clone, Copy)]
pub struct Frame {
    start: usize,
    end: usize,
    len: usize,
}

impl Frame {
    /// A frame whose bytes are all directly readable (XDP).
    #[inline(always)]
    pub fn new(start: usize, end: usize) -> Self {
        // Opaque to the compiler: knowing that `len` is `end - start`, it
        // would drop the pointer comparison in `header` as implied by the
        // length check, and the verifier accepts only the former.
        Self {
            start,
            end,
            len: core::hint::black_box(end - start),
        }
    }

    /// A frame of `len` bytes of which only `start..end` are readable (TC).
    #[inline(always)]
    pub fn with_len(start: usize, end: usize, len: usize) -> Self {
        Self { start, end, len }
    }

    /// The packet's length, readable or not.
    #[inline(always)]
    pub fn packet_len(&self) -> usize {
        self.len
    }

    /// A reference to a `T` at `offset` that must end by `limit`, the
    /// offset where the enclosing header says the packet ends (at most
    /// [`Frame::packet_len`]).
    #[inline(always)]
    pub fn header<T>(&self, offset: usize, limit: usize) -> Result<&T, Cut> {
        if offset + size_of::<T>() > limit {
            return Err(Cut::Packet);
        }
        // The end is checked on the very pointer that is read through: the
        // verifier proves an access safe only for the register it saw
        // compared with the packet's end.
        let at = self.start + offset;
        if at + size_of::<T>() > self.end {
            return Err(Cut::Linear);
        }
        // SAFETY: the range was checked against the end of the packet, and
        // every header type is made of byte arrays (alignment 1).
        Ok(unsafe { &*(at as *const T) })
    }

    /// A mutable `T` at `offset`, for rewriting the packet in place.
    #[inline(always)]
    pub fn header_mut<T>(&mut self, offset: usize) -> Option<&mut T> {
        let at = self.start + offset;
        if at + size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: as in `header`; the program owns the packet while it runs.
        Some(unsafe { &mut *(at as *mut T) })
    }
}

// Unused fields stay named: they document the wire layout.
#[allow(dead_code)]
#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: [u8; 2],
}

// Unused fields stay named: they document the wire layout.
#[allow(dead_code)]
#[repr(C)]
pub struct VlanTag {
    pub tci: [u8; 2],
    pub ethertype: [u8; 2],
}

// Unused fields stay named: they document the wire layout.
#[allow(dead_code)]
#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub total_len: [u8; 2],
    pub id: [u8; 2],
    pub flags_frag_off: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub checksum: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

// Unused fields stay named: they document the wire layout.
#[allow(dead_code)]
#[repr(C)]
pub struct Ipv6Hdr {
    pub version_class_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// The first eight bytes of an IPv6 extension header (every one has at
/// least eight), read alike for every type so that the walk advances the
/// same way after each: by `(len_8_octets + 1) * 8` bytes, which for a
/// fragment header, whose second byte is reserved (zero), is its size.
#[repr(C)]
pub struct Ipv6ExtHdr {
    pub next_header: u8,
    pub len_8_octets: u8,
    /// Routing: type, segments left, data. Fragment: offset and flags,
    /// identification.
    pub data: [u8; 6],
}

impl Ipv6ExtHdr {
    /// A routing header's segments left.
    #[inline(always)]
    pub fn segments_left(&self) -> u8 {
        self.data[1]
    }

    /// A fragment header's offset (in 8-byte units) and flags.
    #[inline(always)]
    pub fn fragment_offset_flags(&self) -> u16 {
        u16::from_be_bytes([self.data[0], self.data[1]])
    }
}

/// The ports: all a fragment shorter than the fixed TCP header may show.
// Unused fields stay named: they document the wire layout.
#[allow(dead_code)]
#[repr(C)]
pub struct TcpPorts {
    pub src: [u8; 2],
    pub dst: [u8; 2],
}

// Unused fields stay named: they document the wire layout.
#[allow(dead_code)]
#[repr(C)]
pub struct TcpHdr {
    pub src_port: [u8; 2],
    pub dst_port: [u8; 2],
    pub seq: [u8; 4],
    pub ack: [u8; 4],
    pub offset_reserved: u8,
    pub flags: u8,
    pub window: [u8; 2],
    pub checksum: [u8; 2],
    pub urgent: [u8; 2],
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_DSTOPTS: u8 = 60;

pub const TCP_FLAG_SYN: u8 = 0x02;
pub const TCP_FLAG_RST: u8 = 0x04;
pub const TCP_FLAG_ACK: u8 = 0x10;
