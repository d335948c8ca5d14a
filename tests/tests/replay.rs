//! Replay of the SYN refused just before a grant (issue 15): what the
//! kernel program records, through BPF_PROG_TEST_RUN, and how a slot is
//! claimed; then real connects through the gate, on both hooks and both
//! ways of replaying, and a mail client's "send and receive" against real
//! Dovecot and Postfix.

use std::{
    collections::HashMap,
    io::{self, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    sync::Barrier,
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use smtpgate::gate::{
    attach::Variant,
    clock,
    replay::{self, RefusedSyns},
};
use smtpgate_common::{replay::slot, GateConfig, KeyWords, SynBudget, FLAG_MONITOR, FLAG_RESET};
use smtpgate_tests::{
    assert_echoes,
    frames::{fill_checksums, Packet, DEST_OPTS, ETH_P_8021Q},
    handshake::{retransmissions, Capture},
    logs,
    mail::{send_on, LabExt, Login, MailLab, NEIGHBOUR, PASSWORD, USER},
    probe::{flood_source, Flood},
    testrun::{LoadedGate, TC_ACT_OK, TC_ACT_SHOT, TICK, XDP_DROP, XDP_PASS, XDP_TX},
    Family, Lab, ANSWERED, DROPPED, SMTP,
};

const SERVER: &str = "192.0.2.1";
const GRANTED: &str = "192.0.2.2";
const STRANGER: &str = "198.51.100.1";
const EXPIRED: &str = "198.51.100.9";
const OVER_BUDGET: &str = "198.51.100.10";
const SERVER6: &str = "2001:db8::1";
const STRANGER6: &str = "2001:db8:bad:1::77";
/// The grant prefix of the IPv6 rows: a stranger's SYN lands in its /64's
/// slot.
const V6_PREFIX: u8 = 64;
const WINDOW: Duration = Duration::from_secs(3);

/// The test runs' interface: the loopback device of this namespace.
const LOOPBACK: u32 = 1;

#[derive(Clone, Copy, Debug)]
enum Hook {
    Xdp,
    Tc,
}

/// A gate recording refused SYNs for `window_ms` with `flags`, port 25
/// gated, and a live grant, an expired one and one over its budget.
fn gate(flags: u32, window_ms: u32) -> Result<LoadedGate> {
    gate_variant(flags, window_ms, None)
}

/// [`gate`], the given variant of the program.
fn gate_variant(flags: u32, window_ms: u32, variant: Option<Variant>) -> Result<LoadedGate> {
    let mut config = GateConfig::new(flags, &[25]);
    config.set_v6_grant_prefix(V6_PREFIX);
    config.replay_window_ms = window_ms;
    let mut gate = LoadedGate::configured(&config, variant)?;
    gate.grant(GRANTED, Duration::from_secs(600))?;
    gate.grant(EXPIRED, Duration::from_nanos(1))?;
    let one_syn = SynBudget::new(1, 3_600_000_000_000, 1);
    let expiry = clock::expiry_after(Duration::from_secs(600));
    gate.grants
        .grant_until(OVER_BUDGET.parse()?, expiry, one_syn, None)?;
    std::thread::sleep(2 * TICK);
    Ok(gate)
}

fn run(gate: &LoadedGate, hook: Hook, frame: &[u8]) -> Result<bool> {
    Ok(match hook {
        Hook::Xdp => {
            let action = gate.run_xdp(frame)?.action;
            ensure!(
                [XDP_DROP, XDP_PASS, XDP_TX].contains(&action),
                "XDP action {action}"
            );
            action == XDP_PASS
        }
        Hook::Tc => {
            let action = gate.run_tc(frame)?.action;
            ensure!(
                action == TC_ACT_SHOT || action == TC_ACT_OK,
                "TC action {action}"
            );
            action == TC_ACT_OK
        }
    })
}

/// The grant key of `ip`.
fn key(ip: &str) -> [u8; 16] {
    replay::grant_key(ip.parse().unwrap(), V6_PREFIX)
}

fn table(gate: &LoadedGate) -> Result<RefusedSyns> {
    RefusedSyns::open_pinned(&gate.pins())
}

/// How the replay counters moved while `f` ran.
fn moved(gate: &LoadedGate, f: impl FnOnce() -> Result<()>) -> Result<HashMap<&'static str, u64>> {
    let before = gate.counters()?;
    f()?;
    let after = gate.counters()?;
    Ok(["syns_recorded", "replay_slot_busy"]
        .into_iter()
        .map(|name| (name, after[name] - before[name]))
        .collect())
}

/// A SYN that carries `data` after its headers (TCP Fast Open).
fn with_data(packet: Packet, data: &[u8]) -> Vec<u8> {
    let mut frame = packet.build();
    let total = u16::from_be_bytes([frame[16], frame[17]]) + data.len() as u16;
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    frame.extend_from_slice(data);
    frame
}

/// Each row: a frame, whether the gate passes it, and whether it is
/// recorded (then claimed back byte for byte, once).
fn rows() -> Vec<(&'static str, Vec<u8>, &'static str, bool, bool)> {
    let syn = |src| Packet::syn(src, SERVER, 25);
    vec![
        (
            "ipv4 stranger",
            syn(STRANGER).build(),
            STRANGER,
            false,
            true,
        ),
        (
            "ipv4 stranger, no options",
            syn(STRANGER).with(|p| p.tcp_options = 0).build(),
            STRANGER,
            false,
            true,
        ),
        (
            "ipv4 stranger, 40 bytes of options",
            syn(STRANGER).with(|p| p.tcp_options = 40).build(),
            STRANGER,
            false,
            true,
        ),
        (
            "ipv6 stranger, in its /64's slot",
            Packet::syn(STRANGER6, SERVER6, 25).build(),
            STRANGER6,
            false,
            true,
        ),
        ("expired grant", syn(EXPIRED).build(), EXPIRED, false, true),
        ("granted", syn(GRANTED).build(), GRANTED, true, false),
        (
            "over its budget: a granted source gains nothing",
            syn(OVER_BUDGET).build(),
            OVER_BUDGET,
            false,
            false,
        ),
        (
            "802.1q tagged",
            syn(STRANGER)
                .with(|p| p.vlan_tags = vec![ETH_P_8021Q])
                .build(),
            STRANGER,
            false,
            false,
        ),
        (
            "ipv4 options",
            syn(STRANGER).with(|p| p.ipv4_options = 4).build(),
            STRANGER,
            false,
            false,
        ),
        (
            "ipv6 extension header",
            Packet::syn(STRANGER6, SERVER6, 25)
                .with(|p| p.ipv6_ext = vec![DEST_OPTS])
                .build(),
            STRANGER6,
            false,
            false,
        ),
        (
            "data after the header",
            with_data(syn(STRANGER), b"HELO"),
            STRANGER,
            false,
            false,
        ),
        (
            "ungated port",
            Packet::syn(STRANGER, SERVER, 2525).build(),
            STRANGER,
            true,
            false,
        ),
    ]
}

/// Every variant of the program: kernels before 5.18 copy the SYN byte
/// by byte.
fn recording(hook: Hook) -> Result<()> {
    for variant in Variant::ALL {
        recording_in(hook, variant).with_context(|| format!("{variant:?}"))?;
    }
    Ok(())
}

fn recording_in(hook: Hook, variant: Variant) -> Result<()> {
    let gate = gate_variant(0, 3000, Some(variant))?;
    let table = table(&gate)?;
    // The budget's one SYN goes first.
    ensure!(run(
        &gate,
        hook,
        &Packet::syn(OVER_BUDGET, SERVER, 25).build()
    )?);
    for (name, mut frame, source, passes, recorded) in rows() {
        if recorded {
            // What is recorded is replayed with a checksum computed afresh.
            fill_checksums(&mut frame);
        }
        let mut passed = false;
        let moved = moved(&gate, || {
            passed = run(&gate, hook, &frame)?;
            Ok(())
        })?;
        ensure!(passed == passes, "{hook:?} {name}: passed {passed}");
        ensure!(
            moved["syns_recorded"] == u64::from(recorded),
            "{hook:?} {name}: {moved:?}"
        );
        let claimed = table.claim(&key(source), V6_PREFIX, WINDOW);
        ensure!(
            claimed.is_some() == recorded,
            "{hook:?} {name}: claimed {claimed:?}"
        );
        let Some((syn, refused)) = claimed else {
            continue;
        };
        ensure!(
            replay::frame(&syn).as_deref() == Some(&frame[..]),
            "{hook:?} {name}: recorded {:02x?}, sent {frame:02x?}",
            replay::frame(&syn)
        );
        ensure!(syn.ifindex == LOOPBACK, "{hook:?} {name}: {}", syn.ifindex);
        let age = clock::monotonic_ns().saturating_sub(refused);
        ensure!(age < 1_000_000_000, "{hook:?} {name}: refused {age} ns ago");
        ensure!(
            table.claim(&key(source), V6_PREFIX, WINDOW).is_none(),
            "{hook:?} {name}: claimed twice"
        );
    }
    Ok(())
}

#[test]
fn xdp_records_what_it_can_replay_as_it_came() -> Result<()> {
    recording(Hook::Xdp)
}

#[test]
fn tc_records_what_it_can_replay_as_it_came() -> Result<()> {
    recording(Hook::Tc)
}

/// Replay off, monitor mode (nothing dropped) and reset mode (the client
/// is told at once): nothing is recorded.
#[test]
fn nothing_is_recorded_unless_dropped_silently_with_replay_on() -> Result<()> {
    for (flags, window_ms) in [(0, 0), (FLAG_MONITOR, 3000), (FLAG_RESET, 3000)] {
        let gate = gate(flags, window_ms)?;
        let frame = Packet::syn(STRANGER, SERVER, 25).build();
        let moved = moved(&gate, || run(&gate, Hook::Xdp, &frame).map(drop))?;
        ensure!(
            moved["syns_recorded"] == 0,
            "flags {flags:#x}, window {window_ms} ms: {moved:?}"
        );
        ensure!(table(&gate)?
            .claim(&key(STRANGER), V6_PREFIX, WINDOW)
            .is_none());
    }
    Ok(())
}

/// Two IPv4 strangers whose SYNs share a slot.
fn sharing_a_slot() -> (String, String) {
    let mut seen = HashMap::new();
    for net in ["198.51.100", "203.0.113"] {
        for host in 1..=254 {
            let ip = format!("{net}.{host}");
            let (index, _) = slot(KeyWords::of(&key(&ip)));
            if let Some(other) = seen.insert(index, ip.clone()) {
                return (other, ip);
            }
        }
    }
    panic!("no two test addresses share a slot");
}

/// A slot keeps the first SYN it takes: the same source's next one is not
/// recorded, another source's finds the slot busy, and a claim for the
/// other source leaves it alone. Claimed, or freed once older than the
/// window, the slot takes the next SYN.
#[test]
fn a_slot_keeps_its_first_syn_until_claimed_or_expired() -> Result<()> {
    let (first, second) = sharing_a_slot();
    let syn = |src: &str, sport| {
        let mut frame = Packet::syn(src, SERVER, 25)
            .with(|p| p.sport = sport)
            .build();
        fill_checksums(&mut frame);
        frame
    };
    let claimed = |table: &RefusedSyns, src: &str| {
        table
            .claim(&key(src), V6_PREFIX, WINDOW)
            .and_then(|(syn, _)| replay::frame(&syn))
    };
    let gate = gate(0, 3000)?;
    let table = table(&gate)?;
    let held = sent(
        &gate,
        &[syn(&first, 40001), syn(&first, 40002), syn(&second, 40003)],
    )?;
    ensure!(
        (held["syns_recorded"], held["replay_slot_busy"]) == (1, 1),
        "a taken slot: {held:?}"
    );
    ensure!(
        claimed(&table, &second).is_none(),
        "claimed {first}'s SYN for {second}"
    );
    ensure!(
        claimed(&table, &first) == Some(syn(&first, 40001)),
        "the first SYN was not kept"
    );
    let free = sent(&gate, &[syn(&second, 40004)])?;
    ensure!(
        (free["syns_recorded"], free["replay_slot_busy"]) == (1, 0),
        "a claimed slot: {free:?}"
    );

    let short = Duration::from_millis(1);
    ensure!(
        table.free_expired(WINDOW) == 0,
        "freed a SYN within the window"
    );
    std::thread::sleep(2 * TICK);
    ensure!(
        table.claim(&key(&second), V6_PREFIX, short).is_none(),
        "a SYN older than the window was claimed"
    );
    ensure!(table.free_expired(short) == 1, "the old SYN was not freed");
    let freed = sent(&gate, &[syn(&first, 40005)])?;
    ensure!(
        (freed["syns_recorded"], freed["replay_slot_busy"]) == (1, 0),
        "a freed slot: {freed:?}"
    );
    ensure!(claimed(&table, &first) == Some(syn(&first, 40005)));
    Ok(())
}

/// How the replay counters moved while `frames` went through XDP.
fn sent(gate: &LoadedGate, frames: &[Vec<u8>]) -> Result<HashMap<&'static str, u64>> {
    moved(gate, || {
        frames
            .iter()
            .try_for_each(|frame| run(gate, Hook::Xdp, frame).map(drop))
    })
}

// Real packets: a client in its namespace connects through the gate while
// its grant is on the way.

/// How the test grants the client once its first SYN was refused.
#[derive(Clone, Copy, Debug)]
enum Grant {
    /// A POP3 login line on the agent's `--log -`.
    Login,
    /// `smtpgate allow`, a process of its own.
    Allow,
}

/// The agent's replays along `path`, from its metrics.
fn replays(lab: &Lab, path: &str) -> Result<u64> {
    lab.metric(&format!("smtpgate_syns_replayed_total{{path=\"{path}\"}}"))
}

/// Grants the lab's client over `family` as `how` says, and waits until
/// the agent (or `allow`) is done with the grant; returns how many SYNs
/// the grant replayed along `path`.
fn grant(lab: &mut Lab, family: Family, how: Grant, path: &str) -> Result<u64> {
    let client = lab.client_addr(family).to_string();
    grant_to(lab, &client, how, path)
}

/// Like [`grant`], for the address `client`.
fn grant_to(lab: &mut Lab, client: &str, how: Grant, path: &str) -> Result<u64> {
    match how {
        Grant::Login => {
            let (logins, before) = (lab.agent_lines("granted"), replays(lab, path)?);
            let stdin = lab.agent_stdin.as_mut().context("the agent's stdin")?;
            stdin.write_all(logs::dovecot_login("customer", client).as_bytes())?;
            stdin.flush()?;
            ensure!(
                wait_for(|| Ok(lab.agent_lines("granted") > logins))?,
                "the login did not grant"
            );
            Ok(replays(lab, path)? - before)
        }
        Grant::Allow => {
            let out = lab.smtpgate(&["allow", client]);
            let said = String::from_utf8_lossy(&out.stderr);
            ensure!(out.status.success(), "allow failed: {said}");
            let replayed = format!("before the grant ({path})");
            Ok(said.lines().filter(|l| l.contains(&replayed)).count() as u64)
        }
    }
}

/// Polls `done` every 10 ms for at most two seconds.
fn wait_for(mut done: impl FnMut() -> Result<bool>) -> Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if done()? {
            return Ok(true);
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(false)
}

/// An agent on `hook` taking logins on standard input, with its metrics,
/// an echo server on port 25 and `flags` more, on a server that filters
/// by reverse path strictly.
fn lab(hook: &str, flags: &[&str], env: &[(&str, &str)]) -> Result<Lab> {
    let mut lab = Lab::new()?;
    lab.echo_server(SMTP)?;
    // Strict reverse-path filtering, which a SYN replayed on the wrong
    // interface (or one the loopback device checked) would fail.
    lab.server.run(|| {
        std::fs::write("/proc/sys/net/ipv4/conf/all/rp_filter", "1").context("setting rp_filter")
    })??;
    let mut all = vec![
        "--attach",
        hook,
        "--log",
        "-",
        "--metrics-listen",
        "127.0.0.1:9925",
    ];
    all.extend_from_slice(flags);
    lab.start_agent_with_env(&all, env)?;
    Ok(lab)
}

/// A connect under way in the client namespace: the stream and how long
/// it took to connect.
type Connecting = thread::JoinHandle<Result<io::Result<(TcpStream, Duration)>>>;

/// Starts a connect from the lab's client over `family` to port 25 that
/// waits at most `timeout`, and waits until the gate has recorded its
/// refused SYN.
fn connect_refused(lab: &Lab, family: Family, timeout: Duration) -> Result<Connecting> {
    let recorded = lab.counter("syns_recorded")?;
    let server = SocketAddr::new(lab.server_addr(family), SMTP);
    let connect = lab.client.spawn(move || {
        let start = Instant::now();
        TcpStream::connect_timeout(&server, timeout).map(|stream| (stream, start.elapsed()))
    });
    ensure!(
        wait_for(|| Ok(lab.counter("syns_recorded")? > recorded))?,
        "the refused SYN was not recorded"
    );
    Ok(connect)
}

/// The client's connect starts before its grant: the gate refuses and
/// records the SYN; the grant replays it along `path`, and the connection
/// completes on that first SYN, with a SYN-ACK agreeing with its options.
/// A second grant replays nothing.
fn connects_on_its_first_syn(
    hook: &str,
    family: Family,
    how: Grant,
    path: &str,
    env: &[(&str, &str)],
) -> Result<()> {
    let mut lab = lab(hook, &[], env)?;
    let capture = Capture::start(&lab)?;
    let connect = connect_refused(&lab, family, ANSWERED)?;
    let asked = Instant::now();
    let replayed = grant(&mut lab, family, how, path)?;
    let (mut stream, delay) = connected(connect)?;
    let handshake = capture.handshake(Some(stream.local_addr()?.port()), ANSWERED)?;
    println!(
        "{hook} {family:?} {how:?} ({path}): connected {} ms after the connect began, {} ms after the grant was asked for; SYN to SYN-ACK on the wire {:.1} ms, {} SYN(s)",
        delay.as_millis(),
        asked.elapsed().as_millis(),
        handshake.delay().as_secs_f64() * 1000.0,
        handshake.syns.len()
    );
    ensure!(replayed == 1, "the grant replayed {replayed} SYNs");
    handshake.require_answered_first_syn()?;
    ensure!(
        retransmissions(&stream)? == 0,
        "the client had to retransmit its SYN"
    );
    assert_echoes(&mut stream, b"EHLO customer\r\n")?;
    let again = grant(&mut lab, family, how, path)?;
    ensure!(again == 0, "a second grant replayed {again} SYNs");
    Ok(())
}

const LIVE: &str = "live_frame";
const RAW: &str = "raw_socket";
const FORCE_RAW: &[(&str, &str)] = &[("SMTPGATE_REPLAY_RAW", "1")];

#[test]
fn ipv4_xdp_replays_a_live_frame_on_login() -> Result<()> {
    connects_on_its_first_syn("xdp", Family::V4, Grant::Login, LIVE, &[])
}

#[test]
fn ipv6_xdp_replays_a_live_frame_on_login() -> Result<()> {
    connects_on_its_first_syn("xdp", Family::V6, Grant::Login, LIVE, &[])
}

#[test]
fn ipv4_tc_replays_a_live_frame_on_allow() -> Result<()> {
    connects_on_its_first_syn("tc", Family::V4, Grant::Allow, LIVE, &[])
}

#[test]
fn ipv6_tc_replays_a_live_frame_on_login() -> Result<()> {
    connects_on_its_first_syn("tc", Family::V6, Grant::Login, LIVE, &[])
}

/// Kernels before 5.18 have no live frames: the gate judges the SYN in an
/// ordinary test run and a raw socket hands it to the local stack, which
/// answers it as it would the retransmission.
#[test]
fn ipv4_xdp_replays_through_a_raw_socket_without_live_frames() -> Result<()> {
    connects_on_its_first_syn("xdp", Family::V4, Grant::Login, RAW, FORCE_RAW)
}

#[test]
fn ipv6_tc_replays_through_a_raw_socket_without_live_frames() -> Result<()> {
    connects_on_its_first_syn("tc", Family::V6, Grant::Login, RAW, FORCE_RAW)
}

/// "Send and receive" with real servers: swaks opens the SMTP transaction
/// and curl logs in over POP3 while its SYN waits. curl starts once the
/// gate has refused swaks' SYN, not at the same instant: perl starts slower
/// than Dovecot logs a customer in, and a grant that lands before the SYN
/// leaves nothing to replay. The login's grant replays the SYN, the
/// message is delivered and fetched back, and the SYN to SYN-ACK delay on
/// the client's wire is printed.
#[test]
fn send_and_receive_through_dovecot_and_postfix() -> Result<()> {
    let mail = MailLab::start("1m", &["--metrics-listen", "127.0.0.1:9925"])?;
    let lab = &mail.lab;
    let capture = Capture::start(lab)?;
    let subject = format!("send and receive {}", smtpgate_tests::unique_name());
    let recorded = lab.counter("syns_recorded")?;
    let (sent, login) = thread::scope(|s| {
        let smtp = s.spawn(|| mail.send_mail(Family::V4, &subject));
        let pop3 = s.spawn(|| {
            ensure!(
                wait_for(|| Ok(lab.counter("syns_recorded")? > recorded))?,
                "swaks' SYN was not recorded"
            );
            mail.pop3_login(Family::V4, PASSWORD)
        });
        (smtp.join(), pop3.join())
    });
    let login = login.map_err(|_| anyhow::anyhow!("the POP3 thread panicked"))??;
    ensure!(login == Login::Accepted, "Dovecot refused the customer");
    let id = sent.map_err(|_| anyhow::anyhow!("the SMTP thread panicked"))??;
    let handshake = capture.handshake(None, ANSWERED)?;
    println!(
        "send and receive: swaks' SYN to its SYN-ACK {:.1} ms, {} SYN(s) on the wire",
        handshake.delay().as_secs_f64() * 1000.0,
        handshake.syns.len()
    );
    handshake.require_answered_first_syn()?;
    ensure!(replays(lab, LIVE)? == 1, "the SYN was not replayed");
    mail.postfix
        .wait_for_delivery(&id, Duration::from_secs(5))?;
    let fetched = mail.fetch_mail(Family::V4)?;
    ensure!(
        fetched
            .iter()
            .any(|m| m.contains(&format!("Subject: {subject}"))),
        "the message was not fetched back"
    );
    Ok(())
}

/// The stream of a connect that completed.
fn connected(connect: Connecting) -> Result<(TcpStream, Duration)> {
    connect
        .join()
        .map_err(|_| anyhow::anyhow!("the connect thread panicked"))??
        .context("the connect failed")
}

/// A source that gets no grant is never replayed, whoever else is granted
/// meanwhile.
#[test]
fn a_source_without_a_grant_is_not_replayed() -> Result<()> {
    let mut lab = lab("xdp", &[], &[])?;
    let connect = connect_refused(&lab, Family::V4, DROPPED)?;
    let other = grant_to(&mut lab, "192.0.2.3", Grant::Login, LIVE)?;
    let outcome = connect
        .join()
        .map_err(|_| anyhow::anyhow!("the connect thread panicked"))??;
    ensure!(
        matches!(&outcome, Err(e) if e.kind() == io::ErrorKind::TimedOut),
        "the connect without a grant ended {outcome:?}"
    );
    ensure!(other == 0, "another source's grant replayed {other} SYNs");
    ensure!(replays(&lab, LIVE)? == 0);
    Ok(())
}

/// A grant that lands after the window replays nothing: the client's
/// retransmission gets in, as without replay, and the agent has freed the
/// expired SYN's slot.
#[test]
fn a_grant_after_the_window_replays_nothing() -> Result<()> {
    let mut lab = lab("tc", &["--replay-window", "100ms"], &[])?;
    let capture = Capture::start(&lab)?;
    let connect = connect_refused(&lab, Family::V6, ANSWERED)?;
    // Past the window, well before the retransmission at one second.
    thread::sleep(Duration::from_millis(400));
    let replayed = grant(&mut lab, Family::V6, Grant::Login, LIVE)?;
    let (stream, delay) = connected(connect)?;
    let handshake = capture.handshake(Some(stream.local_addr()?.port()), ANSWERED)?;
    println!(
        "a grant after the window: connected after {} ms, {} SYN(s) on the wire",
        delay.as_millis(),
        handshake.syns.len()
    );
    ensure!(replayed == 0, "the grant replayed {replayed} SYNs");
    ensure!(
        retransmissions(&stream)? >= 1 && handshake.syns.len() >= 2,
        "the first SYN got in"
    );
    ensure!(
        lab.metric("smtpgate_recorded_syns_expired_total")? >= 1,
        "the agent did not free the expired SYN's slot"
    );
    Ok(())
}

/// A customer's send and receive from `source` as `user`: the SMTP connect
/// and the POP3 login at the same instant, then a message through the
/// connection; returns the connect's retransmissions and how long it took.
fn send_and_receive(mail: &MailLab, source: IpAddr, user: &str) -> Result<(u32, Duration)> {
    let both = Barrier::new(2);
    let (connect, login) = thread::scope(|s| {
        let smtp = s.spawn(|| {
            both.wait();
            let start = Instant::now();
            let stream = mail.lab.connect_from(source, SMTP, ANSWERED);
            stream.map(|stream| (stream, start.elapsed()))
        });
        let pop3 = s.spawn(|| {
            both.wait();
            mail.pop3_login_as(user, source, PASSWORD)
        });
        (smtp.join(), pop3.join())
    });
    let login = login.map_err(|_| anyhow::anyhow!("the POP3 thread panicked"))??;
    ensure!(login == Login::Accepted, "Dovecot refused {user}");
    let (stream, delay) = connect
        .map_err(|_| anyhow::anyhow!("the SMTP thread panicked"))?
        .with_context(|| format!("the SMTP connect from {source}"))?;
    let retransmitted = retransmissions(&stream)?;
    let id = send_on(&stream, &format!("send and receive of {user}"))?;
    mail.postfix
        .wait_for_delivery(&id, Duration::from_secs(5))?;
    Ok((retransmitted, delay))
}

/// Under a SYN flood whose strangers hold their slots of the table, a
/// customer's send and receive through real Dovecot and Postfix
/// still completes: by replay, and for a neighbour whose slot a stranger
/// shares, by the retransmission. The test says which way each went.
#[test]
fn send_and_receive_completes_under_a_flood() -> Result<()> {
    let mail = MailLab::start("1m", &["--metrics-listen", "127.0.0.1:9925"])?;
    let lab = &mail.lab;
    let slot_of = |ip: IpAddr| slot(KeyWords::of(&replay::grant_key(ip, V6_PREFIX))).0;
    let flooded: Vec<u32> = (0..256).map(|n| slot_of(flood_source(n).into())).collect();
    let customer = lab.client_addr(Family::V4);
    ensure!(
        !flooded.contains(&slot_of(customer)),
        "the flood shares the customer's slot"
    );
    let neighbour = (3..=254)
        .map(|host| IpAddr::from([192, 0, 2, host]))
        .find(|&ip| flooded.contains(&slot_of(ip)))
        .context("no test address shares a slot with the flood")?;
    lab.add_client_address(&format!("{neighbour}/24"))?;
    let flood = Flood::start(lab);
    // Time for the flood to take the strangers' slots.
    thread::sleep(Duration::from_millis(300));
    let mut outcomes = Vec::new();
    for (who, source, user) in [
        ("customer", customer, USER),
        ("neighbour", neighbour, NEIGHBOUR),
    ] {
        let before = replays(lab, LIVE)?;
        let (retransmitted, delay) = send_and_receive(&mail, source, user)?;
        let replayed = replays(lab, LIVE)? - before;
        let how = if retransmitted == 0 {
            "by replay"
        } else {
            "by the retransmission"
        };
        println!(
            "under the flood, the {who} ({source}) sent and received {how}: connected after {} ms \
             ({replayed} replayed, {retransmitted} retransmitted)",
            delay.as_millis()
        );
        outcomes.push((replayed, retransmitted));
    }
    let frames = flood.end()?;
    println!(
        "flood: {frames} SYNs; recorded {}, not recorded for a busy slot {}",
        lab.counter("syns_recorded")?,
        lab.counter("replay_slot_busy")?
    );
    ensure!(frames > 1000, "the flood hardly ran");
    ensure!(
        outcomes[0] == (1, 0),
        "the customer, whose slot no stranger shares, was not replayed: {:?}",
        outcomes[0]
    );
    Ok(())
}
