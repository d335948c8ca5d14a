//! What the tests, the demo and the benchmark need from the tools they drive,
//! each checked by asking the tool (or the kernel) whether it can, not by
//! whether a package is installed.
//!
//! A package can be installed and still lack what a test needs: swaks speaks
//! IPv6 only with a Perl module it merely recommends, and setup installs
//! without recommends. So every need has a probe, and a failed probe gets
//! the fix for exactly that need: the Debian packages that provide it, or a
//! command. Then the failed probes run again, and whatever is still missing
//! fails setup with one line per need, naming the tool, what it cannot do
//! and what was tried. When everything is there, setup only runs the probes
//! (a fraction of a second), so it can run before every test.

use std::{fmt, path::Path, process::Command};

use anyhow::{bail, Result};

use super::apt::{apt_install, is_root};
use crate::shell::{probe, run};

/// One thing a test, the demo or the benchmark needs from a tool.
struct Need {
    tool: &'static str,
    /// What the tool must be able to do, as in "swaks cannot ...".
    capability: &'static str,
    probe: Probe,
    fix: Fix,
}

/// How a need is checked.
enum Probe {
    /// This command succeeds.
    Runs(&'static [&'static str]),
    /// This command succeeds and one line of its output holds all `words`.
    Prints(&'static [&'static str], &'static [&'static str]),
    /// These files exist.
    Files(&'static [&'static str]),
}

/// How a missing need is provided.
enum Fix {
    /// These Debian packages provide it (installed without Recommends, so
    /// the list names every package the capability needs).
    Install(&'static [&'static str]),
    /// This command, run as root, provides it.
    Run(&'static [&'static str]),
}

/// Everything the tests, the demo and the benchmark ask of other programs.
/// Probes that need a network namespace make a throw-away one with
/// `unshare --net`: it vanishes when the probe exits, and with it whatever
/// the probe created there.
const NEEDS: &[Need] = &[
    // The harness: namespaces joined by veth pairs, entered with nsenter.
    Need {
        tool: "ip",
        capability: "add veth pairs in a network namespace (kernel: veth)",
        probe: Probe::Runs(&["unshare", "--net", "ip", "link", "add", "type", "veth"]),
        fix: Fix::Install(&["iproute2"]),
    },
    Need {
        tool: "ip",
        capability: "print JSON (-j)",
        probe: Probe::Runs(&["ip", "-j", "link", "show", "lo"]),
        fix: Fix::Install(&["iproute2"]),
    },
    Need {
        tool: "tc",
        capability: "run",
        probe: Probe::Runs(&["tc", "-V"]),
        fix: Fix::Install(&["iproute2"]),
    },
    Need {
        tool: "nsenter",
        capability: "enter a network namespace",
        probe: Probe::Runs(&["nsenter", "--net=/proc/self/ns/net", "true"]),
        fix: Fix::Install(&["util-linux"]),
    },
    Need {
        tool: "setpriv",
        capability: "run a command as nobody",
        probe: Probe::Runs(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "true",
        ]),
        fix: Fix::Install(&["util-linux"]),
    },
    // Real mail servers, and the clients that log in and send.
    Need {
        tool: "dovecot",
        capability: "run",
        probe: Probe::Runs(&["dovecot", "--version"]),
        fix: Fix::Install(&["dovecot-core"]),
    },
    Need {
        tool: "doveconf",
        capability: "print a configuration",
        probe: Probe::Runs(&["doveconf", "-d", "-h", "protocols"]),
        fix: Fix::Install(&["dovecot-core"]),
    },
    Need {
        tool: "dovecot",
        capability: "serve POP3 (pop3, pop3-login)",
        probe: Probe::Files(&["/usr/lib/dovecot/pop3", "/usr/lib/dovecot/pop3-login"]),
        fix: Fix::Install(&["dovecot-pop3d"]),
    },
    Need {
        tool: "dovecot",
        capability: "serve IMAP (imap, imap-login)",
        probe: Probe::Files(&["/usr/lib/dovecot/imap", "/usr/lib/dovecot/imap-login"]),
        fix: Fix::Install(&["dovecot-imapd"]),
    },
    Need {
        tool: "postfix",
        capability: "read inline: tables",
        probe: Probe::Prints(&["postconf", "-m"], &["inline"]),
        fix: Fix::Install(&["postfix"]),
    },
    Need {
        tool: "postfix",
        capability: "deliver to a maildir (virtual) and log to a file (postlogd)",
        probe: Probe::Files(&[
            "/usr/sbin/postfix",
            "/usr/lib/postfix/sbin/virtual",
            "/usr/lib/postfix/sbin/postlogd",
        ]),
        fix: Fix::Install(&["postfix"]),
    },
    Need {
        tool: "swaks",
        capability: "send over IPv6 (Perl's IO::Socket::INET6)",
        probe: Probe::Prints(&["swaks", "--support"], &["IPv6", "supported"]),
        fix: Fix::Install(&["swaks", "libio-socket-inet6-perl"]),
    },
    Need {
        tool: "curl",
        capability: "speak POP3 and IMAP",
        probe: Probe::Prints(&["curl", "--version"], &["Protocols:", "pop3", "imap"]),
        fix: Fix::Install(&["curl"]),
    },
    // The broker between POP hosts and relays, and a relay whose wall
    // clock is off.
    Need {
        tool: "redis-server",
        capability: "run",
        probe: Probe::Prints(&["redis-server", "--version"], &["Redis", "server"]),
        fix: Fix::Install(&["redis-server"]),
    },
    Need {
        tool: "faketime",
        capability: "set a process's wall clock back (libfaketime)",
        probe: Probe::Runs(&["faketime", "-f", "-3h", "true"]),
        fix: Fix::Install(&["faketime"]),
    },
    // The journal as a login source.
    Need {
        tool: "journald",
        capability: "take and serve log lines (systemd-journald, journalctl)",
        probe: Probe::Files(&["/lib/systemd/systemd-journald", "/usr/bin/journalctl"]),
        fix: Fix::Install(&["systemd"]),
    },
    // The attach tests' foreign program.
    Need {
        tool: "libxdp",
        capability: "provide its pass-through program xdpdump_xdp.o",
        probe: Probe::Runs(&["sh", "-c", "ls /usr/lib/*/bpf/xdpdump_xdp.o"]),
        fix: Fix::Install(&["libxdp1"]),
    },
    // The benchmark's peers and test bed.
    Need {
        tool: "xdp-filter",
        capability: "run",
        probe: Probe::Files(&["/usr/sbin/xdp-filter"]),
        fix: Fix::Install(&["xdp-tools"]),
    },
    Need {
        tool: "xdp-filter",
        capability: "find its BPF filesystem at /sys/fs/bpf",
        probe: Probe::Prints(
            &["stat", "--file-system", "--format=%T", "/sys/fs/bpf"],
            &["bpf_fs"],
        ),
        fix: Fix::Run(&["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"]),
    },
    Need {
        tool: "nft",
        capability: "list rules as JSON in a network namespace (kernel: nf_tables)",
        probe: Probe::Runs(&["unshare", "--net", "nft", "-j", "list", "tables"]),
        fix: Fix::Install(&["nftables"]),
    },
    Need {
        tool: "ip",
        capability: "add ifb devices (kernel: ifb)",
        probe: Probe::Runs(&["unshare", "--net", "ip", "link", "add", "type", "ifb"]),
        fix: Fix::Install(&["iproute2"]),
    },
    Need {
        tool: "ethtool",
        capability: "run",
        probe: Probe::Runs(&["ethtool", "--version"]),
        fix: Fix::Install(&["ethtool"]),
    },
    // The Debian package (`cargo xtask deb`) and its test.
    Need {
        tool: "cargo-deb",
        capability: "run (cargo deb)",
        probe: Probe::Runs(&["cargo", "deb", "--version"]),
        fix: Fix::Run(&["cargo", "install", "cargo-deb", "--locked"]),
    },
    Need {
        tool: "systemd-analyze",
        capability: "review a unit file's security offline (systemd 250 or later)",
        probe: Probe::Prints(&["systemd-analyze", "--help"], &["--offline=BOOL"]),
        fix: Fix::Install(&["systemd"]),
    },
    Need {
        tool: "dpkg",
        capability: "install a package into another root (dpkg --root, dpkg-deb)",
        probe: Probe::Files(&["/usr/bin/dpkg", "/usr/bin/dpkg-deb"]),
        fix: Fix::Install(&["dpkg"]),
    },
    // The package's postinst (adduser) and the dedicated-user test, which
    // makes a system user of its own (useradd, userdel).
    Need {
        tool: "adduser",
        capability: "make a system user and group",
        probe: Probe::Files(&["/usr/sbin/adduser", "/usr/sbin/addgroup"]),
        fix: Fix::Install(&["adduser"]),
    },
    Need {
        tool: "useradd",
        capability: "make and delete a system user",
        probe: Probe::Files(&["/usr/sbin/useradd", "/usr/sbin/userdel"]),
        fix: Fix::Install(&["passwd"]),
    },
    // The package test's scratch root: the host under an overlay whose
    // upper layer is a tmpfs.
    Need {
        tool: "mount",
        capability: "lay an overlay over / in a mount namespace (kernel: overlay)",
        probe: Probe::Runs(&[
            "unshare",
            "--mount",
            "sh",
            "-ec",
            "mount -t tmpfs none /mnt; mkdir /mnt/u /mnt/w /mnt/m; \
             mount -t overlay none -o lowerdir=/,upperdir=/mnt/u,workdir=/mnt/w /mnt/m",
        ]),
        fix: Fix::Run(&["modprobe", "overlay"]),
    },
    Need {
        tool: "the bench chart",
        capability: "draw labels (DejaVuSans.ttf)",
        probe: Probe::Files(&["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"]),
        fix: Fix::Install(&["fonts-dejavu-core"]),
    },
];

/// Probes every need, fixes the missing ones and probes those again; fails
/// with one line per need that is still missing.
pub fn ensure() -> Result<()> {
    ensure_these(NEEDS.iter().collect(), "the tests, demo and bench use")
}

/// [`ensure`] for what `cargo xtask deb` needs alone.
pub fn ensure_packaging() -> Result<()> {
    let needs = NEEDS.iter().filter(|need| need.tool == "cargo-deb");
    ensure_these(needs.collect(), "packaging uses")
}

fn ensure_these(needs: Vec<&Need>, used_by: &str) -> Result<()> {
    let count = needs.len();
    let missing = failing(needs.into_iter());
    if missing.is_empty() {
        eprintln!("xtask: ok: all {count} tool capabilities {used_by}");
        return Ok(());
    }
    if !is_root() {
        bail!(lines(&missing, |need| format!(
            "{need} (as root, setup would fix that by {})",
            need.fix
        )));
    }
    for need in &missing {
        eprintln!("xtask: {need}: {}", need.fix);
    }
    let mut packages: Vec<&str> = missing
        .iter()
        .flat_map(|need| need.fix.packages())
        .copied()
        .collect();
    packages.sort_unstable();
    packages.dedup();
    // A fix that fails is reported and left to the second probe, which
    // names the need it was for.
    if !packages.is_empty() {
        if let Err(e) = apt_install(&packages) {
            eprintln!("xtask: {e}");
        }
    }
    for need in &missing {
        if let Fix::Run(argv) = need.fix {
            if let Err(e) = run(&mut command(argv)) {
                eprintln!("xtask: {e}");
            }
        }
    }
    let still = failing(missing.into_iter());
    if !still.is_empty() {
        bail!(lines(&still, |need| format!(
            "{need}, even after {}",
            need.fix
        )));
    }
    eprintln!("xtask: ok: every missing tool capability is there now");
    Ok(())
}

fn failing<'a>(needs: impl Iterator<Item = &'a Need>) -> Vec<&'a Need> {
    needs.filter(|need| !need.probe.passes()).collect()
}

fn lines(needs: &[&Need], line: impl Fn(&Need) -> String) -> String {
    needs
        .iter()
        .map(|need| line(need))
        .collect::<Vec<_>>()
        .join("\n")
}

fn command(argv: &[&str]) -> Command {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    cmd
}

impl Probe {
    fn passes(&self) -> bool {
        match self {
            Probe::Runs(argv) => probe(&mut command(argv)).is_some(),
            Probe::Prints(argv, words) => probe(&mut command(argv)).is_some_and(|out| {
                out.lines().any(|line| {
                    words
                        .iter()
                        .all(|word| line.split_whitespace().any(|w| w == *word))
                })
            }),
            Probe::Files(paths) => paths.iter().all(|path| Path::new(path).exists()),
        }
    }
}

impl Fix {
    fn packages(&self) -> &'static [&'static str] {
        match self {
            Fix::Install(packages) => packages,
            Fix::Run(_) => &[],
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cannot {}", self.tool, self.capability)
    }
}

impl fmt::Display for Fix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fix::Install([one]) => write!(f, "installing the Debian package {one}"),
            Fix::Install(packages) => {
                write!(f, "installing the Debian packages {}", packages.join(", "))
            }
            Fix::Run(argv) => write!(f, "running `{}`", argv.join(" ")),
        }
    }
}
