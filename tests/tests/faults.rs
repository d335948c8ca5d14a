//! Faults the agent must come through without opening the relay or locking
//! a customer out, each under a SYN flood from strangers with the probes of
//! [`Around`] running: a granted client that must keep getting in, and a
//! stranger that must never be answered.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use aya::maps::{HashMap as BpfHashMap, MapData};
use smtpgate::gate::{
    maps::{open_pinned, Grants},
    pins::PinDir,
};
use smtpgate_common::{AddrKey, Grant, GRANTS_MAP};
use smtpgate_tests::{
    journal::PrivateJournal,
    logs::{append, dovecot_login},
    probe::Around,
    Family, Lab, Scratch, ANSWERED, CLIENT_V4, SMTP,
};

/// A lab with the agent following `mail.log` in `scratch`, its state in
/// `scratch` too, and `extra` flags, and the lab's client (over IPv4)
/// granted by a login in that log. The probes of [`Around`] connect far
/// faster than a grant's SYN budget allows: it is off.
fn granted_on_log(scratch: &Scratch, extra: &[&str]) -> Result<(Lab, PathBuf, PathBuf)> {
    let (log, state) = (scratch.path("mail.log"), scratch.path("state"));
    std::fs::write(&log, dovecot_login("lee", CLIENT_V4))?;
    let mut lab = Lab::new()?;
    lab.echo_server(SMTP)?;
    let mut flags = vec![
        "--log",
        log.to_str().context("path")?,
        "--state-dir",
        state.to_str().context("path")?,
        "--grant-syn-rate",
        "off",
    ];
    flags.extend_from_slice(extra);
    lab.start_agent(&flags)?;
    wait_for_grants(&lab, 1).context("the client's login")?;
    Ok((lab, log, state))
}

/// Waits (at most 10 s) until the agent has logged `count` grants.
fn wait_for_grants(lab: &Lab, count: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.agent_lines("granted") < count {
        ensure!(
            Instant::now() < deadline,
            "{} of {count} logins granted within 10 s",
            lab.agent_lines("granted")
        );
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Fails unless `smtpgate list` shows a live grant for `ip`.
fn require_listed(lab: &Lab, ip: &str) -> Result<()> {
    let listed = lab.smtpgate_ok(&["list"])?;
    ensure!(
        listed
            .lines()
            .any(|line| line.split_whitespace().next() == Some(ip)),
        "{ip} holds no grant in the kernel map:\n{listed}"
    );
    Ok(())
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// The state directory turns unwritable (as a full disk or a read-only
/// remount would make it), under a SYN flood: logins keep granting, the
/// problem is logged once, saving resumes when the directory is writable
/// again, and the gate never falters.
#[test]
fn an_unwritable_state_directory_is_reported_once_and_grants_go_on() -> Result<()> {
    let scratch = Scratch::new()?;
    let (lab, log, state) = granted_on_log(&scratch, &[])?;
    let around = Around::start(&lab);
    // Without CAP_DAC_OVERRIDE the agent, root as it is, obeys the mode.
    chmod(&state, 0o500)?;
    for n in 1..=4 {
        append(&log, &dovecot_login("lee", &format!("198.51.100.{n}")))?;
        thread::sleep(Duration::from_millis(700));
    }
    ensure!(
        lab.agent_logged("cannot save read positions", Duration::from_secs(5)),
        "the failure was not logged"
    );
    wait_for_grants(&lab, 5).context("logins while the state could not be saved")?;
    let warnings = lab.agent_lines("cannot save read positions");
    ensure!(
        warnings == 1,
        "the failure was logged {warnings} times in 3 s, not once"
    );
    chmod(&state, 0o755)?;
    ensure!(
        lab.agent_logged("saving read positions again", Duration::from_secs(5)),
        "saving did not resume"
    );
    around.end()?.require_clean()?;
    require_listed(&lab, "198.51.100.4")?;
    let saved = std::fs::read_to_string(state.join("state.json")).context("no state file")?;
    let length = std::fs::metadata(&log)?.len();
    ensure!(
        saved.contains(&length.to_string()),
        "the saved position is not the log's end ({length}): {saved}"
    );
    Ok(())
}

/// Every grant's expiry, by key.
fn expiries(pins: &PinDir) -> Result<HashMap<AddrKey, u64>> {
    let map: BpfHashMap<MapData, AddrKey, Grant> =
        open_pinned(&pins.map(GRANTS_MAP))?.try_into()?;
    map.iter()
        .map(|entry| {
            entry
                .map(|(key, grant)| (key, grant.expiry_ns))
                .map_err(Into::into)
        })
        .collect()
}

/// SIGKILL (as the OOM killer sends it) with 10,000 live grants, under a
/// SYN flood, then a restart: no grant is lost or changed, no stranger is
/// ever answered, and the granted customer's connects keep succeeding.
#[test]
fn sigkill_under_a_flood_loses_no_grant_and_opens_nothing() -> Result<()> {
    let mut lab = Lab::gated(&[])?;
    let pins = PinDir::new(lab.bpffs.pin_dir());
    let mut grants = Grants::open_pinned(&pins)?;
    for n in 0..9_999u32 {
        let [_, b, c, d] = n.to_be_bytes();
        grants.grant(
            IpAddr::V4(Ipv4Addr::new(10, b, c, d)),
            Duration::from_secs(3600),
        )?;
    }
    grants.grant(CLIENT_V4.parse()?, Duration::from_secs(3600))?;
    drop(grants);
    let before = expiries(&pins)?;
    ensure!(
        before.len() == 10_000,
        "{} grants before the kill",
        before.len()
    );

    let around = Around::start(&lab);
    thread::sleep(Duration::from_millis(500));
    lab.kill_agent()?;
    thread::sleep(Duration::from_millis(500));
    lab.start_agent(&[])?;
    thread::sleep(Duration::from_millis(500));
    let seen = around.end()?;
    seen.require_clean()?;
    let after = expiries(&pins)?;
    ensure!(
        after == before,
        "the grants changed across the kill: {} before, {} after",
        before.len(),
        after.len()
    );
    ensure!(
        lab.counter("dropped_no_grant")? >= seen.flood / 2,
        "the flood was not dropped by the gate"
    );
    Ok(())
}

/// Someone removes the pins while the agent runs, under a SYN flood. The
/// link goes with its pin, and the agent does not go on as if it guarded
/// anything: it exits non-zero and says what to do. Started again, as the
/// unit's `Restart=on-failure` does, it restores the gate.
#[test]
fn removed_pins_end_the_agent_with_a_failure_that_says_what_to_do() -> Result<()> {
    let mut lab = Lab::gated(&[])?;
    lab.smtpgate_ok(&["allow", CLIENT_V4])?;
    let around = Around::start(&lab);
    thread::sleep(Duration::from_millis(300));
    let removed = Instant::now();
    for entry in std::fs::read_dir(lab.bpffs.pin_dir())? {
        std::fs::remove_file(entry?.path())?;
    }
    ensure!(
        lab.agent_logged(
            "start `smtpgate run` again to restore the gate",
            Duration::from_secs(5)
        ),
        "the agent did not say what to do"
    );
    let noticed = removed.elapsed();
    let code = lab.stop_agent()?;
    ensure!(code != 0, "the agent exited {code} with its pins gone");
    lab.start_agent(&[])?;
    let restored = removed.elapsed();
    let seen = around.end()?;
    seen.require_ran()?;
    eprintln!(
        "pins removed: said after {} ms, gate restored after {} ms; the stranger was answered {} times meanwhile",
        noticed.as_millis(),
        restored.as_millis(),
        seen.stranger.answered
    );
    // The grants went with the map's pin: the client logs in again.
    lab.smtpgate_ok(&["allow", CLIENT_V4])?;
    let around = Around::start(&lab);
    thread::sleep(Duration::from_millis(500));
    around.end()?.require_clean()
}

/// The gated interface goes away and comes back under a SYN flood: the
/// agent attaches the gate to it again by itself within a second, says so
/// once, and no stranger is answered at any moment. The granted client is
/// cut off while the interface is gone and gets in again once it is back.
#[test]
fn an_interface_that_comes_back_is_gated_again_within_a_second() -> Result<()> {
    let lab = Lab::gated(&[])?;
    lab.smtpgate_ok(&["allow", CLIENT_V4, "--ttl", "10m"])?;
    let around = Around::start(&lab);
    thread::sleep(Duration::from_millis(300));
    let back = lab.recreate_link(Duration::from_millis(300))?;
    ensure!(
        lab.agent_logged(
            "is back; the gate is attached to it again",
            Duration::from_secs(1)
        ),
        "no re-attach within a second"
    );
    eprintln!(
        "re-attach logged within {} ms of the interface's return (polled every 20 ms)",
        back.elapsed().as_millis()
    );
    thread::sleep(Duration::from_millis(500));
    // Down and up keeps the attachment: nothing to do, nothing said.
    lab.server.ip(&["link", "set", &lab.server_iface, "down"])?;
    lab.server.ip(&["link", "set", &lab.server_iface, "up"])?;
    thread::sleep(Duration::from_millis(500));
    let seen = around.end()?;
    seen.require_closed()?;
    ensure!(
        lab.agent_lines("went away") == 1 && lab.agent_lines("is back") == 1,
        "the agent did not say so exactly once"
    );
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("the granted client after the interface came back")?;
    Ok(())
}

/// The log file disappears for a while (a careless cleanup, a remount),
/// under a SYN flood: the agent waits for it, the first login written once
/// it is back grants, and the gate never falters.
#[test]
fn a_log_that_disappears_and_returns_is_followed_again() -> Result<()> {
    let scratch = Scratch::new()?;
    let (lab, log, _) = granted_on_log(&scratch, &[])?;
    let around = Around::start(&lab);
    std::fs::remove_file(&log)?;
    thread::sleep(Duration::from_millis(1500));
    std::fs::write(&log, dovecot_login("mo", "198.51.100.40"))?;
    wait_for_grants(&lab, 2).context("the login in the returned log")?;
    around.end()?.require_clean()?;
    require_listed(&lab, "198.51.100.40")
}

/// journald is killed and started again by hand (no systemd here holds its
/// socket meanwhile), under a SYN flood: journalctl reads on by itself, the
/// agent says once that journald is gone and once that it is back, a login
/// written the moment it is back grants, and the gate never falters.
#[test]
fn a_journald_restart_is_said_once_and_loses_no_login_after_it() -> Result<()> {
    let scratch = Scratch::new()?;
    let state = scratch.path("state");
    let mut lab = Lab::new()?;
    lab.echo_server(SMTP)?;
    let mut journal = PrivateJournal::start()?;
    journal.login("lee", CLIENT_V4)?;
    lab.start_agent_under(
        &journal.enter(),
        &[
            "--journal",
            "--state-dir",
            state.to_str().context("path")?,
            "--grant-syn-rate",
            "off",
        ],
    )?;
    wait_for_grants(&lab, 1).context("the client's login")?;
    let around = Around::start(&lab);
    journal.kill_journald()?;
    ensure!(
        lab.agent_logged("journald does not answer", Duration::from_secs(5)),
        "the agent did not say that journald is gone"
    );
    journal.start_journald()?;
    journal.login("mo", "198.51.100.50")?;
    wait_for_grants(&lab, 2).context("the login written once journald was back")?;
    ensure!(
        lab.agent_logged("journald answers again", Duration::from_secs(5)),
        "the agent did not say that journald is back"
    );
    thread::sleep(Duration::from_millis(300));
    around.end()?.require_clean()?;
    require_listed(&lab, "198.51.100.50")?;
    let (gone, back) = (
        lab.agent_lines("journald does not answer"),
        lab.agent_lines("journald answers again"),
    );
    ensure!(
        gone == 1 && back == 1,
        "journald's outage was said {gone} times, its return {back} times"
    );
    Ok(())
}

/// The grant map is full, under a SYN flood: a fresh login still gets its
/// grant, evicting the grant used least recently (not the granted client's,
/// which its connects keep in use); the agent says so once and counts it.
#[test]
fn a_full_map_takes_a_fresh_login_and_says_so_once() -> Result<()> {
    let scratch = Scratch::new()?;
    let metrics = ["--max-grants", "32", "--metrics-listen", "127.0.0.1:9925"];
    let (lab, log, _) = granted_on_log(&scratch, &metrics)?;
    let around = Around::start(&lab);
    for n in 1..=40 {
        append(&log, &dovecot_login("nia", &format!("198.51.100.{n}")))?;
    }
    wait_for_grants(&lab, 41)?;
    thread::sleep(Duration::from_millis(500));
    around.end()?.require_clean()?;
    require_listed(&lab, "198.51.100.40").context("the newest login in a full map")?;
    ensure!(
        lab.agent_lines("the grant map is full") == 1,
        "the full map was not said exactly once"
    );
    let evicted = lab.metric("smtpgate_grants_evicted_total")?;
    ensure!(
        evicted >= 9,
        "{evicted} evictions counted for 41 grants in 32 slots"
    );
    Ok(())
}
