//! A journald of the test's own, for tests of the agent's `--journal`
//! source. There is no systemd at PID 1 here (nor on CI), and a journald
//! shared with the host or other tests would mix their entries: this one
//! runs in a private mount namespace, with tmpfs over /run and
//! /var/log/journal there, so its sockets and files are its own. The agent
//! and the entries the test writes go into the same namespace.

use std::{
    io::{BufRead, BufReader},
    os::unix::net::UnixDatagram,
    path::PathBuf,
    process::{Child, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};

/// How long the namespace's holder lives at most.
const HOLD: &str = "300";

/// The private mount namespace and the journald running in it; both are
/// stopped on drop, and the namespace (with its tmpfs) goes with its last
/// process.
pub struct PrivateJournal {
    holder: Child,
    journald: Option<Child>,
}

impl PrivateJournal {
    /// Makes the namespace (after the lab, whose bpffs it then sees too) and
    /// starts journald in it.
    pub fn start() -> Result<Self> {
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-ec"])
            .arg(
                "mount -t tmpfs smtpgate-journal /run\n\
                 mount -t tmpfs smtpgate-journal /var/log/journal\n\
                 echo ready\n\
                 exec sleep \"$1\"",
            )
            .args(["sh", HOLD])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting unshare")?;
        let stdout = holder.stdout.take();
        let mut journal = Self {
            holder,
            journald: None,
        };
        let ready = stdout.map(ready_line).transpose()?;
        ensure!(
            ready.is_some_and(|line| line.trim() == "ready"),
            "the private mount namespace was not set up"
        );
        journal.start_journald()?;
        Ok(journal)
    }

    /// What enters the namespace: a wrapper for [`crate::Lab::start_agent_under`].
    pub fn enter(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            format!("--mount=/proc/{}/ns/mnt", self.holder.id()),
            "--".into(),
        ]
    }

    /// A path inside the namespace, as this process reaches it.
    fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{inside}", self.holder.id()))
    }

    /// Starts journald, and waits (at most 5 s) until it takes entries.
    pub fn start_journald(&mut self) -> Result<()> {
        ensure!(self.journald.is_none(), "journald already runs");
        let mut command = Command::new(&self.enter()[0]);
        command
            .args(&self.enter()[1..])
            .arg("/lib/systemd/systemd-journald")
            .stdout(Stdio::null());
        self.journald = Some(command.spawn().context("starting journald")?);
        let began = Instant::now();
        while self.send("MESSAGE=the test's journald is up\n").is_err() {
            ensure!(
                began.elapsed() < Duration::from_secs(5),
                "journald did not start"
            );
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Kills journald with SIGKILL, as a crash does.
    pub fn kill_journald(&mut self) -> Result<()> {
        let mut journald = self.journald.take().context("journald does not run")?;
        journald.kill()?;
        journald.wait()?;
        Ok(())
    }

    /// Writes an entry in journald's native protocol (`FIELD=value` lines).
    fn send(&self, fields: &str) -> Result<()> {
        UnixDatagram::unbound()?
            .send_to(fields.as_bytes(), self.path("/run/systemd/journal/socket"))
            .context("sending to journald")?;
        Ok(())
    }

    /// Logs a Dovecot login of `user` from `ip`, as Dovecot does under
    /// systemd.
    pub fn login(&self, user: &str, ip: &str) -> Result<()> {
        self.send(&format!(
            "SYSLOG_IDENTIFIER=dovecot\nPRIORITY=6\nMESSAGE=pop3-login: Login: user=<{user}>, method=PLAIN, rip={ip}, lip=192.0.2.1, mpid=77, session=<J1>\n"
        ))
    }
}

/// The first line the holder writes.
fn ready_line(stdout: ChildStdout) -> Result<String> {
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    Ok(line)
}

impl Drop for PrivateJournal {
    fn drop(&mut self) {
        for child in self.journald.iter_mut().chain([&mut self.holder]) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
