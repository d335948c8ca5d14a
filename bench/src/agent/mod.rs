//! Part 3: the agent. How fast it parses login lines, how soon a login in
//! the mail log becomes a grant in the kernel, how much memory it takes,
//! and how long a mail client's "send and receive" waits for its SMTP
//! connect, with the refused SYN replayed and without.
//! (The grant map's kernel memory is measured in part 1, where the map is
//! filled to a million grants.)

mod delay;
mod log;
mod send_receive;
mod throughput;

use anyhow::Result;
use serde::Serialize;

use crate::table::Table;
pub use delay::GrantDelay;
pub use send_receive::SendReceive;
pub use throughput::Throughput;

pub struct Plan {
    /// Lines in the generated log.
    pub log_lines: usize,
    /// Logins whose grant delay is measured, with each map size.
    pub logins: usize,
    /// Grants in the map for the second grant delay measurement.
    pub full_map: u32,
    /// Send-and-receives timed with replay, and without (a second each).
    pub send_receive: (usize, usize),
}

#[derive(Serialize)]
pub struct Agent {
    pub throughput: Throughput,
    pub grant_delay: GrantDelay,
    pub grant_delay_full_map: GrantDelay,
    pub send_receive: SendReceive,
}

pub fn run(plan: &Plan) -> Result<Agent> {
    eprintln!("bench: parser throughput over {} log lines", plan.log_lines);
    let throughput = throughput::measure(plan.log_lines)?;
    eprintln!(
        "bench: grant delay over {} logins through the agent",
        plan.logins
    );
    let grant_delay = delay::measure(plan.logins, 0)?;
    eprintln!(
        "bench: grant delay over {} logins with {} grants in the map",
        plan.logins, plan.full_map
    );
    let grant_delay_full_map = delay::measure(plan.logins, plan.full_map)?;
    let (with_replay, without) = plan.send_receive;
    eprintln!("bench: {with_replay} send-and-receives with replay, {without} without");
    let send_receive = send_receive::measure(with_replay, without)?;
    Ok(Agent {
        throughput,
        grant_delay,
        grant_delay_full_map,
        send_receive,
    })
}

impl Agent {
    pub fn markdown(&self) -> String {
        let t = &self.throughput;
        let d = &self.grant_delay;
        let mut rates = Table::new(&["path", "lines/s on one core", "÷ parser alone"]);
        rates.row(vec![
            "parser alone (lines in memory)".into(),
            format!("{:.0}", t.parser_lines_per_s),
            "1.00x".into(),
        ]);
        rates.row(vec![
            "log follower + parser (smtpgate-tail reading a file)".into(),
            format!("{:.0}", t.follower_lines_per_s),
            format!("{:.2}x", t.follower_lines_per_s / t.parser_lines_per_s),
        ]);
        let mut delays = Table::new(&[
            "grants in the map",
            "p50 µs",
            "p99 µs",
            "max µs",
            "agent RSS KiB (peak)",
        ]);
        for d in [&self.grant_delay, &self.grant_delay_full_map] {
            delays.row(vec![
                d.preloaded.to_string(),
                format!("{:.0}", d.p50_us),
                format!("{:.0}", d.p99_us),
                format!("{:.0}", d.max_us),
                format!("{} ({})", d.agent_rss_kib, d.agent_peak_rss_kib),
            ]);
        }
        let read_all = match &self.grant_delay_full_map.read_all {
            Some(r) => format!(
                "Reading all {grants} grants, as each sweep and `smtpgate list` do: {batched:.0} ms in batches \
                 (BPF_MAP_LOOKUP_BATCH, as the agent reads), {per_entry:.0} ms one entry at a time \
                 (aya's map iterator), {ratio:.2}x.\n",
                grants = self.grant_delay_full_map.preloaded,
                batched = r.batched_ms,
                per_entry = r.per_entry_ms,
                ratio = r.batched_ms / r.per_entry_ms,
            ),
            None => String::new(),
        };
        let mut send_receive = Table::new(&[
            "SYN refused before the grant",
            "connects",
            "replayed",
            "p50 ms",
            "p90 ms",
            "max ms",
        ]);
        let sr = &self.send_receive;
        for (way, d) in [
            ("replayed (the default)", &sr.with_replay),
            ("retransmitted (--replay-window off)", &sr.retransmission),
        ] {
            send_receive.row(vec![
                way.into(),
                d.connects.to_string(),
                d.replayed.to_string(),
                format!("{:.1}", d.p50_ms),
                format!("{:.1}", d.p90_ms),
                format!("{:.1}", d.max_ms),
            ]);
        }
        format!(
            "## 3. The agent\n\n\
             A generated Dovecot log of {lines} lines, 3 in 10 of them successful POP3/IMAP logins \
             ({grants} grants), the rest failed and aborted logins and session lines:\n\n{rates}\n\
             Grant delay, from appending a login line to the log `smtpgate run --log` follows until the \
             grant is in the pinned kernel map, over {logins} logins from distinct addresses, {gap} ms apart, \
             with the agent sweeping every {sweep}; the agent's resident memory after those logins:\n\n{delays}\n{read_all}\n\
             Send and receive: the client's SMTP connect begins, and its POP3 login line is appended to the \
             log {login_after:.0} ms later (about what a login takes over a LAN); the connect's delay, from its \
             start to its completion, through the gate on XDP. The gate refuses the first SYN; the login's \
             grant replays it, or without replay the client's retransmission a second later finds the \
             grant. The grant is revoked after each connect.\n\n{send_receive}",
            lines = t.lines,
            grants = t.grants,
            rates = rates.render(),
            logins = d.logins,
            gap = delay::GAP.as_millis(),
            sweep = delay::SWEEP_EVERY,
            delays = delays.render(),
            login_after = sr.login_after_ms,
            send_receive = send_receive.render(),
        )
    }
}
