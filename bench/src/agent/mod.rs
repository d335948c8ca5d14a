//! Part 3: the agent. How fast it parses login lines, how soon a login in
//! the mail log becomes a grant in the kernel, and how much memory it takes.
//! (The grant map's kernel memory is measured in part 1, where the map is
//! filled to a million grants.)

mod delay;
mod log;
mod throughput;

use anyhow::Result;
use serde::Serialize;

use crate::report::Table;
pub use delay::GrantDelay;
pub use throughput::Throughput;

pub struct Plan {
    /// Lines in the generated log.
    pub log_lines: usize,
    /// Logins whose grant delay is measured.
    pub logins: usize,
}

#[derive(Serialize)]
pub struct Agent {
    pub throughput: Throughput,
    pub grant_delay: GrantDelay,
}

pub fn run(plan: &Plan) -> Result<Agent> {
    eprintln!("bench: parser throughput over {} log lines", plan.log_lines);
    let throughput = throughput::measure(plan.log_lines)?;
    eprintln!("bench: grant delay over {} logins through the agent", plan.logins);
    let grant_delay = delay::measure(plan.logins)?;
    Ok(Agent { throughput, grant_delay })
}

impl Agent {
    pub fn markdown(&self) -> String {
        let t = &self.throughput;
        let d = &self.grant_delay;
        let mut rates = Table::new(&["path", "lines/s on one core", "÷ parser alone"]);
        rates.row(vec!["parser alone (lines in memory)".into(), format!("{:.0}", t.parser_lines_per_s), "1.00x".into()]);
        rates.row(vec![
            "log follower + parser (smtpgate-tail reading a file)".into(),
            format!("{:.0}", t.follower_lines_per_s),
            format!("{:.2}x", t.follower_lines_per_s / t.parser_lines_per_s),
        ]);
        format!(
            "## 3. The agent\n\n\
             A generated Dovecot log of {lines} lines, 3 in 10 of them successful POP3/IMAP logins \
             ({grants} grants), the rest failed and aborted logins and session lines:\n\n{rates}\n\
             Grant delay, from appending a login line to the log `smtpgate run --log` follows until the \
             grant is in the pinned kernel map, over {logins} logins from distinct addresses, {gap} ms apart: \
             p50 {p50:.0} µs, p99 {p99:.0} µs, max {max:.0} µs.\n\n\
             The agent's resident memory after those logins: {rss} KiB (peak {peak} KiB).\n",
            lines = t.lines,
            grants = t.grants,
            rates = rates.render(),
            logins = d.logins,
            gap = delay::GAP.as_millis(),
            p50 = d.p50_us,
            p99 = d.p99_us,
            max = d.max_us,
            rss = d.agent_rss_kib,
            peak = d.agent_peak_rss_kib,
        )
    }
}
