//! Real mail servers for end-to-end tests: a Dovecot (POP3 and IMAP) and a
//! Postfix (SMTP) in a lab's server namespace, each with everything private
//! to the test under its own temporary directory, plus client helpers that
//! log in, send and fetch mail from the client namespace.
//!
//! Postfix delivers `customer@example.test` into the same maildir Dovecot
//! serves, so a test can send a message through the gate and fetch it back
//! with POP3.
//!
//! Instances do not share anything: each has its own configuration, base
//! and state directories, pid files, queue, data directory and log file, and
//! listens only inside its own namespace. Tests using them therefore run in
//! parallel; no lock is needed.
//!
//! Cleanup is by `Drop`, also on failure: each server is stopped the normal
//! way first, then any process of ours still working in (or chrooted to) the
//! server's temporary directory is killed by pid, then the directory goes.

use std::{
    fs,
    io::{self, BufRead, BufReader, Read, Write},
    mem,
    net::{IpAddr, SocketAddr, TcpStream},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::{chown, PermissionsExt},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use crate::{sh, tools, unique_name, Family, Lab, Netns, Scratch};

/// The mailbox every test uses.
pub const USER: &str = "customer";
pub const PASSWORD: &str = "secret";
/// A second mailbox (same password), for tests of two customers.
pub const NEIGHBOUR: &str = "neighbour";
pub const RECIPIENT: &str = "customer@example.test";
pub const SENDER: &str = "someone@example.org";
pub const MAIL_DOMAIN: &str = "example.test";

pub const POP3: u16 = 110;
pub const IMAP: u16 = 143;

/// How long a server may take to come up or go down.
const START: Duration = Duration::from_secs(15);
const STOP: Duration = Duration::from_secs(10);
/// How long a client command (curl, swaks) may run.
const CLIENT: Duration = Duration::from_secs(15);

/// A user's numeric uid and primary gid, from the system's user database.
fn ids(user: &str) -> Result<(u32, u32)> {
    let uid = sh("id", &["-u", user])?.trim().parse().context("uid")?;
    let gid = sh("id", &["-g", user])?.trim().parse().context("gid")?;
    Ok((uid, gid))
}

/// The lab's server addresses, where its servers listen by default.
fn server_addrs() -> [IpAddr; 2] {
    [crate::SERVER_V4, crate::SERVER_V6].map(|ip| ip.parse().expect("a literal address"))
}

/// `listen` written with `show` and joined by ", ", as both servers'
/// configurations take a list of addresses.
fn joined(listen: &[IpAddr], show: impl Fn(&IpAddr) -> String) -> String {
    listen.iter().map(show).collect::<Vec<_>>().join(", ")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Runs `cmd` to completion, killing it if it takes longer than `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Pids of processes whose working directory or root lies under `dir`:
/// the daemons a server under `dir` started (Dovecot's and Postfix's
/// processes all chdir or chroot into their private directories).
fn processes_under(dir: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            ["cwd", "root"].iter().any(|link| {
                fs::read_link(format!("/proc/{pid}/{link}"))
                    .is_ok_and(|target| target.starts_with(dir))
            })
        })
        .collect()
}

/// Waits until no process works under `dir`; kills the stragglers (by pid)
/// once `grace` is over.
fn reap_processes_under(dir: &Path, grace: Duration) {
    let deadline = Instant::now() + grace;
    loop {
        let left = processes_under(dir);
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for pid in &left {
                eprintln!(
                    "[mail] killing leftover process {pid} under {}",
                    dir.display()
                );
                // SAFETY: plain signal to a process we started (found by its
                // directory, which is unique to this test).
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            thread::sleep(Duration::from_millis(100));
            if processes_under(dir).is_empty() || Instant::now() > deadline + Duration::from_secs(5)
            {
                return;
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The text of a log file so far ("" if it does not exist yet).
fn read_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Waits until a line of the log at `path` satisfies `pred`; returns it.
fn wait_for_line(
    path: &Path,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = read_log(path);
        if let Some(line) = text.lines().find(|l| pred(l)) {
            return Ok(line.to_owned());
        }
        if Instant::now() > deadline {
            bail!(
                "no {what} in {} within {timeout:?}; the log:\n{text}",
                path.display()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a greeting starting with `banner` arrives on `addr`,
/// connecting from inside `ns` (the gate only filters the veth's ingress,
/// so this does not pass it).
fn wait_for_banner(
    ns: &Netns,
    addr: SocketAddr,
    banner: &'static str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let greeted = ns.run(move || -> io::Result<String> {
            let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line)?;
            Ok(line)
        })?;
        match greeted {
            Ok(line) if line.starts_with(banner) => return Ok(()),
            Ok(line) if Instant::now() > deadline => {
                bail!("{addr} greeted with {line:?}, expected {banner:?}")
            }
            Err(e) if Instant::now() > deadline => {
                bail!("{addr} did not answer within {timeout:?}: {e}")
            }
            _ => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A real Dovecot 2.3 serving POP3 (110) and IMAP (143) on 192.0.2.1 and
/// 2001:db8::1 in a server namespace, with users [`USER`] and [`NEIGHBOUR`]
/// (both [`PASSWORD`]) and its log (logins included) in a private file.
pub struct Dovecot {
    master: Child,
    conf: PathBuf,
    log: PathBuf,
    mail_root: PathBuf,
    dir: Scratch,
}

impl Dovecot {
    /// Writes the configuration, checks it with `doveconf`, starts
    /// `dovecot -F` in `ns` and waits until every listener greets.
    pub fn start(ns: &Netns) -> Result<Self> {
        Self::start_with(ns, "")
    }

    /// [`Dovecot::start`] with `settings` (lines of `dovecot.conf`, such as
    /// `imap_id_log = *`) added to the configuration.
    pub fn start_with(ns: &Netns, settings: &str) -> Result<Self> {
        Self::start_on(ns, &server_addrs(), settings)
    }

    /// [`Dovecot::start_with`] listening on `listen` instead of the lab's
    /// server addresses.
    pub fn start_on(ns: &Netns, listen: &[IpAddr], settings: &str) -> Result<Self> {
        let dir = Scratch::labelled("dovecot")?;
        let d = dir.dir().to_path_buf();
        let conf = d.join("dovecot.conf");
        let log = d.join("dovecot.log");
        let passwd = d.join("passwd");
        let mail_root = d.join("mail");
        let instance = format!("dovecot-{}", unique_name());

        // Mail is stored as nobody: Postfix's virtual agent delivers as the
        // same user into the same maildirs.
        let (uid, gid) = ids("nobody")?;
        fs::create_dir(&mail_root)?;
        fs::set_permissions(&mail_root, fs::Permissions::from_mode(0o700))?;
        chown(&mail_root, Some(uid), Some(gid))?;
        fs::write(
            &passwd,
            format!("{USER}:{{PLAIN}}{PASSWORD}\n{NEIGHBOUR}:{{PLAIN}}{PASSWORD}\n"),
        )?;
        fs::set_permissions(&passwd, fs::Permissions::from_mode(0o644))?;

        let d = path_str(&d);
        fs::write(
            &conf,
            format!(
                "# Private test instance; nothing here touches /etc/dovecot or /var/run.\n\
                 instance_name = {instance}\n\
                 base_dir = {d}/run\n\
                 state_dir = {d}/state\n\
                 log_path = {d}/dovecot.log\n\
                 info_log_path = {d}/dovecot.log\n\
                 protocols = pop3 imap\n\
                 listen = {listen}\n\
                 ssl = no\n\
                 disable_plaintext_auth = no\n\
                 auth_mechanisms = plain login\n\
                 # A refused password is answered after 1 s (default 2 s; 0 stalls 2.3).\n\
                 auth_failure_delay = 1 secs\n\
                 first_valid_uid = {uid}\n\
                 last_valid_uid = {uid}\n\
                 mail_location = maildir:{d}/mail/%n\n\
                 passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%n {d}/passwd\n}}\n\
                 userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={d}/home/%n\n}}\n\
                 # No auth penalty: the wrong-password step would slow the\n\
                 # customer's next login from the same address by seconds.\n\
                 service anvil {{\n  unix_listener anvil-auth-penalty {{\n    mode = 0\n  }}\n}}\n\
                 service pop3-login {{\n  inet_listener pop3 {{\n    port = {POP3}\n  }}\n}}\n\
                 service imap-login {{\n  inet_listener imap {{\n    port = {IMAP}\n  }}\n}}\n\
                 {settings}",
                listen = joined(listen, |ip| ip.to_string()),
            ),
        )?;

        let checked = run_bounded(
            Command::new(tools::require("doveconf")?)
                .arg("-c")
                .arg(&conf)
                .arg("-n"),
            START,
        )?;
        if !checked.status.success() {
            bail!(
                "doveconf rejected {}: {}",
                conf.display(),
                String::from_utf8_lossy(&checked.stderr).trim()
            );
        }

        let stderr = fs::File::create(dir.dir().join("dovecot.stderr"))?;
        let master = ns
            .command(tools::require("dovecot")?)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone()?)
            .stderr(stderr)
            .spawn()
            .context("starting dovecot")?;
        let mut dovecot = Self {
            master,
            conf,
            log,
            mail_root,
            dir,
        };
        dovecot.wait_ready(ns, listen).with_context(|| {
            format!(
                "Dovecot did not come up; stderr: {}; log:\n{}",
                read_log(&dovecot.dir.dir().join("dovecot.stderr")).trim(),
                dovecot.log()
            )
        })?;
        Ok(dovecot)
    }

    fn wait_ready(&mut self, ns: &Netns, listen: &[IpAddr]) -> Result<()> {
        let deadline = Instant::now() + START;
        for &ip in listen {
            for (port, banner) in [(POP3, "+OK"), (IMAP, "* OK")] {
                if let Some(status) = self.master.try_wait()? {
                    bail!("dovecot exited with {status}");
                }
                let left = deadline.saturating_duration_since(Instant::now());
                wait_for_banner(ns, SocketAddr::new(ip, port), banner, left)?;
            }
        }
        Ok(())
    }

    /// The log file the agent follows (`log_path`, `info_log_path`).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Waits for a log line that satisfies `pred`; returns it.
    pub fn wait_for_log(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        wait_for_line(&self.log, timeout, what, pred)
    }

    /// The directory holding one maildir per user (`<root>/customer`).
    pub fn mail_root(&self) -> &Path {
        &self.mail_root
    }

    pub fn config_path(&self) -> &Path {
        &self.conf
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGTERM to the master (our own child) shuts every Dovecot process
        // of this instance down; `doveadm stop` would do the same, slower.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.master.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + STOP;
        loop {
            match self.master.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!("[mail] dovecot ignored SIGTERM; killing it");
                    let _ = self.master.kill();
                    let _ = self.master.wait();
                    break;
                }
                Ok(None) => thread::sleep(Duration::from_millis(20)),
            }
        }
        reap_processes_under(self.dir.dir(), Duration::from_secs(3));
    }
}

/// A real Postfix 3.x accepting mail for [`RECIPIENT`] on port 25 of
/// 192.0.2.1 and [2001:db8::1] in a server namespace, delivering into the
/// maildir a [`Dovecot`] serves, logging to a private file.
pub struct Postfix {
    config: PathBuf,
    queue: PathBuf,
    log: PathBuf,
    netns: String,
    dir: Scratch,
}

/// `master.cf`: the stock services, none chrooted, plus `postlog` for
/// `maillog_file`.
const MASTER_CF: &str = "\
# service  type  private unpriv chroot wakeup maxproc command
smtp       inet  n       -      n      -      -       smtpd
pickup     unix  n       -      n      60     1       pickup
cleanup    unix  n       -      n      -      0       cleanup
qmgr       unix  n       -      n      300    1       qmgr
rewrite    unix  -       -      n      -      -       trivial-rewrite
bounce     unix  -       -      n      -      0       bounce
defer      unix  -       -      n      -      0       bounce
trace      unix  -       -      n      -      0       bounce
verify     unix  -       -      n      -      1       verify
flush      unix  n       -      n      1000?  0       flush
proxymap   unix  -       -      n      -      -       proxymap
proxywrite unix  -       -      n      -      1       proxymap
smtp       unix  -       -      n      -      -       smtp
relay      unix  -       -      n      -      -       smtp
showq      unix  n       -      n      -      -       showq
error      unix  -       -      n      -      -       error
retry      unix  -       -      n      -      -       error
discard    unix  -       -      n      -      -       discard
local      unix  -       n      n      -      -       local
virtual    unix  -       n      n      -      -       virtual
anvil      unix  -       -      n      -      1       anvil
scache     unix  -       -      n      -      1       scache
postlog    unix-dgram n  -      n      -      1       postlogd
";

impl Postfix {
    /// Writes `main.cf`/`master.cf`, runs `postfix -c DIR start` in `ns`
    /// and waits until port 25 greets on both addresses. Mail for
    /// [`RECIPIENT`] is delivered to the maildir `<mail_root>/customer/`.
    pub fn start(ns: &Netns, mail_root: &Path) -> Result<Self> {
        Self::start_with(ns, mail_root, "")
    }

    /// [`Postfix::start`] with `settings` (lines of `main.cf`, such as
    /// `smtpd_recipient_restrictions = ...`) added to the configuration.
    pub fn start_with(ns: &Netns, mail_root: &Path, settings: &str) -> Result<Self> {
        Self::start_on(ns, mail_root, &server_addrs(), settings)
    }

    /// [`Postfix::start_with`] listening on `listen` instead of the lab's
    /// server addresses.
    pub fn start_on(
        ns: &Netns,
        mail_root: &Path,
        listen: &[IpAddr],
        settings: &str,
    ) -> Result<Self> {
        tools::require("postfix")?;
        let dir = Scratch::labelled("postfix")?;
        let d = dir.dir();
        let config = d.join("etc");
        let queue = d.join("queue");
        let data = d.join("data");
        let log = d.join("postfix.log");
        fs::create_dir(&config)?;
        // The queue directory belongs to root (post-install creates the
        // postfix-owned subdirectories); the data directory to mail_owner.
        fs::create_dir(&queue)?;
        fs::create_dir(&data)?;
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700))?;
        let (postfix_uid, postfix_gid) = ids("postfix")?;
        chown(&data, Some(postfix_uid), Some(postfix_gid))?;
        let (mail_uid, mail_gid) = ids("nobody")?;

        fs::write(
            config.join("main.cf"),
            format!(
                "# Private test instance; nothing here touches /etc/postfix or /var/spool.\n\
                 compatibility_level = 3.6\n\
                 queue_directory = {queue}\n\
                 data_directory = {data}\n\
                 maillog_file = {log}\n\
                 maillog_file_prefixes = {d}\n\
                 myhostname = mail.{MAIL_DOMAIN}\n\
                 mydomain = {MAIL_DOMAIN}\n\
                 mydestination =\n\
                 mynetworks = 127.0.0.0/8\n\
                 inet_interfaces = {listen}\n\
                 inet_protocols = all\n\
                 smtpd_peername_lookup = no\n\
                 smtp_dns_support_level = disabled\n\
                 alias_maps =\n\
                 alias_database =\n\
                 biff = no\n\
                 virtual_mailbox_domains = {MAIL_DOMAIN}\n\
                 virtual_mailbox_base = {mail_root}\n\
                 virtual_mailbox_maps = inline:{{ {RECIPIENT}={USER}/ }}\n\
                 virtual_minimum_uid = {mail_uid}\n\
                 virtual_uid_maps = static:{mail_uid}\n\
                 virtual_gid_maps = static:{mail_gid}\n\
                 {settings}",
                queue = path_str(&queue),
                data = path_str(&data),
                log = path_str(&log),
                d = path_str(d),
                mail_root = path_str(mail_root),
                listen = joined(listen, |ip| match ip {
                    IpAddr::V4(v4) => v4.to_string(),
                    IpAddr::V6(v6) => format!("[{v6}]"),
                }),
            ),
        )?;
        fs::write(config.join("master.cf"), MASTER_CF)?;

        let postfix = Self {
            config,
            queue,
            log,
            netns: ns.path(),
            dir,
        };
        // `postfix start` runs `postfix check` (creating the queue's
        // subdirectories) and returns once the master is ready. Its own
        // complaints go to maillog_file, not to stderr.
        let started = run_bounded(&mut postfix.command("start"), START)?;
        if !started.status.success() {
            bail!(
                "postfix start failed ({}): {}; log:\n{}",
                started.status,
                String::from_utf8_lossy(&started.stderr).trim(),
                postfix.log()
            );
        }
        for &ip in listen {
            wait_for_banner(ns, SocketAddr::new(ip, crate::SMTP), "220 ", START)
                .with_context(|| format!("Postfix is not answering; log:\n{}", postfix.log()))?;
        }
        Ok(postfix)
    }

    /// `postfix -c <config> VERB` inside the server namespace.
    fn command(&self, verb: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns))
            .args(["--", "postfix", "-c"])
            .arg(&self.config)
            .arg(verb);
        cmd
    }

    pub fn config_dir(&self) -> &Path {
        &self.config
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Waits until the message `queue_id` has been delivered to
    /// [`RECIPIENT`] (`status=sent` in Postfix's log); returns that line.
    pub fn wait_for_delivery(&self, queue_id: &str, timeout: Duration) -> Result<String> {
        let to = format!("{queue_id}: to=<{RECIPIENT}>");
        wait_for_line(
            &self.log,
            timeout,
            &format!("delivery of {queue_id}"),
            |l| l.contains(&to) && l.contains("status=sent"),
        )
    }

    /// The master's pid, from its pid file in the private queue directory.
    fn master_pid(&self) -> Option<i32> {
        fs::read_to_string(self.queue.join("pid/master.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let stopped =
            run_bounded(&mut self.command("stop"), STOP).is_ok_and(|o| o.status.success());
        if !stopped {
            // The namespace may be gone already; stop the master directly.
            if let Some(pid) = self.master_pid() {
                // SAFETY: plain signal to the master this instance started.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        // Every Postfix daemon works in the private queue directory.
        reap_processes_under(self.dir.dir(), Duration::from_secs(5));
    }
}

/// What Postfix made of a message offered by swaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Taken, under this queue id.
    Queued(String),
    /// The recipient was refused for now: Postfix's reply (`450 4.7.1 ...`).
    Deferred(String),
}

/// Outcome of a login attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Login {
    Accepted,
    Refused,
}

/// Where the agent of [`MailLab::with_policy`] answers policy requests,
/// inside the server's namespace.
pub const POLICY_FLAG: &str = "--policy-listen=inet:127.0.0.1:10040";
/// Postfix asking the agent of [`POLICY_FLAG`] about every recipient,
/// and going on without it should it not answer (the README's advice).
pub const POLICY_RESTRICTION: &str = "smtpd_recipient_restrictions = check_policy_service { inet:127.0.0.1:10040, default_action=DUNNO }\n";

/// A lab with Dovecot and Postfix in the server namespace and the agent
/// following Dovecot's log. Fields drop in declaration order: the servers
/// stop first, then the lab (agent, namespaces, bpffs), then the agent's
/// state directory.
pub struct MailLab {
    pub postfix: Postfix,
    pub dovecot: Dovecot,
    pub lab: Lab,
    pub agent_state: Scratch,
}

impl MailLab {
    /// Lab, Dovecot, Postfix, then `smtpgate run --log <dovecot log> --ttl
    /// TTL --state-dir <private dir>` plus `extra` flags.
    pub fn start(ttl: &str, extra: &[&str]) -> Result<Self> {
        Self::start_with(ttl, extra, "")
    }

    /// [`MailLab::start`] with `dovecot_settings` added to Dovecot's
    /// configuration (see [`Dovecot::start_with`]).
    pub fn start_with(ttl: &str, extra: &[&str], dovecot_settings: &str) -> Result<Self> {
        Self::launch(ttl, extra, dovecot_settings, "")
    }

    /// [`MailLab::start`] with the agent serving Postfix's policy requests
    /// at [`POLICY_FLAG`] in the server namespace, and Postfix asking it
    /// about every recipient (quotas are the agent's `extra` flags).
    pub fn with_policy(ttl: &str, extra: &[&str]) -> Result<Self> {
        let mut flags = vec![POLICY_FLAG];
        flags.extend_from_slice(extra);
        Self::launch(ttl, &flags, "", POLICY_RESTRICTION)
    }

    fn launch(
        ttl: &str,
        extra: &[&str],
        dovecot_settings: &str,
        postfix_settings: &str,
    ) -> Result<Self> {
        let agent_state = Scratch::labelled("agent-state")?;
        let mut lab = Lab::new()?;
        let dovecot = Dovecot::start_with(&lab.server, dovecot_settings)?;
        let postfix = Postfix::start_with(&lab.server, dovecot.mail_root(), postfix_settings)?;
        let mut flags = vec![
            "--log",
            path_str(dovecot.log_path()),
            "--ttl",
            ttl,
            "--state-dir",
            path_str(agent_state.dir()),
        ];
        flags.extend_from_slice(extra);
        lab.start_agent(&flags)?;
        Ok(Self {
            postfix,
            dovecot,
            lab,
            agent_state,
        })
    }

    /// A POP3 login (and LIST) as [`USER`] with `password` from the client
    /// namespace, by curl.
    pub fn pop3_login(&self, family: Family, password: &str) -> Result<Login> {
        let server = self.lab.server_addr(family);
        login(&self.lab.client, "pop3", server, None, USER, password)
    }

    /// Like [`MailLab::pop3_login`] from a given client `source` address.
    pub fn pop3_login_from(&self, source: IpAddr, password: &str) -> Result<Login> {
        self.pop3_login_as(USER, source, password)
    }

    /// A POP3 login as `user` from the client address `source`.
    pub fn pop3_login_as(&self, user: &str, source: IpAddr, password: &str) -> Result<Login> {
        let server = self.lab.server_addr(family_of(source));
        login(
            &self.lab.client,
            "pop3",
            server,
            Some(source),
            user,
            password,
        )
    }

    /// An IMAP login (and LIST of mailboxes) as [`USER`], by curl.
    pub fn imap_login(&self, family: Family, password: &str) -> Result<Login> {
        let server = self.lab.server_addr(family);
        login(&self.lab.client, "imap", server, None, USER, password)
    }

    /// Fetches every message in the customer's mailbox over POP3.
    pub fn fetch_mail(&self, family: Family) -> Result<Vec<String>> {
        let base = url("pop3", self.lab.server_addr(family), USER, PASSWORD);
        let list = curl(&self.lab.client, &[&base], None)?;
        ensure!(
            list.status.success(),
            "POP3 LIST failed: {}",
            String::from_utf8_lossy(&list.stderr).trim()
        );
        let mut messages = Vec::new();
        for line in String::from_utf8_lossy(&list.stdout).lines() {
            let Some(number) = line.split_whitespace().next() else {
                continue;
            };
            let retr = curl(&self.lab.client, &[&format!("{base}{number}")], None)?;
            ensure!(
                retr.status.success(),
                "POP3 RETR {number} failed: {}",
                String::from_utf8_lossy(&retr.stderr).trim()
            );
            messages.push(String::from_utf8_lossy(&retr.stdout).into_owned());
        }
        Ok(messages)
    }

    /// Sends a message with `subject` from [`SENDER`] to [`RECIPIENT`] with
    /// swaks from the client namespace; returns Postfix's queue id.
    pub fn send_mail(&self, family: Family, subject: &str) -> Result<String> {
        match send(
            &self.lab.client,
            self.lab.server_addr(family),
            None,
            subject,
        )? {
            Sent::Queued(id) => Ok(id),
            Sent::Deferred(reply) => bail!("the recipient was deferred: {reply}"),
        }
    }

    /// Like [`MailLab::send_mail`] from the client address `source`; a
    /// recipient refused for now is an outcome, not a failure.
    pub fn send_from(&self, source: IpAddr, subject: &str) -> Result<Sent> {
        let server = self.lab.server_addr(family_of(source));
        send(&self.lab.client, server, Some(source), subject)
    }

    /// The addresses holding a live grant (`smtpgate list --json`).
    pub fn grants(&self) -> Result<Vec<String>> {
        grants_where(&self.lab, |_| true)
    }

    /// The addresses holding a live grant `user` earned.
    pub fn grants_of(&self, user: &str) -> Result<Vec<String>> {
        grants_of(&self.lab, user)
    }

    /// Waits until `ip` holds a grant; returns how long that took.
    pub fn wait_for_grant(&self, ip: IpAddr, timeout: Duration) -> Result<Duration> {
        self.wait_for_grant_state(ip, true, timeout)
    }

    /// Waits until `ip` no longer holds a grant; returns how long that took.
    pub fn wait_for_expiry(&self, ip: IpAddr, timeout: Duration) -> Result<Duration> {
        self.wait_for_grant_state(ip, false, timeout)
    }

    fn wait_for_grant_state(
        &self,
        ip: IpAddr,
        granted: bool,
        timeout: Duration,
    ) -> Result<Duration> {
        let start = Instant::now();
        let ip = ip.to_string();
        loop {
            if self.grants()?.contains(&ip) == granted {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "{ip} {} a grant after {timeout:?}; Dovecot's log:\n{}",
                    if granted {
                        "did not get"
                    } else {
                        "still holds"
                    },
                    self.dovecot.log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The addresses holding a live grant `user` earned in `lab`'s gate.
pub fn grants_of(lab: &Lab, user: &str) -> Result<Vec<String>> {
    grants_where(lab, |grant| grant["user"].as_str() == Some(user))
}

/// The addresses of the live grants (`smtpgate list --json`) that `wanted`
/// picks.
fn grants_where(lab: &Lab, wanted: impl Fn(&serde_json::Value) -> bool) -> Result<Vec<String>> {
    let listed: serde_json::Value = serde_json::from_str(&lab.smtpgate_ok(&["list", "--json"])?)?;
    Ok(listed
        .as_array()
        .context("list --json is not an array")?
        .iter()
        .filter(|grant| wanted(grant))
        .filter_map(|g| g["address"].as_str().map(str::to_owned))
        .collect())
}

/// `SCHEME://USER:PASSWORD@SERVER/`.
fn url(scheme: &str, server: IpAddr, user: &str, password: &str) -> String {
    match server {
        IpAddr::V4(a) => format!("{scheme}://{user}:{password}@{a}/"),
        IpAddr::V6(a) => format!("{scheme}://{user}:{password}@[{a}]/"),
    }
}

fn family_of(ip: IpAddr) -> Family {
    if ip.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    }
}

/// curl in the namespace `client`, from `source` if given.
fn curl(client: &Netns, args: &[&str], source: Option<IpAddr>) -> Result<Output> {
    let mut cmd = client.command(tools::require("curl")?);
    cmd.args([
        "--silent",
        "--show-error",
        "--connect-timeout",
        "5",
        "--max-time",
        "8",
    ]);
    if let Some(source) = source {
        cmd.arg("--interface").arg(source.to_string());
    }
    run_bounded(cmd.args(args), CLIENT)
}

/// curl's exit status for a refused login.
const CURL_LOGIN_DENIED: i32 = 67;

/// A `scheme` (pop3, imap) login as `user` to `server` by curl in the
/// namespace `client`, from `source` if given.
pub fn login(
    client: &Netns,
    scheme: &str,
    server: IpAddr,
    source: Option<IpAddr>,
    user: &str,
    password: &str,
) -> Result<Login> {
    let out = curl(client, &[&url(scheme, server, user, password)], source)?;
    match out.status.code() {
        Some(0) => Ok(Login::Accepted),
        Some(CURL_LOGIN_DENIED) => Ok(Login::Refused),
        _ => bail!(
            "{scheme} login: curl {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// One message with `subject` from [`SENDER`] to [`RECIPIENT`] by swaks
/// in the namespace `client` to port 25 of `server`, from `source` if
/// given; a recipient refused for now is an outcome, not a failure.
pub fn send(client: &Netns, server: IpAddr, source: Option<IpAddr>, subject: &str) -> Result<Sent> {
    let mut cmd = client.command(tools::require("swaks")?);
    if let Some(source) = source {
        cmd.arg("--local-interface").arg(source.to_string());
    }
    let out = run_bounded(
        cmd.args([
            "--server",
            &server.to_string(),
            "--port",
            "25",
            "--helo",
            "client.example.org",
            "--from",
            SENDER,
            "--to",
            RECIPIENT,
            "--header",
            &format!("Subject: {subject}"),
            "--body",
            "Sent through the gate after fetching mail.",
            "--timeout",
            "5s",
        ]),
        CLIENT,
    )?;
    let transcript = String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        return queue_id(&transcript)
            .map(Sent::Queued)
            .with_context(|| format!("no queue id in swaks' transcript:\n{transcript}"));
    }
    match rcpt_reply(&transcript) {
        Some(reply) if reply.starts_with('4') => Ok(Sent::Deferred(reply)),
        _ => bail!(
            "swaks failed ({}): {}\n{transcript}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// The reply to RCPT TO in a swaks transcript, without swaks' marks
/// (`<-  ` for a success, `<** ` for an error).
fn rcpt_reply(transcript: &str) -> Option<String> {
    let mut lines = transcript.lines();
    lines.find(|line| line.trim_start().starts_with("-> RCPT TO"))?;
    let reply = lines.next()?;
    Some(reply.get(4..)?.trim().to_owned())
}

/// The queue id in a "250 2.0.0 Ok: queued as ID" reply.
fn queue_id(text: &str) -> Option<String> {
    let rest = &text[text.find("queued as ")? + "queued as ".len()..];
    let id: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (!id.is_empty()).then_some(id)
}

/// One SMTP reply (all its lines); fails unless its code is `code`.
fn expect_reply(reader: &mut impl BufRead, code: &str) -> Result<String> {
    let reply = read_reply(reader)?;
    ensure!(reply.starts_with(code), "expected {code}, got {reply:?}");
    Ok(reply)
}

/// One SMTP reply, all its lines.
fn read_reply(reader: &mut impl BufRead) -> Result<String> {
    let mut reply = String::new();
    loop {
        let mut line = String::new();
        ensure!(
            reader.read_line(&mut line)? > 0,
            "connection closed; got so far: {reply:?}"
        );
        reply.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            break;
        }
    }
    Ok(reply)
}

/// Speaks SMTP on an open connection to Postfix up to one recipient: the
/// greeting, EHLO, MAIL FROM [`SENDER`], RCPT TO [`RECIPIENT`]; returns the
/// reply to RCPT, whatever it is.
pub fn rcpt_on(stream: &TcpStream) -> Result<String> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    expect_reply(&mut reader, "220")?;
    writer.write_all(b"EHLO client.example.org\r\n")?;
    expect_reply(&mut reader, "250")?;
    writer.write_all(format!("MAIL FROM:<{SENDER}>\r\n").as_bytes())?;
    expect_reply(&mut reader, "250")?;
    writer.write_all(format!("RCPT TO:<{RECIPIENT}>\r\n").as_bytes())?;
    read_reply(&mut reader)
}

/// Speaks SMTP on an open connection to Postfix: sends one message with
/// `subject` from [`SENDER`] to [`RECIPIENT`]; returns the queue id.
pub fn send_on(stream: &TcpStream, subject: &str) -> Result<String> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    expect_reply(&mut reader, "220")?;
    let mut say = |line: &str, code: &str| -> Result<String> {
        writer.write_all(line.as_bytes())?;
        expect_reply(&mut reader, code)
    };
    say("EHLO client.example.org\r\n", "250")?;
    say(&format!("MAIL FROM:<{SENDER}>\r\n"), "250")?;
    say(&format!("RCPT TO:<{RECIPIENT}>\r\n"), "250")?;
    say("DATA\r\n", "354")?;
    let queued = say(
        &format!(
            "From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: {subject}\r\n\r\nSent on a connection opened while fetching mail.\r\n.\r\n"
        ),
        "250",
    )?;
    say("QUIT\r\n", "221")?;
    queue_id(&queued).with_context(|| format!("no queue id in {queued:?}"))
}

/// Sends one IMAP command (`tag` and `command`, without the line end) on an
/// open connection and reads up to its tagged reply; returns that reply's
/// status and text (`OK ID completed.`).
pub fn imap_command(
    reader: &mut impl BufRead,
    writer: &mut impl Write,
    tag: &str,
    command: &str,
) -> Result<String> {
    writer.write_all(format!("{tag} {command}\r\n").as_bytes())?;
    loop {
        let mut line = String::new();
        ensure!(
            reader.read_line(&mut line)? > 0,
            "connection closed before the reply to {tag}"
        );
        if let Some(status) = line
            .strip_prefix(tag)
            .and_then(|rest| rest.strip_prefix(' '))
        {
            return Ok(status.trim_end().to_owned());
        }
    }
}

/// Lab extensions for tests with several client addresses.
pub trait LabExt {
    /// Adds another address to the client's veth (e.g. 192.0.2.3/24).
    fn add_client_address(&self, cidr: &str) -> Result<()>;
    /// A TCP connect from the client namespace bound to `source`.
    fn connect_from(&self, source: IpAddr, port: u16, timeout: Duration) -> io::Result<TcpStream>;
    /// Fails unless a connect from `source` to `port` gets no answer.
    fn assert_no_answer_from(&self, source: IpAddr, port: u16) -> Result<()>;
}

impl LabExt for Lab {
    fn add_client_address(&self, cidr: &str) -> Result<()> {
        let mut args = vec!["addr", "add", cidr, "dev", &self.client_iface];
        if cidr.contains(':') {
            args.insert(0, "-6");
            args.push("nodad");
        }
        self.client.ip(&args)?;
        Ok(())
    }

    fn connect_from(&self, source: IpAddr, port: u16, timeout: Duration) -> io::Result<TcpStream> {
        let family = if source.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        let dest = SocketAddr::new(self.server_addr(family), port);
        self.client
            .run(move || connect_bound(SocketAddr::new(source, 0), dest, timeout))
            .map_err(io::Error::other)?
    }

    fn assert_no_answer_from(&self, source: IpAddr, port: u16) -> Result<()> {
        match self.connect_from(source, port, crate::DROPPED) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(()),
            Err(e) => bail!(
                "expected the SYN from {source} to port {port} to be dropped silently, got {e}"
            ),
            Ok(_) => {
                bail!("{source} connected to port {port}; the gate should have dropped the SYN")
            }
        }
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// `connect` from a bound local address with a timeout (std binds only
/// listeners).
fn connect_bound(local: SocketAddr, dest: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let domain = if dest.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let (local, local_len) = sockaddr(local);
    // SAFETY: a valid sockaddr of the stated length.
    if unsafe { libc::bind(fd, &local as *const _ as *const libc::sockaddr, local_len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (remote, remote_len) = sockaddr(dest);
    // SAFETY: as above.
    if unsafe { libc::connect(fd, &remote as *const _ as *const libc::sockaddr, remote_len) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err);
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {dest} timed out"),
            ));
        }
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as libc::c_int) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n > 0 {
            break;
        }
    }
    let mut error: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_ERROR into a c_int of the stated size.
    if unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut error as *mut _ as *mut libc::c_void,
            &mut len,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    if error != 0 {
        return Err(io::Error::from_raw_os_error(error));
    }
    let stream = TcpStream::from(sock);
    stream.set_nonblocking(false)?;
    Ok(stream)
}
