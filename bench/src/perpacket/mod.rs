//! Part 1: what the program costs per packet, through BPF_PROG_TEST_RUN.
//!
//! Every program runs under the same harness (see bench-ebpf), on the same
//! frames, interleaved round by round (each round over every program and
//! every case of a fill level) so that drift in the machine's speed touches
//! all of them alike: the XDP_PASS-only and parse-only baselines,
//! the gate at each fill level of the plan (grants, allowlist prefixes),
//! and xdp-filter.

mod budget;
mod cases;
mod gate;
mod recording;
mod reference;

use anyhow::{ensure, Context, Result};
use aya::programs::ProgramFd;
use serde::Serialize;
use smtpgate_tests::{unique_name, Netns};

use crate::{load::Load, stats::lowest, table::Table, xdp_filter::XdpFilter};
use gate::Gate;
use reference::{Baselines, Harness};

/// Nanoseconds per 64-byte frame at 10 Gbit/s: (64 + 20 bytes of preamble
/// and inter-frame gap) * 8 bits / 10 Gbit/s.
pub const LINE_RATE_BUDGET_NS: f64 = 67.2;

pub struct Plan {
    /// Runs per test-run call.
    pub repeat: u32,
    /// Rounds over all programs; each figure is the lowest.
    pub rounds: usize,
    /// Fill levels, each at least as full as the one before.
    pub loads: Vec<Load>,
}

#[derive(Serialize)]
pub struct PerPacket {
    pub repeat: u32,
    pub rounds: usize,
    pub line_rate_budget_ns: f64,
    pub rows: Vec<Row>,
    pub grant_map: GrantMap,
    pub budget: budget::BudgetCost,
    pub recording: recording::RecordingCost,
}

/// One case at one fill level. Times are nanoseconds per packet.
#[derive(Serialize)]
pub struct Row {
    pub case: &'static str,
    /// A SYN to a gated port: the gate decides, with a map lookup.
    pub gated: bool,
    /// A gated SYN the gate drops: no grant, not allowlisted.
    pub refused: bool,
    pub grants: u32,
    /// Allowlist prefixes besides the loopback entries.
    pub allowlist: usize,
    pub pass_ns: f64,
    pub parse_ns: f64,
    pub gate_ns: f64,
    /// The gate on gated SYNs with one source over and over, its map entry
    /// and bucket always in the cache: what the lookup costs without memory
    /// latency.
    pub gate_hot_key_ns: Option<f64>,
    pub xdp_filter_ns: f64,
    pub gate_vs_pass: f64,
    pub gate_vs_parse: f64,
    pub gate_vs_xdp_filter: f64,
    /// Share of one core's 10 Gbit/s budget the gate takes.
    pub line_rate_share: f64,
}

/// Kernel memory of the grant map, read after the largest fill.
#[derive(Serialize)]
pub struct GrantMap {
    pub capacity: u32,
    pub entries: u32,
    pub memlock_bytes: u64,
    pub bytes_per_million_grants: f64,
}

pub fn run(plan: &Plan) -> Result<PerPacket> {
    let baselines = Baselines::load()?;
    // xdp-filter needs an interface to load on; an ifb device in a namespace
    // of our own serves (the mode does not matter to a test run).
    let netns = Netns::new(unique_name())?;
    netns.ip(&["link", "add", "xf0", "type", "ifb"])?;
    netns.ip(&["link", "set", "xf0", "up"])?;
    let peer = XdpFilter::load(&netns, "xf0", "skb")?;
    let peer_program = peer.program()?;
    let mut gate = Gate::load()?;
    let mut rows = Vec::new();
    for &load in &plan.loads {
        eprintln!(
            "bench: per-packet costs with {} grants and {} allowlist prefixes",
            load.grants, load.allowlist
        );
        gate.fill_to(load).context("filling the gate's maps")?;
        // Every case of a level takes its turn in each round: a disturbance
        // of a few seconds then spoils one round of several cases, not every
        // round of one, and each case's lowest round stays clean.
        let mut subjects = cases::all()
            .into_iter()
            .filter_map(|case| Subject::new(case, gate.granted_per_family()).transpose())
            .collect::<Result<Vec<_>>>()?;
        for _ in 0..plan.rounds {
            for subject in &mut subjects {
                subject.round(&baselines, &gate, &peer_program, plan.repeat)?;
            }
        }
        rows.extend(subjects.iter().map(|s| Row::new(&s.case, load, &s.samples)));
    }
    let budget = budget::measure(&mut gate, plan.rounds, plan.repeat)?;
    eprintln!("bench: recording refused SYNs for replay, on and off");
    let recording = recording::measure(&mut gate, plan.rounds, plan.repeat)?;
    let (capacity, memlock_bytes) = gate.map_memory()?;
    let entries = gate.granted_per_family() * 2;
    let grant_map = GrantMap {
        capacity,
        entries,
        memlock_bytes,
        bytes_per_million_grants: memlock_bytes as f64 * 1e6 / f64::from(capacity),
    };
    Ok(PerPacket {
        repeat: plan.repeat,
        rounds: plan.rounds,
        line_rate_budget_ns: LINE_RATE_BUDGET_NS,
        rows,
        grant_map,
        budget,
        recording,
    })
}

/// One case under measurement at one fill level: its frame, its harnesses
/// and what its rounds measured so far.
struct Subject {
    case: cases::Case,
    frame: Vec<u8>,
    harness: Harness,
    /// Gated cases only: the same frame from one source over and over.
    hot_harness: Option<Harness>,
    samples: Samples,
}

impl Subject {
    /// `None` when the case needs a grant and the gate holds none.
    fn new(case: cases::Case, granted_per_family: u32) -> Result<Option<Self>> {
        let Some(rotation) = case.rotation(granted_per_family) else {
            return Ok(None);
        };
        let harness = Harness::load(&rotation)?;
        let hot_harness = case
            .gated
            .then(|| Harness::load(&rotation.hot()))
            .transpose()?;
        Ok(Some(Self {
            frame: case.packet.build(),
            case,
            harness,
            hot_harness,
            samples: Samples::default(),
        }))
    }

    /// One round: each program once over this case's frame.
    fn round(
        &mut self,
        baselines: &Baselines,
        gate: &Gate,
        peer: &ProgramFd,
        repeat: u32,
    ) -> Result<()> {
        let (frame, samples) = (&self.frame, &mut self.samples);
        samples
            .pass
            .push(self.harness.time(baselines.pass()?, frame, repeat)?.ns);
        samples
            .parse
            .push(self.harness.time(baselines.parse()?, frame, repeat)?.ns);
        samples.gate.push(time_gate(
            gate,
            &self.case,
            &mut self.harness,
            frame,
            repeat,
        )?);
        if let Some(hot) = &mut self.hot_harness {
            samples
                .gate_hot
                .push(time_gate(gate, &self.case, hot, frame, repeat)?);
        }
        samples
            .xdp_filter
            .push(self.harness.time(peer, frame, repeat)?.ns);
        Ok(())
    }
}

/// Times the gate and checks that every run took the path the case is
/// about: the expected verdict, counted once per run.
fn time_gate(
    gate: &Gate,
    case: &cases::Case,
    harness: &mut Harness,
    frame: &[u8],
    repeat: u32,
) -> Result<f64> {
    let counted_before = gate.counter(case.counter)?;
    let timing = harness.time(gate.program()?, frame, repeat)?;
    let counted = gate.counter(case.counter)? - counted_before;
    ensure!(
        timing.action == case.verdict && counted == u64::from(repeat),
        "{}: the gate returned {} and counted {counted} of {repeat} runs as {}; the frames are not what the case says",
        case.name,
        timing.action,
        case.counter.name()
    );
    Ok(timing.ns)
}

/// Nanoseconds per packet of each round, by program.
#[derive(Default)]
struct Samples {
    pass: Vec<f64>,
    parse: Vec<f64>,
    gate: Vec<f64>,
    gate_hot: Vec<f64>,
    xdp_filter: Vec<f64>,
}

impl Row {
    fn new(case: &cases::Case, load: Load, samples: &Samples) -> Self {
        let [pass_ns, parse_ns, gate_ns, xdp_filter_ns] = [
            &samples.pass,
            &samples.parse,
            &samples.gate,
            &samples.xdp_filter,
        ]
        .map(|s| lowest(s));
        Self {
            case: case.name,
            gated: case.gated,
            refused: case.refused(),
            grants: load.grants,
            allowlist: load.allowlist,
            pass_ns,
            parse_ns,
            gate_ns,
            gate_hot_key_ns: (!samples.gate_hot.is_empty()).then(|| lowest(&samples.gate_hot)),
            xdp_filter_ns,
            gate_vs_pass: gate_ns / pass_ns,
            gate_vs_parse: gate_ns / parse_ns,
            gate_vs_xdp_filter: gate_ns / xdp_filter_ns,
            line_rate_share: gate_ns / LINE_RATE_BUDGET_NS,
        }
    }
}

impl PerPacket {
    pub fn markdown(&self) -> String {
        let mut table = Table::new(&[
            "case",
            "grants",
            "allowlist",
            "XDP_PASS ns",
            "parse-only ns",
            "smtpgate ns",
            "smtpgate, hot key ns",
            "xdp-filter ns",
            "÷ pass",
            "÷ parse",
            "÷ xdp-filter",
            "10G budget",
        ]);
        for r in &self.rows {
            table.row(vec![
                r.case.to_string(),
                r.grants.to_string(),
                r.allowlist.to_string(),
                format!("{:.1}", r.pass_ns),
                format!("{:.1}", r.parse_ns),
                format!("{:.1}", r.gate_ns),
                r.gate_hot_key_ns
                    .map_or("–".into(), |ns| format!("{ns:.1}")),
                format!("{:.1}", r.xdp_filter_ns),
                format!("{:.2}x", r.gate_vs_pass),
                format!("{:.2}x", r.gate_vs_parse),
                format!("{:.2}x", r.gate_vs_xdp_filter),
                format!("{:.0} %", r.line_rate_share * 100.0),
            ]);
        }
        let mut recording = Table::new(&[
            "case",
            "sources",
            "replay off ns",
            "replay on ns",
            "÷ off",
            "SYNs recorded",
        ]);
        for r in &self.recording.rows {
            recording.row(vec![
                r.case.to_string(),
                if r.hot_key {
                    "one (hot key)"
                } else {
                    "rotating"
                }
                .into(),
                format!("{:.1}", r.without_recording_ns),
                format!("{:.1}", r.with_recording_ns),
                format!("{:.2}x", r.ratio),
                format!("{:.2} %", r.recorded_share * 100.0),
            ]);
        }
        let m = &self.grant_map;
        format!(
            "## 1. Per-packet cost (BPF_PROG_TEST_RUN)\n\n\
             Each figure is the lowest of {rounds} rounds of {repeat} runs, in nanoseconds of CPU time per \
             packet: other load on the machine only ever adds time, and each round runs every program on \
             every case of its fill level in turn. Every program runs under the same harness, which writes the next source address into \
             the frame before each run, so lookups spread over the whole grant map (granted sources cycle \
             through every grant of the frame's family; refused ones through 131,072 addresses). \
             \"allowlist\" counts the prefixes on the allowlist besides the loopback entries the agent \
             always keeps: scattered IPv4 /24s and, every tenth, IPv6 /48s, as an ISP's own networks and \
             partner relays might be, none covering a measured source; the refused sources find their \
             allowlist-filter bits clear and skip the trie. The \
             XDP_PASS column is therefore the harness plus the cost of calling any program at all. \
             \"hot key\" runs the gate on gated SYNs from one source over and over, its map entry always \
             in the cache: the difference to the column before is memory latency. \
             \"10G budget\" is the share of one core's {budget} ns per 64-byte frame at 10 Gbit/s that \
             smtpgate takes.\n\n{table}\n\
             Grant map: {entries} grants in a map of {capacity} slots; kernel memory (memlock) {mib:.1} MiB, \
             {per_million:.1} MiB per million grant slots. The LRU map is preallocated: it takes this much \
             from the start, however full it is.\n\n\
             SYN budget ({budget_case}, hot key): {without:.1} ns without a budget, {with:.1} ns with \
             one ({ratio:.2}x), the same grant switched between the two round by round.\n\n\
             Recording refused SYNs for replay (the agent's default, --replay-window 3s), with the maps \
             as full as the last level above: the same refused frames with the gate's replay window \
             switched off and on round by round. A slot of the 4,096 keeps its SYN for the window, and \
             a source's SYN for half a second against the same source's next: rotating sources, as \
             in a flood, soon find their slots taken and cost a read of the slot, one source finds its \
             own SYN held. \"SYNs recorded\" is the share of the runs with replay on that copied their \
             SYN into the table.\n\n{recording}",
            rounds = self.rounds,
            repeat = self.repeat,
            budget = self.line_rate_budget_ns,
            table = table.render(),
            entries = m.entries,
            capacity = m.capacity,
            mib = m.memlock_bytes as f64 / (1 << 20) as f64,
            per_million = m.bytes_per_million_grants / (1 << 20) as f64,
            budget_case = self.budget.case,
            without = self.budget.without_budget_ns,
            with = self.budget.with_budget_ns,
            ratio = self.budget.ratio,
            recording = recording.render(),
        )
    }
}
