//! End to end with real mail servers: Dovecot (POP3/IMAP) and Postfix (SMTP)
//! in the server namespace, the agent following Dovecot's own log file, and
//! a customer in the client namespace who may send mail only after fetching
//! it.

use std::{
    io::{BufRead, BufReader},
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use smtpgate_tests::{
    mail::{imap_command, send_on, LabExt, Login, MailLab, IMAP, PASSWORD, USER},
    Family, ANSWERED, CLIENT_V4, CLIENT_V6, SMTP,
};

/// How soon after a login the grant must be in the map.
const GRANT_WITHIN: Duration = Duration::from_secs(1);

fn subject(what: &str) -> String {
    format!("{what} {}", smtpgate_tests::unique_name())
}

/// Fails unless one fetched message carries `subject`.
fn assert_fetched(mail: &MailLab, family: Family, subject: &str) -> Result<()> {
    let messages = mail.fetch_mail(family)?;
    ensure!(
        messages
            .iter()
            .any(|m| m.contains(&format!("Subject: {subject}"))),
        "no message with subject {subject:?} among {} fetched",
        messages.len()
    );
    Ok(())
}

/// Waits for the customer's grant to run out and checks port 25 is shut
/// again; returns how long the grant lasted after `login`.
fn wait_until_shut(mail: &MailLab, client: IpAddr, login: Instant) -> Result<Duration> {
    mail.wait_for_expiry(client, Duration::from_secs(6))?;
    let lasted = login.elapsed();
    mail.lab
        .assert_no_answer(Family::V4, SMTP)
        .context("port 25 after the grant expired")?;
    Ok(lasted)
}

#[test]
fn pop_before_smtp_with_dovecot_and_postfix() -> Result<()> {
    let mail = MailLab::start("4s", &[])?;
    let lab = &mail.lab;
    let client: IpAddr = CLIENT_V4.parse()?;

    // 1. No login yet: the SYN to port 25 gets no answer.
    let dropped = lab.counter("dropped_no_grant")?;
    lab.assert_no_answer(Family::V4, SMTP)
        .context("before any login")?;
    ensure!(
        lab.counter("dropped_no_grant")? > dropped,
        "the drop was not counted"
    );

    // 2. A wrong password: Dovecot refuses it, logs it, and nothing opens.
    ensure!(
        mail.pop3_login(Family::V4, "wrong")? == Login::Refused,
        "Dovecot accepted a wrong password"
    );
    mail.dovecot
        .wait_for_log("failed POP3 login", Duration::from_secs(3), |l| {
            l.contains("pop3-login")
                && l.contains("auth failed")
                && l.contains(&format!("rip={CLIENT_V4},"))
        })?;
    thread::sleep(Duration::from_millis(200));
    ensure!(
        mail.grants()?.is_empty(),
        "a refused login granted: {:?}",
        mail.grants()?
    );
    lab.assert_no_answer(Family::V4, SMTP)
        .context("after a refused login")?;

    // 3. The right password: within a second the grant is there, and Postfix
    //    takes a message and delivers it.
    let login = Instant::now();
    ensure!(
        mail.pop3_login(Family::V4, PASSWORD)? == Login::Accepted,
        "Dovecot refused the customer"
    );
    let granted = mail.wait_for_grant(client, GRANT_WITHIN)?;
    eprintln!(
        "POP3 login: grant in place {granted:?} after curl returned ({:?} after it started)",
        login.elapsed()
    );
    let sent = subject("after POP3");
    let id = mail.send_mail(Family::V4, &sent)?;
    let delivered = mail
        .postfix
        .wait_for_delivery(&id, Duration::from_secs(5))?;
    eprintln!("Postfix: {delivered}");
    ensure!(
        lab.counter("allowed_grant")? >= 1,
        "the granted SYN was not counted"
    );

    // 4. The grant runs out after the TTL (the log's time stamps have whole
    //    seconds, so it lasts between 3 and 4 s); then an IMAP login opens
    //    port 25 again.
    let lasted = wait_until_shut(&mail, client, login)?;
    eprintln!("POP3 grant lasted {lasted:?}");
    ensure!(
        lasted >= Duration::from_millis(2900),
        "a 4 s grant ended after {lasted:?}"
    );
    let login = Instant::now();
    ensure!(
        mail.imap_login(Family::V4, PASSWORD)? == Login::Accepted,
        "Dovecot refused the IMAP login"
    );
    mail.wait_for_grant(client, GRANT_WITHIN)?;
    let session = lab
        .connect(Family::V4, SMTP, ANSWERED)
        .context("port 25 after the IMAP login")?;
    let id = send_on(&session, &subject("after IMAP"))?;
    mail.postfix
        .wait_for_delivery(&id, Duration::from_secs(5))?;
    wait_until_shut(&mail, client, login)?;

    // And the customer receives the mail sent through the gate. (A mail
    // client's "send and receive", SMTP opened while the login is in
    // flight, is in replay.rs.)
    assert_fetched(&mail, Family::V4, &sent)?;
    Ok(())
}

#[test]
fn pop_before_smtp_over_ipv6() -> Result<()> {
    let mail = MailLab::start("1m", &[])?;
    let lab = &mail.lab;
    let client: IpAddr = CLIENT_V6.parse()?;

    lab.assert_no_answer(Family::V6, SMTP)
        .context("before any login")?;
    ensure!(
        mail.pop3_login(Family::V6, PASSWORD)? == Login::Accepted,
        "Dovecot refused the customer"
    );
    mail.wait_for_grant(client, GRANT_WITHIN)?;
    mail.dovecot
        .wait_for_log("IPv6 login", Duration::from_secs(1), |l| {
            l.contains("pop3-login: Info: Login:") && l.contains(&format!("rip={CLIENT_V6},"))
        })?;
    let sent = subject("over IPv6");
    let id = mail.send_mail(Family::V6, &sent)?;
    mail.postfix
        .wait_for_delivery(&id, Duration::from_secs(5))?;

    // The grant is for the address that logged in: the same host's IPv4
    // address never fetched mail.
    lab.assert_no_answer(Family::V4, SMTP)
        .context("IPv4 address of the IPv6 customer")?;
    assert_fetched(&mail, Family::V6, &sent)?;
    Ok(())
}

#[test]
fn stranger_stays_dropped_while_customer_is_granted() -> Result<()> {
    let mail = MailLab::start("1m", &[])?;
    let lab = &mail.lab;
    let customer: IpAddr = CLIENT_V4.parse()?;
    let stranger: IpAddr = "192.0.2.3".parse()?;
    lab.add_client_address("192.0.2.3/24")?;

    // The stranger can reach the unguarded POP3 port but has no password.
    ensure!(
        mail.pop3_login_from(stranger, "guess")? == Login::Refused,
        "Dovecot accepted a guessed password"
    );

    ensure!(
        mail.pop3_login_from(customer, PASSWORD)? == Login::Accepted,
        "Dovecot refused the customer"
    );
    mail.wait_for_grant(customer, GRANT_WITHIN)?;
    lab.connect_from(customer, SMTP, ANSWERED)
        .context("the customer after logging in")?;

    let dropped = lab.counter("dropped_no_grant")?;
    lab.assert_no_answer_from(stranger, SMTP)
        .context("the stranger")?;
    ensure!(
        lab.counter("dropped_no_grant")? > dropped,
        "the stranger's SYN was not counted as dropped"
    );
    ensure!(
        mail.grants()? == [CLIENT_V4],
        "grants: {:?}",
        mail.grants()?
    );

    // The customer's session works while the stranger is shut out.
    let session = lab.connect_from(customer, SMTP, ANSWERED)?;
    let id = send_on(&session, &subject("customer beside a stranger"))?;
    mail.postfix
        .wait_for_delivery(&id, Duration::from_secs(5))?;
    lab.assert_no_answer_from(stranger, SMTP)
        .context("the stranger, again")?;
    Ok(())
}

/// The address an attacker writes into its text, for the grant it hopes for.
const INJECTED: &str = "6.6.6.6";

/// The texts an unauthenticated client makes a piece of its `ID` message
/// start with: a piece inside the message (the line goes on with more of
/// the client's text), the last piece, after which Dovecot writes the
/// client's own `user=<>, rip=…` elements, and the last piece of a client
/// that failed a login first (`user=<customer>, method=PLAIN, rip=…`).
const FAKES: [(&str, &str, bool); 3] = [
    (
        "inside",
        "Login: user=<m>, method=PLAIN, rip=6.6.6.6, lip=192.0.2.1, mpid=1, session=<x>",
        false,
    ),
    ("last", "Login: user=<m>, method=PLAIN, mpid=1", false),
    ("last after a failed login", "Login: user=<m>, x=y", true),
];

/// Dovecot's processes write a message to the log process in writes of at
/// most PIPE_BUF (4096) bytes, each with a header of `\x01`, the level, the
/// pid and a space, and cut longer messages into pieces of what is left:
/// 4092 bytes less the pid's digits, which are 1 to 7.
const PIECE_SIZES: std::ops::RangeInclusive<usize> = 4085..=4091;

/// `count` bytes of `key=value` pairs as Dovecot logs them (joined by `, `),
/// keys starting with `tag`, values at most the 80 bytes Dovecot logs.
fn filler(tag: char, mut count: usize) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    while count > 0 {
        let separator = if pairs.is_empty() { 0 } else { 2 };
        let key = format!("{tag}{}", pairs.len());
        let room = count - separator - key.len() - 1;
        // Leave enough for one more pair, or take all that is left.
        let value = if room <= 80 { room } else { 80.min(room - 12) };
        count -= separator + key.len() + 1 + value;
        pairs.push((key, "v".repeat(value)));
    }
    pairs
}

/// The pairs of an IMAP `ID` whose log text, `ID sent: k=v, …`, holds
/// `fake` from byte `at`, and `after` more bytes of pairs after it.
fn shaped_id(at: usize, fake: &str, after: usize) -> Vec<(String, String)> {
    const PAD: usize = 10;
    let mut segments = fake.split(", ");
    let first = segments.next().expect("a fake has a first segment");
    // "ID sent: " FILLER ", z=" PAD FAKE…
    let mut pairs = filler('a', at - "ID sent: ".len() - ", z=".len() - PAD);
    pairs.push(("z".into(), format!("{}{first}", "p".repeat(PAD))));
    for segment in segments {
        let (key, value) = segment
            .split_once('=')
            .expect("fake segments are key=value");
        pairs.push((key.into(), value.into()));
    }
    if after > 0 {
        pairs.extend(filler('b', after - ", ".len()));
    }
    pairs
}

/// The `ID` command for `pairs`.
fn id_command(pairs: &[(String, String)]) -> String {
    let quoted: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("\"{k}\" \"{v}\""))
        .collect();
    format!("ID ({})", quoted.join(" "))
}

#[test]
fn shaped_imap_ids_do_not_grant_and_a_login_after_them_does() -> Result<()> {
    let mail = MailLab::start_with("1m", &[], "imap_id_log = *\n")?;
    let lab = &mail.lab;
    let stranger: IpAddr = "192.0.2.3".parse()?;
    lab.add_client_address("192.0.2.3/24")?;

    // The stranger never logs in: one connection per ID (Dovecot logs only a
    // connection's first), shaped for every size a piece can have.
    for (what, fake, fail_first) in FAKES {
        for size in PIECE_SIZES {
            let after = if what == "inside" { 4096 } else { 0 };
            let command = id_command(&shaped_id(size, fake, after));
            let stream = lab
                .connect_from(stranger, IMAP, ANSWERED)
                .context("IMAP from the stranger")?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut reader = BufReader::new(stream.try_clone()?);
            let mut writer = &stream;
            let mut greeting = String::new();
            reader.read_line(&mut greeting)?;
            ensure!(greeting.starts_with("* OK"), "greeting {greeting:?}");
            if fail_first {
                let refused = imap_command(
                    &mut reader,
                    &mut writer,
                    "x",
                    &format!("LOGIN {USER} wrong"),
                )?;
                ensure!(
                    refused.starts_with("NO"),
                    "a wrong password was answered {refused:?}"
                );
            }
            let answer = imap_command(&mut reader, &mut writer, "a", &command)?;
            ensure!(
                answer.starts_with("OK"),
                "ID ({what}, {size}) answered {answer:?}"
            );
            imap_command(&mut reader, &mut writer, "b", "LOGOUT")?;
        }
        // The attack is real: Dovecot wrote a line that starts like a login.
        mail.dovecot.wait_for_log(
            &format!("a piece starting with the {what} fake"),
            Duration::from_secs(5),
            |l| l.contains(&format!("imap-login: Info: {fake}")),
        )?;
    }

    // A genuine login right after the pieces grants; the agent reads the log
    // in order, so it has judged every piece once this grant is there.
    ensure!(
        mail.imap_login(Family::V4, PASSWORD)? == Login::Accepted,
        "Dovecot refused the customer"
    );
    let customer: IpAddr = CLIENT_V4.parse()?;
    mail.wait_for_grant(customer, Duration::from_secs(2))?;
    let grants = mail.grants()?;
    ensure!(
        grants == [CLIENT_V4],
        "the pieces granted: {grants:?} (the stranger is {stranger}, its text names {INJECTED})"
    );
    lab.assert_no_answer_from(stranger, SMTP)
        .context("the stranger after its IDs")?;
    Ok(())
}
