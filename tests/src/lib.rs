//! Test harness: real network namespaces joined by veth pairs, a private
//! bpffs per test, the real `smtpgate` binary, and real TCP connections.
//!
//! Every resource gets a name unique to the test and is removed by `Drop`,
//! also when the test fails, so tests run in parallel and leave nothing
//! behind. Tests need root.

pub mod cluster;
pub mod frames;
pub mod fuzz;
pub mod handshake;
pub mod journal;
pub mod logs;
pub mod mail;
pub mod privilege;
pub mod probe;
pub mod raw;
pub mod testrun;
pub mod tools;

use std::{
    fs,
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// The agent under test: `SMTPGATE_BIN` (set by `cargo xtask test`), else
/// the workspace's debug build.
pub fn smtpgate_bin() -> PathBuf {
    std::env::var_os("SMTPGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug/smtpgate"))
}

/// Where cargo builds the workspace: `CARGO_TARGET_DIR` (else
/// `CARGO_BUILD_TARGET_DIR`) if set, a relative one taken from the workspace
/// root as `cargo xtask` does, else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    let set = ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]
        .iter()
        .find_map(|name| std::env::var_os(name).filter(|dir| !dir.is_empty()));
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(set.unwrap_or_else(|| "target".into()))
}

/// A short name no other test (or test run) uses at the same time. Kept
/// short because interface names are limited to 15 bytes.
pub fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "sg{:x}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command and fails with its stderr unless it succeeds.
pub fn sh(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("starting {program}"))?;
    stdout_of(&format!("{program} {}", args.join(" ")), out)
}

/// The standard output of a command that succeeded; otherwise an error
/// naming the command (`what`) with what it wrote to standard error.
pub fn stdout_of(what: &str, out: std::process::Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted (with its interfaces) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Result<Self> {
        sh("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    /// A command that runs inside this namespace. `nsenter --net` (unlike
    /// `ip netns exec`) leaves /sys alone, so bpffs mounts stay visible.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `f` on a thread that lives in this namespace. Sockets created
    /// there belong to the namespace for their whole life.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        self.spawn(f)
            .join()
            .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    }

    /// Like [`Netns::run`], without waiting for `f` to end.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<Result<T>> {
        let path = self.path();
        thread::spawn(move || -> Result<T> {
            let ns = fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            // SAFETY: a valid namespace fd; affects only this thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error()).context("setns");
            }
            Ok(f())
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh("ip", &["netns", "del", &self.name]);
    }
}

/// A veth pair from `server_iface` in `server` to `client_iface` in
/// `client`, with the lab's addresses, up.
fn link_pair(server: &Netns, server_iface: &str, client: &Netns, client_iface: &str) -> Result<()> {
    sh(
        "ip",
        &[
            "link",
            "add",
            server_iface,
            "netns",
            &server.name,
            "type",
            "veth",
            "peer",
            "name",
            client_iface,
            "netns",
            &client.name,
        ],
    )?;
    for (ns, iface, v4, v6) in [
        (server, server_iface, SERVER_V4, SERVER_V6),
        (client, client_iface, CLIENT_V4, CLIENT_V6),
    ] {
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", iface])?;
        ns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            iface,
            "nodad",
        ])?;
        ns.ip(&["link", "set", iface, "up"])?;
    }
    Ok(())
}

/// A private bpffs mount for one test's pins; unmounting it frees every pin.
pub struct BpfFs {
    pub mount: PathBuf,
}

impl BpfFs {
    pub fn new(name: &str) -> Result<Self> {
        let mount = std::env::temp_dir().join(format!("smtpgate-test-{name}"));
        fs::create_dir_all(&mount)?;
        sh("mount", &["-t", "bpf", "bpf", mount.to_str().unwrap()])?;
        Ok(Self { mount })
    }

    /// The `--bpffs-dir` the agent uses inside this mount.
    pub fn pin_dir(&self) -> PathBuf {
        self.mount.join("smtpgate")
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = sh("umount", &[self.mount.to_str().unwrap()]);
        let _ = fs::remove_dir(&self.mount);
    }
}

/// Address family of a lab's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// A server host and a client host joined by a veth pair, with a private
/// bpffs for the gate. Fields drop in declaration order: the agent stops
/// before the namespaces and the bpffs go.
pub struct Lab {
    agent: Option<Child>,
    /// The agent's standard input, for `--log -`.
    pub agent_stdin: Option<std::process::ChildStdin>,
    /// Every line the agents of this lab wrote to standard error.
    agent_log: Arc<Mutex<Vec<String>>>,
    pub server: Netns,
    pub client: Netns,
    pub server_iface: String,
    pub client_iface: String,
    pub bpffs: BpfFs,
}

/// The gated port the test servers listen on, and an ungated one.
pub const SMTP: u16 = 25;
pub const UNGATED: u16 = 2525;
/// A dropped SYN is retransmitted after 1 s; a connect that has not
/// completed by then got no answer.
pub const DROPPED: Duration = Duration::from_millis(1200);
/// How long an answered connect may take.
pub const ANSWERED: Duration = Duration::from_secs(5);

pub const SERVER_V4: &str = "192.0.2.1";
pub const CLIENT_V4: &str = "192.0.2.2";
pub const SERVER_V6: &str = "2001:db8::1";
pub const CLIENT_V6: &str = "2001:db8::2";

impl Lab {
    pub fn new() -> Result<Self> {
        let name = unique_name();
        let bpffs = BpfFs::new(&name)?;
        let server = Netns::new(format!("{name}-srv"))?;
        let client = Netns::new(format!("{name}-cli"))?;
        let (server_iface, client_iface) = (format!("{name}s"), format!("{name}c"));
        link_pair(&server, &server_iface, &client, &client_iface)?;
        Ok(Self {
            agent: None,
            agent_stdin: None,
            agent_log: Arc::default(),
            server,
            client,
            server_iface,
            client_iface,
            bpffs,
        })
    }

    /// Deletes the veth pair and, `gone_for` later, creates it again, names
    /// and addresses as before: an interface that goes away and comes back.
    /// Returns when it started to come back.
    pub fn recreate_link(&self, gone_for: Duration) -> Result<Instant> {
        self.server.ip(&["link", "del", &self.server_iface])?;
        thread::sleep(gone_for);
        let back = Instant::now();
        link_pair(
            &self.server,
            &self.server_iface,
            &self.client,
            &self.client_iface,
        )?;
        Ok(back)
    }

    /// A lab with echo servers on [`SMTP`] and [`UNGATED`] and the agent
    /// running with `flags` (e.g. `--attach tc`).
    pub fn gated(flags: &[&str]) -> Result<Self> {
        let mut lab = Lab::new()?;
        lab.echo_server(SMTP)?;
        lab.echo_server(UNGATED)?;
        lab.start_agent(flags)?;
        Ok(lab)
    }

    /// Fails unless a connect to `port` gets no answer at all.
    pub fn assert_no_answer(&self, family: Family, port: u16) -> Result<()> {
        match self.connect(family, port, DROPPED) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(()),
            Err(e) => bail!("expected the SYN to port {port} to be dropped silently, got {e}"),
            Ok(_) => bail!("port {port} connected; the gate should have dropped the SYN"),
        }
    }

    pub fn server_addr(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => SERVER_V4.parse().unwrap(),
            Family::V6 => SERVER_V6.parse().unwrap(),
        }
    }

    pub fn client_addr(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => CLIENT_V4.parse().unwrap(),
            Family::V6 => CLIENT_V6.parse().unwrap(),
        }
    }

    /// `smtpgate ARGS --bpffs-dir <this lab's>`, run in the server namespace.
    pub fn smtpgate(&self, args: &[&str]) -> Output {
        self.server
            .command(smtpgate_bin())
            .args(args)
            .arg("--bpffs-dir")
            .arg(self.bpffs.pin_dir())
            .output()
            .expect("running smtpgate")
    }

    /// Like [`Lab::smtpgate`] but fails unless it succeeds; returns stdout.
    pub fn smtpgate_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.smtpgate(args);
        if !out.status.success() {
            bail!(
                "smtpgate {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `smtpgate run` on the server interface with `extra` flags and
    /// waits until the gate is attached.
    pub fn start_agent(&mut self, extra: &[&str]) -> Result<()> {
        self.start_agent_with_env(extra, &[])
    }

    /// [`Lab::start_agent`] with extra environment variables.
    pub fn start_agent_with_env(&mut self, extra: &[&str], env: &[(&str, &str)]) -> Result<()> {
        self.spawn_agent::<&str>(&[], extra, env)
    }

    /// [`Lab::start_agent`] through `wrapper`, a command line that ends by
    /// executing the agent's (`setpriv … --`).
    pub fn start_agent_under<S: AsRef<std::ffi::OsStr>>(
        &mut self,
        wrapper: &[S],
        extra: &[&str],
    ) -> Result<()> {
        self.spawn_agent(wrapper, extra, &[])
    }

    fn spawn_agent<S: AsRef<std::ffi::OsStr>>(
        &mut self,
        wrapper: &[S],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<()> {
        assert!(self.agent.is_none(), "agent already running");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = self.server.command(program);
                command.args(args).arg(smtpgate_bin());
                command
            }
            None => self.server.command(smtpgate_bin()),
        };
        let mut child = command
            .envs(env.iter().copied())
            .args(["run", "--iface", &self.server_iface, "--bpffs-dir"])
            .arg(self.bpffs.pin_dir())
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting smtpgate run")?;
        let stderr = child.stderr.take().unwrap();
        self.agent_stdin = child.stdin.take();
        self.agent = Some(child);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let log = self.agent_log.clone();
        thread::spawn(move || {
            let mut reader = io::BufReader::new(stderr);
            let mut line = String::new();
            let mut sent = false;
            while io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) > 0 {
                eprint!("[agent] {line}");
                if !sent && line.contains("gate running") {
                    let _ = ready_tx.send(());
                    sent = true;
                }
                log.lock()
                    .expect("agent log lock")
                    .push(std::mem::take(&mut line));
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let status = self.agent.as_mut().unwrap().try_wait()?;
            bail!("smtpgate run did not come up (exit status {status:?})");
        }
        Ok(())
    }

    /// How many lines the agents of this lab wrote so far containing `needle`.
    pub fn agent_lines(&self, needle: &str) -> usize {
        self.agent_log
            .lock()
            .expect("agent log lock")
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Whether an agent of this lab writes a line containing `needle`
    /// within `wait`.
    pub fn agent_logged(&self, needle: &str, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self
                .agent_log
                .lock()
                .expect("agent log lock")
                .iter()
                .any(|line| line.contains(needle))
            {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The running agent's process id.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Kills the agent with SIGKILL, as the OOM killer would, and reaps it.
    pub fn kill_agent(&mut self) -> Result<()> {
        let mut child = self.agent.take().context("no agent running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Stops the agent with SIGTERM and waits for it; returns its exit code.
    pub fn stop_agent(&mut self) -> Result<i32> {
        let mut child = self.agent.take().context("no agent running")?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                child.kill()?;
                bail!("smtpgate run ignored SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Listens on `port` (all addresses) in the server namespace and echoes
    /// what each connection sends, until the lab goes.
    pub fn echo_server(&self, port: u16) -> Result<()> {
        let listener = self.server.run(move || TcpListener::bind(("::", port)))??;
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || echo(stream));
            }
        });
        Ok(())
    }

    /// Opens a TCP connection from the client namespace.
    pub fn connect(&self, family: Family, port: u16, timeout: Duration) -> io::Result<TcpStream> {
        let addr = SocketAddr::new(self.server_addr(family), port);
        self.client
            .run(move || TcpStream::connect_timeout(&addr, timeout))
            .map_err(io::Error::other)?
    }

    /// The gate's counters (`smtpgate stats --json`).
    pub fn counters(&self) -> Result<serde_json::Value> {
        let stats: serde_json::Value =
            serde_json::from_str(&self.smtpgate_ok(&["stats", "--json", "--no-rates"])?)?;
        Ok(stats["counters"].clone())
    }

    /// The value of `series` (a metric name with its labels) on the agent's
    /// metrics endpoint at 127.0.0.1:9925 in the server namespace; zero
    /// when the endpoint does not show it.
    pub fn metric(&self, series: &str) -> Result<u64> {
        let body = self.server.run(|| -> Result<String> {
            let mut stream = TcpStream::connect("127.0.0.1:9925")?;
            stream.write_all(b"GET /metrics HTTP/1.1\r\n\r\n")?;
            let mut body = String::new();
            stream.read_to_string(&mut body)?;
            Ok(body)
        })??;
        Ok(body
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0))
    }

    pub fn counter(&self, name: &str) -> Result<u64> {
        self.counters()?[name]
            .as_u64()
            .with_context(|| format!("no counter {name}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.agent.is_some() {
            let _ = self.stop_agent();
        }
        // Detaching explicitly frees the program even if the interface
        // somehow outlived its namespace.
        let _ = self.smtpgate(&["detach"]);
    }
}

fn echo(mut stream: TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Sends a message on an open connection and checks it comes back.
pub fn assert_echoes(stream: &mut TcpStream, message: &[u8]) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.write_all(message)?;
    let mut back = vec![0u8; message.len()];
    stream.read_exact(&mut back).context("reading the echo")?;
    if back != message {
        bail!("echo mismatch");
    }
    Ok(())
}

/// A pass-through XDP object shipped by libxdp (a dependency of xdp-tools):
/// the "foreign" program in error tests, and the client-side program that
/// lets a veth receive native XDP_TX frames.
pub fn foreign_xdp_object() -> Result<PathBuf> {
    for dir in std::fs::read_dir("/usr/lib")? {
        let candidate = dir?.path().join("bpf/xdpdump_xdp.o");
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    anyhow::bail!("xdpdump_xdp.o not found under /usr/lib/*/bpf (is xdp-tools installed?)")
}

/// A private directory for one test's files, removed with its contents on
/// drop. Mode 0755, so the unprivileged users of the mail servers can
/// traverse it.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    pub fn new() -> Result<Self> {
        Self::labelled("files")
    }

    /// A fresh directory `smtpgate-LABEL-<unique>`.
    pub fn labelled(label: &str) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("smtpgate-{label}-{}", unique_name()));
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
