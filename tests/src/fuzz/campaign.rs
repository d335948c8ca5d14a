//! A fuzz run: cases in rounds, each round sent through a lab with no gate
//! (the kernel oracle) and through a fresh lab per hook with the gate in
//! enforce mode and no grant for the strangers (the gate oracle).
//!
//! Each phase renders the round's shapes with its own sequence numbers, so
//! a late SYN-ACK can only ever match the phase that caused it; each phase
//! also gets its own namespaces, so not even reassembly queues are shared.

use std::{
    hash::{BuildHasher, RandomState},
    time::Instant,
};

use anyhow::{ensure, Result};

use super::{
    generate,
    lab::{self, FuzzLab, Hook},
    oracle,
    shape::{Ids, Shape},
    Case,
};

/// Cases per round: the IPv4 identification (16 bits) stays unique within
/// a lab, and a round's answers fit the sniffer's buffer.
pub const ROUND: u64 = 4096;
/// Sequence numbers carry the phase in their top four bits.
const INDEX_BITS: u32 = 28;

#[derive(Clone, Debug)]
pub struct Settings {
    pub seed: u64,
    /// The first case's number (to replay one case of an earlier run).
    pub first: u64,
    pub cases: u64,
    pub hooks: Vec<Hook>,
}

impl Settings {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.cases > 0, "--cases must be at least 1");
        ensure!(
            self.first
                .checked_add(self.cases)
                .is_some_and(|end| end <= 1 << INDEX_BITS),
            "case numbers must stay below 2^{INDEX_BITS}"
        );
        ensure!(!self.hooks.is_empty(), "at least one hook is needed");
        Ok(())
    }
}

/// A seed as the command line or the environment gives it: decimal or
/// 0x-hex.
pub fn parse_seed(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("{text:?} is not a 64-bit number (decimal or 0x-hex)"))
}

/// A fresh seed for a run that was given none.
pub fn random_seed() -> u64 {
    RandomState::new().hash_one(std::process::id())
}

/// The identifiers of case `index` in phase `phase` (0: no gate, then one
/// per hook).
fn ids(phase: usize, index: u64) -> Ids {
    let seq = ((phase as u32 + 1) << INDEX_BITS) | index as u32;
    // Unique within a round (at most 65536 cases), and a case keeps its
    // identification when it is replayed as a regression row.
    Ids {
        seq,
        ip_id: index as u16,
        frag_id: seq,
    }
}

/// What one phase saw (or all phases of one kind, added up).
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Cases answered with a SYN-ACK.
    pub answered: u64,
    /// ...of them to a gated port from a source without a grant.
    pub answered_gated: u64,
    /// ...of them from a granted source to a gated port.
    pub answered_granted: u64,
    pub strays: u64,
    pub frames: u64,
    pub seconds: f64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.answered += other.answered;
        self.answered_gated += other.answered_gated;
        self.answered_granted += other.answered_granted;
        self.strays += other.strays;
        self.frames += other.frames;
        self.seconds += other.seconds;
    }
}

/// A case the gate let through to a gated port without a grant.
#[derive(Clone, Debug)]
pub struct Failure {
    pub index: u64,
    pub hook: Hook,
    pub shape: Shape,
    /// The frames as that phase sent them.
    pub case: Case,
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub settings: Settings,
    /// Cases a listener would see without a gate whose SYN-ACK, with a
    /// gate, breaks the invariant.
    pub gated_cases: u64,
    pub kernel: Tally,
    pub gates: Vec<(Hook, Tally)>,
    pub failures: Vec<Failure>,
}

/// Runs the campaign; `progress` hears one line per phase, and `stop`
/// ends the run between phases (for Ctrl-C).
pub fn run(
    settings: &Settings,
    mut progress: impl FnMut(&str),
    stop: impl Fn() -> bool,
) -> Result<Outcome> {
    settings.validate()?;
    let mut outcome = Outcome {
        settings: settings.clone(),
        gated_cases: 0,
        kernel: Tally::default(),
        gates: settings
            .hooks
            .iter()
            .map(|&h| (h, Tally::default()))
            .collect(),
        failures: Vec::new(),
    };
    let end = settings.first + settings.cases;
    for start in (settings.first..end).step_by(ROUND as usize) {
        let round_end = (start + ROUND).min(end);
        let shapes: Vec<Shape> = (start..round_end)
            .map(|i| generate::case(settings.seed, i))
            .collect();
        outcome.gated_cases += shapes.iter().filter(|s| lab::gated(s)).count() as u64;
        let phases = std::iter::once(None).chain(settings.hooks.iter().copied().map(Some));
        for (phase, gate) in phases.enumerate() {
            ensure!(!stop(), "interrupted");
            let tally = outcome.run_phase(phase, gate, start, &shapes)?;
            let name = gate.map_or("no gate", Hook::name);
            progress(&format!(
                "cases {start}..{round_end}, {name}: {} answered, {} of them to a gated port without a grant, {:.1} s",
                tally.answered, tally.answered_gated, tally.seconds
            ));
        }
    }
    Ok(outcome)
}

impl Outcome {
    /// Sends one round's `shapes` (numbered from `start`) through a fresh
    /// lab, adds up what came back, records the failures; returns the
    /// phase's own tally.
    fn run_phase(
        &mut self,
        phase: usize,
        gate: Option<Hook>,
        start: u64,
        shapes: &[Shape],
    ) -> Result<Tally> {
        let began = Instant::now();
        let cases: Vec<Case> = (start..)
            .zip(shapes)
            .map(|(index, shape)| Case::new(shape, ids(phase, index)))
            .collect();
        let answers = oracle::answers(&FuzzLab::new(gate)?.lab, &cases)?;
        let mut tally = Tally {
            strays: answers.strays as u64,
            frames: answers.frames_sent as u64,
            ..Tally::default()
        };
        for (k, case) in cases
            .into_iter()
            .enumerate()
            .filter(|(k, _)| answers.per_case[*k].syn_ack)
        {
            let (shape, gated) = (&shapes[k], lab::gated(&shapes[k]));
            tally.answered += 1;
            tally.answered_gated += u64::from(gated);
            tally.answered_granted +=
                u64::from(!gated && lab::GATED_PORTS.contains(&shape.tcp.dport));
            if let (Some(hook), true) = (gate, gated) {
                self.failures.push(Failure {
                    index: start + k as u64,
                    hook,
                    shape: shape.clone(),
                    case,
                });
            }
        }
        tally.seconds = began.elapsed().as_secs_f64();
        match gate {
            None => self.kernel.add(&tally),
            Some(_) => self.gates[phase - 1].1.add(&tally),
        }
        Ok(tally)
    }
}
