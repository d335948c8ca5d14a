//! `smtpgate-bench`, run by `cargo xtask bench`: measures smtpgate against
//! baselines and against the tools an administrator would use instead, in
//! one run, and writes a report (Markdown, JSON and a PNG chart).
//!
//! Four parts, each usable alone with `--only`:
//! 1. `per-packet`: the program's cost per packet through BPF_PROG_TEST_RUN;
//! 2. `agent`: the login parser's throughput, the delay from a log line to a
//!    grant in the kernel, and the agent's memory;
//! 3. `flood`: a SYN flood over veth against smtpgate (XDP and TC),
//!    xdp-filter, nftables and no filter at all;
//! 4. `propagation`: grants carried from a POP host to relays through a
//!    Redis stream, and a cold relay's replay of a full stream.
//!
//! Needs root. Everything it creates (namespaces, veth pairs, bpffs mounts,
//! programs) carries a unique name and is removed when it is done, also
//! when it fails.

mod agent;
mod chart;
mod cputime;
mod flood;
mod goals;
mod load;
mod perpacket;
mod programs;
mod propagation;
mod report;
mod sources;
mod stats;
mod table;
mod xdp_filter;

use std::{path::PathBuf, time::Instant};

use anyhow::Result;
use clap::{Parser, ValueEnum};

use crate::{
    load::Load,
    report::{Machine, Report},
};

#[derive(Parser)]
#[command(name = "smtpgate-bench")]
struct Args {
    /// A shorter run (fewer repetitions, shorter floods) for a quick look.
    #[arg(long)]
    quick: bool,
    /// Run only these parts (repeatable).
    #[arg(long, value_enum)]
    only: Vec<Part>,
    /// Where the report goes.
    #[arg(long, default_value_os_t = smtpgate_tests::target_dir().join("bench"))]
    out: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    PerPacket,
    Agent,
    Flood,
    Propagation,
}

fn main() -> Result<()> {
    let args = Args::parse();
    configure_agent();
    let started = Instant::now();
    let runs = |part| args.only.is_empty() || args.only.contains(&part);
    let per_packet = runs(Part::PerPacket)
        .then(|| perpacket::run(&perpacket_plan(args.quick)))
        .transpose()?;
    let agent = runs(Part::Agent)
        .then(|| agent::run(&agent_plan(args.quick)))
        .transpose()?;
    let flood = runs(Part::Flood)
        .then(|| flood::run(&flood_plan(args.quick)))
        .transpose()?;
    let propagation = runs(Part::Propagation)
        .then(|| propagation::run(&propagation_plan(args.quick)))
        .transpose()?;
    let goals = goals::evaluate(
        per_packet.as_ref(),
        agent.as_ref(),
        flood.as_ref(),
        propagation.as_ref(),
    );
    let report = Report {
        machine: Machine::this(),
        quick: args.quick,
        per_packet,
        agent,
        flood,
        propagation,
        goals,
        seconds: started.elapsed().as_secs_f64(),
    };
    let written = report.write(&args.out)?;
    println!("{}", written.markdown.display());
    println!("{}", written.json.display());
    if let Some(chart) = written.chart {
        println!("{}", chart.display());
    }
    Ok(())
}

/// The lab harness starts the agent binary named by `SMTPGATE_BIN`;
/// `cargo xtask bench` builds a release one and sets it. The agent's log
/// keeps its start-up lines (the farm's helpers wait for some, such as
/// "watching FILE for logins") but not one line per grant, which would bury
/// the bench's own output. Called before any thread exists.
fn configure_agent() {
    if std::env::var_os("SMTPGATE_BIN").is_none() {
        std::env::set_var(
            "SMTPGATE_BIN",
            smtpgate_tests::target_dir().join("release/smtpgate"),
        );
    }
    if std::env::var_os("SMTPGATE_LOG").is_none() {
        std::env::set_var(
            "SMTPGATE_LOG",
            "info,smtpgate::agent::watch=warn,smtpgate::agent::watch::files=info",
        );
    }
}

/// The fullest gate of the issue: a million grants and a thousand
/// allowlist prefixes.
const FULL_LOAD: Load = Load {
    grants: 1_000_000,
    allowlist: 1_000,
};

fn perpacket_plan(quick: bool) -> perpacket::Plan {
    let grants = |grants| Load {
        grants,
        allowlist: 0,
    };
    perpacket::Plan {
        repeat: if quick { 500_000 } else { 2_000_000 },
        rounds: if quick { 1 } else { 5 },
        loads: vec![grants(0), grants(100_000), grants(1_000_000), FULL_LOAD],
    }
}

fn agent_plan(quick: bool) -> agent::Plan {
    agent::Plan {
        log_lines: if quick { 1_000_000 } else { 2_000_000 },
        logins: if quick { 1_000 } else { 2_000 },
        full_map: 1_000_000,
        send_receive: if quick { (50, 4) } else { (200, 10) },
    }
}

fn flood_plan(quick: bool) -> flood::Plan {
    flood::Plan {
        seconds: if quick { 3 } else { 5 },
        rounds: if quick { 1 } else { 2 },
        load: FULL_LOAD,
    }
}

fn propagation_plan(quick: bool) -> propagation::Plan {
    propagation::Plan {
        logins: if quick { 200 } else { 1_000 },
        replayed: if quick { 20_000 } else { 100_000 },
    }
}
