//! Rollout modes and the packet path with real traffic over veth: VLAN and
//! QinQ frames sent raw, monitor mode, RST replies, the allowlist and the
//! destination filter.

use std::{
    io,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use smtpgate_tests::{
    frames::{Packet, ETH_P_8021AD, ETH_P_8021Q},
    raw::{mac_of, RawSocket},
    Family, Lab, ANSWERED, CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6, SMTP,
};

/// Sends a tagged SYN from the client's veth and reports whether the server
/// side saw it, i.e. whether XDP passed it. AF_PACKET taps run after XDP.
fn tagged_syn_arrives(
    lab: &Lab,
    src: &str,
    dst: &str,
    tags: Vec<u16>,
    marker_seq: u32,
) -> Result<bool> {
    let server_mac = mac_of(&lab.server, &lab.server_iface)?;
    let mut frame = Packet::syn(src, dst, SMTP)
        .with(|p| {
            p.vlan_tags = tags;
            p.seq = marker_seq
        })
        .build();
    frame[..6].copy_from_slice(&server_mac);
    let server_iface = lab.server_iface.clone();
    let watcher = lab.server.run(move || RawSocket::bind(&server_iface))??;
    let client_iface = lab.client_iface.clone();
    let sender = lab.client.run(move || RawSocket::bind(&client_iface))??;
    sender.send(&frame)?;
    watcher.saw(&marker_seq.to_be_bytes(), Duration::from_millis(500))
}

#[test]
fn vlan_and_qinq_frames_are_gated() -> Result<()> {
    let lab = Lab::gated(&[])?;
    lab.smtpgate_ok(&["allow", CLIENT_V4])?;
    lab.smtpgate_ok(&["allow", CLIENT_V6])?;
    let before = lab.counter("dropped_no_grant")?;
    let cases = [
        (
            "802.1Q stranger",
            "198.51.100.1",
            SERVER_V4,
            vec![ETH_P_8021Q],
            false,
        ),
        (
            "802.1Q granted",
            CLIENT_V4,
            SERVER_V4,
            vec![ETH_P_8021Q],
            true,
        ),
        (
            "QinQ stranger",
            "198.51.100.1",
            SERVER_V4,
            vec![ETH_P_8021AD, ETH_P_8021Q],
            false,
        ),
        (
            "QinQ granted",
            CLIENT_V4,
            SERVER_V4,
            vec![ETH_P_8021AD, ETH_P_8021Q],
            true,
        ),
        (
            "802.1Q IPv6 stranger",
            "2001:db8:bad::1",
            SERVER_V6,
            vec![ETH_P_8021Q],
            false,
        ),
        (
            "QinQ IPv6 granted",
            CLIENT_V6,
            SERVER_V6,
            vec![ETH_P_8021AD, ETH_P_8021Q],
            true,
        ),
    ];
    for (i, (name, src, dst, tags, arrives)) in cases.into_iter().enumerate() {
        let seen = tagged_syn_arrives(&lab, src, dst, tags, 0xC0FF_EE00 + i as u32)?;
        ensure!(
            seen == arrives,
            "{name}: arrived={seen}, expected {arrives}"
        );
    }
    ensure!(
        lab.counter("dropped_no_grant")? == before + 3,
        "three tagged strangers should be counted"
    );
    Ok(())
}

#[test]
fn monitor_mode_passes_everything_and_counts() -> Result<()> {
    let lab = Lab::gated(&["--mode", "monitor"])?;
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("monitor mode must not drop")?;
    lab.connect(Family::V6, SMTP, ANSWERED)
        .context("monitor mode must not drop (IPv6)")?;
    ensure!(
        lab.counter("monitor_would_drop")? >= 2,
        "would-drops not counted"
    );
    ensure!(
        lab.counter("dropped_no_grant")? == 0,
        "monitor mode counted a real drop"
    );
    Ok(())
}

/// Native XDP_TX on a veth hands the frame to the peer's XDP receive path,
/// which exists only while the peer has an XDP program of its own; a
/// physical NIC transmits it directly. Any pass-through program will do.
fn peer_accepts_xdp_tx(lab: &Lab) -> Result<()> {
    let object = smtpgate_tests::foreign_xdp_object()?;
    lab.client.ip(&[
        "link",
        "set",
        "dev",
        &lab.client_iface,
        "xdpdrv",
        "obj",
        object.to_str().unwrap(),
        "sec",
        "xdp",
    ])?;
    Ok(())
}

#[test]
fn reset_mode_refuses_at_once() -> Result<()> {
    assert_refused_at_once(&["--action", "reset"])
}

#[test]
fn reset_mode_refuses_at_once_in_skb_mode() -> Result<()> {
    assert_refused_at_once(&["--action", "reset", "--xdp-mode", "skb"])
}

fn assert_refused_at_once(flags: &[&str]) -> Result<()> {
    let lab = Lab::gated(flags)?;
    peer_accepts_xdp_tx(&lab)?;
    for family in [Family::V4, Family::V6] {
        let started = Instant::now();
        match lab.connect(family, SMTP, ANSWERED) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            other => anyhow::bail!("{family:?}: expected an immediate refusal, got {other:?}"),
        }
        // A dropped SYN would take a second or more (retransmission).
        ensure!(
            started.elapsed() < Duration::from_millis(900),
            "{family:?}: refusal took {:?}",
            started.elapsed()
        );
    }
    ensure!(lab.counter("resets_sent")? >= 2, "RSTs not counted");
    lab.smtpgate_ok(&["allow", CLIENT_V4])?;
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("granted client under reset mode")?;
    Ok(())
}

#[test]
fn reset_needs_xdp() -> Result<()> {
    let lab = Lab::new()?;
    let out = lab.smtpgate(&[
        "run",
        "--iface",
        &lab.server_iface,
        "--attach",
        "tc",
        "--action",
        "reset",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("--action reset needs --attach xdp"),
        "{err}"
    );
    Ok(())
}

#[test]
fn allowlist_always_passes() -> Result<()> {
    let lab = Lab::gated(&[])?;
    lab.assert_no_answer(Family::V4, SMTP)?;
    lab.smtpgate_ok(&["allowlist", "add", "192.0.2.0/28", "2001:db8::/64"])?;
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("allowlisted IPv4 client")?;
    lab.connect(Family::V6, SMTP, ANSWERED)
        .context("allowlisted IPv6 client")?;
    ensure!(lab.counter("allowed_allowlist")? >= 2);

    let listed: serde_json::Value =
        serde_json::from_str(&lab.smtpgate_ok(&["allowlist", "list", "--json"])?)?;
    let entries: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["prefix"].as_str().unwrap().to_string(),
                e["origin"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (prefix, origin) in [
        ("192.0.2.0/28", "cli"),
        ("2001:db8::/64", "cli"),
        ("127.0.0.0/8", "config"),
        ("::1/128", "config"),
    ] {
        ensure!(
            entries.contains(&(prefix.to_string(), origin.to_string())),
            "{prefix} ({origin}) missing: {entries:?}"
        );
    }

    // A bad prefix changes nothing and says why.
    let out = lab.smtpgate(&["allowlist", "add", "198.51.100.0/24", "192.0.2.1/24"]);
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("did you mean 192.0.2.0/24"),
        "{err}"
    );
    ensure!(
        !lab.smtpgate_ok(&["allowlist", "list"])?
            .contains("198.51.100.0/24"),
        "partial add"
    );

    lab.smtpgate_ok(&["allowlist", "del", "192.0.2.0/28"])?;
    lab.assert_no_answer(Family::V4, SMTP)?;
    Ok(())
}

#[test]
fn destination_filter_gates_only_the_relay_address() -> Result<()> {
    let mut lab = Lab::new()?;
    // The server is the customers' relay on .1 and a public MX on .25.
    lab.server
        .ip(&["addr", "add", "192.0.2.25/24", "dev", &lab.server_iface])?;
    lab.echo_server(SMTP)?;
    lab.start_agent(&["--dest", SERVER_V4])?;
    lab.assert_no_answer(Family::V4, SMTP)?;
    let mx = std::net::SocketAddr::new("192.0.2.25".parse()?, SMTP);
    lab.client
        .run(move || std::net::TcpStream::connect_timeout(&mx, ANSWERED))?
        .context("the MX address must not be gated")?;
    Ok(())
}

/// `GET path` against the agent's metrics endpoint inside the server namespace.
fn scrape(lab: &Lab, path: &'static str) -> Result<String> {
    lab.server.run(move || -> Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect("127.0.0.1:9925")?;
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    })?
}

#[test]
fn prometheus_endpoint_exports_counters_and_health() -> Result<()> {
    let lab = Lab::gated(&[
        "--metrics-listen",
        "127.0.0.1:9925",
        "--sweep-interval",
        "1s",
    ])?;
    lab.assert_no_answer(Family::V4, SMTP)?;
    lab.smtpgate_ok(&["allow", CLIENT_V6])?;
    lab.connect(Family::V6, SMTP, ANSWERED)?;
    std::thread::sleep(Duration::from_millis(1200)); // one sweep counts the grant
    let body = scrape(&lab, "/metrics")?;
    ensure!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    let value = |series: &str| -> Option<u64> {
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    ensure!(
        value("smtpgate_syn_verdicts_total{verdict=\"dropped_no_grant\"}") >= Some(1),
        "{body}"
    );
    ensure!(
        value("smtpgate_syn_verdicts_total{verdict=\"allowed_grant\"}") == Some(1),
        "{body}"
    );
    for expected in [
        "smtpgate_frames_unjudged_total{reason=\"truncated\"} 0",
        "smtpgate_grants_live 1",
        "smtpgate_grant_capacity 1048576",
        "# TYPE smtpgate_frames counter",
        "smtpgate_agent_start_time_seconds ",
        "smtpgate_last_sweep_timestamp_seconds ",
    ] {
        ensure!(
            body.contains(expected),
            "metrics lack '{expected}':\n{body}"
        );
    }
    ensure!(
        scrape(&lab, "/")?.starts_with("HTTP/1.1 404"),
        "only /metrics is served"
    );
    Ok(())
}
