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

impl Goal {
    /// A ratio that must stay at or under `limit`; `worst` names the case
    /// that set it, where the ratio is the worst of several.
    fn ratio_at_most(goal: &'static str, limit: f64, ratio: f64, worst: Option<&str>) -> Self {
        let measured = match worst {
            Some(case) => format!("{ratio:.2}x (worst: {case})"),
            None => format!("{ratio:.2}x"),
        };
        Self { goal, target: format!("≤ {limit:.2}x"), measured, met: ratio <= limit }
    }
}

pub fn evaluate(per_packet: Option<&PerPacket>, agent: Option<&Agent>, flood: Option<&Flood>) -> Vec<Goal> {
    let mut goals = Vec::new();
    if let Some(p) = per_packet {
        let worst = |rows: &mut dyn Iterator<Item = &crate::perpacket::Row>, ratio: fn(&crate::perpacket::Row) -> f64| {
            rows.map(|r| (ratio(r), r.case)).fold((0.0, ""), |a, b| if b.0 > a.0 { b } else { a })
        };
        let (ratio, case) = worst(&mut p.rows.iter().filter(|r| !r.gated), |r| r.gate_vs_parse);
        goals.push(Goal::ratio_at_most("non-gated traffic vs parse-only baseline", 1.2, ratio, Some(case)));
        let max_grants = p.rows.iter().map(|r| r.grants).max().unwrap_or(0);
        let gated = || p.rows.iter().filter(move |r| r.gated && r.grants == max_grants);
        let (ratio, case) = worst(&mut gated(), |r| r.gate_vs_parse);
        goals.push(Goal::ratio_at_most("gated SYN, 1,000,000 grants, vs parse-only baseline", 2.0, ratio, Some(case)));
        let (ratio, case) = worst(&mut gated(), |r| r.gate_vs_xdp_filter);
        goals.push(Goal::ratio_at_most("gated SYN, 1,000,000 grants, vs xdp-filter", 1.0, ratio, Some(case)));
    }
    if let Some(f) = flood {
        let cpu_vs = |label: &str| f.contenders.iter().find(|c| c.label == label).map(|c| 1.0 / c.cpu_vs_smtpgate_xdp);
        for (label, goal, limit) in [
            ("nftables (input)", "flood: smtpgate XDP CPU per drop vs nftables (input hook)", 0.5),
            ("xdp-filter", "flood: smtpgate XDP CPU per drop vs xdp-filter", 1.0),
        ] {
            if let Some(ratio) = cpu_vs(label) {
                goals.push(Goal::ratio_at_most(goal, limit, ratio, None));
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
