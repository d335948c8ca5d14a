//! A mail client's "send and receive": the SMTP connect begins, and the
//! POP3 login it waits for lands in the mail log a little later. How long
//! the connect takes, through the real agent and gate: with replay, as the
//! agent runs by default, and with `--replay-window off`, where the client
//! waits for its own retransmission of the SYN.

use std::{
    fs::{self, OpenOptions},
    io::Write,
    net::{SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use smtpgate::gate::{maps::Grants, pins::PinDir};
use smtpgate_tests::{Family, Lab, SMTP};

use super::log;
use crate::stats::percentile;

/// When the login line is written after the connect begins: about what a
/// POP3 login takes over a LAN, the SYN long gone by then.
pub const LOGIN_AFTER: Duration = Duration::from_millis(10);
/// Longer than a connect that waits for the second retransmission.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// Pause between two rounds.
const GAP: Duration = Duration::from_millis(20);

#[derive(Serialize)]
pub struct SendReceive {
    pub login_after_ms: f64,
    pub with_replay: Delays,
    pub retransmission: Delays,
}

/// Connect delays of one way, in milliseconds from the connect's start.
#[derive(Serialize)]
pub struct Delays {
    pub connects: usize,
    /// SYNs the agent replayed meanwhile.
    pub replayed: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub max_ms: f64,
}

pub fn measure(with_replay: usize, without: usize) -> Result<SendReceive> {
    Ok(SendReceive {
        login_after_ms: LOGIN_AFTER.as_secs_f64() * 1e3,
        with_replay: connects(with_replay, &[])?,
        retransmission: connects(without, &["--replay-window", "off"])?,
    })
}

/// `rounds` send-and-receives of the lab's client with an agent run with
/// `flags`; its grant is revoked after each, so the next one starts
/// without.
fn connects(rounds: usize, flags: &[&str]) -> Result<Delays> {
    let dir = tempfile::tempdir()?;
    let log_path = dir.path().join("mail.log");
    fs::write(&log_path, b"")?;
    let path = |p: &std::path::Path| {
        p.to_str()
            .context("temporary paths are UTF-8")
            .map(str::to_owned)
    };
    let (log_arg, state_arg) = (path(&log_path)?, path(dir.path())?);
    let mut lab = Lab::new()?;
    lab.echo_server(SMTP)?;
    let mut args = vec![
        "--log",
        &log_arg,
        "--state-dir",
        &state_arg,
        "--metrics-listen",
        "127.0.0.1:9925",
    ];
    args.extend_from_slice(flags);
    lab.start_agent(&args)?;
    let mut grants = Grants::open_pinned(&PinDir::new(lab.bpffs.pin_dir()))?;
    let mut log = OpenOptions::new().append(true).open(&log_path)?;
    let client = lab.client_addr(Family::V4);
    let server = SocketAddr::new(lab.server_addr(Family::V4), SMTP);
    let mut delays = Vec::with_capacity(rounds);
    for n in 0..rounds {
        let connect = lab.client.spawn(move || {
            let start = Instant::now();
            TcpStream::connect_timeout(&server, CONNECT_TIMEOUT).map(|_| start.elapsed())
        });
        thread::sleep(LOGIN_AFTER);
        log.write_all(log::login(&log::syslog_stamp(), n as u32, client).as_bytes())?;
        let delay = connect
            .join()
            .map_err(|_| anyhow::anyhow!("the connect thread panicked"))??
            .with_context(|| format!("send and receive {n}: the connect"))?;
        delays.push(delay.as_secs_f64() * 1e3);
        ensure!(grants.revoke(client)?, "send and receive {n}: no grant");
        thread::sleep(GAP);
    }
    Ok(Delays {
        connects: rounds,
        replayed: lab.metric("smtpgate_syns_replayed_total{path=\"live_frame\"}")?,
        p50_ms: percentile(&delays, 50.0),
        p90_ms: percentile(&delays, 90.0),
        max_ms: percentile(&delays, 100.0),
    })
}
