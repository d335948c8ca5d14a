//! Faults the agent must come through without opening the relay or locking
//! a customer out.

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
    logs::{append, dovecot_login},
    probe::Around,
    Family, Lab, Scratch, ANSWERED, CLIENT_V4, SMTP,
};

/// A lab with the agent following `mail.log` in `scratch` (which holds
/// `first`), its state in `scratch` too, and `extra` flags.
fn agent_on_log(scratch: &Scratch, first: &str, extra: &[&str]) -> Result<(Lab, PathBuf, PathBuf)> {
    let (log, state) = (scratch.path("mail.log"), scratch.path("state"));
    std::fs::write(&log, first)?;
    let mut lab = Lab::new()?;
    lab.echo_server(SMTP)?;
    let mut flags = vec![
        "--log",
        log.to_str().context("path")?,
        "--state-dir",
        state.to_str().context("path")?,
    ];
    flags.extend_from_slice(extra);
    lab.start_agent(&flags)?;
    Ok((lab, log, state))
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// The state directory turns unwritable (as a full disk or a read-only
/// remount would make it): logins keep granting, the problem is logged
/// once, and saving resumes when the directory is writable again.
#[test]
fn an_unwritable_state_directory_is_reported_once_and_grants_go_on() -> Result<()> {
    let scratch = Scratch::new()?;
    let (lab, log, state) = agent_on_log(&scratch, "", &[])?;
    // Without CAP_DAC_OVERRIDE the agent, root as it is, obeys the mode.
    chmod(&state, 0o500)?;
    for n in 1..=4 {
        append(&log, &dovecot_login("lee", &format!("198.51.100.{n}")))?;
        std::thread::sleep(Duration::from_millis(700));
    }
    append(&log, &dovecot_login("lee", smtpgate_tests::CLIENT_V4))?;
    ensure!(
        lab.agent_logged("cannot save read positions", Duration::from_secs(5)),
        "the failure was not logged"
    );
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("a login while the state could not be saved")?;
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

/// Someone removes the pins while the agent runs: the agent does not go
/// on as if it guarded anything; it exits non-zero and says what to do.
#[test]
fn removed_pins_end_the_agent_with_a_failure_that_says_what_to_do() -> Result<()> {
    let mut lab = Lab::gated(&["--sweep-interval", "1s"])?;
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
    let code = lab.stop_agent()?;
    ensure!(code != 0, "the agent exited {code} with its pins gone");
    Ok(())
}

/// The gated interface goes away and comes back: the agent attaches the
/// gate to it again by itself, says so once, and within a second the
/// stranger is dropped and the granted client let in as before.
#[test]
fn an_interface_that_comes_back_is_gated_again_within_a_second() -> Result<()> {
    let lab = Lab::gated(&[])?;
    lab.smtpgate_ok(&["allow", CLIENT_V4, "--ttl", "10m"])?;
    lab.recreate_link()?;
    let came_back = Instant::now();
    ensure!(
        lab.agent_logged(
            "is back; the gate is attached to it again",
            Duration::from_secs(1)
        ),
        "no re-attach within a second"
    );
    println!(
        "re-attached {} ms after the interface came back",
        came_back.elapsed().as_millis()
    );
    ensure!(
        lab.agent_lines("went away") == 1 && lab.agent_lines("is back") == 1,
        "the agent did not say so exactly once"
    );
    lab.assert_no_answer(Family::V6, SMTP)
        .context("the stranger after the interface came back")?;
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("the granted client after the interface came back")?;
    // Down and up keeps the attachment: nothing to do, nothing said.
    lab.server.ip(&["link", "set", &lab.server_iface, "down"])?;
    lab.server.ip(&["link", "set", &lab.server_iface, "up"])?;
    lab.assert_no_answer(Family::V6, SMTP)
        .context("the stranger after down and up")?;
    ensure!(lab.agent_lines("is back") == 1, "down and up re-attached");
    Ok(())
}

/// The log file disappears for a while (a careless cleanup, a remount):
/// the agent waits for it, and the first login written once it is back
/// grants.
#[test]
fn a_log_that_disappears_and_returns_is_followed_again() -> Result<()> {
    let scratch = Scratch::new()?;
    let (lab, log, _) = agent_on_log(&scratch, &dovecot_login("mo", "198.51.100.40"), &[])?;
    ensure!(
        lab.agent_logged("granted", Duration::from_secs(5)),
        "the first login did not grant"
    );
    std::fs::remove_file(&log)?;
    thread::sleep(Duration::from_millis(1500));
    std::fs::write(&log, dovecot_login("mo", CLIENT_V4))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.agent_lines("granted") < 2 {
        ensure!(
            Instant::now() < deadline,
            "the login in the returned log did not grant within 10 s"
        );
        thread::sleep(Duration::from_millis(20));
    }
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("the login written once the log was back")?;
    Ok(())
}

/// The grant map is full: a fresh login still gets its grant, evicting the
/// grant used least recently; the agent says so once and counts it.
#[test]
fn a_full_map_takes_a_fresh_login_and_says_so_once() -> Result<()> {
    let scratch = Scratch::new()?;
    let metrics = ["--max-grants", "32", "--metrics-listen", "127.0.0.1:9925"];
    let (lab, log, _) = agent_on_log(&scratch, "", &metrics)?;
    for n in 1..=40 {
        append(&log, &dovecot_login("nia", &format!("198.51.100.{n}")))?;
    }
    append(&log, &dovecot_login("nia", CLIENT_V4))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.agent_lines("granted") < 41 {
        ensure!(
            Instant::now() < deadline,
            "41 logins did not all grant within 10 s"
        );
        thread::sleep(Duration::from_millis(20));
    }
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("the newest login in a full map")?;
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
