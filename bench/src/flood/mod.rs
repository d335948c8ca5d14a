//! Part 2: a SYN flood over veth, the same for every contender: smtpgate in
//! XDP mode (with and without recording refused SYNs) and in TC mode, xdp-filter, nftables (input and ingress hooks) and no
//! filter at all. For each: how many flood packets it drops per second, the
//! CPU its receive path spends per million of them, and whether the granted
//! client's session to port 25 still completes during the flood. smtpgate
//! runs fully loaded: the plan's grants and allowlist are in its maps.

mod cpu;
mod filters;
mod generator;
mod lab;

use std::{
    sync::{atomic::Ordering, Arc},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde::Serialize;
use smtpgate::gate::{allowlist::Allowlist, maps::Grants, pins::PinDir};
use smtpgate_tests::{assert_echoes, Family, Lab, CLIENT_V4, SMTP};

use crate::{
    load::{Load, Loaded},
    stats::median,
    table::Table,
};
use filters::{Filter, Installed};
use generator::Progress;

pub struct Plan {
    /// Length of each contender's measured window.
    pub seconds: u64,
    /// Rounds over all contenders; each contender's windows are pooled.
    pub rounds: usize,
    /// What smtpgate's maps hold besides the granted client.
    pub load: Load,
}

/// The flood runs this long before the window opens.
const WARM_UP: Duration = Duration::from_secs(1);
/// How long one session of the granted client may take.
const SESSION_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between the granted client's sessions.
const SESSION_GAP: Duration = Duration::from_millis(250);
/// A receive thread busier than this set the pace: the rate is its limit.
const SATURATED: f64 = 0.9;

#[derive(Serialize)]
pub struct Flood {
    pub window_seconds: u64,
    pub rounds: usize,
    pub smtpgate_load: Load,
    pub contenders: Vec<Contender>,
}

#[derive(Serialize)]
pub struct Contender {
    pub filter: Filter,
    pub label: &'static str,
    /// Flood packets sent, per second.
    pub offered_pps: f64,
    /// Flood packets the contender dropped (without a filter: packets the IP
    /// stack took in), per second.
    pub dropped_pps: f64,
    /// Busy share of the receive core.
    pub receive_cpu_share: f64,
    /// Receive-core CPU time per million packets dropped, in milliseconds.
    pub cpu_ms_per_million: f64,
    /// The drop rate one core could sustain at this cost.
    pub one_core_pps: f64,
    /// The receive core was saturated: `dropped_pps` is the contender's limit
    /// here; otherwise the sender was, and the limit lies higher.
    pub receiver_bound: bool,
    /// Sender CPU time per million packets sent, in milliseconds.
    pub sender_cpu_ms_per_million: f64,
    pub sessions_tried: usize,
    pub sessions_completed: usize,
    pub session_median_ms: Option<f64>,
    /// `cpu_ms_per_million` and `dropped_pps` as ratios to smtpgate XDP's.
    pub cpu_vs_smtpgate_xdp: f64,
    pub rate_vs_smtpgate_xdp: f64,
}

pub fn run(plan: &Plan) -> Result<Flood> {
    // Everything this thread starts from now on (the sender, the agent, the
    // lab's servers) stays off the receive core.
    cpu::pin(0, lab::SEND_CPU)?;
    let result = flood_all(plan);
    cpu::unpin(0)?;
    result
}

fn flood_all(plan: &Plan) -> Result<Flood> {
    let mut lab = lab::new()?;
    // Rounds interleave the contenders, so that drift in the machine's speed
    // touches all of them alike.
    let mut pooled: Vec<Option<Window>> = Filter::ALL.iter().map(|_| None).collect();
    for round in 1..=plan.rounds {
        for (filter, pool) in Filter::ALL.into_iter().zip(&mut pooled) {
            eprintln!(
                "bench: SYN flood against {} (round {round} of {})",
                filter.label(),
                plan.rounds
            );
            let window = contend(&mut lab, filter, plan)
                .with_context(|| format!("flooding {}", filter.label()))?;
            *pool = Some(match pool.take() {
                Some(earlier) => earlier.merge(window),
                None => window,
            });
        }
    }
    let mut contenders: Vec<Contender> = Filter::ALL
        .into_iter()
        .zip(pooled)
        .map(|(filter, window)| window.expect("at least one round").into_contender(filter))
        .collect();
    let (cpu, rate) = (contenders[0].cpu_ms_per_million, contenders[0].dropped_pps);
    for c in &mut contenders {
        c.cpu_vs_smtpgate_xdp = c.cpu_ms_per_million / cpu;
        c.rate_vs_smtpgate_xdp = c.dropped_pps / rate;
    }
    Ok(Flood {
        window_seconds: plan.seconds,
        rounds: plan.rounds,
        smtpgate_load: plan.load,
        contenders,
    })
}

/// Sets up one contender, floods it, and takes it away again.
fn contend(lab: &mut Lab, filter: Filter, plan: &Plan) -> Result<Window> {
    if let Some(flags) = filter.smtpgate_flags() {
        lab.start_agent(flags)?;
        lab.smtpgate_ok(&["allow", CLIENT_V4])?;
        fill_gate(lab, plan.load).context("filling the agent's gate")?;
    }
    let measured = Installed::new(filter, lab).and_then(|installed| flood(lab, &installed, plan));
    if filter.smtpgate_flags().is_some() {
        lab.stop_agent()?;
        lab.smtpgate_ok(&["detach"])?;
    }
    measured
}

/// Fills the running agent's maps through their pins, as the per-packet
/// bench fills its gate: the flood's sources hold no grant and no
/// allowlist prefix covers them, so each is refused with the maps full.
fn fill_gate(lab: &Lab, load: Load) -> Result<()> {
    let pins = PinDir::new(lab.bpffs.pin_dir());
    let (mut grants, mut allowlist) = (Grants::open_pinned(&pins)?, Allowlist::open_pinned(&pins)?);
    Loaded::default().top_up(&mut grants, &mut allowlist, load)
}

/// What one window measured.
struct Window {
    seconds: f64,
    sent: u64,
    dropped: u64,
    receive_ns: u64,
    sender_ns: u64,
    sessions: Vec<Option<Duration>>,
}

/// Floods the lab's server while the granted client opens sessions.
fn flood(lab: &Lab, installed: &Installed, plan: &Plan) -> Result<Window> {
    let receiver = lab::receive_thread(lab)?;
    let progress = Arc::new(Progress::default());
    thread::scope(|scope| {
        let sender = {
            let (progress, iface) = (progress.clone(), lab.client_iface.clone());
            scope.spawn(move || lab.client.run(move || generator::send(&iface, &progress)))
        };
        let measured = (|| {
            thread::sleep(WARM_UP);
            let (start, sent, dropped, receive_ns, sender_ns) = (
                Instant::now(),
                progress.sent.load(Ordering::Relaxed),
                installed.absorbed()?,
                cpu::task_cpu_ns(receiver)?,
                progress.cpu_ns.load(Ordering::Relaxed),
            );
            let sessions = sessions(lab, Duration::from_secs(plan.seconds));
            Ok(Window {
                seconds: start.elapsed().as_secs_f64(),
                sent: progress.sent.load(Ordering::Relaxed) - sent,
                dropped: installed.absorbed()? - dropped,
                receive_ns: cpu::task_cpu_ns(receiver)? - receive_ns,
                sender_ns: progress.cpu_ns.load(Ordering::Relaxed) - sender_ns,
                sessions,
            })
        })();
        progress.stop.store(true, Ordering::Relaxed);
        let sent = sender
            .join()
            .map_err(|_| anyhow::anyhow!("the sender panicked"))?;
        sent??;
        measured
    })
}

/// The granted client's sessions to port 25 (connect, then one line echoed
/// back), one after another for `length`: how long each took, or `None`.
fn sessions(lab: &Lab, length: Duration) -> Vec<Option<Duration>> {
    let start = Instant::now();
    let mut sessions = Vec::new();
    while start.elapsed() < length {
        let began = Instant::now();
        let completed = lab
            .connect(Family::V4, SMTP, SESSION_TIMEOUT)
            .map_err(anyhow::Error::from)
            .and_then(|mut stream| assert_echoes(&mut stream, b"EHLO client.example\r\n"));
        sessions.push(completed.ok().map(|()| began.elapsed()));
        thread::sleep(SESSION_GAP);
    }
    sessions
}

impl Window {
    /// Two windows of the same contender as one.
    fn merge(mut self, other: Window) -> Window {
        self.seconds += other.seconds;
        self.sent += other.sent;
        self.dropped += other.dropped;
        self.receive_ns += other.receive_ns;
        self.sender_ns += other.sender_ns;
        self.sessions.extend(other.sessions);
        self
    }

    fn into_contender(self, filter: Filter) -> Contender {
        // Nanoseconds per packet are milliseconds per million packets.
        let ns_per_packet = self.receive_ns as f64 / self.dropped.max(1) as f64;
        let receive_cpu_share = self.receive_ns as f64 / 1e9 / self.seconds;
        let completed: Vec<f64> = self
            .sessions
            .iter()
            .flatten()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        Contender {
            filter,
            label: filter.label(),
            offered_pps: self.sent as f64 / self.seconds,
            dropped_pps: self.dropped as f64 / self.seconds,
            receive_cpu_share,
            cpu_ms_per_million: ns_per_packet,
            one_core_pps: 1e9 / ns_per_packet,
            receiver_bound: receive_cpu_share >= SATURATED,
            sender_cpu_ms_per_million: self.sender_ns as f64 / self.sent.max(1) as f64,
            sessions_tried: self.sessions.len(),
            sessions_completed: completed.len(),
            session_median_ms: (!completed.is_empty()).then(|| median(&completed)),
            cpu_vs_smtpgate_xdp: f64::NAN,
            rate_vs_smtpgate_xdp: f64::NAN,
        }
    }
}

impl Flood {
    pub fn markdown(&self) -> String {
        let mut table = Table::new(&[
            "contender",
            "offered pps",
            "dropped pps",
            "receive core busy",
            "CPU ms / million",
            "CPU ÷ smtpgate XDP",
            "rate ÷ smtpgate XDP",
            "one core could drop",
            "granted sessions",
        ]);
        for c in &self.contenders {
            table.row(vec![
                c.label.to_string(),
                format!("{:.0}", c.offered_pps),
                format!(
                    "{:.0}{}",
                    c.dropped_pps,
                    if c.receiver_bound { " (limit)" } else { "" }
                ),
                format!("{:.0} %", c.receive_cpu_share * 100.0),
                format!("{:.0}", c.cpu_ms_per_million),
                format!("{:.2}x", c.cpu_vs_smtpgate_xdp),
                format!("{:.2}x", c.rate_vs_smtpgate_xdp),
                format!("{:.2} Mpps", c.one_core_pps / 1e6),
                match c.session_median_ms {
                    Some(ms) => format!(
                        "{}/{} (median {ms:.1} ms)",
                        c.sessions_completed, c.sessions_tried
                    ),
                    None => format!("{}/{}", c.sessions_completed, c.sessions_tried),
                },
            ]);
        }
        format!(
            "## 2. SYN flood over veth\n\n\
             A generator of our own (an XDP program run in the kernel's live-frame test mode, on one \
             core) floods the server's veth with SYNs to port 25 from random sources in 198.18.0.0/15. \
             The frames arrive as XDP frames, as from a NIC's receive ring: XDP contenders judge them \
             before any socket buffer exists, and everything else pays for building one, as it would on \
             real hardware. The server's receive path runs in its own kernel thread (threaded NAPI) on \
             the other core, so its CPU time is exactly what each contender and the stack behind it \
             spend. Each contender lets the granted client 192.0.2.2 through and drops every other SYN \
             to port 25 (xdp-filter cannot grant: it drops the port for everyone). smtpgate runs with \
             {grants} further grants and {prefixes} allowlist prefixes loaded (those of the per-packet \
             bench), none of them for the flood's sources; it records each refused SYN for replay as the \
             agent does by default, except in the row with replay off. Without a filter the \
             kernel answers the flood with SYN cookies. {rounds} rounds over all contenders, each with a \
             window of {secs} s after {warm} s of warm-up, pooled. \"offered pps\" is what the generator \
             made; what the receiving veth had no room for was lost on the way, as on a wire. \
             \"dropped pps\" is marked (limit) where the receive core was saturated, so that is the most \
             this contender drops on this machine; elsewhere the sender was the bottleneck and \"one core \
             could drop\" extrapolates from the cost. Without a filter, \"dropped\" counts packets the IP \
             stack took in.\n\n{table}\n",
            grants = self.smtpgate_load.grants,
            prefixes = self.smtpgate_load.allowlist,
            rounds = self.rounds,
            secs = self.window_seconds,
            warm = WARM_UP.as_secs(),
            table = table.render(),
        )
    }
}
