//! From login lines to grants with the real agent: log files (with
//! rotation and restarts), standard input, the Unix socket, the journal,
//! plus `check-log` and `--check-config`.

use std::{
    fs::OpenOptions,
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use smtpgate_tests::{
    journal::PrivateJournal, sh, smtpgate_bin, Family, Lab, Scratch, ANSWERED, CLIENT_V4,
    CLIENT_V6, SMTP,
};

/// A Dovecot 2.3 login line as rsyslog writes it with ISO time stamps,
/// logged `age` ago.
fn dovecot_login(ip: &str, age: Duration) -> String {
    let at = jiff::Timestamp::now() - jiff::SignedDuration::try_from(age).unwrap();
    format!(
        "{} mailhost dovecot[811]: pop3-login: Login: user=<customer>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid=4242, session=<Zx1>",
        at.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")
    )
}

fn dovecot_failure(ip: &str) -> String {
    format!(
        "{} mailhost dovecot[811]: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<customer>, method=PLAIN, rip={ip}, lip=192.0.2.1, session=<Zx2>",
        jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00")
    )
}

fn append(path: &Path, line: &str) -> Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(file, "{line}")?;
    Ok(())
}

/// Polls `list --json` until `ip` holds a grant; returns how long that took.
fn wait_for_grant(lab: &Lab, ip: &str, limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if seconds_left(lab, ip)?.is_some() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    anyhow::bail!("{ip} was not granted within {limit:?}")
}

fn seconds_left(lab: &Lab, ip: &str) -> Result<Option<u64>> {
    let list: serde_json::Value = serde_json::from_str(&lab.smtpgate_ok(&["list", "--json"])?)?;
    Ok(list
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["address"] == ip)
        .and_then(|g| g["seconds_left"].as_u64()))
}

fn agent_with_log(scratch: &Scratch, extra: &[&str]) -> Result<Lab> {
    let mut lab = Lab::new()?;
    lab.echo_server(SMTP)?;
    let log = scratch.path("mail.log");
    let state = scratch.path("state");
    let mut flags = vec![
        "--log",
        log.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    flags.extend_from_slice(extra);
    lab.start_agent(&flags)?;
    Ok(lab)
}

#[test]
fn a_login_line_opens_port_25_and_a_failure_does_not() -> Result<()> {
    let scratch = Scratch::new()?;
    let lab = agent_with_log(&scratch, &[])?;
    let log = scratch.path("mail.log");
    lab.assert_no_answer(Family::V4, SMTP)?;
    append(&log, &dovecot_failure(CLIENT_V4))?;
    std::thread::sleep(Duration::from_millis(300));
    ensure!(
        seconds_left(&lab, CLIENT_V4)?.is_none(),
        "a failed login granted"
    );
    append(&log, &dovecot_login(CLIENT_V4, Duration::ZERO))?;
    let delay = wait_for_grant(&lab, CLIENT_V4, Duration::from_secs(2))?;
    eprintln!("grant visible {delay:?} after the line was appended");
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("SMTP after the login")?;
    ensure!(
        seconds_left(&lab, CLIENT_V4)? >= Some(590),
        "default TTL is 10 minutes"
    );
    Ok(())
}

#[test]
fn logins_survive_restarts_and_rotation() -> Result<()> {
    let scratch = Scratch::new()?;
    let log = scratch.path("mail.log");
    // Written before the first start: an old login (beyond the TTL) and a
    // recent one, which gets only its remaining lifetime.
    append(
        &log,
        &dovecot_login("198.51.100.20", Duration::from_secs(900)),
    )?;
    append(&log, &dovecot_login(CLIENT_V4, Duration::from_secs(240)))?;
    let mut lab = agent_with_log(&scratch, &["--ttl", "10m"])?;
    wait_for_grant(&lab, CLIENT_V4, Duration::from_secs(2))?;
    let left = seconds_left(&lab, CLIENT_V4)?.unwrap();
    ensure!(
        (350..=361).contains(&left),
        "remaining lifetime {left}s, expected about 360s"
    );
    ensure!(
        seconds_left(&lab, "198.51.100.20")?.is_none(),
        "a login older than the TTL was granted"
    );

    // While the agent is down, a login is logged and the log is rotated.
    lab.stop_agent()?;
    append(&log, &dovecot_login("198.51.100.21", Duration::ZERO))?;
    std::fs::rename(&log, scratch.path("mail.log.1"))?;
    append(&log, &dovecot_login(CLIENT_V6, Duration::ZERO))?;
    let state = scratch.path("state");
    lab.start_agent(&[
        "--log",
        log.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ])?;
    wait_for_grant(&lab, "198.51.100.21", Duration::from_secs(2))
        .context("line written to the rotated file")?;
    wait_for_grant(&lab, CLIENT_V6, Duration::from_secs(2)).context("line in the new file")?;
    lab.connect(Family::V6, SMTP, ANSWERED)?;

    // Rotation while running: rename and re-create.
    std::fs::rename(&log, scratch.path("mail.log.2"))?;
    append(&log, &dovecot_login("203.0.113.30", Duration::ZERO))?;
    wait_for_grant(&lab, "203.0.113.30", Duration::from_secs(3))
        .context("line after a live rotation")?;
    Ok(())
}

#[test]
fn standard_input_is_a_source() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.echo_server(SMTP)?;
    let scratch = Scratch::new()?;
    lab.start_agent(&[
        "--log",
        "-",
        "--state-dir",
        scratch.path("state").to_str().unwrap(),
    ])?;
    let stdin = lab.agent_stdin.as_mut().context("agent stdin")?;
    writeln!(stdin, "{}", dovecot_login(CLIENT_V4, Duration::ZERO))?;
    stdin.flush()?;
    wait_for_grant(&lab, CLIENT_V4, Duration::from_secs(2))?;
    lab.connect(Family::V4, SMTP, ANSWERED)?;
    Ok(())
}

#[test]
fn login_reports_over_the_socket() -> Result<()> {
    let scratch = Scratch::new()?;
    let socket = scratch.path("notify.sock");
    let mut lab = Lab::new()?;
    lab.echo_server(SMTP)?;
    lab.start_agent(&[
        "--listen-unix",
        socket.to_str().unwrap(),
        "--listen-unix-mode",
        "0666",
        "--state-dir",
        scratch.path("state").to_str().unwrap(),
        "--service",
        "imap",
    ])?;
    // The Dovecot post-login script runs as the mail user, not root.
    let notify = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(smtpgate_bin())
            .arg("notify")
            .args(args)
            .arg("--socket")
            .arg(&socket)
            .output()
    };
    let out = notify(&[CLIENT_V4, "--service", "imap", "--user", "customer"])?;
    ensure!(
        out.status.success(),
        "notify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("SMTP after the report")?;

    let refused = notify(&["198.51.100.5", "--service", "pop3"])?;
    let err = String::from_utf8_lossy(&refused.stderr);
    ensure!(
        !refused.status.success() && err.contains("pop3 logins do not grant here"),
        "{err}"
    );
    let bad = notify(&["not-an-ip"])?;
    ensure!(String::from_utf8_lossy(&bad.stderr).contains("is not an IPv4 or IPv6 address"));

    // The socket's mode decides who may report.
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let denied = notify(&["198.51.100.6", "--service", "imap"])?;
    ensure!(
        !denied.status.success(),
        "a user without access to the socket reported a login"
    );
    ensure!(seconds_left(&lab, "198.51.100.6")?.is_none());
    Ok(())
}

#[test]
fn check_log_gives_each_line_a_verdict() -> Result<()> {
    let scratch = Scratch::new()?;
    let log = scratch.path("sample.log");
    append(&log, &dovecot_login(CLIENT_V4, Duration::ZERO))?;
    append(&log, &dovecot_failure("198.51.100.8"))?;
    append(
        &log,
        "Nov 22 20:25:01 mailhost postfix/smtpd[99]: connect from unknown[198.51.100.9]",
    )?;
    let out = Command::new(smtpgate_bin())
        .arg("check-log")
        .arg(&log)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        text.contains(&format!(
            "1: grant {CLIENT_V4} (pop3 via dovecot, user customer"
        )),
        "{text}"
    );
    ensure!(text.contains("2: no grant:"), "{text}");
    ensure!(text.contains("3 lines: 1 grant, 2 do not"), "{text}");
    Ok(())
}

#[test]
fn check_config_validates_without_touching_the_kernel() -> Result<()> {
    let scratch = Scratch::new()?;
    let lab = Lab::new()?;
    let config = scratch.path("smtpgate.toml");
    std::fs::write(
        &config,
        format!(
            "iface = [\"{}\"]\nttl = \"15m\"\nlogs = [\"/var/log/mail.log\"]\n",
            lab.server_iface
        ),
    )?;
    let ok = lab.smtpgate(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--check-config",
    ]);
    ensure!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    ensure!(
        !lab.bpffs.pin_dir().exists(),
        "--check-config attached something"
    );
    std::fs::write(&config, "iface = [\"eth0\"]\nttl = \"10 parsecs\"\n")?;
    let bad = lab.smtpgate(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--check-config",
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    ensure!(
        !bad.status.success() && err.lines().count() == 1 && err.contains("ttl:"),
        "{err}"
    );
    Ok(())
}

#[test]
fn the_journal_is_a_source_and_resumes_from_its_cursor() -> Result<()> {
    let scratch = Scratch::new()?;
    let state = scratch.path("state");
    let flags = ["--journal", "--state-dir", state.to_str().unwrap()];
    let mut lab = Lab::new()?;
    let journal = PrivateJournal::start()?;
    journal.login("customer", "2001:db8:1::1")?; // before the first start: read back
    lab.start_agent_under(&journal.enter(), &flags)?;
    wait_for_grant(&lab, "2001:db8:1::1", Duration::from_secs(5))
        .context("entry from before the start")?;
    ensure!(seconds_left(&lab, "2001:db8:2::1")?.is_none());
    journal.login("customer", "2001:db8:2::1")?;
    wait_for_grant(&lab, "2001:db8:2::1", Duration::from_secs(5)).context("live entry")?;

    lab.stop_agent()?;
    journal.login("customer", "2001:db8:3::1")?; // while stopped: found through the saved cursor
    lab.start_agent_under(&journal.enter(), &flags)?;
    wait_for_grant(&lab, "2001:db8:3::1", Duration::from_secs(5))
        .context("entry logged while the agent was down")?;
    Ok(())
}

/// `GET /metrics` from the agent's endpoint inside the server namespace.

#[test]
fn every_rotation_kind_grants_each_login_exactly_once() -> Result<()> {
    let scratch = Scratch::new()?;
    let lab = agent_with_log(&scratch, &["--metrics-listen", "127.0.0.1:9925"])?;
    let log = scratch.path("mail.log");
    let mut sent = 0u32;
    let mut burst = |lab: &Lab| -> Result<()> {
        for _ in 0..10 {
            sent += 1;
            append(
                &log,
                &dovecot_login(&format!("198.51.100.{sent}"), Duration::ZERO),
            )?;
        }
        wait_for_grant(lab, &format!("198.51.100.{sent}"), Duration::from_secs(3)).map(drop)
    };
    burst(&lab)?;
    // rename and re-create (logrotate's default)
    std::fs::rename(&log, scratch.path("mail.log.1"))?;
    burst(&lab)?;
    // copytruncate
    std::fs::copy(&log, scratch.path("mail.log.1"))?;
    OpenOptions::new().write(true).open(&log)?.set_len(0)?;
    burst(&lab)?;
    // truncate in place
    OpenOptions::new().write(true).open(&log)?.set_len(0)?;
    burst(&lab)?;
    // delete and re-create
    std::fs::remove_file(&log)?;
    burst(&lab)?;
    let issued = lab.metric("smtpgate_grants_issued_total{source=\"log\",service=\"pop3\"}")?;
    ensure!(issued == 50, "50 logins written, {issued} grants issued");
    let list: serde_json::Value = serde_json::from_str(&lab.smtpgate_ok(&["list", "--json"])?)?;
    ensure!(
        list.as_array().unwrap().len() == 50,
        "expected 50 live grants"
    );
    Ok(())
}

/// An agent the test starts itself, rather than through [`Lab`], to see its
/// pid and its log. Declared after its lab, it stops before the lab goes.
struct WatchedAgent {
    child: Child,
    stdin: Option<ChildStdin>,
    log: Arc<Mutex<Vec<String>>>,
}

impl WatchedAgent {
    /// `smtpgate run` on the lab's server interface with `flags`; waits
    /// until the gate runs.
    fn start(lab: &Lab, flags: &[&str]) -> Result<Self> {
        let mut child = lab
            .server
            .command(smtpgate_bin())
            .args(["run", "--iface", &lab.server_iface, "--bpffs-dir"])
            .arg(lab.bpffs.pin_dir())
            .args(flags)
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting smtpgate run")?;
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (running, is_running) = mpsc::channel();
        let lines = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[agent] {line}");
                if line.contains("gate running") {
                    let _ = running.send(());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let stdin = child.stdin.take();
        let agent = Self { child, stdin, log };
        if is_running.recv_timeout(Duration::from_secs(20)).is_err() {
            bail!("smtpgate run did not come up");
        }
        Ok(agent)
    }

    /// An agent that takes reports on `notify.sock` in `scratch`, from
    /// anyone, plus `flags`.
    fn with_socket(lab: &Lab, scratch: &Scratch, flags: &[&str]) -> Result<Self> {
        let socket = scratch.path("notify.sock");
        let state = scratch.path("state");
        let mut all = vec![
            "--listen-unix",
            socket.to_str().unwrap(),
            "--listen-unix-mode",
            "0666",
        ];
        all.extend(["--state-dir", state.to_str().unwrap()]);
        all.extend_from_slice(flags);
        Self::start(lab, &all)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's log lines so far that contain every one of `needles`.
    /// [`WatchedAgent::log_lines`] once there are any, waiting up to
    /// `limit`: the agent writes its line just after its reply.
    fn wait_for_lines(&self, needles: &[&str], limit: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let lines = self.log_lines(needles);
            if !lines.is_empty() || start.elapsed() > limit {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .cloned()
            .collect()
    }

    /// A figure of `/proc/PID/status` in KiB (`VmHWM`, `VmData`).
    fn status_kib(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(field)?
                    .strip_prefix(':')?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .with_context(|| format!("no {field} in /proc/{}/status", self.pid()))
    }
}

impl Drop for WatchedAgent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw report lines to the agent's socket; returns its replies.
fn report_raw(socket: &Path, lines: &str) -> Result<Vec<String>> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(lines.as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut replies = String::new();
    stream.read_to_string(&mut replies)?;
    Ok(replies.lines().map(str::to_owned).collect())
}

/// `smtpgate notify IP --service imap` as the mail user (uid 65534).
fn notify_as_mail_user(socket: &Path, ip: &str) -> Result<std::process::Output> {
    Ok(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(smtpgate_bin())
        .args(["notify", ip, "--service", "imap", "--socket"])
        .arg(socket)
        .output()?)
}

#[test]
fn reports_name_their_reporter_and_no_customer_address_is_granted() -> Result<()> {
    let lab = Lab::new()?;
    let scratch = Scratch::new()?;
    let socket = scratch.path("notify.sock");
    let agent = WatchedAgent::with_socket(&lab, &scratch, &[])?;
    let out = notify_as_mail_user(&socket, CLIENT_V4)?;
    ensure!(
        out.status.success(),
        "notify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let granted = agent.wait_for_lines(&["granted", CLIENT_V4], Duration::from_secs(2));
    ensure!(
        granted.iter().any(|l| l.contains("reporter_uid=65534")),
        "the grant's line does not name the reporter: {granted:?}"
    );

    // What the agent refuses, from any client that speaks to the socket.
    let replies = report_raw(
        &socket,
        "0.0.0.0 imap\n:: pop3\n255.255.255.255 imap\n224.0.0.1 imap\nff02::1 imap\n127.0.0.1 imap\n::1 pop3\n\
         198.51.100.7 imap alice 6.6.6.6\n198.51.100.8\n198.51.100.9 smtp\n",
    )?;
    let expected = [
        "unspecified",
        "unspecified",
        "broadcast",
        "multicast",
        "multicast",
        "loopback",
        "loopback",
        "unexpected field '6.6.6.6'",
        "expected 'IP SERVICE [USER]'",
        "unknown service 'smtp'",
    ];
    ensure!(replies.len() == expected.len(), "replies: {replies:?}");
    for (reply, reason) in replies.iter().zip(expected) {
        ensure!(
            reply.starts_with("error: ") && reply.contains(reason),
            "expected a refusal for {reason}, got {reply:?}"
        );
    }
    let list = lab.smtpgate_ok(&["list", "--json"])?;
    let listed: serde_json::Value = serde_json::from_str(&list)?;
    ensure!(
        listed.as_array().unwrap().len() == 1,
        "only the customer holds a grant: {list}"
    );
    Ok(())
}

/// Connections a flood opens to each listener: far more than the
/// descriptors left to the agent.
const FLOOD: usize = 300;

#[test]
fn a_flood_at_the_descriptor_limit_neither_spins_nor_stops_grants() -> Result<()> {
    let lab = Lab::new()?;
    let scratch = Scratch::new()?;
    let socket = scratch.path("notify.sock");
    let agent = WatchedAgent::with_socket(&lab, &scratch, &["--metrics-listen", "127.0.0.1:9925"])?;
    // A handful of descriptors beyond those the agent holds.
    let open = std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))?.count();
    let limit = open + 8;
    sh(
        "prlimit",
        &[
            "--pid",
            &agent.pid().to_string(),
            &format!("--nofile={limit}:{limit}"),
        ],
    )?;

    let started = Instant::now();
    let idle_reporters = (0..FLOOD)
        .map(|_| UnixStream::connect(&socket))
        .collect::<std::io::Result<Vec<_>>>()?;
    // A connect waits once the listener's backlog is full: the flood is as
    // many as it takes.
    let idle_scrapers = lab.server.run(|| {
        let endpoint = "127.0.0.1:9925".parse().expect("an address");
        (0..FLOOD)
            .map_while(|_| {
                std::net::TcpStream::connect_timeout(&endpoint, Duration::from_millis(500)).ok()
            })
            .collect::<Vec<_>>()
    })?;
    ensure!(
        idle_scrapers.len() > limit,
        "only {} connections to the metrics endpoint",
        idle_scrapers.len()
    );
    thread::sleep(Duration::from_secs(3));
    drop(idle_reporters);
    drop(idle_scrapers);

    // Once the flood is over, a report grants and a scrape is answered.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = notify_as_mail_user(&socket, CLIENT_V4)?;
        if out.status.success() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no grant after the flood: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        thread::sleep(Duration::from_millis(200));
    }
    ensure!(
        seconds_left(&lab, CLIENT_V4)?.is_some(),
        "the report after the flood granted nothing"
    );
    ensure!(lab.metric("smtpgate_grants_issued_total{source=\"socket\",service=\"imap\"}")? == 1);
    let lasted = started.elapsed();

    // Each loop warned at most once a second, and the flood did reach the limit.
    let socket_warnings = agent
        .log_lines(&["login socket: ", "Too many open files"])
        .len();
    let metrics_warnings = agent
        .log_lines(&["metrics endpoint: ", "Too many open files"])
        .len();
    let allowed = lasted.as_secs() as usize + 2;
    eprintln!(
        "{socket_warnings} + {metrics_warnings} warnings in {lasted:?}, at most {allowed} each"
    );
    ensure!(
        socket_warnings >= 1 && metrics_warnings >= 1,
        "the flood never hit the descriptor limit"
    );
    ensure!(
        socket_warnings <= allowed && metrics_warnings <= allowed,
        "more than one warning a second"
    );
    Ok(())
}

/// 256 MiB: far more than any bound on a line, and than the agent may hold.
const HUGE_LINE: usize = 256 << 20;

/// Writes a line of `HUGE_LINE` bytes that starts like a login.
fn write_huge_line(out: &mut impl Write) -> Result<()> {
    out.write_all(dovecot_login("198.51.100.60", Duration::ZERO).as_bytes())?;
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..HUGE_LINE / chunk.len() {
        out.write_all(&chunk)?;
    }
    out.write_all(b"\n")?;
    Ok(())
}

#[test]
fn standard_input_holds_no_more_than_a_bounded_piece_of_a_huge_line() -> Result<()> {
    let lab = Lab::new()?;
    let scratch = Scratch::new()?;
    let mut agent = WatchedAgent::start(
        &lab,
        &[
            "--log",
            "-",
            "--state-dir",
            scratch.path("state").to_str().unwrap(),
        ],
    )?;
    // Any allocation of the line would need far more than 64 MiB beyond
    // what the agent holds now.
    let data = agent.status_kib("VmData")? * 1024 + (64 << 20);
    sh(
        "prlimit",
        &[
            "--pid",
            &agent.pid().to_string(),
            &format!("--data={data}:{data}"),
        ],
    )?;
    let stdin = agent.stdin.as_mut().context("agent stdin")?;
    write_huge_line(stdin)?;
    writeln!(stdin, "{}", dovecot_login(CLIENT_V4, Duration::ZERO))?;
    stdin.flush()?;
    wait_for_grant(&lab, CLIENT_V4, Duration::from_secs(20))
        .context("the login after the huge line")?;
    ensure!(
        seconds_left(&lab, "198.51.100.60")?.is_none(),
        "the cut line granted"
    );
    eprintln!(
        "agent peak resident memory: {} KiB",
        agent.status_kib("VmHWM")?
    );
    Ok(())
}

#[test]
fn check_log_holds_no_more_than_a_bounded_piece_of_a_huge_line_and_judges_as_the_agent(
) -> Result<()> {
    let scratch = Scratch::new()?;
    let log = scratch.path("mail.log");
    {
        let mut file = std::fs::File::create(&log)?;
        writeln!(file, "{}", dovecot_login(CLIENT_V4, Duration::ZERO))?;
        write_huge_line(&mut file)?;
        writeln!(
            file,
            "pop3-login: Login: user=<a>, method=PLAIN, rip=198.51.100.61, lip=192.0.2.1, mpid=1"
        )?;
        writeln!(file, "{}", dovecot_login("198.51.100.62", Duration::ZERO))?;
    }
    // 64 MiB of heap at most: the huge line would need four times that.
    let out = Command::new("prlimit")
        .arg(format!("--data={}", 64 << 20))
        .arg(smtpgate_bin())
        .args(["check-log", "--pattern", r"login ok .* from (?P<ip>\S+)"])
        .arg(&log)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "check-log failed: {err}");
    ensure!(text.contains(&format!("1: grant {CLIENT_V4}")), "{text}");
    ensure!(
        text.contains("2: no grant: line longer than 64 KiB, cut"),
        "{text}"
    );
    ensure!(text.contains("3: no grant: no time stamp"), "{text}");
    ensure!(text.contains("4: grant 198.51.100.62"), "{text}");
    ensure!(
        err.contains("warning: custom pattern")
            && err.contains("does not start with a fixed program name"),
        "{err}"
    );
    Ok(())
}

#[test]
fn lines_unlike_the_logs_own_never_grant_and_are_warned_about_once() -> Result<()> {
    let lab = Lab::new()?;
    let scratch = Scratch::new()?;
    let log = scratch.path("mail.log");
    let state = scratch.path("state");
    let agent = WatchedAgent::start(
        &lab,
        &[
            "--log",
            log.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
    )?;
    append(&log, &dovecot_login(CLIENT_V4, Duration::ZERO))?;
    wait_for_grant(&lab, CLIENT_V4, Duration::from_secs(2))?;
    // What a syslog daemon that writes a client's line breaks unescaped
    // would put in the file: lines without the log's stamp and host.
    for n in 1..=20 {
        append(&log, &format!("dovecot: pop3-login: Login: user=<x>, method=PLAIN, rip=198.51.100.{n}, lip=192.0.2.1, mpid=1"))?;
    }
    append(&log, &dovecot_login(CLIENT_V6, Duration::ZERO))?;
    wait_for_grant(&lab, CLIENT_V6, Duration::from_secs(2))
        .context("a login after the foreign lines")?;
    ensure!((1..=20)
        .all(|n| seconds_left(&lab, &format!("198.51.100.{n}")).is_ok_and(|left| left.is_none())));
    let warnings = agent.log_lines(&["a line was not judged a login", "no time stamp"]);
    ensure!(
        warnings.len() == 1,
        "one warning a minute, got {warnings:?}"
    );
    ensure!(
        warnings[0].contains("similar_lines_since=0") && warnings[0].contains("--log-format bare"),
        "{warnings:?}"
    );
    Ok(())
}
