//! What a grant is worth, through the running agent: who earned it, the
//! terms of the network it is in, the IPv6 prefix it covers, and the SYN
//! budget a real burst of connects runs into.

use std::{
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use smtpgate_tests::{
    logs::{append, dovecot_login},
    Family, Lab, Scratch, ANSWERED, CLIENT_V4, CLIENT_V6, SERVER_V4, SMTP,
};

/// The agent on a log in `scratch`, with `extra` flags.
fn agent_on_log(scratch: &Scratch, extra: &[&str]) -> Result<(Lab, std::path::PathBuf)> {
    let mut lab = Lab::new()?;
    lab.echo_server(SMTP)?;
    let log = scratch.path("mail.log");
    append(&log, "")?;
    let state = scratch.path("state");
    let mut flags = vec![
        "--log",
        log.to_str().context("path")?,
        "--state-dir",
        state.to_str().context("path")?,
    ];
    flags.extend_from_slice(extra);
    lab.start_agent(&flags)?;
    Ok((lab, log))
}

fn listed(lab: &Lab) -> Result<Vec<Value>> {
    let list: Value = serde_json::from_str(&lab.smtpgate_ok(&["list", "--json"])?)?;
    Ok(list.as_array().context("list --json is no array")?.clone())
}

/// Polls `list --json` until a grant of `address` shows; returns it.
fn wait_for_listed(lab: &Lab, address: &str) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(row) = listed(lab)?
            .into_iter()
            .find(|row| row["address"] == address)
        {
            return Ok(row);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("{address} was not granted within 10 s")
}

#[test]
fn list_says_who_earned_each_grant_and_revoke_by_user_takes_them_all() -> Result<()> {
    let scratch = Scratch::new()?;
    let (lab, log) = agent_on_log(&scratch, &["--ipv6-grant-prefix", "128"])?;
    append(&log, &dovecot_login("alice@example.org", CLIENT_V4))?;
    append(&log, &dovecot_login("alice@example.org", "198.51.100.7"))?;
    append(&log, &dovecot_login("bob", CLIENT_V6))?;
    lab.smtpgate_ok(&["allow", "203.0.113.9", "--ttl", "5m"])?;
    lab.smtpgate_ok(&["allow", "203.0.113.10", "--ttl", "5m", "--user", "carol"])?;

    let alice = wait_for_listed(&lab, CLIENT_V4)?;
    wait_for_listed(&lab, "198.51.100.7")?;
    let bob = wait_for_listed(&lab, CLIENT_V6)?;
    ensure!(
        alice["user"] == "alice@example.org"
            && alice["service"] == "pop3"
            && alice["source"] == "log",
        "{alice}"
    );
    let granted_at = alice["granted_at"]
        .as_str()
        .context("granted_at")?
        .parse::<jiff::Timestamp>()?;
    let age = jiff::Timestamp::now().duration_since(granted_at).as_secs();
    ensure!(
        (0..=60).contains(&age),
        "granted_at is {age} s off: {alice}"
    );
    ensure!(bob["user"] == "bob", "{bob}");
    let rows = listed(&lab)?;
    let by_address = |a: &str| {
        rows.iter()
            .find(|row| row["address"] == a)
            .cloned()
            .unwrap_or_default()
    };
    let nobody = by_address("203.0.113.9");
    ensure!(
        nobody["user"].is_null() && nobody["source"] == "cli",
        "allow without a user: {nobody}"
    );
    ensure!(
        by_address("203.0.113.10")["user"] == "carol",
        "allow --user"
    );
    let table = lab.smtpgate_ok(&["list"])?;
    ensure!(
        table.contains("alice@example.org") && table.contains("USER"),
        "list: {table}"
    );

    let revoked = lab.smtpgate_ok(&["revoke", "--user", "alice@example.org"])?;
    ensure!(
        revoked.contains("revoked 2 grants"),
        "revoke --user: {revoked}"
    );
    let left: Vec<String> = listed(&lab)?
        .iter()
        .map(|row| row["address"].to_string())
        .collect();
    ensure!(
        left.len() == 3
            && !left
                .iter()
                .any(|a| a.contains(CLIENT_V4) || a.contains("198.51.100.7")),
        "left: {left:?}"
    );
    lab.assert_no_answer(Family::V4, SMTP)?;
    lab.connect(Family::V6, SMTP, ANSWERED)
        .context("bob's grant went with alice's")?;
    ensure!(
        lab.smtpgate_ok(&["revoke", "--user", "nobody"])?
            .contains("held no grant"),
        "revoke of an unknown user"
    );
    Ok(())
}

#[test]
fn an_ipv6_login_opens_its_customers_whole_slash_64() -> Result<()> {
    let scratch = Scratch::new()?;
    let (lab, log) = agent_on_log(&scratch, &[])?;
    // The login comes from another privacy address of the client's /64.
    append(&log, &dovecot_login("dana", "2001:db8::77"))?;
    let row = wait_for_listed(&lab, "2001:db8::77")?;
    ensure!(
        row["user"] == "dana" && row["covers"] == "2001:db8::/64",
        "{row}"
    );
    lab.connect(Family::V6, SMTP, ANSWERED)
        .context("the client's address in the granted /64")?;
    Ok(())
}

#[test]
fn a_network_table_gives_its_grants_their_own_terms() -> Result<()> {
    let scratch = Scratch::new()?;
    let config = scratch.path("smtpgate.toml");
    std::fs::write(
        &config,
        "ttl = \"20m\"\n\n[[network]]\nprefix = \"192.0.2.0/24\"\nttl = \"2m\"\ngrant-syn-rate = \"1/1m\"\ngrant-syn-burst = 2\n\n[[network]]\nprefix = \"192.0.2.0/28\"\nttl = \"3m\"\n",
    )?;
    let (lab, log) = agent_on_log(&scratch, &["--config", config.to_str().context("path")?])?;
    append(&log, &dovecot_login("erin", "192.0.2.77"))?;
    append(&log, &dovecot_login("frank", CLIENT_V4))?;
    append(&log, &dovecot_login("gina", "203.0.113.77"))?;
    let left = |address: &str| -> Result<u64> {
        wait_for_listed(&lab, address)?["seconds_left"]
            .as_u64()
            .context("seconds_left")
    };
    let (outer, inner, default) = (left("192.0.2.77")?, left(CLIENT_V4)?, left("203.0.113.77")?);
    ensure!(
        (100..=120).contains(&outer),
        "192.0.2.0/24 grants {outer} s, not 2m"
    );
    ensure!(
        (160..=180).contains(&inner),
        "the more specific 192.0.2.0/28 grants {inner} s, not 3m"
    );
    ensure!(
        (1180..=1200).contains(&default),
        "outside every network: {default} s, not 20m"
    );
    Ok(())
}

/// Connects to port 25 `count` times in a row; how many were answered.
fn burst_of_connects(lab: &Lab, count: usize) -> Result<usize> {
    let to = SocketAddr::new(SERVER_V4.parse()?, SMTP);
    lab.client.run(move || {
        (0..count)
            .filter(|_| TcpStream::connect_timeout(&to, Duration::from_millis(300)).is_ok())
            .count()
    })
}

#[test]
fn a_real_burst_of_connects_runs_into_the_grants_syn_budget() -> Result<()> {
    let scratch = Scratch::new()?;
    // Five connects at once, then one a minute: the rest of the burst is over.
    let (lab, log) = agent_on_log(
        &scratch,
        &["--grant-syn-rate", "1/1m", "--grant-syn-burst", "5"],
    )?;
    append(&log, &dovecot_login("hal", CLIENT_V4))?;
    wait_for_listed(&lab, CLIENT_V4)?;
    let answered = burst_of_connects(&lab, 12)?;
    ensure!(
        answered == 5,
        "{answered} of 12 connects were answered, not the burst of 5"
    );
    let over = lab.counter("dropped_over_budget")?;
    ensure!(
        over >= 7,
        "dropped_over_budget is {over} after 7 connects over the budget"
    );
    Ok(())
}

#[test]
fn without_a_budget_a_burst_is_answered_in_full() -> Result<()> {
    let scratch = Scratch::new()?;
    let (lab, log) = agent_on_log(&scratch, &["--grant-syn-rate", "off"])?;
    append(&log, &dovecot_login("ivy", CLIENT_V4))?;
    wait_for_listed(&lab, CLIENT_V4)?;
    let answered = burst_of_connects(&lab, 60)?;
    ensure!(
        answered == 60,
        "{answered} of 60 connects were answered without a budget"
    );
    ensure!(
        lab.counter("dropped_over_budget")? == 0,
        "drops over a budget that is off"
    );
    Ok(())
}
