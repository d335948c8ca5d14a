//! What a SYN budget adds to a granted SYN: the same source and frame, its
//! grant switched between no budget and a budget it never exhausts, round
//! by round, so that both take the same path but for the bucket's update.

use anyhow::{Context, Result};
use serde::Serialize;
use smtpgate_common::SynBudget;

use super::{cases, gate::Gate, reference::Harness, time_gate};
use crate::stats::lowest;

/// A budget the measurement never exhausts: one SYN a nanosecond, four
/// seconds' worth at once. The gate still checks and moves it per SYN.
const NEVER_EXHAUSTED: SynBudget = SynBudget::new(1_000_000_000, 1_000_000_000, u32::MAX);

#[derive(Serialize)]
pub struct BudgetCost {
    pub case: &'static str,
    pub without_budget_ns: f64,
    pub with_budget_ns: f64,
    pub ratio: f64,
}

/// Times the granted IPv4 SYN from one source (hot key) `rounds` times
/// each way; the gate must hold at least one grant.
pub fn measure(gate: &mut Gate, rounds: usize, repeat: u32) -> Result<BudgetCost> {
    let case = cases::all()
        .into_iter()
        .find(|case| case.gated && !case.refused() && case.packet.src.is_ipv4())
        .context("no granted IPv4 case")?;
    let rotation = case
        .rotation(gate.granted_per_family())
        .context("the gate holds no grant to time")?
        .hot();
    let mut harness = Harness::load(&rotation)?;
    let frame = case.packet.build();
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (budget, samples) in [
            (SynBudget::UNLIMITED, &mut without),
            (NEVER_EXHAUSTED, &mut with),
        ] {
            gate.set_budget_of_first_grant(case.family(), budget)?;
            samples.push(time_gate(gate, &case, &mut harness, &frame, repeat)?);
        }
    }
    gate.set_budget_of_first_grant(case.family(), SynBudget::UNLIMITED)?;
    let (without_budget_ns, with_budget_ns) = (lowest(&without), lowest(&with));
    Ok(BudgetCost {
        case: case.name,
        without_budget_ns,
        with_budget_ns,
        ratio: with_budget_ns / without_budget_ns,
    })
}
