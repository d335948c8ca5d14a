//! The Debian package and what it ships: the unit passes `systemd-analyze
//! verify` and its security review, alone and with the dedicated-user
//! drop-in, its capabilities are enough to run the gate as root and as a
//! dedicated user, the example configuration is valid with every setting in
//! it, and the package installs with `dpkg` into a scratch root (and
//! upgrades, is removed and purges) with every file where Debian expects
//! it, its removal taking the gate out of the kernel.
//!
//! The package is built by `cargo xtask deb --binary`, the same steps as a
//! release package, but from the debug binary under test: a release build
//! would add minutes to the suite.

use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use anyhow::{bail, ensure, Context, Result};
use clap::CommandFactory;
use smtpgate::cli::args::Cli;
use smtpgate_tests::{
    logs::{append, dovecot_login},
    privilege::{capability_set, listable_by, SystemUser, KEPT},
    sh, smtpgate_bin,
    tools::require,
    Family, Lab, Scratch, ANSWERED, CLIENT_V4, SMTP,
};

/// The exposure `systemd-analyze security` may give the unit at most: "OK".
const MAX_EXPOSURE: f64 = 3.0;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn packaging(name: &str) -> Result<String> {
    let path = workspace().join("packaging").join(name);
    fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

fn output_ok(out: &Output, what: &str) -> Result<String> {
    ensure!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of the unit's last `key=` line.
fn unit_setting<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .rev()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

/// "→ Overall exposure level for smtpgate.service: 2.1 OK 🙂" → (2.1, "OK").
fn overall_exposure(review: &str) -> Option<(f64, String)> {
    let line = review
        .lines()
        .find(|line| line.contains("Overall exposure level"))?;
    let (_, verdict) = line.rsplit_once(": ")?;
    let mut words = verdict.split_whitespace();
    let score = words.next()?.parse().ok()?;
    Some((score, words.next()?.to_string()))
}

/// The unit as shipped, pointed at the binary under test (verify checks
/// that ExecStart's program exists), with the manual pages its
/// `Documentation=` names generated beside it.
#[test]
fn unit_passes_verify_and_its_exposure_is_ok() -> Result<()> {
    require("systemd-analyze")?;
    let scratch = Scratch::labelled("unit")?;
    let unit = packaging("smtpgate.service")?;
    ensure!(
        unit.contains("ExecStart=/usr/sbin/smtpgate run --config /etc/smtpgate/smtpgate.toml\n"),
        "the unit does not run /usr/sbin/smtpgate on the packaged configuration"
    );
    // Stopping the unit must leave the gate in place.
    ensure!(
        !unit.lines().any(|line| line.starts_with("ExecStop")
            || line.starts_with("Exec") && line.contains("detach")),
        "the unit detaches the gate when it stops"
    );
    let bin = smtpgate_bin();
    let unit_path = scratch.path("smtpgate.service");
    fs::write(
        &unit_path,
        unit.replace("/usr/sbin/smtpgate", bin.to_str().unwrap()),
    )?;
    let man = scratch.path("man");
    output_ok(
        &Command::new(&bin)
            .args(["generate", "man"])
            .arg(man.join("man8"))
            .output()?,
        "smtpgate generate man",
    )?;

    review(&unit_path, &man).context("the unit")?;
    // The drop-in beside the unit, where systemd looks for it.
    let dropins = scratch.path("smtpgate.service.d");
    fs::create_dir(&dropins)?;
    fs::write(
        dropins.join("dedicated-user.conf"),
        packaging("dedicated-user.conf")?,
    )?;
    review(&unit_path, &man).context("the unit with the dedicated-user drop-in")
}

/// `systemd-analyze verify` of the unit at `unit` (and its drop-ins), with
/// the manual pages under `man`, says nothing, and its offline exposure is
/// at most [`MAX_EXPOSURE`], "OK".
fn review(unit: &Path, man: &Path) -> Result<()> {
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .env("MANPATH", man)
        .output()?;
    output_ok(&verify, "systemd-analyze verify")?;
    let complaints = String::from_utf8_lossy(&verify.stderr);
    ensure!(
        complaints.trim().is_empty(),
        "systemd-analyze verify complained: {complaints}"
    );

    let review = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(unit)
        .output()?;
    let review = output_ok(&review, "systemd-analyze security")?;
    let (score, verdict) =
        overall_exposure(&review).with_context(|| format!("no overall exposure in:\n{review}"))?;
    eprintln!("exposure of {}: {score} {verdict}", unit.display());
    ensure!(
        score <= MAX_EXPOSURE && verdict == "OK",
        "exposure {score} {verdict}, want at most {MAX_EXPOSURE} (OK):\n{review}"
    );
    Ok(())
}

/// Capability bits as /proc shows them, for the names a unit may list.
fn capability_bit(name: &str) -> Result<u32> {
    Ok(match name {
        "CAP_CHOWN" => 0,
        "CAP_DAC_OVERRIDE" => 1,
        "CAP_DAC_READ_SEARCH" => 2,
        "CAP_FOWNER" => 3,
        "CAP_NET_BIND_SERVICE" => 10,
        "CAP_NET_ADMIN" => 12,
        "CAP_NET_RAW" => 13,
        "CAP_IPC_LOCK" => 14,
        "CAP_SYS_ADMIN" => 21,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => bail!("{other}: add its bit to capability_bit"),
    })
}

/// The `setpriv` command line that starts the agent as systemd starts the
/// unit: the bounding set `caps` (as root, the effective set too) and
/// no_new_privs; and, for a dedicated user (`User=`), its uid and gid, its
/// groups, and `ambient` as inheritable and ambient capabilities
/// (`AmbientCapabilities=`).
fn as_the_unit_starts_it(caps: &[&str], user: Option<((u32, u32), &[&str])>) -> Vec<String> {
    let list = |caps: &[&str]| {
        caps.iter()
            .map(|cap| format!("+{}", cap.trim_start_matches("CAP_").to_lowercase()))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut argv = vec![
        "setpriv".to_string(),
        format!("--bounding-set=-all,{}", list(caps)),
    ];
    match user {
        None => argv.push("--inh-caps=-all".into()),
        Some(((uid, gid), ambient)) => argv.extend([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--init-groups".into(),
            format!("--inh-caps={}", list(ambient)),
            format!("--ambient-caps={}", list(ambient)),
        ]),
    }
    argv.extend(["--no-new-privs".into(), "--".into()]);
    argv
}

/// The running agent's /proc status.
fn agent_status(lab: &Lab) -> Result<String> {
    // setpriv execs the agent, so the child's pid is the agent's.
    let pid = lab.agent_pid().context("no agent")?;
    Ok(fs::read_to_string(format!("/proc/{pid}/status"))?)
}

/// The unit's CapabilityBoundingSet, and its bits.
fn bounding_set(unit: &str) -> Result<(Vec<&str>, u64)> {
    let caps: Vec<&str> = unit_setting(unit, "CapabilityBoundingSet")
        .context("the unit sets no CapabilityBoundingSet")?
        .split_whitespace()
        .collect();
    let mut mask = 0u64;
    for cap in &caps {
        mask |= 1 << capability_bit(cap)?;
    }
    Ok((caps, mask))
}

/// The gid of `group`.
fn group_id(group: &str) -> Result<u32> {
    Ok(sh("getent", &["group", group])?
        .split(':')
        .nth(2)
        .with_context(|| format!("getent group {group}"))?
        .parse()?)
}

/// The agent runs, grants, serves its login socket with a group root is
/// not in, gives its pin directory the pin group (`root:mail` 0750 here;
/// the package's `root:smtpgate`), stops leaving the gate enforcing, and
/// takes it over again, all with no more capabilities than the unit's
/// CapabilityBoundingSet. (The
/// unit's other restrictions need systemd to apply them; `systemd-analyze`
/// checks them above.)
#[test]
fn the_units_capabilities_are_enough() -> Result<()> {
    require("setpriv")?;
    let unit = packaging("smtpgate.service")?;
    let (caps, mask) = bounding_set(&unit)?;

    let mut lab = Lab::new()?;
    lab.echo_server(SMTP)?;
    let scratch = Scratch::labelled("caps")?;
    let socket = scratch.path("notify.sock");
    let state = scratch.path("state");
    let flags = [
        "--state-dir",
        state.to_str().unwrap(),
        "--listen-unix",
        socket.to_str().unwrap(),
        // Root is no member of nogroup: chgrp needs CAP_CHOWN.
        "--listen-unix-group",
        "nogroup",
        "--pin-group",
        "mail",
    ];
    let wrapper = as_the_unit_starts_it(&caps, None);
    lab.start_agent_under(&wrapper, &flags)?;
    // Once the gate is up, the agent keeps CAP_BPF and CAP_NET_ADMIN of
    // them; the bounding set stays the unit's (narrowing it needs
    // CAP_SETPCAP, which the unit does not give).
    let status = agent_status(&lab)?;
    let (effective, bounding) = (
        capability_set(&status, "CapEff")?,
        capability_set(&status, "CapBnd")?,
    );
    ensure!(
        effective == KEPT && bounding == mask,
        "the agent runs with CapEff {effective:x} and CapBnd {bounding:x}; wanted {KEPT:x} of the unit's {mask:x}"
    );
    lab.assert_no_answer(Family::V4, SMTP)?;
    lab.smtpgate_ok(&["allow", &lab.client_addr(Family::V4).to_string()])?;
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("the granted client")?;
    ensure!(
        fs::metadata(&socket)?.gid() == group_id("nogroup")?,
        "the login socket did not get the group nogroup"
    );
    require_pin_dir(&lab.bpffs.pin_dir(), 0, group_id("mail")?)?;

    ensure!(lab.stop_agent()? == 0, "the agent did not stop cleanly");
    // Stopped: the gate still enforces, the grant still holds.
    lab.assert_no_answer(Family::V6, SMTP)?;
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("the granted client with the agent stopped")?;

    lab.start_agent_under(&wrapper, &flags)?;
    lab.assert_no_answer(Family::V6, SMTP)?;
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("the granted client after the take-over")?;
    ensure!(
        lab.stop_agent()? == 0,
        "the second agent did not stop cleanly"
    );
    Ok(())
}

/// Fails unless the pin directory `pins` is `uid:gid` mode 0750, and a
/// member of `gid` may list it while someone outside it (nobody, whose
/// group `gid` must not be) may not.
fn require_pin_dir(pins: &Path, uid: u32, gid: u32) -> Result<()> {
    let meta = fs::metadata(pins)?;
    ensure!(
        meta.uid() == uid && meta.gid() == gid && meta.mode() & 0o777 == 0o750,
        "the pin directory is {}:{} mode {:o}, not {uid}:{gid} 750",
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o777
    );
    ensure!(
        listable_by(gid, pins)?,
        "a member of the pin group cannot read the pin directory"
    );
    ensure!(
        !listable_by(65534, pins)?,
        "someone outside the pin group can read the pin directory"
    );
    Ok(())
}

/// The drop-in's `ExecStartPre=+` command lines (run as root before the
/// agent), for `pins` instead of /sys/fs/bpf/smtpgate and `user` instead of
/// smtpgate.
fn pre_start_commands(dropin: &str, bpffs: &Path, user: &str) -> Vec<Vec<String>> {
    dropin
        .lines()
        .filter_map(|line| line.strip_prefix("ExecStartPre=+"))
        .map(|line| {
            line.split_whitespace()
                .map(|word| match word.strip_prefix("/sys/fs/bpf") {
                    Some(rest) => format!("{}{rest}", bpffs.display()),
                    None if word == "smtpgate" => user.to_string(),
                    None if word == "smtpgate:smtpgate" => format!("{user}:{user}"),
                    None => word.to_string(),
                })
                .collect()
        })
        .collect()
}

/// The unit with the dedicated-user drop-in, as far as it runs without
/// systemd: the drop-in's `ExecStartPre=+` commands as root, for the test's
/// bpffs and a system user the test makes, then the agent as that user with
/// the drop-in's ambient capabilities within the unit's bounding set, its
/// state and runtime directories its own (as `StateDirectory=` and
/// `RuntimeDirectory=` make them). It attaches, keeps CAP_BPF and
/// CAP_NET_ADMIN, gives its login socket a group it is not in, grants a
/// login, attaches again to an interface that comes back (pinning a new
/// link: the pin directory must be its own), and its pin directory is
/// `user:group` 0750, readable by the group and nobody else.
#[test]
fn the_dedicated_user_drop_in_runs_the_gate() -> Result<()> {
    for tool in ["setpriv", "useradd", "userdel"] {
        require(tool)?;
    }
    let (unit, dropin) = (
        packaging("smtpgate.service")?,
        packaging("dedicated-user.conf")?,
    );
    ensure!(
        unit_setting(&dropin, "User") == Some("smtpgate")
            && unit_setting(&dropin, "Group") == Some("smtpgate"),
        "the drop-in does not run the agent as smtpgate:smtpgate"
    );
    let (caps, _) = bounding_set(&unit)?;
    let ambient: Vec<&str> = unit_setting(&dropin, "AmbientCapabilities")
        .context("the drop-in gives no AmbientCapabilities")?
        .split_whitespace()
        .collect();
    let user = SystemUser::new()?;
    let (uid, gid) = user.ids()?;
    let scratch = Scratch::labelled("user")?;
    let log = scratch.path("mail.log");
    fs::write(&log, "")?;
    let (state, runtime) = (scratch.path("state"), scratch.path("run"));
    for dir in [&state, &runtime] {
        fs::create_dir(dir)?;
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    }
    let socket = runtime.join("notify.sock");
    let mut lab = Lab::new()?;
    lab.echo_server(SMTP)?;
    for argv in pre_start_commands(&dropin, &lab.bpffs.mount, &user.name) {
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        sh(&argv[0], &args)?;
    }
    let wrapper = as_the_unit_starts_it(&caps, Some(((uid, gid), &ambient)));
    lab.start_agent_under(
        &wrapper,
        &[
            "--log",
            log.to_str().context("path")?,
            "--state-dir",
            state.to_str().context("path")?,
            "--listen-unix",
            socket.to_str().context("path")?,
            "--listen-unix-group",
            "nogroup",
            "--pin-group",
            &user.name,
        ],
    )?;
    let status = agent_status(&lab)?;
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
    ensure!(
        fs::metadata(&socket)?.gid() == group_id("nogroup")?,
        "the login socket did not get the group nogroup"
    );

    require_pin_dir(&lab.bpffs.pin_dir(), uid, gid)?;

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
        "the dedicated user did not attach the gate again"
    );
    lab.assert_no_answer(Family::V6, SMTP)?;
    lab.connect(Family::V4, SMTP, ANSWERED)
        .context("the grant after the interface came back")?;
    Ok(())
}

/// The configuration keys of the README's example (`key = ...` lines of
/// the toml block under "### Configuration file").
fn readme_config_keys() -> Result<Vec<String>> {
    let readme = fs::read_to_string(workspace().join("README.md"))?;
    let section = readme
        .split("### Configuration file")
        .nth(1)
        .context("no configuration section in the README")?;
    let block = section
        .split("```toml")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .context("no toml example in the README's configuration section")?;
    Ok(block
        .lines()
        .filter_map(|line| Some(line.split_once(" = ")?.0.trim().to_string()))
        .collect())
}

/// The packaged example as shipped (with an interface set: it names none,
/// so that the service cannot gate the wrong one; and with a pin group this
/// host has, for the package's `smtpgate`), and with every setting it shows
/// commented out turned on, passes `--check-config`; it shows every key of
/// the README's example.
#[test]
fn the_example_configuration_is_valid() -> Result<()> {
    let example = packaging("smtpgate.toml")?;
    let placeholder = "#iface = [\"eth0\"]\n";
    let pin_group = "pin-group = \"smtpgate\"\n";
    for line in [placeholder, pin_group] {
        ensure!(
            example.contains(line),
            "the example has no `{}` line",
            line.trim()
        );
    }
    let example = example.replace(pin_group, "pin-group = \"nogroup\"\n");
    let lab = Lab::new()?;
    let scratch = Scratch::labelled("config")?;
    let iface = format!("\"{}\"", lab.server_iface);
    let check = |name: &str, text: &str| -> Result<()> {
        let path = scratch.path(name);
        fs::write(&path, text)?;
        let out = lab.smtpgate(&["run", "--config", path.to_str().unwrap(), "--check-config"]);
        output_ok(&out, &format!("--check-config of the example ({name})"))?;
        Ok(())
    };

    let shipped = example.replace(placeholder, &format!("iface = [{iface}]\n"));
    check("shipped.toml", &shipped)?;

    // `#key = value` lines (and `#[[network]]`) are settings; `# ` is prose.
    let is_setting = |line: &str| {
        line.strip_prefix('#')
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '['))
    };
    let everything: String = example
        .lines()
        .map(|line| match is_setting(line) {
            true => format!("{}\n", &line[1..]),
            false => format!("{line}\n"),
        })
        .collect::<String>()
        .replace("\"eth0\"", &iface);
    // The broker's files are read when the settings are: give them.
    let mut everything = everything;
    for (shipped_path, name, content) in [
        (
            "/etc/smtpgate/broker-ca.pem",
            "broker-ca.pem",
            "a CA as read, not parsed\n",
        ),
        ("/etc/smtpgate/relay.auth", "relay.auth", "relay\nsecret\n"),
    ] {
        let path = scratch.path(name);
        fs::write(&path, content)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        everything = everything.replace(shipped_path, path.to_str().context("path")?);
    }
    check("everything.toml", &everything)?;

    let keys: Vec<&str> = everything
        .lines()
        .filter_map(|line| Some(line.split_once(" = ")?.0.trim()))
        .filter(|key| !key.starts_with('#'))
        .collect();
    for key in readme_config_keys()? {
        ensure!(
            keys.contains(&key.as_str()),
            "the README's configuration key {key} is not in the packaged example"
        );
    }
    Ok(())
}

/// A scratch root: the host's file system under an overlay whose upper
/// layer is a tmpfs of the test's, mounted afresh in a private mount
/// namespace for each command. `dpkg --root` installs into it, maintainer
/// scripts and all (in a chroot that sees the host's /bin/sh and
/// deb-systemd-helper, but no /run/systemd, /proc or /sys), and everything
/// it writes lands in `upper`, where the test reads it.
struct ScratchRoot {
    layers: PathBuf,
    _scratch: Scratch,
}

impl ScratchRoot {
    fn new() -> Result<Self> {
        let scratch = Scratch::labelled("root")?;
        let layers = scratch.path("layers");
        fs::create_dir(&layers)?;
        sh(
            "mount",
            &["-t", "tmpfs", "smtpgate-test", layers.to_str().unwrap()],
        )?;
        let root = Self {
            layers,
            _scratch: scratch,
        };
        for dir in ["upper", "work", "root"] {
            fs::create_dir(root.layers.join(dir))?;
        }
        Ok(root)
    }

    /// What the installation wrote (the overlay's upper layer).
    fn upper(&self, path: &str) -> PathBuf {
        self.layers.join("upper").join(path.trim_start_matches('/'))
    }

    /// Runs `argv` with the overlay mounted; `{root}` in an argument is
    /// replaced with the overlay's mount point.
    fn run(&self, argv: &[&str]) -> Result<String> {
        self.run_on(None, argv)
    }

    /// [`ScratchRoot::run`], and with a lab: in its server's network
    /// namespace, with its bpffs at the scratch root's /sys/fs/bpf, so that
    /// the maintainer scripts find the lab's gate where a host's is.
    fn run_on(&self, lab: Option<&Lab>, argv: &[&str]) -> Result<String> {
        let root = self.layers.join("root");
        let root = root.to_str().unwrap();
        let argv: Vec<String> = argv.iter().map(|arg| arg.replace("{root}", root)).collect();
        let mut command = match lab {
            Some(lab) => lab.server.command("unshare"),
            None => Command::new("unshare"),
        };
        let out = command
            .args(["--mount", "--propagation", "private", "--", "sh", "-ec"])
            .arg(
                "mount -t overlay smtpgate-test -o lowerdir=/,upperdir=\"$1\",workdir=\"$2\" \"$3\"\n\
                 if [ -n \"$4\" ]; then mkdir -p \"$3/sys/fs/bpf\"; mount --bind \"$4\" \"$3/sys/fs/bpf\"; fi\n\
                 shift 4\n\
                 exec \"$@\"",
            )
            .arg("sh")
            .arg(self.layers.join("upper"))
            .arg(self.layers.join("work"))
            .arg(root)
            .arg(lab.map_or(PathBuf::new(), |lab| lab.bpffs.mount.clone()))
            .args(&argv)
            .output()
            .context("starting unshare")?;
        output_ok(&out, &argv.join(" "))
    }

    /// Fails naming the first of `paths` that exists in the scratch root
    /// (looked at through the overlay: a removal there may leave a
    /// whiteout in the upper layer).
    fn assert_absent(&self, paths: &[&str]) -> Result<()> {
        let mut argv = vec![
            "sh",
            "-c",
            "for p; do if test -e \"$p\"; then echo \"$p\"; exit 1; fi; done",
            "sh",
        ];
        let full: Vec<String> = paths.iter().map(|path| format!("{{root}}{path}")).collect();
        argv.extend(full.iter().map(String::as_str));
        self.run(&argv).map(drop)
    }
}

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        let _ = sh("umount", &[self.layers.to_str().unwrap()]);
    }
}

/// Every visible subcommand's manual page name, nested ones included.
fn manual_pages() -> Vec<String> {
    fn walk(cmd: &clap::Command, name: &str, pages: &mut Vec<String>) {
        pages.push(format!("{name}.8.gz"));
        for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            if sub.get_name() != "help" {
                walk(sub, &format!("{name}-{}", sub.get_name()), pages);
            }
        }
    }
    let mut pages = Vec::new();
    walk(&Cli::command(), "smtpgate", &mut pages);
    pages
}

/// Fails unless the scratch root has one system user smtpgate (uid below
/// 1000) and one group smtpgate, as postinst makes them.
fn require_one_user(root: &ScratchRoot) -> Result<()> {
    let passwd = fs::read_to_string(root.upper("/etc/passwd"))?;
    let users: Vec<&str> = passwd
        .lines()
        .filter(|line| line.starts_with("smtpgate:"))
        .collect();
    let system = users.first().and_then(|user| {
        let uid: u32 = user.split(':').nth(2)?.parse().ok()?;
        Some(uid < 1000)
    });
    ensure!(
        users.len() == 1 && system == Some(true),
        "users named smtpgate: {users:?}"
    );
    let groups = fs::read_to_string(root.upper("/etc/group"))?;
    let groups = groups
        .lines()
        .filter(|line| line.starts_with("smtpgate:"))
        .count();
    ensure!(groups == 1, "{groups} groups named smtpgate");
    Ok(())
}

#[test]
fn the_package_installs_where_debian_expects() -> Result<()> {
    for tool in [
        "adduser",
        "addgroup",
        "dpkg",
        "dpkg-deb",
        "dpkg-query",
        "unshare",
        "chroot",
        "zcat",
    ] {
        require(tool)?;
    }
    let scratch = Scratch::labelled("deb")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .current_dir(workspace())
        .args(["xtask", "deb", "--binary"])
        .arg(smtpgate_bin())
        .arg("--output")
        .arg(scratch.dir())
        .stderr(Stdio::inherit())
        .output()
        .context("starting cargo xtask deb")?;
    let deb = output_ok(&built, "cargo xtask deb")?;
    let deb = deb
        .lines()
        .last()
        .context("cargo xtask deb named no package")?
        .trim();
    eprintln!("package: {deb}");

    let conffiles = sh("dpkg-deb", &["--info", deb, "conffiles"])?;
    ensure!(
        conffiles.trim() == "/etc/smtpgate/smtpgate.toml",
        "conffiles: {conffiles:?}"
    );

    let root = ScratchRoot::new()?;
    // Triggers (man-db's index) are left for a real installation.
    root.run(&["dpkg", "--root={root}", "--no-triggers", "--install", deb])?;
    let status = root.run(&[
        "dpkg-query",
        "--root={root}",
        "--show",
        "--showformat=${Status}\n${Conffiles}\n",
        "smtpgate",
    ])?;
    ensure!(
        status.starts_with("install ok installed\n")
            && status.contains(" /etc/smtpgate/smtpgate.toml "),
        "dpkg says: {status}"
    );

    let binary = root.upper("/usr/sbin/smtpgate");
    ensure!(
        fs::metadata(&binary)?.permissions().mode() & 0o777 == 0o755,
        "{} is not mode 0755",
        binary.display()
    );
    let version = output_ok(
        &Command::new(&binary).arg("--version").output()?,
        "smtpgate --version",
    )?;
    let expected = output_ok(
        &Command::new(smtpgate_bin()).arg("--version").output()?,
        "--version",
    )?;
    ensure!(
        version.starts_with("smtpgate ") && version == expected,
        "the packaged smtpgate --version says {version:?}"
    );

    // packaging/changelog must be kept to the crate's version.
    let number = version.trim().trim_start_matches("smtpgate ");
    let changelog = root.upper("/usr/share/doc/smtpgate/changelog.Debian.gz");
    let changelog = sh("zcat", &[changelog.to_str().unwrap()])?;
    ensure!(
        changelog.starts_with(&format!("smtpgate ({number}-")),
        "packaging/changelog does not start with version {number}: {}",
        changelog.lines().next().unwrap_or_default()
    );

    require_one_user(&root)?;
    for (installed, shipped) in [
        (
            "/usr/lib/systemd/system/smtpgate.service",
            "smtpgate.service",
        ),
        ("/etc/smtpgate/smtpgate.toml", "smtpgate.toml"),
        (
            "/usr/share/doc/smtpgate/examples/dedicated-user.conf",
            "dedicated-user.conf",
        ),
    ] {
        ensure!(
            fs::read_to_string(root.upper(installed))? == packaging(shipped)?,
            "{installed} is not packaging/{shipped}"
        );
    }
    ensure!(
        !root
            .upper("/etc/systemd/system/multi-user.target.wants/smtpgate.service")
            .exists(),
        "the unit was enabled on installation"
    );

    let pages = manual_pages();
    let man8 = root.upper("/usr/share/man/man8");
    let mut installed: Vec<String> = fs::read_dir(&man8)?
        .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    installed.sort();
    let mut wanted = pages.clone();
    wanted.sort();
    ensure!(
        installed == wanted,
        "manual pages: {installed:?}, want {wanted:?}"
    );
    for page in &pages {
        let text = sh("zcat", &[man8.join(page).to_str().unwrap()])?;
        ensure!(
            text.lines().any(|line| line.starts_with(".TH ")),
            "{page} is not a manual page"
        );
    }

    for completions in [
        "/usr/share/bash-completion/completions/smtpgate",
        "/usr/share/zsh/vendor-completions/_smtpgate",
        "/usr/share/fish/vendor_completions.d/smtpgate.fish",
    ] {
        let text = fs::read_to_string(root.upper(completions))
            .with_context(|| format!("{completions} is not installed"))?;
        ensure!(
            text.contains("smtpgate") && text.contains("check-log") && !text.contains("generate"),
            "{completions} does not complete smtpgate's subcommands"
        );
    }
    let bash = root.upper("/usr/share/bash-completion/completions/smtpgate");
    sh(
        "bash",
        &[
            "-c",
            &format!("source {} && complete -p smtpgate", bash.display()),
        ],
    )?;

    // The installed unit against the installed binary and manual pages.
    root.run(&[
        "chroot",
        "{root}",
        "systemd-analyze",
        "verify",
        "smtpgate.service",
    ])?;

    // A gate the lab set up, its agent stopped as the unit stops before the
    // maintainer scripts run: an upgrade (the same package again) leaves it
    // enforcing, a removal takes it out of the kernel.
    let mut lab = Lab::gated(&[])?;
    lab.stop_agent()?;
    let dpkg = |action: &str, what: &str| {
        root.run_on(
            Some(&lab),
            &["dpkg", "--root={root}", "--no-triggers", action, what],
        )
    };
    dpkg("--install", deb).context("the upgrade")?;
    lab.assert_no_answer(Family::V6, SMTP)
        .context("the gate after an upgrade")?;
    require_one_user(&root)?;
    dpkg("--remove", "smtpgate").context("the removal")?;
    ensure!(
        !lab.bpffs.pin_dir().exists(),
        "the removal left the pins in place"
    );
    lab.connect(Family::V6, SMTP, ANSWERED)
        .context("the port after the removal: the gate should be gone")?;

    // Purge takes the configuration and the state with it.
    fs::create_dir_all(root.upper("/var/lib/smtpgate"))?;
    fs::write(root.upper("/var/lib/smtpgate/positions"), "")?;
    root.run(&[
        "dpkg",
        "--root={root}",
        "--no-triggers",
        "--purge",
        "smtpgate",
    ])?;
    root.assert_absent(&[
        "/usr/sbin/smtpgate",
        "/usr/lib/systemd/system/smtpgate.service",
        "/etc/smtpgate",
        "/var/lib/smtpgate",
    ])
    .context("left after a purge")
}
