//! The gate with real packets: a client namespace connects to a server
//! namespace whose veth carries the smtpgate program.

use std::{thread, time::Duration};

use anyhow::{ensure, Context, Result};
use smtpgate_tests::{assert_echoes, Family, Lab, ANSWERED, SMTP, UNGATED};

fn lab(hook: &str, extra: &[&str]) -> Result<Lab> {
    let mut flags = vec!["--attach", hook];
    flags.extend_from_slice(extra);
    Lab::gated(&flags)
}

fn assert_dropped(lab: &Lab, family: Family) -> Result<()> {
    lab.assert_no_answer(family, SMTP)
}

/// The whole life of a grant, for one family and hook.
fn grant_lifecycle(family: Family, hook: &str) -> Result<()> {
    let lab = lab(hook, &[])?;
    let client = lab.client_addr(family).to_string();

    // No grant: port 25 gets no answer and the drop is counted; the ungated
    // port is untouched.
    let before = lab.counter("dropped_no_grant")?;
    assert_dropped(&lab, family)?;
    ensure!(
        lab.counter("dropped_no_grant")? > before,
        "drop counter did not move"
    );
    let mut other = lab
        .connect(family, UNGATED, ANSWERED)
        .context("ungated port")?;
    assert_echoes(&mut other, b"ungated")?;

    // A short grant opens port 25.
    lab.smtpgate_ok(&["allow", &client, "--ttl", "3s"])?;
    let listed = lab.smtpgate_ok(&["list"])?;
    ensure!(
        listed.contains(&client),
        "list does not show {client}: {listed}"
    );
    let mut session = lab
        .connect(family, SMTP, ANSWERED)
        .context("connect with a grant")?;
    assert_echoes(&mut session, b"EHLO customer\r\n")?;
    ensure!(lab.counter("allowed_grant")? >= 1);

    // After expiry, new connections fail, the open session still works.
    thread::sleep(Duration::from_millis(3300));
    assert_dropped(&lab, family)?;
    ensure!(
        lab.counter("dropped_expired")? >= 1,
        "expired drop not counted"
    );
    assert_echoes(&mut session, b"MAIL FROM:<customer@example.org>\r\n")?;

    // Revoke closes the gate at once, again sparing the open session.
    lab.smtpgate_ok(&["allow", &client, "--ttl", "10m"])?;
    let mut second = lab
        .connect(family, SMTP, ANSWERED)
        .context("connect after re-grant")?;
    lab.smtpgate_ok(&["revoke", &client])?;
    assert_dropped(&lab, family)?;
    assert_echoes(&mut second, b"QUIT\r\n")?;
    assert_echoes(&mut other, b"still ungated")?;
    Ok(())
}

#[test]
fn ipv4_xdp_grant_lifecycle() -> Result<()> {
    grant_lifecycle(Family::V4, "xdp")
}

#[test]
fn ipv6_xdp_grant_lifecycle() -> Result<()> {
    grant_lifecycle(Family::V6, "xdp")
}

#[test]
fn ipv4_tc_grant_lifecycle() -> Result<()> {
    grant_lifecycle(Family::V4, "tc")
}

#[test]
fn ipv6_tc_grant_lifecycle() -> Result<()> {
    grant_lifecycle(Family::V6, "tc")
}

/// The TC path of kernels before 6.6 (a clsact netlink filter, not a
/// link), forced on this kernel: it must gate, outlive the agent, be taken
/// over by the next run and be removed by detach.
#[test]
fn tc_netlink_filter_lifecycle() -> Result<()> {
    let netlink = [("SMTPGATE_TC_NETLINK", "1")];
    let mut lab = Lab::new()?;
    lab.echo_server(SMTP)?;
    lab.start_agent_with_env(&["--attach", "tc"], &netlink)?;
    assert_dropped(&lab, Family::V4)?;
    lab.stop_agent()?;
    assert_dropped(&lab, Family::V4).context("filter gone with the agent")?;
    lab.start_agent_with_env(&["--attach", "tc"], &netlink)?;
    let filters = lab
        .server
        .command("tc")
        .args(["filter", "show", "dev", &lab.server_iface, "ingress"])
        .output()?;
    let filters = String::from_utf8_lossy(&filters.stdout);
    ensure!(
        filters.matches("name smtpgate_tc").count() == 1,
        "expected exactly one filter after the restart:\n{filters}"
    );
    lab.smtpgate_ok(&["allow", smtpgate_tests::CLIENT_V4])?;
    lab.connect(Family::V4, SMTP, ANSWERED)?;
    lab.stop_agent()?;
    lab.smtpgate_ok(&["detach"])?;
    let filters = lab
        .server
        .command("tc")
        .args(["filter", "show", "dev", &lab.server_iface, "ingress"])
        .output()?;
    ensure!(
        !String::from_utf8_lossy(&filters.stdout).contains("smtpgate_tc"),
        "filter left after detach"
    );
    Ok(())
}

#[test]
fn skb_mode_gates_too() -> Result<()> {
    let lab = lab("xdp", &["--xdp-mode", "skb"])?;
    assert_dropped(&lab, Family::V4)?;
    lab.smtpgate_ok(&["allow", smtpgate_tests::CLIENT_V4])?;
    lab.connect(Family::V4, SMTP, ANSWERED)?;
    Ok(())
}

#[test]
fn restart_keeps_gate_and_grants() -> Result<()> {
    let mut lab = lab("xdp", &[])?;
    lab.smtpgate_ok(&["allow", smtpgate_tests::CLIENT_V6, "--ttl", "10m"])?;
    let dropped_before = lab.counter("dropped_no_grant")?;
    assert_dropped(&lab, Family::V4)?;

    // With the agent gone, the gate keeps enforcing and the grant holds.
    ensure!(lab.stop_agent()? == 0, "agent did not exit cleanly");
    assert_dropped(&lab, Family::V4)?;
    lab.connect(Family::V6, SMTP, ANSWERED)
        .context("granted client while agent is down")?;
    ensure!(
        lab.counter("dropped_no_grant")? >= dropped_before + 2,
        "counters stopped while agent was down"
    );

    // The CLI still works on the pins, and a restarted agent reuses them.
    lab.smtpgate_ok(&["allow", smtpgate_tests::CLIENT_V4, "--ttl", "10m"])?;
    lab.start_agent(&["--attach", "xdp"])?;
    let listed = lab.smtpgate_ok(&["list", "--json"])?;
    let grants: serde_json::Value = serde_json::from_str(&listed)?;
    let addresses: Vec<&str> = grants
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["address"].as_str())
        .collect();
    ensure!(
        addresses.contains(&smtpgate_tests::CLIENT_V6),
        "IPv6 grant lost: {listed}"
    );
    ensure!(
        addresses.contains(&smtpgate_tests::CLIENT_V4),
        "IPv4 grant lost: {listed}"
    );
    lab.connect(Family::V4, SMTP, ANSWERED)?;
    ensure!(
        lab.counter("dropped_no_grant")? >= dropped_before + 2,
        "counters were reset by the restart"
    );
    Ok(())
}

#[test]
fn switching_hook_replaces_the_attachment() -> Result<()> {
    let mut lab = lab("xdp", &[])?;
    lab.stop_agent()?;
    lab.start_agent(&["--attach", "tc"])?;
    let stats: serde_json::Value =
        serde_json::from_str(&lab.smtpgate_ok(&["stats", "--json", "--no-rates"])?)?;
    let hooks: Vec<&str> = stats["attached"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["hook"].as_str())
        .collect();
    ensure!(hooks == ["tc"], "expected only tc attached, got {hooks:?}");
    assert_dropped(&lab, Family::V4)?;
    Ok(())
}

#[test]
fn detach_removes_program_and_pins() -> Result<()> {
    let mut lab = lab("xdp", &[])?;
    assert_dropped(&lab, Family::V4)?;
    lab.stop_agent()?;
    lab.smtpgate_ok(&["detach"])?;
    ensure!(!lab.bpffs.pin_dir().exists(), "pins left behind");
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("port 25 still gated after detach")?;
    let out = lab.smtpgate(&["list"]);
    ensure!(
        !out.status.success(),
        "list succeeded with nothing attached"
    );
    Ok(())
}

#[test]
fn custom_port_set_gates_only_those_ports() -> Result<()> {
    let lab = lab("xdp", &["--port", "2525"])?;
    lab.assert_no_answer(Family::V4, UNGATED)?;
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("port 25 is not in the gated set")?;
    Ok(())
}

/// A full grant map evicts the least recently used grant; it never refuses
/// the newest one.
#[test]
fn a_full_grant_map_still_takes_a_fresh_grant() -> Result<()> {
    let lab = lab("xdp", &["--max-grants", "32"])?;
    for i in 1..=64 {
        lab.smtpgate_ok(&["allow", &format!("198.51.100.{i}")])?;
    }
    lab.smtpgate_ok(&["allow", smtpgate_tests::CLIENT_V4])?;
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("the newest grant was refused")?;
    let stats: serde_json::Value =
        serde_json::from_str(&lab.smtpgate_ok(&["stats", "--json", "--no-rates"])?)?;
    ensure!(
        stats["grants"]["capacity"] == 32,
        "capacity not applied: {stats}"
    );
    ensure!(
        stats["grants"]["live"].as_u64().unwrap() <= 32,
        "more live grants than capacity: {stats}"
    );
    Ok(())
}

/// `run -v` logs each refused SYN with its source; without `-v` the
/// program is loaded with the logging switched off.
#[test]
fn verbose_run_logs_each_refusal() -> Result<()> {
    for (flags, logged) in [(&["-v"][..], true), (&[][..], false)] {
        let lab = lab("xdp", flags)?;
        assert_dropped(&lab, Family::V4)?;
        let line = format!("refused SYN from {}", lab.client_addr(Family::V4));
        let seen = lab.agent_logged(&line, Duration::from_secs(if logged { 5 } else { 1 }));
        ensure!(
            seen == logged,
            "with flags {flags:?}, '{line}' logged: {seen}"
        );
    }
    Ok(())
}

/// Pins an older version kept in a layout this one no longer reads: the
/// one-shot commands refuse to act on such a gate, and the next `run`
/// retires them (the counters restart) and takes over with every grant.
#[test]
fn pins_of_an_older_layout_are_retired_by_run_and_refused_by_commands() -> Result<()> {
    let mut lab = lab("xdp", &[])?;
    lab.smtpgate_ok(&["allow", smtpgate_tests::CLIENT_V4, "--ttl", "10m"])?;
    lab.stop_agent()?;
    // Any map pinned under the old counters' name stands in for them.
    let pins = lab.bpffs.pin_dir();
    let retired = pins.join(smtpgate_common::RETIRED_MAPS[0]);
    aya::maps::MapData::from_pin(pins.join(smtpgate_common::COUNTERS_MAP))?.pin(&retired)?;

    let refused = lab.smtpgate(&["allow", smtpgate_tests::CLIENT_V6]);
    let err = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        !refused.status.success() && err.contains("set up by an older smtpgate"),
        "allow on old pins: {err}"
    );

    lab.start_agent(&["--attach", "xdp"])?;
    ensure!(!retired.exists(), "{} was not retired", retired.display());
    lab.smtpgate_ok(&["allow", smtpgate_tests::CLIENT_V6, "--ttl", "10m"])?;
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("the grant made before the upgrade")?;
    lab.connect(Family::V6, SMTP, ANSWERED)
        .context("the grant made after it")?;
    Ok(())
}
