//! The flood's test bed: the harness's two-namespace lab, tuned so that the
//! sender and the receiver each get a core of their own.
//!
//! On a veth pair the receiver normally runs on the sender's core, inside
//! its transmit call, and the two costs cannot be told apart. Here the
//! server's veth polls its receive queue from a kernel thread of its own
//! (threaded NAPI, which veth uses once GRO is on), pinned to
//! [`RECEIVE_CPU`]; everything the bench starts stays on [`SEND_CPU`]. The
//! receive thread's CPU time is then exactly what the filter and the stack
//! behind it spend on the flood.

use std::time::Duration;

use anyhow::{Context, Result};
use smtpgate_tests::{
    frames::{CLIENT_MAC, SERVER_MAC},
    sh, Lab, Netns, SMTP,
};

use super::cpu;

pub const SEND_CPU: usize = 0;
pub const RECEIVE_CPU: usize = 1;

pub fn new() -> Result<Lab> {
    let lab = Lab::new()?;
    // The flood's frames are built for these addresses.
    lab.server.ip(&[
        "link",
        "set",
        "dev",
        &lab.server_iface,
        "address",
        &mac(SERVER_MAC),
    ])?;
    lab.client.ip(&[
        "link",
        "set",
        "dev",
        &lab.client_iface,
        "address",
        &mac(CLIENT_MAC),
    ])?;
    // A veth takes XDP frames only while its receive queue has NAPI, which
    // an XDP program switches on and, for the other contenders, GRO does.
    run(
        &lab.server,
        "ethtool",
        &["-K", &lab.server_iface, "gro", "on"],
    )?;
    sh(
        "ip",
        &[
            "netns",
            "exec",
            &lab.server.name,
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{}/threaded", lab.server_iface),
        ],
    )?;
    // The kernel's answers to the flood (SYN-ACKs without a filter) leave
    // through a device that discards them; without a route they would not
    // be built at all and the kernel would look cheaper than it is.
    lab.server.ip(&["link", "add", "sink", "type", "ifb"])?;
    lab.server.ip(&["link", "set", "sink", "up"])?;
    lab.server.ip(&["route", "add", "default", "dev", "sink"])?;
    // Port 25 listens (for the granted client, and for the kernel to answer
    // the flood when nothing filters it).
    lab.echo_server(SMTP)?;
    Ok(lab)
}

/// The server's receive thread, pinned to its core. Looked up afresh for
/// each contender: attaching XDP may give the queue a new thread.
pub fn receive_thread(lab: &Lab) -> Result<u32> {
    let tid = cpu::napi_thread(&lab.server_iface)?;
    cpu::pin(tid, RECEIVE_CPU)?;
    // Let a thread that was elsewhere migrate before anything is measured.
    std::thread::sleep(Duration::from_millis(50));
    Ok(tid)
}

fn run(netns: &Netns, program: &str, args: &[&str]) -> Result<()> {
    let out = netns
        .command(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn mac(bytes: [u8; 6]) -> String {
    bytes.map(|b| format!("{b:02x}")).join(":")
}
