//! smtpgate's kernel program: drops TCP SYNs to gated SMTP ports from
//! sources without a live POP-before-SMTP grant. One decision, two attach
//! points: XDP (preferred) and TC clsact ingress (fallback).
#![no_std]
#![no_main]

mod gate;
mod replay;
mod reset;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
    EbpfContext, Global,
};

use smtpgate_common::{replay::FRAME_BYTES, Counter};
// The header walk is the library half of this crate (lib.rs), shared with
// the benchmark's parse-only baseline; gate.rs and reset.rs reach it as
// `crate::frame` and `crate::parse`.
use smtpgate_ebpf::{frame, parse};

use crate::{
    frame::Frame,
    gate::{judge, Arrival, Tally, Verdict},
};

/// Bytes TC makes linear before parsing: Ethernet, two VLAN tags, IPv6 with a
/// few extension headers and TCP fit in this. Headers beyond it are doubtful.
const TC_LINEAR_BYTES: u32 = 256;

/// Nonzero when the loader found `bpf_xdp_load_bytes` (Linux 5.18). Set
/// before load, so the verifier prunes the branch not taken and an older
/// kernel never sees the helper it lacks.
#[unsafe(no_mangle)]
static SMTPGATE_XDP_LOAD_BYTES: Global<u8> = Global::new(0);

impl Arrival for XdpContext {
    #[inline(always)]
    fn frame(&self) -> Frame {
        Frame::new(self.data(), self.data_end())
    }

    #[inline(always)]
    fn replay_ifindex(&self) -> Option<u32> {
        // SAFETY: the context the kernel passed in.
        Some(unsafe { (*self.ctx).ingress_ifindex })
    }

    /// One helper call where the kernel has it (5.18); else two bytes at
    /// a time.
    #[inline(always)]
    fn copy_headers(&self, len: usize, to: &mut [u8; FRAME_BYTES]) -> bool {
        if len > FRAME_BYTES {
            return false;
        }
        if SMTPGATE_XDP_LOAD_BYTES.load() != 0 {
            // SAFETY: `to` holds at least `len` bytes.
            return unsafe { bpf_xdp_load_bytes(self.ctx, 0, to.as_mut_ptr().cast(), len as u32) }
                == 0;
        }
        // Two bytes at a time: headers end on an even byte, and the check
        // of a one-byte read compiles into a form the verifier refuses.
        let frame = self.frame();
        for (i, pair) in to.chunks_exact_mut(2).enumerate() {
            if i * 2 >= len {
                break;
            }
            match frame.header::<[u8; 2]>(i * 2, len) {
                Ok(read) => pair.copy_from_slice(read),
                Err(_) => return false,
            }
        }
        true
    }
}

impl Arrival for TcContext {
    #[inline(always)]
    fn frame(&self) -> Frame {
        Frame::with_len(self.data(), self.data_end(), self.len() as usize)
    }

    /// A VLAN tag the socket buffer holds apart is not in the frame the
    /// program reads, and a replay without it would enter on another
    /// interface.
    #[inline(always)]
    fn replay_ifindex(&self) -> Option<u32> {
        // SAFETY: the context the kernel passed in.
        let skb = unsafe { &*self.skb.skb };
        (skb.vlan_present == 0).then_some(skb.ifindex)
    }

    #[inline(always)]
    fn copy_headers(&self, len: usize, to: &mut [u8; FRAME_BYTES]) -> bool {
        if len > FRAME_BYTES {
            return false;
        }
        // SAFETY: the context the kernel passed in; `to` holds `len` bytes.
        unsafe { bpf_skb_load_bytes(self.as_ptr(), 0, to.as_mut_ptr().cast(), len as u32) == 0 }
    }
}

#[xdp]
pub fn smtpgate_xdp(ctx: XdpContext) -> u32 {
    let mut tally = Tally::open();
    match judge(&ctx, &mut tally) {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Reset(reply) => {
            if reset::rewrite(&ctx, reply) {
                tally.add(Counter::ResetsSent);
                xdp_action::XDP_TX
            } else {
                xdp_action::XDP_DROP
            }
        }
    }
}

#[classifier]
pub fn smtpgate_tc(ctx: TcContext) -> i32 {
    // An skb's headers may sit partly in paged data, which direct packet
    // access cannot see; pulling them in costs nothing when they are linear.
    let linear = (ctx.data_end() - ctx.data()) as u32;
    let wanted = ctx.len().min(TC_LINEAR_BYTES);
    if linear < wanted {
        let _ = ctx.pull_data(wanted);
    }
    // The agent allows --action reset only with XDP; here it means drop.
    match judge(&ctx, &mut Tally::open()) {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Drop | Verdict::Reset(_) => TC_ACT_SHOT,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
