//! The decision both attach points share: drop a SYN to a gated port unless
//! its source holds a live grant; pass everything else.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
    EbpfContext, Global,
};
use aya_log_ebpf::debug;
use smtpgate_common::{
    grant_filter,
    AddrKey, Counter, CounterBlock, GateConfig, DEFAULT_MAX_GRANTS, FLAG_DEST_FILTER,
    FLAG_MONITOR, FLAG_RESET, MAX_ALLOWLIST, MAX_GATED_DESTS,
};

use crate::{
    frame::{self, Frame, Network, Transport, Unparsed, ETH_P_IP, ETH_P_IPV6},
    reset::Reply,
};

/// Source address -> grant expiry (ns, CLOCK_MONOTONIC).
///
/// An LRU hash, not a plain hash: when the map is full, a plain hash rejects
/// the insert (E2BIG) and a customer who just logged in would be refused.
/// The LRU map instead evicts the entry used least recently, which after the
/// agent's periodic sweep of expired grants is the idlest grant. The kernel
/// only reads this map; the agent writes it and warns as it nears capacity.
/// The agent may resize it at load time (`--max-grants`).
#[map]
static GRANTS: LruHashMap<AddrKey, u64> = LruHashMap::pinned(DEFAULT_MAX_GRANTS, 0);

/// The grant filter (see [`grant_filter`]), sized for the grant map at load
/// time. Memory-mappable so that the agent sets bits with atomic ORs.
#[map]
static GRANT_FILTER: Array<u64> = Array::pinned(grant_filter::map_words(DEFAULT_MAX_GRANTS), BPF_F_MMAPABLE);

#[map]
static COUNTERS: PerCpuArray<CounterBlock> = PerCpuArray::pinned(1, 0);

#[map]
static CONFIG: Array<GateConfig> = Array::pinned(1, 0);

#[map]
static ALLOWLIST: LpmTrie<AddrKey, u8> = LpmTrie::pinned(MAX_ALLOWLIST, 0);

#[map]
static GATED_DESTS: HashMap<AddrKey, u8> = HashMap::pinned(MAX_GATED_DESTS, 0);

/// Full-length prefix of an [`AddrKey`], for allowlist lookups.
const ADDR_BITS: u32 = 128;

pub enum Verdict {
    Pass,
    Drop,
    /// Drop, and answer with a RST if the hook can (XDP).
    Reset(Reply),
}

/// Nonzero when the loader found `bpf_ktime_get_coarse_ns` (Linux 5.11).
/// Set before load, so the verifier prunes the branch not taken and an
/// older kernel never sees the helper it lacks.
#[unsafe(no_mangle)]
static SMTPGATE_COARSE_CLOCK: Global<u8> = Global::new(0);

/// Now on `CLOCK_MONOTONIC`, the clock grant expiries are written in.
///
/// The coarse clock is the timekeeper's last tick: one load instead of a
/// clocksource read, which in a VM is an indirect call into kvmclock. Being
/// up to a tick (at most 10 ms) behind only lengthens a grant by as much.
#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: both helpers take no arguments.
    unsafe {
        if SMTPGATE_COARSE_CLOCK.load() != 0 {
            bpf_ktime_get_coarse_ns()
        } else {
            bpf_ktime_get_ns()
        }
    }
}

/// This CPU's counters, looked up once per frame.
pub struct Tally(Option<*mut CounterBlock>);

impl Tally {
    #[inline(always)]
    pub fn open() -> Self {
        Self(COUNTERS.get_ptr_mut(0))
    }

    #[inline(always)]
    pub fn add(&mut self, counter: Counter) {
        if let Some(block) = self.0 {
            // SAFETY: this CPU's slot; no other CPU writes it.
            unsafe { (*block).add(counter) };
        }
    }
}

/// A SYN that asks to open a connection to a gated destination.
struct GatedSyn {
    src: AddrKey,
    reply: Option<Reply>,
    /// The configuration's `FLAG_*` bits.
    flags: u32,
}

/// Finds a connection-opening TCP segment and checks whether its destination
/// is gated. `Ok(None)` means "not ours, pass".
#[inline(always)]
fn gated_syn(frame: &Frame) -> Result<Option<GatedSyn>, Unparsed> {
    let (ethertype, offset) = frame::ethernet(frame)?;
    let network = match ethertype {
        ETH_P_IP => frame::ipv4(frame, offset)?,
        ETH_P_IPV6 => frame::ipv6(frame, offset)?,
        _ => return Ok(None),
    };
    let transport: Transport = match network {
        Network::Transport(t) if frame::is_tcp(&t) => t,
        Network::Transport(_) => return Ok(None),
        Network::LaterFragment => return Err(Counter::PassedFragment),
    };
    let Some(port) = frame::tcp_syn_port(frame, transport.offset)? else {
        return Ok(None);
    };
    // The configuration is read only for SYNs: the bulk of the traffic
    // never pays for the lookup.
    let Some(config) = CONFIG.get(0) else {
        return Ok(None);
    };
    if !config.gates_port(port) || !gates_destination(config, &transport.dst) {
        return Ok(None);
    }
    Ok(Some(GatedSyn { src: transport.src, reply: Reply::plan(&transport), flags: config.flags }))
}

/// With a destination filter, only the listed local addresses are gated
/// (say, the customers' relay address but not the public MX address).
#[inline(always)]
fn gates_destination(config: &GateConfig, dst: &AddrKey) -> bool {
    config.flags & FLAG_DEST_FILTER == 0 || GATED_DESTS.get_ptr(dst).is_some()
}

/// False only if the grant filter proves `src` holds no grant; true also
/// while the agent has not built the filter yet.
#[inline(always)]
fn may_hold_grant(src: &AddrKey) -> bool {
    let (Some(&generation), Some(&mask)) =
        (GRANT_FILTER.get(grant_filter::GENERATION), GRANT_FILTER.get(grant_filter::MASK))
    else {
        return true;
    };
    if mask == 0 {
        return true;
    }
    let (hash, bits) = grant_filter::probe(src);
    let index = grant_filter::half_start(generation, mask) + (hash & mask);
    match GRANT_FILTER.get(index as u32) {
        Some(&word) => word & bits == bits,
        None => true,
    }
}

/// Judges one frame. Anything the gate is unsure about passes.
#[inline(always)]
pub fn judge<C: EbpfContext>(ctx: &C, frame: Frame, tally: &mut Tally) -> Verdict {
    tally.add(Counter::Frames);
    let syn = match gated_syn(&frame) {
        Ok(Some(syn)) => syn,
        Ok(None) => return Verdict::Pass,
        Err(reason) => {
            tally.add(reason);
            return Verdict::Pass;
        }
    };
    tally.add(Counter::GatedSyns);
    // SAFETY: the value is a plain u64 the agent replaces whole.
    let grant = if may_hold_grant(&syn.src) { unsafe { GRANTS.get(&syn.src) } } else { None };
    let refusal = match grant {
        Some(&expiry) if expiry > now_ns() => {
            tally.add(Counter::AllowedGrant);
            return Verdict::Pass;
        }
        Some(_) => Counter::DroppedExpired,
        None => Counter::DroppedNoGrant,
    };
    if ALLOWLIST.get(Key::new(ADDR_BITS, syn.src)).is_some() {
        tally.add(Counter::AllowedAllowlist);
        return Verdict::Pass;
    }
    if syn.flags & FLAG_MONITOR != 0 {
        tally.add(Counter::MonitorWouldDrop);
        return Verdict::Pass;
    }
    tally.add(refusal);
    debug!(ctx, "smtpgate: refused SYN from {:i}", syn.src);
    match syn.reply {
        Some(reply) if syn.flags & FLAG_RESET != 0 => Verdict::Reset(reply),
        _ => Verdict::Drop,
    }
}
