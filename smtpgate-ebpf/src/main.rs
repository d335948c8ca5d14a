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
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use smtpgate_common::Counter;
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
