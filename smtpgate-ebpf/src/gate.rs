//! The decision both attach points share: drop a SYN to a gated port, or a
//! frame that could be one, unless its source holds a live grant or is on
//! the allowlist; pass everything else.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
    EbpfContext, Global,
};
use aya_log_ebpf::debug;
use smtpgate_common::{
    address_block, allow_filter, grant_filter, replay::FRAME_BYTES, AddrKey, CooldownUntil,
    Counter, CounterBlock, GateConfig, Grant, GrantOwner, KeyWords, UserKey, DEFAULT_MAX_GRANTS,
    FLAG_DEST_FILTER, FLAG_MONITOR, FLAG_RESET, MAX_ALLOWLIST, MAX_GATED_DESTS,
};

use crate::{
    frame::Frame,
    parse::{self, Look, PlainHeaders, Segment},
    replay,
};

/// Source key -> [`Grant`]: its expiry (ns, CLOCK_MONOTONIC) and SYN budget.
///
/// An LRU hash, not a plain hash: when the map is full, a plain hash rejects
/// the insert (E2BIG) and a customer who just logged in would be refused.
/// The LRU map instead evicts the entry used least recently, which after the
/// agent's periodic sweep of expired grants is the idlest grant. The kernel
/// writes only the budget's moving field; the agent writes the rest and
/// warns as the map nears capacity. The agent may resize it at load time
/// (`--max-grants`). Named after its layout, like every map.
#[map(name = "GRANTS_V2")]
static GRANTS: LruHashMap<AddrKey, Grant> = LruHashMap::pinned(DEFAULT_MAX_GRANTS, 0);

/// Who earned each grant; the agent's record, which the program never
/// reads. Defined here so that it is pinned with the gate's maps and sized
/// with the grant map; allocated as entries come.
#[map]
static GRANT_OWNERS: HashMap<AddrKey, GrantOwner> =
    HashMap::pinned(DEFAULT_MAX_GRANTS, BPF_F_NO_PREALLOC);

/// Users in a quota's cooldown; the agent's record, as [`GRANT_OWNERS`] is.
#[map]
static COOLDOWNS: HashMap<UserKey, CooldownUntil> =
    HashMap::pinned(MAX_COOLDOWNS, BPF_F_NO_PREALLOC);

/// Users that can be in a cooldown at once.
const MAX_COOLDOWNS: u32 = 65536;

/// The grant filter (see [`grant_filter`]), sized for the grant map at load
/// time. Memory-mappable so that the agent sets bits with atomic ORs.
/// Named after its layout, like the counters.
#[map(name = "GRANT_FILTER_V2")]
static GRANT_FILTER: Array<u64> =
    Array::pinned(grant_filter::map_words(DEFAULT_MAX_GRANTS), BPF_F_MMAPABLE);

/// Named after its layout; see `smtpgate_common::COUNTERS_MAP`.
#[map(name = "COUNTERS_V2")]
static COUNTERS: PerCpuArray<CounterBlock> = PerCpuArray::pinned(1, 0);

#[map(name = "CONFIG_V2")]
static CONFIG: Array<GateConfig> = Array::pinned(1, 0);

#[map]
static ALLOWLIST: LpmTrie<AddrKey, u8> = LpmTrie::pinned(MAX_ALLOWLIST, 0);

/// The allowlist filter (see [`allow_filter`]). Memory-mappable so that
/// the agent writes its words atomically.
#[map]
static ALLOW_FILTER: Array<u64> = Array::pinned(allow_filter::MAP_WORDS, BPF_F_MMAPABLE);

#[map]
static GATED_DESTS: HashMap<AddrKey, u8> = HashMap::pinned(MAX_GATED_DESTS, 0);

/// Full-length prefix of an [`AddrKey`], for allowlist lookups.
const ADDR_BITS: u32 = 128;

pub enum Verdict {
    Pass,
    Drop,
    /// Drop, and answer with a RST if the hook can (XDP).
    Reset(PlainHeaders),
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
pub fn now_ns() -> u64 {
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

/// Whether the configuration gates `segment`. What the frame does not show
/// (a port in a tiny fragment, a destination behind a source route) is
/// taken to be gated. With a destination filter, only the listed local
/// addresses are gated (say, the customers' relay address but not the
/// public MX address).
#[inline(always)]
fn gates(config: &GateConfig, segment: &Segment, frame: &Frame) -> bool {
    if segment
        .port
        .get()
        .is_some_and(|port| !config.gates_port(port))
    {
        return false;
    }
    if config.flags & FLAG_DEST_FILTER == 0 || !segment.dst_final {
        return true;
    }
    segment
        .destination(frame)
        .is_none_or(|dst| GATED_DESTS.get_ptr(dst).is_some())
}

/// False only if the grant filter proves `src`, in block `block`, holds no
/// grant; true also while the agent has not built the filter yet.
#[inline(always)]
fn may_hold_grant(words: KeyWords, block: u32) -> bool {
    let (Some(&generation), Some(&mask)) = (
        GRANT_FILTER.get(grant_filter::GENERATION),
        GRANT_FILTER.get(grant_filter::MASK),
    ) else {
        return true;
    };
    if mask == 0 {
        return true;
    }
    let half = grant_filter::half_start(generation, mask);
    let (word, block_mask) = grant_filter::block(block);
    if GRANT_FILTER
        .get((half + word) as u32)
        .is_some_and(|&word| word & block_mask == 0)
    {
        return false;
    }
    let (hash, bits) = grant_filter::probe(words);
    let index = grant_filter::bloom_start(half) + (hash & mask);
    GRANT_FILTER
        .get(index as u32)
        .is_none_or(|&word| word & bits == bits)
}

/// False only if the allowlist filter proves that no prefix covers a
/// source in block `block`; true also while the agent has not built it yet.
#[inline(always)]
fn may_be_allowlisted(block: u32) -> bool {
    if ALLOW_FILTER
        .get(allow_filter::READY)
        .is_none_or(|&ready| ready == 0)
    {
        return true;
    }
    let (index, mask) = allow_filter::word_and_mask(block);
    ALLOW_FILTER.get(index).is_none_or(|&word| word & mask != 0)
}

/// Whether `src` may open connections: the counter of why it may, or of
/// why it may not.
#[inline(always)]
fn standing(src: &mut WordAligned, ipv6: bool, config: &GateConfig) -> Result<Counter, Counter> {
    let exact = src.words();
    let words = if ipv6 {
        src.mask(config.mask_v6(exact))
    } else {
        exact
    };
    let block = address_block::bit(words);
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "the lookup reads the key in place, where it is word-aligned; a copy need not be"
    )]
    let grant = if may_hold_grant(words, block) {
        GRANTS.get_ptr_mut(&src.0)
    } else {
        None
    };
    let refusal = match grant {
        // SAFETY: a value of the grant map, which the kernel keeps alive
        // while the program runs.
        Some(grant) => match within_grant(unsafe { &mut *grant }) {
            Ok(()) => return Ok(Counter::AllowedGrant),
            Err(refusal) => refusal,
        },
        None => Counter::DroppedNoGrant,
    };
    // The allowlist holds exact addresses and prefixes of their own.
    if ipv6 {
        src.mask(exact);
    }
    if may_be_allowlisted(address_block::bit(exact))
        && ALLOWLIST.get(Key::new(ADDR_BITS, src.0)).is_some()
    {
        return Ok(Counter::AllowedAllowlist);
    }
    Err(refusal)
}

/// Whether `grant` lets a SYN through now: live, and within its budget.
///
/// CPUs that take SYNs of one source at the same moment may each read the
/// same `next_ns` and each pass, and the last write wins. Each of them
/// still wrote at least one interval on, so across `n` CPUs the budget is
/// exceeded by at most a factor of `n`: it stays bounded, which is all a
/// backstop needs; an atomic update would need BPF atomics newer than 5.10.
#[inline(always)]
fn within_grant(grant: &mut Grant) -> Result<(), Counter> {
    let now = now_ns();
    if grant.expiry_ns <= now {
        return Err(Counter::DroppedExpired);
    }
    if grant.budget.interval_ns == 0 {
        return Ok(());
    }
    let next = grant.budget.admit(now).ok_or(Counter::DroppedOverBudget)?;
    // SAFETY: a field of a live map value; a plain aligned store.
    unsafe { core::ptr::write_volatile(&mut grant.budget.next_ns, next) };
    Ok(())
}

/// A source key on an 8-byte boundary, so that the filters can read it as
/// words.
#[repr(C, align(8))]
struct WordAligned(AddrKey);

impl WordAligned {
    /// The key as two word loads. Volatile: otherwise the compiler rebuilds
    /// the words from the sixteen bytes it copied in, each kept in a
    /// register or spilled (some 150 instructions for an IPv6 source).
    #[inline(always)]
    fn words(&self) -> KeyWords {
        let at = &self.0 as *const AddrKey as *const u64;
        // SAFETY: `self` is 8-byte aligned and 16 bytes long.
        let (high, low) = unsafe {
            (
                core::ptr::read_volatile(at),
                core::ptr::read_volatile(at.add(1)),
            )
        };
        KeyWords {
            high: u64::from_le(high),
            low: u64::from_le(low),
        }
    }

    /// Makes the key `words`; returns them.
    #[inline(always)]
    fn mask(&mut self, words: KeyWords) -> KeyWords {
        let at = &mut self.0 as *mut AddrKey as *mut u64;
        // SAFETY: as in `words`.
        unsafe {
            core::ptr::write_volatile(at, words.high.to_le());
            core::ptr::write_volatile(at.add(1), words.low.to_le());
        }
        words
    }
}

/// What the gate asks of its hook about the frame it holds.
pub trait Arrival: EbpfContext {
    /// The frame, as far as the program can read it.
    fn frame(&self) -> Frame;

    /// The interface a replay of the frame would enter on; `None` where
    /// the frame cannot be replayed as the program reads it.
    fn replay_ifindex(&self) -> Option<u32>;

    /// Copies the frame's first `len` bytes (at most `to`'s) into `to`;
    /// false if it could not.
    fn copy_headers(&self, len: usize, to: &mut [u8; FRAME_BYTES]) -> bool;
}

/// Judges one frame: a SYN to a gated destination, or a frame that could
/// be one, passes only from a source with a live grant or on the allowlist.
#[inline(always)]
pub fn judge<C: Arrival>(ctx: &C, tally: &mut Tally) -> Verdict {
    tally.add(Counter::Frames);
    let frame = ctx.frame();
    let segment = match parse::look(&frame) {
        Look::Pass => return Verdict::Pass,
        Look::Counted(reason) => {
            tally.add(reason);
            return Verdict::Pass;
        }
        Look::Hidden(reason) => {
            tally.add(Counter::GatedDoubtful);
            log_refusal(ctx, None, false);
            return refuse(config_flags(), reason, None, tally);
        }
        Look::Segment(segment) => segment,
    };
    // The configuration is read only for possible SYNs: the bulk of the
    // traffic never pays for the lookup.
    let Some(config) = CONFIG.get(0) else {
        return Verdict::Drop;
    };
    if !gates(config, &segment, &frame) {
        return Verdict::Pass;
    }
    tally.add(if segment.doubt.is_some() {
        Counter::GatedDoubtful
    } else {
        Counter::GatedSyns
    });
    // The walk read the source already; a frame without one cannot pass.
    let Some(mut src) = segment.source(&frame).map(WordAligned) else {
        return refuse(config.flags, Counter::DroppedNoGrant, None, tally);
    };
    let ipv6 = segment.headers.ipv6;
    let refusal = match standing(&mut src, ipv6, config) {
        Ok(allowed) => {
            tally.add(allowed);
            return Verdict::Pass;
        }
        Err(refusal) => segment.doubt.unwrap_or(refusal),
    };
    log_refusal(ctx, Some(&src.0), ipv6);
    if records(config, refusal) {
        let exact = src.words();
        let key = if ipv6 { config.mask_v6(exact) } else { exact };
        replay::record(ctx, key, tally);
        // No reply either way (`records` rules out reset): with nothing of
        // the walk live across the copy, its paths converge in it.
        return refuse(config.flags, refusal, None, tally);
    }
    refuse(config.flags, refusal, segment.reply(), tally)
}

/// Whether a SYN refused for `refusal` is recorded for replay: with replay
/// on, when it is dropped silently, and only for a source without a live
/// grant (one over its budget gains nothing by a replay).
#[inline(always)]
fn records(config: &GateConfig, refusal: Counter) -> bool {
    config.replay_window_ms != 0
        && config.flags & (FLAG_MONITOR | FLAG_RESET) == 0
        && matches!(refusal, Counter::DroppedNoGrant | Counter::DroppedExpired)
}

/// Nonzero when each refusal is logged (`run -v`). Fixed at load, so the
/// verifier removes the logging when it is zero.
#[unsafe(no_mangle)]
static SMTPGATE_LOG_REFUSALS: Global<u8> = Global::new(0);

/// Logs a refusal where `run -v` asked for it.
#[inline(always)]
fn log_refusal<C: EbpfContext>(ctx: &C, src: Option<&AddrKey>, ipv6: bool) {
    if SMTPGATE_LOG_REFUSALS.load() != 0 {
        log_refusal_of(ctx, src, ipv6);
    }
}

/// The logging itself, as a function of its own: inlined, even switched
/// off, it made the refused path keep its values on the stack around it
/// (about 40 ns per refused SYN).
#[inline(never)]
fn log_refusal_of<C: EbpfContext>(ctx: &C, src: Option<&AddrKey>, ipv6: bool) {
    match src {
        Some(src) if ipv6 => debug!(ctx, "smtpgate: refused SYN from {:i}", *src),
        // An IPv4 source as such, not in its mapped form.
        Some(src) => debug!(
            ctx,
            "smtpgate: refused SYN from {:i}",
            [src[12], src[13], src[14], src[15]]
        ),
        None => debug!(
            ctx,
            "smtpgate: refused a frame whose source is out of sight"
        ),
    }
}

/// The configuration's `FLAG_*` bits, for a refusal reached before the
/// configuration was read; a missing configuration refuses.
#[inline(always)]
fn config_flags() -> u32 {
    CONFIG.get(0).map_or(0, |config| config.flags)
}

/// Drops a refused frame, or passes it in monitor mode; counts why.
#[inline(always)]
fn refuse(flags: u32, reason: Counter, reply: Option<PlainHeaders>, tally: &mut Tally) -> Verdict {
    if flags & FLAG_MONITOR != 0 {
        tally.add(Counter::MonitorWouldDrop);
        return Verdict::Pass;
    }
    tally.add(reason);
    match reply {
        Some(reply) if flags & FLAG_RESET != 0 => Verdict::Reset(reply),
        _ => Verdict::Drop,
    }
}
