//! Bad input and missing preconditions: one clear line, non-zero exit.

use std::process::Output;

use anyhow::{ensure, Result};
use smtpgate_tests::{smtpgate_bin, Lab};

fn error_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

fn assert_clear_error(out: &Output, needle: &str) -> Result<()> {
    let err = error_line(out);
    ensure!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    ensure!(err.lines().count() == 1, "expected one line, got: {err}");
    ensure!(
        err.starts_with("smtpgate: error: "),
        "unexpected format: {err}"
    );
    ensure!(err.contains(needle), "expected '{needle}' in: {err}");
    ensure!(!err.contains("panicked"), "panic: {err}");
    Ok(())
}

#[test]
fn malformed_address_and_duration() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.start_agent(&[])?;
    assert_clear_error(
        &lab.smtpgate(&["allow", "192.0.2.300"]),
        "'192.0.2.300' is not an IPv4 or IPv6 address",
    )?;
    assert_clear_error(
        &lab.smtpgate(&["revoke", "mail.example"]),
        "is not an IPv4 or IPv6 address",
    )?;
    assert_clear_error(
        &lab.smtpgate(&["allow", "192.0.2.2", "--ttl", "ten"]),
        "is not a duration",
    )?;
    assert_clear_error(
        &lab.smtpgate(&["run", "--iface", "lo", "--port", "0"]),
        "--port",
    )?;
    Ok(())
}

/// The gate parses Ethernet only: on an interface whose frames start with
/// an IP header (loopback here; GRE, IPIP, WireGuard alike) it would read
/// that header as Ethernet and pass every SYN.
#[test]
fn interface_without_ethernet_framing() -> Result<()> {
    let lab = Lab::new()?;
    assert_clear_error(
        &lab.smtpgate(&["run", "--iface", "lo"]),
        "lo does not carry Ethernet frames",
    )
}

#[test]
fn unknown_interface() -> Result<()> {
    let lab = Lab::new()?;
    assert_clear_error(
        &lab.smtpgate(&["run", "--iface", "nosuch0"]),
        "no network interface named 'nosuch0'",
    )
}

#[test]
fn nothing_attached_yet() -> Result<()> {
    let lab = Lab::new()?;
    for args in [
        &["allow", "192.0.2.2"][..],
        &["revoke", "192.0.2.2"],
        &["list"],
        &["stats"],
        &["detach"],
    ] {
        assert_clear_error(&lab.smtpgate(args), "nothing is attached yet")?;
    }
    Ok(())
}

#[test]
fn not_root() -> Result<()> {
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(smtpgate_bin())
        .args(["list"])
        .output()?;
    assert_clear_error(&out, "must run as root")
}

#[test]
fn bpf_not_permitted() -> Result<()> {
    let lab = Lab::new()?;
    // Root, but without the capabilities BPF needs.
    let out = lab
        .server
        .command("setpriv")
        .args([
            "--inh-caps=-all",
            "--bounding-set=-bpf,-sys_admin,-net_admin,-perfmon",
        ])
        .arg(smtpgate_bin())
        .args(["run", "--iface", &lab.server_iface, "--bpffs-dir"])
        .arg(lab.bpffs.pin_dir())
        .output()?;
    assert_clear_error(&out, "BPF not permitted")
}

#[test]
fn foreign_xdp_program() -> Result<()> {
    let lab = Lab::new()?;
    let object = smtpgate_tests::foreign_xdp_object()?;
    lab.server.ip(&[
        "link",
        "set",
        "dev",
        &lab.server_iface,
        "xdpdrv",
        "obj",
        object.to_str().unwrap(),
        "sec",
        "xdp",
    ])?;
    assert_clear_error(
        &lab.smtpgate(&["run", "--iface", &lab.server_iface]),
        "already has an XDP program that smtpgate does not own",
    )
}

#[test]
fn trust_hosts_patterns_and_reports_are_checked() -> Result<()> {
    let lab = Lab::new()?;
    let scratch = smtpgate_tests::Scratch::new()?;
    let log = scratch.path("mail.log");
    std::fs::write(&log, "")?;
    let log = log.to_str().unwrap();
    assert_clear_error(
        &lab.smtpgate(&[
            "run",
            "--iface",
            &lab.server_iface,
            "--trust-host",
            "mx 1",
            "--check-config",
        ]),
        "trust-host: 'mx 1' is not a host name",
    )?;
    assert_clear_error(
        &lab.smtpgate(&["check-log", "--trust-host", "", log]),
        "trust-host: '' is not a host name",
    )?;
    assert_clear_error(
        &lab.smtpgate(&["check-log", "--pattern", "from (?P<ip>", log]),
        "invalid custom pattern",
    )?;
    // notify refuses what the agent would refuse before it connects.
    let missing = scratch.path("no.sock");
    let notify = |args: &[&str]| {
        std::process::Command::new(smtpgate_bin())
            .arg("notify")
            .args(args)
            .arg("--socket")
            .arg(&missing)
            .output()
    };
    assert_clear_error(&notify(&["0.0.0.0"])?, "0.0.0.0: unspecified address")?;
    assert_clear_error(&notify(&["224.0.0.1"])?, "multicast address")?;
    assert_clear_error(
        &notify(&["192.0.2.9", "--user", "a b"])?,
        "service and user must be single words",
    )?;
    assert_clear_error(
        &notify(&["192.0.2.9", "--service", "smtp"])?,
        "unknown service 'smtp'",
    )?;
    assert_clear_error(
        &notify(&["192.0.2.9"])?,
        "is `smtpgate run --listen-unix` running?",
    )?;
    Ok(())
}

/// Pins another program made, or a newer smtpgate, are never acted on.
#[test]
fn pins_smtpgate_did_not_make_are_refused() -> Result<()> {
    let lab = Lab::new()?;
    let pins = lab.bpffs.pin_dir();
    std::fs::create_dir_all(&pins)?;
    let pin = |name: &str, value: &str| {
        smtpgate_tests::sh(
            "bpftool",
            &[
                "map",
                "create",
                &pins.join(name).to_string_lossy(),
                "type",
                "hash",
                "key",
                "16",
                "value",
                value,
                "entries",
                "16",
                "name",
                name,
            ],
        )
    };
    pin("GRANTS_V9", "8")?;
    assert_clear_error(
        &lab.smtpgate(&["list"]),
        "set up by a newer smtpgate (it pins GRANTS_V9)",
    )?;
    // A map of this version's name but another program's making.
    pin(smtpgate_common::GRANTS_MAP, "8")?;
    for command in [
        &["list"][..],
        &["allow", "192.0.2.9"],
        &["revoke", "--user", "x"],
    ] {
        assert_clear_error(&lab.smtpgate(command), "is not a grant map smtpgate made")?;
    }
    Ok(())
}

/// A pin group that does not exist stops `run` before it touches the
/// kernel.
#[test]
fn unknown_pin_group() -> Result<()> {
    let lab = Lab::new()?;
    assert_clear_error(
        &lab.smtpgate(&[
            "run",
            "--iface",
            &lab.server_iface,
            "--pin-group",
            "sg-no-group",
        ]),
        "pin-group: no group named 'sg-no-group'",
    )?;
    ensure!(
        !lab.bpffs.pin_dir().exists(),
        "the pin directory was made all the same"
    );
    Ok(())
}
