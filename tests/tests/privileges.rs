//! Least privilege: once the gate is up, the agent keeps CAP_BPF and
//! CAP_NET_ADMIN and nothing else, on every thread and in every set, and
//! still does its work with them.

use std::{os::unix::fs::PermissionsExt, time::Duration};

use anyhow::{ensure, Context, Result};
use smtpgate_tests::{
    logs::{append, dovecot_login},
    privilege::{capability_set, KEPT},
    Family, Lab, Scratch, ANSWERED, CLIENT_V4, SMTP,
};

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
