//! Types the smtpgate kernel program and its agent exchange through BPF maps.
//!
//! Everything here is `#[repr(C)]` plain data so that both sides agree on the
//! byte layout of map keys and values. The `user` feature adds the `Pod`
//! markers aya and bytemuck need on the agent side.
#![no_std]

/// Map of source key -> [`Grant`]: an LRU hash.
///
/// Every pinned map is named after its layout: a layout change gets a new
/// name, and `run` carries the state of the old maps over ([`OLDER_GRANT_MAPS`])
/// or rebuilds it, then retires them ([`RETIRED_MAPS`]), instead of
/// misreading them. Keys are [`AddrKey`]s; with an IPv6 grant prefix
/// shorter than 128 ([`GateConfig::v6_mask`]), IPv6 keys are masked to it.
pub const GRANTS_MAP: &str = "GRANTS_V2";
/// Per-CPU [`CounterBlock`] in a single slot. The counters' indices are
/// their meaning: new counters go at the end, into spare slots.
pub const COUNTERS_MAP: &str = "COUNTERS_V2";
/// Single-slot array holding the [`GateConfig`].
pub const CONFIG_MAP: &str = "CONFIG_V2";
/// LPM trie of source prefixes that always pass (loopback, the ISP's own
/// networks, partner relays). Key: prefix length + [`AddrKey`]; IPv4
/// prefixes are stored under `::ffff:0:0/96`, so `a.b.c.d/n` has length
/// `96 + n`. Value: unused (1).
pub const ALLOWLIST_MAP: &str = "ALLOWLIST";
/// Array of `u64` words: the allowlist filter, see [`allow_filter`].
pub const ALLOW_FILTER_MAP: &str = "ALLOW_FILTER";
/// Hash set of gated destination addresses, consulted only when
/// [`FLAG_DEST_FILTER`] is set. Value: unused (1).
pub const GATED_DESTS_MAP: &str = "GATED_DESTS";
/// Array of `u64` words: the grant filter, see [`grant_filter`].
pub const GRANT_FILTER_MAP: &str = "GRANT_FILTER_V2";
/// Grant key -> [`GrantOwner`]: who earned each grant. Only the agent
/// and the commands read it; pinned so that it outlives the agent as the
/// grants do.
pub const GRANT_OWNERS_MAP: &str = "GRANT_OWNERS";
/// [`UserKey`] -> [`CooldownUntil`]: users who went over a quota and earn
/// no grant until then. Pinned so that `smtpgate pardon` can lift one.
pub const COOLDOWNS_MAP: &str = "COOLDOWNS";
/// Array of `u64`: the state of each slot of the replay table (see
/// [`replay::slot_word`]). Memory-mappable, so that the agent claims a slot
/// with one atomic exchange.
pub const REPLAY_SLOTS_MAP: &str = "REPLAY_SLOTS_V1";
/// Array of [`replay::RefusedSyn`]: the first refused SYN of each source
/// (by hash) whose slot was free, for the agent to hand back to the gate
/// once the source's grant lands. Memory-mappable, for the agent to read.
pub const REFUSED_SYNS_MAP: &str = "REFUSED_SYNS_V1";

/// Every map smtpgate pins, by name.
pub const PINNED_MAPS: [&str; 11] = [
    GRANTS_MAP,
    COUNTERS_MAP,
    CONFIG_MAP,
    ALLOWLIST_MAP,
    ALLOW_FILTER_MAP,
    GATED_DESTS_MAP,
    GRANT_FILTER_MAP,
    GRANT_OWNERS_MAP,
    COOLDOWNS_MAP,
    REPLAY_SLOTS_MAP,
    REFUSED_SYNS_MAP,
];

/// Grant maps of older layouts, oldest first. `run` carries every live
/// grant in them over into [`GRANTS_MAP`], expiry and all, before the new
/// program takes over; their values are:
///
/// * `GRANTS`: the expiry alone, a `u64` in nanoseconds on `CLOCK_MONOTONIC`.
pub const OLDER_GRANT_MAPS: [&str; 1] = ["GRANTS"];

/// Pins that older versions of smtpgate made and this one no longer reads:
/// removed once the program of this version is attached, and by `detach`.
/// The agent rewrites the configuration and rebuilds the filters at every
/// start, so these need no carrying over.
pub const RETIRED_MAPS: [&str; 4] = ["COUNTERS", "GRANT_FILTER", "CONFIG", OLDER_GRANT_MAPS[0]];

/// Capacity of the allowlist.
pub const MAX_ALLOWLIST: u32 = 65536;
/// Capacity of the gated destination set.
pub const MAX_GATED_DESTS: u32 = 1024;

/// Default capacity of the grant map.
pub const DEFAULT_MAX_GRANTS: u32 = 1 << 20;

/// A source address as the grant map stores it: IPv6, with IPv4 addresses in
/// their IPv4-mapped form (`::ffff:a.b.c.d`), so one lookup path serves both.
pub type AddrKey = [u8; 16];

pub mod address_block;
pub mod allow_filter;
pub mod grant;
pub mod grant_filter;
pub mod replay;

pub use grant::{CooldownUntil, Grant, GrantOwner, SynBudget, UserKey};

/// An [`AddrKey`] as two little-endian words: the form the filters hash and
/// index it in, which the program reads with two word loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyWords {
    /// Bytes 0..8.
    pub high: u64,
    /// Bytes 8..16.
    pub low: u64,
}

impl KeyWords {
    /// MurmurHash3's 64-bit finalizer over both words: IPv4 sources differ
    /// only in the last four bytes, and every output bit must depend on
    /// them.
    #[inline(always)]
    pub fn hash(self) -> u64 {
        let mut hash = self.high ^ self.low.rotate_left(31);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
        hash ^= hash >> 33;
        hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        hash ^ (hash >> 33)
    }

    #[inline(always)]
    pub const fn of(key: &AddrKey) -> Self {
        let [h0, h1, h2, h3, h4, h5, h6, h7, l0, l1, l2, l3, l4, l5, l6, l7] = *key;
        Self {
            high: u64::from_le_bytes([h0, h1, h2, h3, h4, h5, h6, h7]),
            low: u64::from_le_bytes([l0, l1, l2, l3, l4, l5, l6, l7]),
        }
    }
}

/// The IPv4-mapped IPv6 prefix, `::ffff:0:0/96`.
pub const V4_MAPPED_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// Builds the key of an IPv4 address.
#[inline(always)]
pub const fn v4_key(octets: [u8; 4]) -> AddrKey {
    let p = V4_MAPPED_PREFIX;
    [
        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], octets[0],
        octets[1], octets[2], octets[3],
    ]
}

/// `GateConfig::flags` bit: count what would be dropped, drop nothing.
pub const FLAG_MONITOR: u32 = 1 << 0;
/// `GateConfig::flags` bit: answer a refused SYN with a TCP RST (XDP only).
pub const FLAG_RESET: u32 = 1 << 1;
/// `GateConfig::flags` bit: gate only SYNs to addresses in the gated
/// destination set; without it every local address is gated.
pub const FLAG_DEST_FILTER: u32 = 1 << 2;

/// Number of 64-bit words in the gated-port bitmap (one bit per TCP port).
pub const PORT_WORDS: usize = 65536 / 64;

/// The gate's settings, written by the agent before the program is attached.
#[repr(C)]
#[derive(Clone, Copy)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct GateConfig {
    /// `FLAG_*` bits.
    pub flags: u32,
    /// How long a refused SYN is kept for replay, in milliseconds (the
    /// agent frees older ones); zero: refused SYNs are not recorded (see
    /// [`replay`]). Was a reserved zero before replay existed, so an older
    /// agent's configuration means off.
    pub replay_window_ms: u32,
    /// Bitmap of gated destination ports: bit `p % 64` of word `p / 64`.
    pub ports: [u64; PORT_WORDS],
    /// The IPv6 grant prefix as a mask over an IPv6 source's [`KeyWords`]:
    /// the gate looks a source up as `words & v6_mask`, so that one login
    /// grants the customer's whole prefix. All ones: each address for itself.
    pub v6_mask: [u64; 2],
}

impl GateConfig {
    /// The settings with `flags` (`FLAG_*` bits) that gate `ports`, each
    /// IPv6 address granted for itself.
    pub fn new(flags: u32, ports: &[u16]) -> Self {
        let mut config = GateConfig {
            flags,
            replay_window_ms: 0,
            ports: [0; PORT_WORDS],
            v6_mask: [u64::MAX; 2],
        };
        for &port in ports {
            config.gate_port(port);
        }
        config
    }

    /// Whether a SYN to `port` is subject to the gate.
    #[inline(always)]
    pub fn gates_port(&self, port: u16) -> bool {
        let word = self.ports[(port as usize >> 6) & (PORT_WORDS - 1)];
        word & (1u64 << (port & 63)) != 0
    }

    /// Adds `port` to the gated set.
    pub fn gate_port(&mut self, port: u16) {
        self.ports[port as usize >> 6] |= 1u64 << (port & 63);
    }

    /// Grants each IPv6 login its `/prefix` (at most 128).
    pub fn set_v6_grant_prefix(&mut self, prefix: u8) {
        let mask = v6_prefix_mask(prefix);
        self.v6_mask = [mask.high, mask.low];
    }

    /// The IPv6 grant prefix's length.
    pub const fn v6_grant_prefix(&self) -> u8 {
        (self.v6_mask[0].count_ones() + self.v6_mask[1].count_ones()) as u8
    }

    /// `words` masked to the IPv6 grant prefix.
    #[inline(always)]
    pub fn mask_v6(&self, words: KeyWords) -> KeyWords {
        KeyWords {
            high: words.high & self.v6_mask[0],
            low: words.low & self.v6_mask[1],
        }
    }
}

/// The mask of an IPv6 `/prefix` (at most 128) in [`KeyWords`] form.
pub const fn v6_prefix_mask(prefix: u8) -> KeyWords {
    let prefix = if prefix > 128 { 128 } else { prefix as u32 };
    let bits = u128::MAX.checked_shl(128 - prefix);
    let mask = match bits {
        Some(bits) => bits.to_be_bytes(),
        None => [0; 16],
    };
    KeyWords::of(&mask)
}

#[cfg(feature = "user")]
// SAFETY: `GateConfig` is `repr(C)` plain data without padding (bytemuck's
// derive above checks this at compile time).
unsafe impl aya::Pod for GateConfig {}

macro_rules! counters {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)+) => {
        /// Index of each per-CPU counter in the counters map.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $($(#[doc = $doc])* $variant,)+
        }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)+];

            /// The counter's stable, machine-readable name.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)+
                }
            }
        }
    };
}

counters! {
    /// Every frame the program saw.
    Frames = "frames",
    /// TCP SYNs (SYN set, ACK clear) addressed to a gated destination.
    GatedSyns = "gated_syns",
    /// Frames that could be a SYN to a gated destination but that the
    /// gate cannot read in full; judged like one.
    GatedDoubtful = "gated_doubtful",
    /// Passed because their source holds a live grant.
    AllowedGrant = "allowed_grant",
    /// Passed because their source is on the static allowlist.
    AllowedAllowlist = "allowed_allowlist",
    /// Gated SYNs dropped: the source has no grant.
    DroppedNoGrant = "dropped_no_grant",
    /// Gated SYNs dropped: the source's grant has expired.
    DroppedExpired = "dropped_expired",
    /// Doubtful frames dropped: more VLAN tags than the gate peels, so
    /// their source is out of sight.
    RefusedVlanDepth = "refused_unparsed_vlan_depth",
    /// Doubtful frames dropped: a longer IPv6 extension-header chain than
    /// the gate walks.
    RefusedExtDepth = "refused_unparsed_ext_depth",
    /// Doubtful frames dropped: a first fragment that does not show the
    /// whole TCP header (RFC 1858's tiny fragments), or nested fragments.
    RefusedFragment = "refused_unparsed_fragment",
    /// Doubtful frames dropped: headers beyond the bytes the TC hook can
    /// read directly.
    RefusedNonlinear = "refused_unparsed_nonlinear",
    /// Frames the gate would have dropped, passed because it is in monitor mode.
    MonitorWouldDrop = "monitor_would_drop",
    /// Refused SYNs answered with a TCP RST (included in the drop counters).
    ResetsSent = "resets_sent",
    /// Later IPv4/IPv6 fragments, passed: they cannot carry the TCP flags,
    /// and the first fragment that does is judged.
    PassedFragment = "passed_fragment",
    /// Frames passed unjudged: a header ran past the packet's end, so the
    /// kernel discards the frame.
    UnparsedTruncated = "unparsed_truncated",
    /// Frames passed unjudged: a header field the kernel rejects.
    UnparsedMalformed = "unparsed_malformed",
    /// Gated SYNs dropped: the source holds a grant but opens connections
    /// faster than its SYN budget allows.
    DroppedOverBudget = "dropped_over_budget",
    /// Refused SYNs recorded for replay (see [`replay`]).
    SynsRecorded = "syns_recorded",
    /// Refused SYNs not recorded for replay: their slot holds another
    /// source's SYN (a flood's, most of them).
    ReplaySlotBusy = "replay_slot_busy",
}

/// Counters in a [`CounterBlock`]. More than there are, so that a newer
/// agent can add counters without changing the pinned map's layout.
pub const COUNTER_SLOTS: usize = 32;

const _: () = assert!(Counter::ALL.len() <= COUNTER_SLOTS);

/// One CPU's counters, indexed by [`Counter`].
///
/// All of them live in one map value so that the program looks its block
/// up once per frame, however many counters the frame moves: before Linux
/// 6.10 each per-CPU array lookup is a helper call.
#[repr(C)]
#[derive(Clone, Copy)]
#[cfg_attr(feature = "user", derive(bytemuck::Pod, bytemuck::Zeroable))]
pub struct CounterBlock {
    pub values: [u64; COUNTER_SLOTS],
}

impl CounterBlock {
    #[inline(always)]
    pub fn add(&mut self, counter: Counter) {
        if let Some(value) = self.values.get_mut(counter as usize) {
            *value += 1;
        }
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.values[counter as usize]
    }
}

#[cfg(feature = "user")]
// SAFETY: `CounterBlock` is `repr(C)` plain data without padding.
unsafe impl aya::Pod for CounterBlock {}
