//! Least privilege: once the gate is up, the agent keeps CAP_BPF and
//! CAP_NET_ADMIN and nothing else, on every thread and in every set, and
//! still does its work with them; and it runs as a dedicated user given
//! those capabilities (and CAP_PERFMON, for the verifier) as ambient ones.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    process::Command,
    time::Duration,
};

use anyhow::{ensure, Context, Result};
use smtpgate_tests::{
    logs::{append, dovecot_login},
    sh, unique_name, Family, Lab, Scratch, ANSWERED, CLIENT_V4, SMTP,
};

/// CAP_NET_ADMIN (12) and CAP_BPF (39).
const KEPT: u64 = (1 << 12) | (1 << 39);

/// A capability set of `/proc/PID/task/TID/status`, e.g. `CapEff`.
fn capability_set(status: &str, field: &str) -> Result<u64> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:\t")))
        .with_context(|| format!("no {field} line"))?;
    Ok(u64::from_str_radix(line.trim(), 16)?)
}

#[test]
fn the_running_agent_keeps_only_bpf_and_net_admin_and_still_grants() -> Result<()> {
    let scratch = Scratch::new()?;
    let log = scratch.path("mail.log");
    std::fs::write(&log, "")?;
    let socket = scratch.path("notify.sock");
    let metrics = "127.0.0.1:19925";
    let mut lab = Lab::new()?;
    lab.echo_server(SMTP)?;
    let state = scratch.path("state");
    lab.start_agent(&[
        "--log",
        log.to_str().context("path")?,
        "--state-dir",
        state.to_str().context("path")?,
        "--listen-unix",
        socket.to_str().context("path")?,
        "--listen-unix-group",
        "mail",
        "--metrics-listen",
        metrics,
        "--policy-listen",
        "inet:127.0.0.1:10041",
    ])?;
    ensure!(
        lab.agent_logged("dropped every other capability", Duration::from_secs(5)),
        "no drop logged"
    );
    let pid = lab.agent_pid().context("no agent")?;
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let status = std::fs::read_to_string(task?.path().join("status"))?;
        for set in ["CapEff", "CapPrm", "CapBnd"] {
            let value = capability_set(&status, set)?;
            ensure!(value == KEPT, "{set} is {value:#x}, not {KEPT:#x}");
        }
        for set in ["CapInh", "CapAmb"] {
            ensure!(capability_set(&status, set)? == 0, "{set} is not empty");
        }
        threads += 1;
    }
    ensure!(threads >= 1, "no thread of the agent seen");
    let mode = std::fs::metadata(lab.bpffs.pin_dir())?.permissions().mode() & 0o777;
    ensure!(mode == 0o750, "the pin directory is mode {mode:o}, not 750");

    // With only those two, a login still grants and the gate opens.
    append(&log, &dovecot_login("kim", CLIENT_V4))?;
    ensure!(
        lab.agent_logged("granted", Duration::from_secs(10)),
        "the login did not grant"
    );
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("the grant written without root's power")?;
    // The sockets bound before the drop serve after it.
    let socket_group = std::fs::metadata(&socket)?;
    ensure!(
        std::os::unix::fs::MetadataExt::gid(&socket_group) != 0,
        "the login socket was not given its group"
    );
    Ok(())
}

/// A system user with a group of its own name, as the package makes
/// `smtpgate`; deleted, with the group, on drop.
struct SystemUser {
    name: String,
}

impl SystemUser {
    fn new() -> Result<Self> {
        let name = format!("{}u", unique_name());
        sh(
            "useradd",
            &[
                "--system",
                "--user-group",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                &name,
            ],
        )?;
        Ok(Self { name })
    }

    /// Its uid and its group's gid.
    fn ids(&self) -> Result<(u32, u32)> {
        let id = |flag| -> Result<u32> { Ok(sh("id", &[flag, &self.name])?.trim().parse()?) };
        Ok((id("-u")?, id("-g")?))
    }
}

impl Drop for SystemUser {
    fn drop(&mut self) {
        let _ = sh("userdel", &[&self.name]);
        let _ = sh("groupdel", &[&self.name]);
    }
}

/// Whether someone with uid 65534 and `gid` (no other group) may list `dir`.
fn listable_by(gid: u32, dir: &Path) -> Result<bool> {
    Ok(Command::new("setpriv")
        .args(["--reuid=65534", &format!("--regid={gid}"), "--clear-groups"])
        .arg("ls")
        .arg(dir)
        .output()?
        .status
        .success())
}

/// The agent as a dedicated user (not root) with CAP_BPF, CAP_NET_ADMIN and
/// CAP_PERFMON as ambient capabilities, the unit's `User=` and
/// `AmbientCapabilities=`: it loads and attaches the gate, keeps CAP_BPF and
/// CAP_NET_ADMIN, grants a login, re-attaches to an interface that comes
/// back (which pins a new link, so the pin directory must be its own), and
/// its pin directory is readable by its group and nobody else.
#[test]
fn a_dedicated_user_with_ambient_capabilities_runs_the_gate() -> Result<()> {
    let user = SystemUser::new()?;
    let (uid, gid) = user.ids()?;
    let scratch = Scratch::new()?;
    let log = scratch.path("mail.log");
    std::fs::write(&log, "")?;
    let state = scratch.path("state");
    std::fs::create_dir(&state)?;
    std::os::unix::fs::chown(&state, Some(uid), Some(gid))?;
    let mut lab = Lab::new()?;
    lab.echo_server(SMTP)?;
    let ids = [format!("--reuid={uid}"), format!("--regid={gid}")];
    let caps = "+bpf,+net_admin,+perfmon";
    let (inheritable, ambient) = (
        format!("--inh-caps={caps}"),
        format!("--ambient-caps={caps}"),
    );
    lab.start_agent_under(
        &[
            "setpriv",
            &ids[0],
            &ids[1],
            "--init-groups",
            &inheritable,
            &ambient,
            "--",
        ],
        &[
            "--log",
            log.to_str().context("path")?,
            "--state-dir",
            state.to_str().context("path")?,
            "--pin-group",
            &user.name,
        ],
    )?;
    let pid = lab.agent_pid().context("no agent")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    ensure!(
        status
            .lines()
            .any(|line| line.starts_with(&format!("Uid:\t{uid}\t"))),
        "the agent does not run as {}",
        user.name
    );
    for set in ["CapEff", "CapPrm"] {
        let value = capability_set(&status, set)?;
        ensure!(value == KEPT, "{set} is {value:#x}, not {KEPT:#x}");
    }
    for set in ["CapInh", "CapAmb"] {
        ensure!(capability_set(&status, set)? == 0, "{set} is not empty");
    }

    let pins = lab.bpffs.pin_dir();
    let meta = std::fs::metadata(&pins)?;
    ensure!(
        meta.uid() == uid && meta.gid() == gid && meta.mode() & 0o777 == 0o750,
        "the pin directory is {}:{} mode {:o}, not {uid}:{gid} 750",
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o777
    );
    ensure!(
        listable_by(gid, &pins)?,
        "a member of the pin group cannot read the pin directory"
    );
    ensure!(
        !listable_by(65534, &pins)?,
        "someone outside the pin group can read the pin directory"
    );

    append(&log, &dovecot_login("kim", CLIENT_V4))?;
    ensure!(
        lab.agent_logged("granted", Duration::from_secs(10)),
        "the login did not grant"
    );
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("the grant written by the dedicated user")?;
    lab.assert_no_answer(Family::V6, SMTP)?;
    lab.recreate_link(Duration::ZERO)?;
    ensure!(
        lab.agent_logged(
            "is back; the gate is attached to it again",
            Duration::from_secs(5)
        ),
        "the dedicated user did not re-attach the gate"
    );
    lab.assert_no_answer(Family::V6, SMTP)?;
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("the grant after the re-attach")?;
    Ok(())
}
