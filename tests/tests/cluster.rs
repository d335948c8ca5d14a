//! Many hosts: real POP3 logins on a POP host's Dovecot reach every
//! relay's gate in front of its Postfix through a real Redis stream,
//! survive the broker's restart, a relay's crash and a cut network, and
//! expire on every relay at the same moment, even on one whose wall clock
//! is hours off. A user one relay's quota catches is shut out of all.

use std::{
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use smtpgate_tests::{
    cluster::{auth_file, Farm, Redis, Relay, RelaySpec, Router, CUSTOMER, POP_USER, RELAY_USER},
    mail::{run_bounded, Sent, NEIGHBOUR, POLICY_FLAG, POLICY_RESTRICTION, USER},
    smtpgate_bin, tools, BpfFs, Scratch, ANSWERED, DROPPED,
};

/// The relays' addresses on the sites' network.
const RELAY_1: &str = "192.0.2.31";
const RELAY_2: &str = "192.0.2.32";
/// Two relays agree on an expiry to within this: half a round trip to the
/// broker on each, and a tick of each one's coarse clock.
const SAME_MOMENT: Duration = Duration::from_millis(50);
/// How far a grant may seem to outlast its TTL: the agent reads what is
/// left on the coarse clock, which lags the test's by up to a tick.
const TICK: Duration = Duration::from_millis(10);

/// Fails if a grant running out at `expires` outlasts a `ttl` from `logged`.
fn within_ttl(ip: &str, expires: Instant, logged: Instant, ttl: Duration) -> Result<()> {
    let limit = logged + ttl + TICK;
    ensure!(
        expires <= limit,
        "{ip}'s grant outlasts its TTL from the login by {:?}",
        expires.duration_since(logged + ttl)
    );
    Ok(())
}

/// When the grant covering `ip` on `relay` runs out, as an instant of the
/// test's clock (which is the relays' monotonic clock: one kernel).
fn expiry(relay: &Relay, ip: &str) -> Result<Instant> {
    let now = Instant::now();
    let left = relay
        .left(ip)?
        .with_context(|| format!("{ip} holds no grant on {}", relay.name))?;
    Ok(now + left)
}

/// Fails unless every relay lets `ip`'s grant run out within
/// [`SAME_MOMENT`] of the first; returns that moment.
fn same_expiry(relays: &[Relay], ip: &str) -> Result<Instant> {
    let first = expiry(&relays[0], ip)?;
    for relay in &relays[1..] {
        let other = expiry(relay, ip)?;
        let apart = if other > first {
            other - first
        } else {
            first - other
        };
        ensure!(
            apart < SAME_MOMENT,
            "{ip}'s grant runs out {apart:?} apart on {} and {}",
            relays[0].name,
            relay.name
        );
    }
    Ok(first)
}

/// `env FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f -3h`: a wall clock three
/// hours behind, over a monotonic clock left as it is (the kernel's gate
/// reads the real one whatever a process is told).
fn three_hours_behind() -> Result<Vec<String>> {
    Ok(vec![
        "env".into(),
        "FAKETIME_DONT_FAKE_MONOTONIC=1".into(),
        tools::require("faketime")?.display().to_string(),
        "-f".into(),
        "-3h".into(),
    ])
}

#[test]
fn a_login_opens_every_relay_within_a_second_and_expires_on_all_at_once() -> Result<()> {
    let skew = three_hours_behind()?;
    let skew: Vec<&str> = skew.iter().map(String::as_str).collect();
    let ttl = Duration::from_secs(8);
    let skewed = RelaySpec {
        wrapper: &skew,
        ..RelaySpec::new("r2", RELAY_2)
    };
    let farm = Farm::start("8s", &[RelaySpec::new("r1", RELAY_1), skewed])?;
    for relay in &farm.relays {
        ensure!(
            !farm.customer.reaches(relay, DROPPED)?,
            "{} let the customer in before any login",
            relay.name
        );
    }

    let login = farm.pop.login(&farm.customer, CUSTOMER, USER)?;
    let mut delays = Vec::new();
    for relay in &farm.relays {
        relay.wait_for_grant(CUSTOMER, Duration::from_secs(1))?;
        delays.push(login.started.elapsed());
    }
    eprintln!("from the POP3 login's start to each relay's kernel map: {delays:?}");
    let expires = same_expiry(&farm.relays, CUSTOMER)?;
    within_ttl(CUSTOMER, expires, login.done, ttl)?;

    // The skew is real: the second relay dates the grant three hours back.
    let listed: serde_json::Value =
        serde_json::from_str(&farm.relays[1].smtpgate(&["list", "--json"])?)?;
    let granted: jiff::Timestamp = listed[0]["granted_at"]
        .as_str()
        .context("no granted_at")?
        .parse()?;
    let behind = jiff::Timestamp::now().duration_since(granted);
    ensure!(
        behind > jiff::SignedDuration::from_hours(2),
        "the skewed relay's clock is only {behind:?} behind"
    );

    for relay in &farm.relays {
        let subject = format!("through {}", relay.name);
        match farm.customer.send_through(relay, &subject)? {
            Sent::Queued(id) => relay
                .postfix
                .wait_for_delivery(&id, Duration::from_secs(10))?,
            Sent::Deferred(reply) => bail!("{} deferred the customer: {reply}", relay.name),
        };
        ensure!(
            !farm.stranger.reaches(relay, DROPPED)?,
            "{} let the stranger in",
            relay.name
        );
    }

    let mut ran_out = Vec::new();
    for relay in &farm.relays {
        relay.wait_for_no_grant(CUSTOMER, Duration::from_secs(10))?;
        ran_out.push(Instant::now());
    }
    ensure!(
        ran_out[1].duration_since(expires) < Duration::from_millis(100),
        "the skewed relay kept the grant {:?} longer",
        ran_out[1].duration_since(expires)
    );
    for relay in &farm.relays {
        ensure!(
            !farm.customer.reaches(relay, DROPPED)?,
            "{} let the customer in after the TTL",
            relay.name
        );
        ensure!(
            !farm.stranger.reaches(relay, DROPPED)?,
            "{} let the stranger in",
            relay.name
        );
    }
    Ok(())
}

#[test]
fn outages_lose_no_grant_extend_none_and_a_revoke_made_during_a_cut_applies_on_return() -> Result<()>
{
    let ttl = Duration::from_secs(120);
    let relays = [RelaySpec::new("r1", RELAY_1), RelaySpec::new("r2", RELAY_2)];
    let mut farm = Farm::start("120s", &relays)?;
    let within = Duration::from_secs(1);
    let (alice, bob, carol, dave) = (
        "198.51.100.11",
        "198.51.100.12",
        "198.51.100.13",
        "198.51.100.14",
    );

    let alice_logged = farm.pop.login(&farm.customer, alice, USER)?.done;
    for relay in &farm.relays {
        relay.wait_for_grant(alice, within)?;
    }
    let alice_expires = same_expiry(&farm.relays, alice)?;

    // The broker restarts; a login meanwhile waits on the POP host.
    farm.redis.stop()?;
    let bob_logged = farm.pop.login(&farm.customer, bob, USER)?.done;
    thread::sleep(Duration::from_millis(500));
    for relay in &farm.relays {
        ensure!(relay.left(bob)?.is_none(), "bob was granted with no broker");
    }
    farm.redis.restart()?;
    for relay in &farm.relays {
        relay.wait_for_grant(bob, Duration::from_secs(15))?;
    }
    for relay in &mut farm.relays {
        let agent = relay.agent()?;
        agent.wait_logged("is back after", Duration::from_secs(15))?;
        let warned = agent.count_logged("retrying until it is back");
        ensure!(
            warned == 1,
            "{} warned {warned} times of one outage",
            relay.name
        );
    }
    ensure!(farm.pop.agent().count_logged("retrying until it is back") == 1);

    // A relay's agent is killed; a login meanwhile is read on restart.
    farm.relays[0].kill_agent()?;
    let carol_logged = farm.pop.login(&farm.customer, carol, USER)?.done;
    farm.relays[1].wait_for_grant(carol, within)?;
    ensure!(farm.relays[0].left(carol)?.is_none());
    farm.relays[0].start_agent()?;
    farm.relays[0].wait_for_grant(carol, Duration::from_secs(5))?;

    // A relay is cut off; a revoke and a login meanwhile apply on return.
    farm.router.set_port("r2", false)?;
    let auth = farm.pop_auth()?;
    farm.pop.publish(&["revoke", alice], &auth)?;
    let dave_logged = farm.pop.login(&farm.customer, dave, USER)?.done;
    farm.relays[0].wait_for_no_grant(alice, within)?;
    farm.relays[0].wait_for_grant(dave, within)?;
    thread::sleep(Duration::from_secs(2));
    ensure!(
        farm.relays[1].left(alice)?.is_some(),
        "the cut relay lost a grant"
    );
    ensure!(
        farm.relays[1].left(dave)?.is_none(),
        "the cut relay was not cut off"
    );
    farm.router.set_port("r2", true)?;
    let back = Instant::now();
    farm.relays[1].wait_for_no_grant(alice, Duration::from_secs(30))?;
    farm.relays[1].wait_for_grant(dave, Duration::from_secs(30))?;
    eprintln!(
        "the cut relay caught up {:?} after its return",
        back.elapsed()
    );

    // No grant was extended, on either relay, by any of it.
    within_ttl(alice, alice_expires, alice_logged, ttl)?;
    for (ip, logged) in [
        (bob, bob_logged),
        (carol, carol_logged),
        (dave, dave_logged),
    ] {
        within_ttl(ip, same_expiry(&farm.relays, ip)?, logged, ttl)?;
    }
    Ok(())
}

#[test]
fn grants_cross_tls_to_a_broker_of_a_private_authority() -> Result<()> {
    let farm = Farm::start_with("60s", &[RelaySpec::new("r1", RELAY_1)], true)?;
    let login = farm.pop.login(&farm.customer, CUSTOMER, USER)?;
    farm.relays[0].wait_for_grant(CUSTOMER, Duration::from_secs(1))?;
    eprintln!(
        "from the POP3 login's start to the grant, over TLS: {:?}",
        login.started.elapsed()
    );
    ensure!(farm.customer.reaches(&farm.relays[0], ANSWERED)?);
    Ok(())
}

#[test]
fn a_wrong_password_is_a_clear_error_at_start() -> Result<()> {
    let router = Router::new()?;
    let _redis = Redis::start(&router)?;
    let files = Scratch::labelled("bad-auth")?;
    let (ns, iface) = router.site_host("r1", RELAY_1)?;
    let bpffs = BpfFs::new(&smtpgate_tests::unique_name())?;
    let wrong = auth_file(&files, "wrong.auth", (RELAY_USER.0, "not-the-password"))?;
    let wrong_pop = auth_file(&files, "wrong-pop.auth", (POP_USER.0, "not-the-password"))?;
    let log = files.path("dovecot.log");
    std::fs::write(&log, "")?;
    let state = files.path("state");
    let wrong_str = wrong.display().to_string();
    let runs: [(Vec<String>, &PathBuf); 2] = [
        (
            vec![
                "run".into(),
                "--iface".into(),
                iface,
                "--bpffs-dir".into(),
                bpffs.pin_dir().display().to_string(),
                "--subscribe".into(),
                Redis::url(),
                "--redis-auth-file".into(),
                wrong_str,
            ],
            &wrong,
        ),
        (
            vec![
                "watch".into(),
                "--log".into(),
                log.display().to_string(),
                "--publish".into(),
                Redis::url(),
                "--redis-auth-file".into(),
                wrong_pop.display().to_string(),
            ],
            &wrong_pop,
        ),
    ];
    for (args, file) in runs {
        let out = run_bounded(
            ns.command(smtpgate_bin())
                .args(&args)
                .arg("--state-dir")
                .arg(&state),
            Duration::from_secs(20),
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success(),
            "smtpgate {} started: {stderr}",
            args[0]
        );
        let expected = format!("refused the credentials in {}", file.display());
        ensure!(
            stderr.contains(&expected) && stderr.to_lowercase().contains("authentication failed"),
            "smtpgate {}'s error does not say what is wrong: {stderr}",
            args[0]
        );
    }
    let pinned = std::fs::read_dir(bpffs.pin_dir()).map_or(0, Iterator::count);
    ensure!(pinned == 0, "the refused relay pinned {pinned} objects");
    Ok(())
}

/// Postfix on the first relay asks its agent about every recipient; the
/// user may send two in an hour.
const QUOTA_FLAGS: [&str; 3] = [POLICY_FLAG, "--user-quota", "2/1h"];

#[test]
fn a_user_one_relay_catches_over_quota_is_shut_out_of_every_relay_until_pardoned() -> Result<()> {
    let counting = RelaySpec {
        flags: &QUOTA_FLAGS,
        postfix: POLICY_RESTRICTION,
        ..RelaySpec::new("r1", RELAY_1)
    };
    let farm = Farm::start("10m", &[counting, RelaySpec::new("r2", RELAY_2)])?;
    let within = Duration::from_secs(1);
    let (second, third, neighbour) = ("198.51.100.8", "198.51.100.9", "198.51.100.10");
    farm.pop.login(&farm.customer, CUSTOMER, USER)?;
    for relay in &farm.relays {
        relay.wait_for_grant(CUSTOMER, within)?;
    }
    let counted = &farm.relays[0];
    for n in 1..=2 {
        let sent = farm
            .customer
            .send_through(counted, &format!("within quota {n}"))?;
        ensure!(
            matches!(sent, Sent::Queued(_)),
            "message {n} within the quota: {sent:?}"
        );
    }
    let over = farm.customer.send_through(counted, "over quota")?;
    ensure!(
        matches!(&over, Sent::Deferred(reply) if reply.contains(USER)),
        "the message over the quota was not deferred: {over:?}"
    );
    let other = &farm.relays[1];
    let took = other.wait_for_no_grant(CUSTOMER, within)?;
    eprintln!("the other relay revoked the user {took:?} after the first had seen it");
    ensure!(
        !farm.customer.reaches(other, DROPPED)?,
        "the other relay still lets the customer in"
    );

    // A login meanwhile, from a new address, grants on no relay; the
    // neighbour's after it shows that both relays have read that far.
    farm.pop.login(&farm.customer, second, USER)?;
    farm.pop.login(&farm.customer, neighbour, NEIGHBOUR)?;
    for relay in &farm.relays {
        relay.wait_for_grant(neighbour, within)?;
        ensure!(
            relay.left(second)?.is_none(),
            "{} granted the user in their cooldown",
            relay.name
        );
    }

    farm.pop.publish(&["pardon", USER], &farm.pop_auth()?)?;
    farm.pop.login(&farm.customer, third, USER)?;
    for relay in &farm.relays {
        relay.wait_for_grant(third, within)?;
    }
    Ok(())
}
