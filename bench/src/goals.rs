//! The goals, checked against what was measured. Goals are for the
//! report, not tests: a miss is stated with its number, never an error.

use serde::Serialize;

use crate::{
    agent::Agent,
    flood::Flood,
    perpacket::{PerPacket, Row},
    propagation::Propagation,
    table::Table,
};

#[derive(Serialize)]
pub struct Goal {
    pub goal: &'static str,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

impl Goal {
    /// A ratio that must stay at or under `limit`, with the case that set
    /// it where it is the worst of several.
    fn ratio_at_most(
        goal: &'static str,
        limit: f64,
        (ratio, worst): (f64, Option<String>),
    ) -> Self {
        let measured = match worst {
            Some(case) => format!("{ratio:.2}x (worst: {case})"),
            None => format!("{ratio:.2}x"),
        };
        Self {
            goal,
            target: format!("≤ {limit:.2}x"),
            measured,
            met: ratio <= limit,
        }
    }
}

/// The highest gate-to-parse-only ratio of `rows`, and its row.
fn worst<'a>(rows: impl Iterator<Item = &'a Row>) -> (f64, Option<String>) {
    rows.max_by(|a, b| a.gate_vs_parse.total_cmp(&b.gate_vs_parse))
        .map_or((0.0, None), |r| {
            (
                r.gate_vs_parse,
                Some(format!(
                    "{}, {} grants, {} allowlist prefixes",
                    r.case, r.grants, r.allowlist
                )),
            )
        })
}

/// What recording a refused SYN for replay may add to the refused path.
const RECORDING_LIMIT: f64 = 1.1;

pub fn evaluate(
    per_packet: Option<&PerPacket>,
    agent: Option<&Agent>,
    flood: Option<&Flood>,
    propagation: Option<&Propagation>,
) -> Vec<Goal> {
    let mut goals = Vec::new();
    if let Some(p) = per_packet {
        let passed = worst(p.rows.iter().filter(|r| !r.gated));
        goals.push(Goal::ratio_at_most(
            "traffic that is not a gated SYN vs parse-only baseline",
            1.1,
            passed,
        ));
        // The live-grant rows stay in the table but set no goal: a random
        // line of an 88 MB map is a cache and TLB miss whatever the code.
        let max_grants = p.rows.iter().map(|r| r.grants).max().unwrap_or(0);
        let refused = worst(
            p.rows
                .iter()
                .filter(|r| r.refused && r.grants == max_grants),
        );
        goals.push(Goal::ratio_at_most(
            "refused SYN (gated, no grant), 1,000,000 grants, vs parse-only baseline",
            1.5,
            refused,
        ));
        goals.push(Goal::ratio_at_most(
            "granted SYN with a SYN budget vs without (hot key)",
            1.3,
            (p.budget.ratio, None),
        ));
        let recording = p
            .recording
            .rows
            .iter()
            .max_by(|a, b| a.ratio.total_cmp(&b.ratio))
            .map_or((0.0, None), |r| {
                let sources = if r.hot_key {
                    "one source"
                } else {
                    "rotating sources"
                };
                (r.ratio, Some(format!("{}, {sources}", r.case)))
            });
        goals.push(Goal::ratio_at_most(
            "refused SYN recorded for replay vs not recorded",
            RECORDING_LIMIT,
            recording,
        ));
    }
    if let Some(f) = flood {
        let cpu_vs = |label: &str| {
            f.contenders
                .iter()
                .find(|c| c.label == label)
                .map(|c| 1.0 / c.cpu_vs_smtpgate_xdp)
        };
        if let (Some(on), Some(off)) = (
            f.contenders.iter().find(|c| c.label == "smtpgate XDP"),
            f.contenders
                .iter()
                .find(|c| c.label == "smtpgate XDP, replay off"),
        ) {
            goals.push(Goal::ratio_at_most(
                "SYN flood: smtpgate XDP CPU per drop, recording for replay vs not",
                RECORDING_LIMIT,
                (on.cpu_ms_per_million / off.cpu_ms_per_million, None),
            ));
        }
        for (label, goal, limit) in [
            ("nftables (input)", "SYN flood: smtpgate XDP CPU per drop vs nftables (input hook)", 0.5),
            ("xdp-filter", "SYN flood, 1,000,000 grants and 1,000 allowlist prefixes: smtpgate XDP CPU per drop vs xdp-filter", 1.0),
        ] {
            if let Some(ratio) = cpu_vs(label) {
                goals.push(Goal::ratio_at_most(goal, limit, (ratio, None)));
            }
        }
    }
    if let Some(a) = agent {
        let rate = a.throughput.parser_lines_per_s;
        goals.push(Goal {
            goal: "login parser, one core",
            target: "≥ 1,000,000 lines/s".into(),
            measured: format!("{rate:.0} lines/s"),
            met: rate >= 1e6,
        });
        let replayed = &a.send_receive.with_replay;
        goals.push(Goal {
            goal: "send and receive: SMTP connect delay p50, the refused SYN replayed",
            target: "< 50 ms".into(),
            measured: format!(
                "{:.1} ms (without replay {:.0} ms)",
                replayed.p50_ms, a.send_receive.retransmission.p50_ms
            ),
            met: replayed.p50_ms < 50.0,
        });
        for (goal, delay) in [
            ("grant delay p99", &a.grant_delay),
            (
                "grant delay p99, 1,000,000 grants swept every second",
                &a.grant_delay_full_map,
            ),
        ] {
            goals.push(Goal {
                goal,
                target: "< 5 ms".into(),
                measured: format!("{:.2} ms", delay.p99_us / 1e3),
                met: delay.p99_us < 5e3,
            });
        }
    }
    if let Some(p) = propagation {
        let p99 = p.delay.p99_us / 1e3;
        goals.push(Goal {
            goal: "grant propagation p99, login line on the POP host to both relays' kernel maps",
            target: "< 100 ms".into(),
            measured: format!("{p99:.2} ms"),
            met: p99 < 100.0,
        });
        let rate = p.replay.events_per_s;
        goals.push(Goal {
            goal: "stream entries one relay applies per second (cold replay)",
            target: "≥ 20,000/s".into(),
            measured: format!("{rate:.0}/s"),
            met: rate >= 20_000.0,
        });
    }
    goals
}

pub fn markdown(goals: &[Goal]) -> String {
    if goals.is_empty() {
        return String::new();
    }
    let mut table = Table::new(&["goal", "target", "measured", "met"]);
    for g in goals {
        table.row(vec![
            g.goal.into(),
            g.target.clone(),
            g.measured.clone(),
            if g.met { "yes" } else { "**no**" }.into(),
        ]);
    }
    format!("## Goals\n\n{}", table.render())
}
