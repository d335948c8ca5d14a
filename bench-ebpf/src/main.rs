//! The reference programs of the per-packet benchmark, measured beside the
//! gate in the same run:
//!
//! * `bench_pass` returns XDP_PASS and nothing else: what calling any XDP
//!   program costs;
//! * `bench_parse` walks the headers with the gate's own walk, then passes:
//!   the irreducible cost of any filter that decides on the TCP flags, the
//!   destination port and the source address;
//! * `bench_rotate` is the harness every measured program runs under. It
//!   writes the next of a range of source addresses into the frame and
//!   tail-calls the program under test, so that a test run repeated millions
//!   of times looks up addresses spread over the whole grant map instead of
//!   one key that stays hot in the cache;
//! * `bench_flood` is the SYN flood's generator (see its doc).
#![no_std]
#![no_main]

use core::{hint::black_box, ptr};

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_get_prandom_u32, bpf_redirect},
    macros::{map, xdp},
    maps::ProgramArray,
    programs::XdpContext,
};
use smtpgate_ebpf::{
    frame::Frame,
    parse::{self, Look},
};

#[xdp]
pub fn bench_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn bench_parse(ctx: XdpContext) -> u32 {
    // Everything parsed is folded into one number that goes through a black
    // box: otherwise the compiler would drop every read whose result goes
    // unused, and the baseline would measure nothing.
    let frame = Frame::new(ctx.data(), ctx.data_end());
    let digest = match parse::look(&frame) {
        Look::Segment(segment) => segment
            .source(&frame)
            .unwrap_or_default()
            .chunks_exact(4)
            .fold(u32::from(segment.port.get().unwrap_or(0)), |d, w| {
                d ^ u32::from_ne_bytes([w[0], w[1], w[2], w[3]])
            }),
        Look::Counted(reason) | Look::Hidden(reason) => reason as u32,
        Look::Pass => 0,
    };
    black_box(digest);
    xdp_action::XDP_PASS
}

/// Slot 0 holds the program under test.
#[map]
static UNDER_TEST: ProgramArray = ProgramArray::with_max_entries(1, 0);

// The rotation, fixed when the harness is loaded (read-only data, so the
// verifier sees constants): the last four bytes of the source address sit at
// ADDR_OFFSET and take the values ADDR_BASE + i for i < ADDR_COUNT, visited
// in steps of ADDR_STRIDE (coprime to ADDR_COUNT, so every i comes up once
// per lap).
#[unsafe(no_mangle)]
static ADDR_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static ADDR_BASE: u32 = 0;
#[unsafe(no_mangle)]
static ADDR_COUNT: u32 = 1;
#[unsafe(no_mangle)]
static ADDR_STRIDE: u32 = 0;

/// Where the rotation stands.
static mut NEXT_INDEX: u32 = 0;

#[xdp]
pub fn bench_rotate(ctx: XdpContext) -> u32 {
    // SAFETY: read-only globals, read volatile so the loader's values count.
    let (offset, base, count, stride) = unsafe {
        (
            ptr::read_volatile(&ADDR_OFFSET) as usize & 0xff,
            ptr::read_volatile(&ADDR_BASE),
            ptr::read_volatile(&ADDR_COUNT),
            ptr::read_volatile(&ADDR_STRIDE),
        )
    };
    let at = ctx.data() + offset;
    if at + 4 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: a test run executes on one CPU at a time.
    let index = unsafe { ptr::read_volatile(ptr::addr_of!(NEXT_INDEX)) };
    let mut next = index + stride;
    if next >= count {
        next -= count;
    }
    // SAFETY: as above; `at..at + 4` was checked against the packet end.
    unsafe {
        ptr::write_volatile(ptr::addr_of_mut!(NEXT_INDEX), next);
        ptr::write_unaligned(at as *mut [u8; 4], (base + index).to_be_bytes());
        UNDER_TEST.tail_call(&ctx, 0);
    }
    // Only reached when the slot is empty.
    xdp_action::XDP_ABORTED
}

/// The interface the flood leaves through, fixed when the generator is
/// loaded.
#[unsafe(no_mangle)]
static FLOOD_IFINDEX: u32 = 0;

/// Where the generator's template frame keeps the IPv4 source address, the
/// IPv4 header checksum and the TCP checksum (untagged, no IP options).
const FLOOD_SOURCE: usize = 26;
const FLOOD_IP_CHECKSUM: usize = 24;
const FLOOD_TCP_CHECKSUM: usize = 50;
/// Sources are 198.18.0.0/15, the benchmarking range.
const FLOOD_NET: u32 = 0xc612_0000;
const FLOOD_HOST_BITS: u32 = 0x1_ffff;

/// The SYN flood's generator, run by BPF_PROG_TEST_RUN in live-frame mode:
/// every run is a fresh frame from the kernel's page pool, which this
/// program gives a random source (checksums patched) and sends out of
/// [`FLOOD_IFINDEX`]. The frames reach the receiving veth as XDP frames,
/// without a socket buffer, the way a NIC's receive ring hands them over.
#[xdp]
pub fn bench_flood(ctx: XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + FLOOD_TCP_CHECKSUM + 2 > end {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: every offset touched lies below FLOOD_TCP_CHECKSUM + 2, checked
    // against the frame's end above.
    unsafe {
        let word = |at: usize| u16::from_be(ptr::read_unaligned((data + at) as *const u16));
        let old = (u32::from(word(FLOOD_SOURCE)) << 16) | u32::from(word(FLOOD_SOURCE + 2));
        let new = FLOOD_NET | (bpf_get_prandom_u32() & FLOOD_HOST_BITS);
        ptr::write_unaligned((data + FLOOD_SOURCE) as *mut u32, new.to_be());
        // The source is in the IPv4 header and in the TCP pseudo-header.
        for at in [FLOOD_IP_CHECKSUM, FLOOD_TCP_CHECKSUM] {
            let sum = checksum_replace(word(at), old, new);
            ptr::write_unaligned((data + at) as *mut u16, sum.to_be());
        }
        bpf_redirect(ptr::read_volatile(&FLOOD_IFINDEX), 0) as u32
    }
}

/// An Internet checksum after a 32-bit field in its range changed from
/// `old` to `new` (RFC 1624, eqn. 3).
#[inline(always)]
fn checksum_replace(checksum: u16, old: u32, new: u32) -> u16 {
    let mut sum =
        u32::from(!checksum) + (!old >> 16) + (!old & 0xffff) + (new >> 16) + (new & 0xffff);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
