//! Recipient quotas end to end: Postfix asks the agent's policy service
//! about every recipient (`check_policy_service`), customers log in to a
//! real Dovecot first, and a user who sends more than the quota is deferred
//! and shut out at the gate until pardoned. The last test speaks the policy
//! protocol to the service directly.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{bail, ensure, Context, Result};
use smtpgate_tests::{
    mail::{grants_of, rcpt_on, LabExt, Login, MailLab, Sent, NEIGHBOUR, PASSWORD, USER},
    Family, Lab, Scratch, ANSWERED, CLIENT_V4, SMTP,
};

/// The user quota of these tests: the fourth recipient in an hour is over.
const QUOTA: &str = "3/1h";
const WITHIN_QUOTA: usize = 3;

/// How soon after a login the grant must be in the map.
const GRANT_WITHIN: Duration = Duration::from_secs(2);
const DELIVERED_WITHIN: Duration = Duration::from_secs(10);

fn subject(what: &str) -> String {
    format!("{what} {}", smtpgate_tests::unique_name())
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("a test address")
}

/// Sends one message from `source` and waits for its delivery.
fn deliver_from(mail: &MailLab, source: IpAddr, what: &str) -> Result<()> {
    match mail.send_from(source, &subject(what))? {
        Sent::Queued(id) => {
            mail.postfix.wait_for_delivery(&id, DELIVERED_WITHIN)?;
            Ok(())
        }
        Sent::Deferred(reply) => bail!("{what} from {source} was deferred: {reply}"),
    }
}

/// Sends one message from `source` and fails unless its recipient is
/// deferred for `user`'s quota; returns Postfix's reply.
fn deferred_from(mail: &MailLab, source: IpAddr, user: &str, what: &str) -> Result<String> {
    match mail.send_from(source, &subject(what))? {
        Sent::Deferred(reply) => {
            let text = format!("smtpgate: {user} sent more than {WITHIN_QUOTA} recipients in 1h");
            ensure!(
                reply.starts_with("450 4.7.1") && reply.contains(&text),
                "{what}: deferred with {reply:?}, not for {user}'s quota"
            );
            Ok(reply)
        }
        Sent::Queued(id) => bail!("{what} from {source} was queued as {id}, not deferred"),
    }
}

/// Logs `user` in over POP3 from `source` and waits for the grant.
fn log_in(mail: &MailLab, user: &str, source: IpAddr) -> Result<()> {
    ensure!(
        mail.pop3_login_as(user, source, PASSWORD)? == Login::Accepted,
        "Dovecot refused {user} from {source}"
    );
    mail.wait_for_grant(source, GRANT_WITHIN)?;
    Ok(())
}

#[test]
fn over_the_user_quota_a_customer_is_deferred_shut_out_and_pardoned() -> Result<()> {
    let mail = MailLab::with_policy("1h", &["--user-quota", QUOTA])?;
    let lab = &mail.lab;
    let client = ip(CLIENT_V4);

    // Within the quota: each message is delivered.
    log_in(&mail, USER, client)?;
    // A session opened now outlives the revoke below.
    let open_session = lab
        .connect_from(client, SMTP, ANSWERED)
        .context("an SMTP session before the quota runs out")?;
    for n in 1..=WITHIN_QUOTA {
        deliver_from(&mail, client, &format!("within quota {n}"))?;
    }

    // The recipient past the quota is deferred, and the customer is shut out.
    let reply = deferred_from(&mail, client, USER, "over quota")?;
    eprintln!("past the quota: {reply}");
    ensure!(
        mail.grants_of(USER)?.is_empty(),
        "smtpgate list still shows {USER}: {:?}",
        mail.grants()?
    );
    lab.assert_no_answer_from(client, SMTP)
        .context("SMTP after going over the quota")?;
    ensure!(
        lab.agent_logged("over the user quota", Duration::from_secs(1)),
        "the agent did not log the user going over the quota"
    );

    // The session opened before the revoke gets no further.
    let rcpt = rcpt_on(&open_session)?;
    ensure!(
        rcpt.starts_with("450 4.7.1")
            && rcpt.contains(&format!("smtpgate: {USER} went over a recipient quota")),
        "a session opened before the revoke had its recipient answered {rcpt:?}"
    );

    // In the cooldown a login grants nothing.
    ensure!(
        mail.pop3_login(Family::V4, PASSWORD)? == Login::Accepted,
        "Dovecot refused the customer"
    );
    ensure!(
        lab.agent_logged(
            "not granted: the user went over a quota",
            Duration::from_secs(2)
        ),
        "a login in the cooldown was not refused"
    );
    ensure!(
        mail.grants()?.is_empty(),
        "a login in the cooldown granted: {:?}",
        mail.grants()?
    );
    lab.assert_no_answer_from(client, SMTP)
        .context("SMTP after a login in the cooldown")?;

    // Pardoned, the next login grants and mail goes through again.
    let pardoned = lab.smtpgate_ok(&["pardon", USER])?;
    ensure!(pardoned.contains("pardoned"), "pardon said {pardoned:?}");
    log_in(&mail, USER, client)?;
    deliver_from(&mail, client, "after the pardon")
}

#[test]
fn the_user_quota_follows_the_user_across_addresses_and_spares_a_neighbour() -> Result<()> {
    let mail = MailLab::with_policy("1h", &["--user-quota", QUOTA])?;
    let lab = &mail.lab;
    let (first, second, neighbour) = (ip(CLIENT_V4), ip("192.0.2.3"), ip("192.0.2.4"));
    lab.add_client_address("192.0.2.3/24")?;
    lab.add_client_address("192.0.2.4/24")?;
    log_in(&mail, USER, first)?;
    log_in(&mail, USER, second)?;
    log_in(&mail, NEIGHBOUR, neighbour)?;

    // Three recipients over two addresses fill the customer's quota; the
    // neighbour's are counted apart.
    deliver_from(&mail, first, "first address 1")?;
    deliver_from(&mail, second, "second address")?;
    deliver_from(&mail, neighbour, "neighbour 1")?;
    deliver_from(&mail, first, "first address 2")?;

    // The fourth, from either address, is over: both addresses are shut out.
    deferred_from(&mail, second, USER, "over quota from the second address")?;
    ensure!(
        mail.grants_of(USER)?.is_empty(),
        "the customer kept grants: {:?}",
        mail.grants_of(USER)?
    );
    for source in [first, second] {
        lab.assert_no_answer_from(source, SMTP)
            .with_context(|| format!("the customer's address {source}"))?;
    }

    // The neighbour on the same relay goes on, up to their own quota.
    ensure!(
        mail.grants_of(NEIGHBOUR)? == [neighbour.to_string()],
        "the neighbour's grant: {:?}",
        mail.grants_of(NEIGHBOUR)?
    );
    deliver_from(&mail, neighbour, "neighbour 2")?;
    deliver_from(&mail, neighbour, "neighbour 3")?;
    deferred_from(&mail, neighbour, NEIGHBOUR, "neighbour over quota")?;
    Ok(())
}

/// A connection to the policy service, as Postfix holds one.
struct PolicyClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl PolicyClient {
    fn connect(path: &Path) -> Result<Self> {
        let writer = UnixStream::connect(path)
            .with_context(|| format!("connecting to {}", path.display()))?;
        writer.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Self {
            reader: BufReader::new(writer.try_clone()?),
            writer,
        })
    }

    /// Sends `request` (attribute lines and the empty line that ends them)
    /// and returns the action answered.
    fn ask(&mut self, request: &str) -> Result<String> {
        self.writer.write_all(request.as_bytes())?;
        let mut answer = String::new();
        self.reader.read_line(&mut answer)?;
        let mut end = String::new();
        self.reader.read_line(&mut end)?;
        ensure!(end == "\n", "the answer {answer:?} went on with {end:?}");
        answer
            .trim_end()
            .strip_prefix("action=")
            .map(str::to_owned)
            .with_context(|| format!("not an answer: {answer:?}"))
    }

    /// Fails unless `request` is answered `DUNNO`; `what` names it.
    fn expect_dunno(&mut self, what: &str, request: &str) -> Result<()> {
        let action = self.ask(request)?;
        ensure!(action == "DUNNO", "{what} was answered {action:?}");
        Ok(())
    }
}

/// A request at the end of a message: not one to count.
const END_OF_MESSAGE: &str =
    "request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nclient_address=192.0.2.9\n\n";

/// A request as Postfix sends it at RCPT TO, from `client`.
fn rcpt_request(client: &str) -> String {
    format!(
        "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
         client_address={client}\nclient_name=unknown\nhelo_name=client.example.org\n\
         sender=someone@example.org\nrecipient=customer@example.test\nrecipient_count=0\n\
         instance=1a2b.3c4d.1\n\n"
    )
}

/// Where the agent of the last test serves metrics, in the server namespace.
const METRICS: &str = "127.0.0.1:9100";

/// The agent's metrics, fetched from inside the server namespace.
fn scrape(lab: &Lab) -> Result<String> {
    let addr: SocketAddr = METRICS.parse()?;
    lab.server.run(move || -> Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })?
}

#[test]
fn malformed_and_ungranted_requests_get_dunno_and_the_service_goes_on() -> Result<()> {
    let scratch = Scratch::labelled("policy")?;
    let socket = scratch.path("run/policy.sock");
    let listen = format!("unix:{}", socket.display());
    let state = scratch.path("state");
    let mut lab = Lab::new()?;
    lab.start_agent(&[
        "--policy-listen",
        &listen,
        "--user-quota",
        "2/1h",
        "--metrics-listen",
        METRICS,
        "--state-dir",
        state.to_str().context("a UTF-8 path")?,
    ])?;
    let mut postfix = PolicyClient::connect(&socket)?;

    // Nonsense, an address without a grant, and a request at another stage
    // are all DUNNO, on one connection.
    postfix.expect_dunno("a malformed request", "this is not an attribute\n\n")?;
    postfix.expect_dunno("an address without a grant", &rcpt_request("192.0.2.9"))?;
    postfix.expect_dunno("a request at END-OF-MESSAGE", END_OF_MESSAGE)?;
    postfix.expect_dunno("a bad address", &rcpt_request("not an address"))?;

    // A granted user is counted, and the recipient past the quota deferred.
    lab.smtpgate_ok(&["allow", "192.0.2.9", "--user", "bob"])?;
    for n in 1..=2 {
        postfix.expect_dunno(&format!("recipient {n}"), &rcpt_request("192.0.2.9"))?;
    }
    let over = postfix.ask(&rcpt_request("192.0.2.9"))?;
    ensure!(
        over == "DEFER_IF_PERMIT 4.7.1 smtpgate: bob sent more than 2 recipients in 1h",
        "past the quota: {over}"
    );
    ensure!(grants_of(&lab, "bob")?.is_empty(), "bob kept his grant");
    // Bob's session goes on being deferred while his cooldown runs.
    let still = postfix.ask(&rcpt_request("192.0.2.9"))?;
    ensure!(
        still.starts_with("DEFER_IF_PERMIT"),
        "after the revoke: {still}"
    );

    // A second connection is served beside the first; a pardon ends the
    // deferral along with the cooldown.
    let mut other = PolicyClient::connect(&socket)?;
    other.expect_dunno("an attribute without a name", "=no name\n\n")?;
    lab.smtpgate_ok(&["pardon", "bob"])?;
    other.expect_dunno("bob's address after the pardon", &rcpt_request("192.0.2.9"))?;
    postfix.expect_dunno("another address", &rcpt_request("192.0.2.10"))?;

    ensure!(
        lab.agent_logged("a malformed policy request", Duration::from_secs(1)),
        "the malformed request was not logged"
    );
    let metrics = scrape(&lab)?;
    for line in [
        "smtpgate_policy_malformed_total 2",
        "smtpgate_quota_exceeded_total{quota=\"user\"} 1",
        "smtpgate_policy_requests_total{action=\"defer_if_permit\"} 2",
        "smtpgate_policy_requests_total{action=\"dunno\"} 9",
    ] {
        ensure!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in the metrics:\n{metrics}"
        );
    }
    Ok(())
}
