//! The goals, checked against what was measured. Goals are for the
//! report, not tests: a miss is stated with its number, never an error.

use serde::Serialize;

use crate::{agent::Agent, flood::Flood, perpacket::PerPacket, report::Table};

#[derive(Serialize)]
pub struct Goal {
    pub goal: &'static str,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

pub fn evaluate(per_packet: Option<&PerPacket>, agent: Option<&Agent>, flood: Option<&Flood>) -> Vec<Goal> {
    let mut goals = Vec::new();
    if let Some(p) = per_packet {
        let worst = |rows: &mut dyn Iterator<Item = &crate::perpacket::Row>, ratio: fn(&crate::perpacket::Row) -> f64| {
            rows.map(|r| (ratio(r), r.case)).fold((0.0, ""), |a, b| if b.0 > a.0 { b } else { a })
        };
        let (ratio, case) = worst(&mut p.rows.iter().filter(|r| !r.gated), |r| r.gate_vs_parse);
        goals.push(Goal {
            goal: "non-gated traffic vs parse-only baseline",
            target: "≤ 1.20x".into(),
            measured: format!("{ratio:.2}x (worst: {case})"),
            met: ratio <= 1.2,
        });
        let max_grants = p.rows.iter().map(|r| r.grants).max().unwrap_or(0);
        let gated = || p.rows.iter().filter(move |r| r.gated && r.grants == max_grants);
        let (ratio, case) = worst(&mut gated(), |r| r.gate_vs_parse);
        goals.push(Goal {
            goal: "gated SYN, 1,000,000 grants, vs parse-only baseline",
            target: "≤ 2.00x".into(),
            measured: format!("{ratio:.2}x (worst: {case})"),
            met: ratio <= 2.0,
        });
        let (ratio, case) = worst(&mut gated(), |r| r.gate_vs_xdp_filter);
        goals.push(Goal {
            goal: "gated SYN, 1,000,000 grants, vs xdp-filter",
            target: "≤ 1.00x".into(),
            measured: format!("{ratio:.2}x (worst: {case})"),
            met: ratio <= 1.0,
        });
    }
    if let Some(f) = flood {
        let cpu_vs = |label: &str| f.contenders.iter().find(|c| c.label == label).map(|c| 1.0 / c.cpu_vs_smtpgate_xdp);
        if let Some(ratio) = cpu_vs("nftables (input)") {
            goals.push(Goal {
                goal: "flood: smtpgate XDP CPU per drop vs nftables (input hook)",
                target: "≤ 0.50x".into(),
                measured: format!("{ratio:.2}x"),
                met: ratio <= 0.5,
            });
        }
        if let Some(ratio) = cpu_vs("xdp-filter") {
            goals.push(Goal {
                goal: "flood: smtpgate XDP CPU per drop vs xdp-filter",
                target: "≤ 1.00x".into(),
                measured: format!("{ratio:.2}x"),
                met: ratio <= 1.0,
            });
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
        for (goal, delay) in [
            ("grant delay p99", &a.grant_delay),
            ("grant delay p99, 1,000,000 grants swept every second", &a.grant_delay_full_map),
        ] {
            goals.push(Goal {
                goal,
                target: "< 5 ms".into(),
                measured: format!("{:.2} ms", delay.p99_us / 1e3),
                met: delay.p99_us < 5e3,
            });
        }
    }
    goals
}

pub fn markdown(goals: &[Goal]) -> String {
    if goals.is_empty() {
        return String::new();
    }
    let mut table = Table::new(&["goal", "target", "measured", "met"]);
    for g in goals {
        table.row(vec![g.goal.into(), g.target.clone(), g.measured.clone(), if g.met { "yes" } else { "**no**" }.into()]);
    }
    format!("## Goals\n\n{}", table.render())
}
