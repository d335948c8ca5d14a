//! Part 4: many hosts. Grants carried from a POP host to the relays
//! through a real Redis stream, on the farm the cluster tests use (a
//! router's bridge, redis-server, relays running `smtpgate run
//! --subscribe`, a POP host running `smtpgate watch --publish`): how soon
//! a login on the POP host is a grant in both relays' kernel maps, and how
//! fast a cold relay replays a stream full of grants.

mod delay;
mod replay;

use std::net::Ipv4Addr;

use anyhow::Result;
use serde::Serialize;

use crate::table::Table;
pub use delay::Delay;
pub use replay::Replay;

pub struct Plan {
    /// Logins whose propagation is timed.
    pub logins: usize,
    /// Grants in the stream a cold relay replays.
    pub replayed: usize,
}

#[derive(Serialize)]
pub struct Propagation {
    pub delay: Delay,
    pub replay: Replay,
}

pub fn run(plan: &Plan) -> Result<Propagation> {
    eprintln!(
        "bench: propagation of {} logins from a POP host to two relays",
        plan.logins
    );
    let delay = delay::measure(plan.logins)?;
    eprintln!(
        "bench: a cold relay replaying {} grants from the stream",
        plan.replayed
    );
    let replay = replay::measure(plan.replayed)?;
    Ok(Propagation { delay, replay })
}

/// The `n`-th address of the benchmarking range 198.18.0.0/15 (RFC 2544):
/// distinct IPv4 addresses, one grant each whatever the IPv6 prefix.
fn address(n: usize) -> Ipv4Addr {
    const BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
    let n = u32::try_from(n)
        .ok()
        .filter(|n| *n < 1 << 17)
        .expect("198.18.0.0/15 holds 131,072 addresses");
    Ipv4Addr::from(BASE + n)
}

impl Propagation {
    pub fn markdown(&self) -> String {
        let d = &self.delay;
        let r = &self.replay;
        let mut delays = Table::new(&[
            "logins",
            "p50 ms",
            "p99 ms",
            "max ms",
            "broker CPU per login",
            "relay agent CPU per login",
        ]);
        delays.row(vec![
            d.logins.to_string(),
            format!("{:.2}", d.p50_us / 1e3),
            format!("{:.2}", d.p99_us / 1e3),
            format!("{:.2}", d.max_us / 1e3),
            format!("{:.0} µs", d.broker_cpu_us_per_login),
            format!("{:.0} µs", d.relay_cpu_us_per_login),
        ]);
        let mut replay = Table::new(&[
            "grants in the stream",
            "cold relay: start to all in the map",
            "applied per second (sustained)",
            "relay agent CPU per entry",
            "broker CPU per entry read",
        ]);
        replay.row(vec![
            r.entries.to_string(),
            format!("{:.2} s", r.cold_replay_s),
            format!("{:.0}", r.events_per_s),
            r.relay_cpu_us_per_entry
                .map_or("-".into(), |us| format!("{us:.1} µs")),
            format!("{:.2} µs", r.broker_cpu_us_per_entry),
        ]);
        format!(
            "## 4. Many hosts: grant propagation through Redis\n\n\
             The farm of the cluster tests, in network namespaces behind one router: redis-server \
             (append-only, every write synced, as the tests run it), a POP host running Dovecot and \
             `smtpgate watch --log <Dovecot's log> --publish`, and {relays} relays running Postfix \
             behind `smtpgate run --subscribe`, each gating its link. From appending a login line, \
             as Dovecot writes it, to Dovecot's log until the grant is in \
             both relays' pinned kernel maps (both polled by key, without sleeping), over {logins} \
             logins from distinct addresses, {gap} ms apart. CPU per login, over the same logins: \
             the broker's (an XADD synced to its log, and each relay's blocked read woken and \
             answered with one entry), and each relay agent's on average:\n\n{delays}\n\
             A cold relay (no saved position: it reads from one TTL back) started on a stream \
             holding {entries} live grants, added beforehand with pipelined XADD in the fields the \
             agent publishes ({load:.2} s to add, {load_rate:.0} entries/s; the broker's resident \
             memory grew by {bytes:.0} bytes per entry), as a stream trimmed to one TTL holds after \
             {entries} logins in that TTL. The map is looked at every millisecond: entries are \
             applied in order, so which keys are present tells how many. One run, reported two \
             ways: the cold replay counts from starting the agent (loading and attaching the gate, \
             connecting, reading the broker's clock) to the last grant in the map; the sustained \
             rate counts from the first look at the map, {first:.0} ms after the start with \
             {applied} entries applied, to the last ({window} entries in {window_s:.2} s). CPU \
             per entry: the relay agent's over the same stretch, per entry it applied in it; the \
             broker's from the agent's start to the last grant, per entry read (in batches of a \
             thousand, the agent's XREAD COUNT).\n\n{replay}\n\
             Then {singles} more entries added one at a time, {single_gap} ms apart, so that each \
             wakes the relay's blocked read on its own: the broker spent {followed:.0} µs of CPU per \
             entry with the relay following, and {alone:.0} µs for {singles} more with the relay's \
             agent stopped (no reader): each following relay costs the broker about {per_relay:.0} µs \
             per entry when entries come one at a time; a relay that finds several waiting reads \
             them in one reply.\n",
            relays = d.relays,
            logins = d.logins,
            gap = delay::GAP.as_millis(),
            delays = delays.render(),
            entries = r.entries,
            load = r.load_s,
            load_rate = r.entries as f64 / r.load_s,
            bytes = r.broker_bytes_per_entry,
            first = r.first_look_s * 1e3,
            applied = r.first_look_applied,
            window = r.entries - r.first_look_applied,
            window_s = r.cold_replay_s - r.first_look_s,
            replay = replay.render(),
            singles = replay::SINGLES,
            single_gap = replay::SINGLE_GAP.as_millis(),
            followed = r.broker_cpu_us_per_single_followed,
            alone = r.broker_cpu_us_per_single_alone,
            per_relay = r.broker_cpu_us_per_single_followed - r.broker_cpu_us_per_single_alone,
        )
    }
}
