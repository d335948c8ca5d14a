//! A farm in network namespaces: a POP host (a real Dovecot, and
//! `smtpgate watch` publishing its logins), a Redis host, relays (a real
//! Postfix each, gated by `smtpgate run --subscribe`), a customer and a
//! stranger, all joined by a router.
//!
//! The router holds a bridge for the sites' network, 192.0.2.0/24, where
//! the POP host, the broker and the relays live, and one link each to the
//! customers' network (198.51.100.0/24) and the stranger's
//! (203.0.113.0/24), and forwards between them. Each relay gates its link
//! to the bridge; so the customer's and the stranger's SYNs to a relay's
//! port 25 meet its gate, and so do the broker's replies (which pass: they
//! are not SYNs). A relay is cut off by taking its port on the bridge
//! down: its own link and routes stay as they were, as when a cable or a
//! switch fails, and come back with the port.
//!
//! Every name is unique to the test; everything goes on drop, processes
//! first, also when the test fails.

use std::{
    fs,
    io::{self, BufRead, BufReader},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use smtpgate::gate::{maps::Grants, pins::PinDir};

use crate::{
    logs,
    mail::{self, Dovecot, Login, Postfix, Sent, PASSWORD},
    sh, smtpgate_bin, stdout_of, tools, unique_name, BpfFs, Netns, Scratch, SMTP,
};

pub const ROUTER_SITE: &str = "192.0.2.1";
pub const POP_HOST: &str = "192.0.2.10";
pub const REDIS_HOST: &str = "192.0.2.20";
pub const REDIS_PORT: u16 = 6379;
pub const CUSTOMER: &str = "198.51.100.7";
pub const STRANGER: &str = "203.0.113.66";

/// The ACL users of the broker, as the README gives them: POP hosts may
/// only add to the stream, relays may only read it and the clock, and add
/// to the stream of revocations.
pub const POP_USER: (&str, &str) = ("pop", "pop-secret");
pub const RELAY_USER: (&str, &str) = ("relay", "relay-secret");
pub const STREAM: &str = "smtpgate:grants";

/// How long processes may take to come up or go down.
const START: Duration = Duration::from_secs(20);
const STOP: Duration = Duration::from_secs(10);

/// A process of the farm with what it writes kept (and echoed with a
/// label), stopped on drop if still running.
pub struct Process {
    label: String,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `cmd`, keeping what it writes to standard output and error.
    pub fn spawn(label: &str, cmd: &mut Command) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {label}: {cmd:?}"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        keep(label, stdout, &log);
        keep(label, stderr, &log);
        Ok(Self {
            label: label.to_string(),
            child: Some(child),
            log,
        })
    }

    /// Its process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits until a line it wrote holds `needle`.
    pub fn wait_logged(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logged(needle) {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok()?) {
                bail!("{} exited ({status}) before logging {needle:?}", self.label);
            }
            thread::sleep(Duration::from_millis(20));
        }
        bail!("{} did not log {needle:?} within {timeout:?}", self.label)
    }

    /// Whether a line it wrote so far holds `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.count_logged(needle) > 0
    }

    /// How many lines it wrote so far hold `needle`.
    pub fn count_logged(&self, needle: &str) -> usize {
        let log = self.log.lock().expect("log lock");
        log.iter().filter(|line| line.contains(needle)).count()
    }

    /// Waits for it to exit by itself; returns its exit code and what it
    /// wrote.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<(i32, String)> {
        let child = self.child.as_mut().context("not running")?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                bail!("{} still runs after {timeout:?}", self.label);
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.child = None;
        // The reader thread drains the pipe just after the exit.
        thread::sleep(Duration::from_millis(100));
        Ok((
            status.code().unwrap_or(-1),
            self.log.lock().unwrap().join("\n"),
        ))
    }

    /// Sends `signal` and waits for the exit.
    pub fn stop_with(&mut self, signal: i32) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + STOP;
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                bail!("{} ignored signal {signal}", self.label);
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// Echoes the lines of `pipe`, labelled, and adds them to `log`.
fn keep(label: &str, pipe: impl io::Read + Send + 'static, log: &Arc<Mutex<Vec<String>>>) {
    let (kept, tag) = (log.clone(), label.to_string());
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(io::Result::ok) {
            eprintln!("[{tag}] {line}");
            kept.lock().expect("log lock").push(line);
        }
    });
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.stop_with(libc::SIGTERM);
    }
}

/// The router: a bridge for the sites and links to the outside networks.
pub struct Router {
    pub ns: Netns,
    bridge: String,
    prefix: String,
}

impl Router {
    pub fn new() -> Result<Self> {
        let prefix = unique_name();
        let ns = Netns::new(format!("{prefix}-rt"))?;
        let bridge = format!("{prefix}b");
        ns.ip(&["link", "add", &bridge, "type", "bridge"])?;
        ns.ip(&["addr", "add", &format!("{ROUTER_SITE}/24"), "dev", &bridge])?;
        ns.ip(&["link", "set", &bridge, "up"])?;
        sh(
            "nsenter",
            &[
                &format!("--net={}", ns.path()),
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
            ],
        )?;
        Ok(Self { ns, bridge, prefix })
    }

    /// A host `name` at `addr` on the sites' bridge; returns it and the
    /// name of its link inside it.
    pub fn site_host(&self, name: &str, addr: &str) -> Result<(Netns, String)> {
        let ns = Netns::new(format!("{}-{name}", self.prefix))?;
        let (inside, port) = self.link(&ns, name)?;
        self.ns
            .ip(&["link", "set", &port, "master", &self.bridge])?;
        self.ns.ip(&["link", "set", &port, "up"])?;
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", &inside])?;
        ns.ip(&["link", "set", &inside, "up"])?;
        ns.ip(&["route", "add", "default", "via", ROUTER_SITE])?;
        Ok((ns, inside))
    }

    /// A host `name` at `addr` alone on an outside network whose router
    /// address is `gateway` (both in one /24); returns it and the name of
    /// its link inside it.
    pub fn outside_host(&self, name: &str, addr: &str, gateway: &str) -> Result<(Netns, String)> {
        let ns = Netns::new(format!("{}-{name}", self.prefix))?;
        let (inside, port) = self.link(&ns, name)?;
        self.ns
            .ip(&["addr", "add", &format!("{gateway}/24"), "dev", &port])?;
        self.ns.ip(&["link", "set", &port, "up"])?;
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", &inside])?;
        ns.ip(&["link", "set", &inside, "up"])?;
        ns.ip(&["route", "add", "default", "via", gateway])?;
        Ok((ns, inside))
    }

    /// A veth pair between the router and `ns`: (the end in `ns`, the
    /// router's end). Host names are short: interface names hold 15 bytes.
    fn link(&self, ns: &Netns, name: &str) -> Result<(String, String)> {
        assert!(name.len() <= 3, "host name {name} is longer than 3 bytes");
        let (inside, port) = (format!("{}{name}", self.prefix), self.port(name));
        sh(
            "ip",
            &[
                "link",
                "add",
                &inside,
                "netns",
                &ns.name,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &self.ns.name,
            ],
        )?;
        Ok((inside, port))
    }

    /// The router's end of the link to the host `name`.
    fn port(&self, name: &str) -> String {
        format!("{}{name}p", self.prefix)
    }

    /// Takes the bridge port of the host `name` down (a cut cable) or up.
    pub fn set_port(&self, name: &str, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        self.ns.ip(&["link", "set", &self.port(name), state])?;
        Ok(())
    }
}

/// A real redis-server with the farm's ACL users, its data kept (append
/// only, every write synced) so that a restart loses nothing; with TLS,
/// it speaks only TLS, on a certificate of a private authority.
pub struct Redis {
    process: Option<Process>,
    ns: Netns,
    dir: Scratch,
    tls: bool,
}

impl Redis {
    /// The broker, speaking plain RESP.
    pub fn start(router: &Router) -> Result<Self> {
        Self::start_with(router, false)
    }

    /// The broker, speaking TLS if `tls`.
    pub fn start_with(router: &Router, tls: bool) -> Result<Self> {
        let (ns, _) = router.site_host("rds", REDIS_HOST)?;
        let dir = Scratch::labelled("redis")?;
        let acl = [
            "user default off".to_string(),
            format!(
                "user {} on >{} resetkeys ~{STREAM} resetchannels -@all +xadd",
                POP_USER.0, POP_USER.1
            ),
            format!(
                "user {} on >{} resetkeys %R~{STREAM} ~{STREAM}:revokes resetchannels -@all +xread +xrange +time +xadd",
                RELAY_USER.0, RELAY_USER.1
            ),
        ];
        fs::write(dir.path("users.acl"), acl.join("\n") + "\n")?;
        if tls {
            make_certificates(&dir)?;
        }
        let mut redis = Self {
            process: None,
            ns,
            dir,
            tls,
        };
        redis.restart()?;
        Ok(redis)
    }

    /// How clients reach it: the URL, then the flags that go with it.
    pub fn endpoint(&self) -> Vec<String> {
        if self.tls {
            vec![
                format!("rediss://{REDIS_HOST}:{REDIS_PORT}/0"),
                "--redis-ca".into(),
                self.dir.path("ca.pem").display().to_string(),
            ]
        } else {
            vec![Redis::url()]
        }
    }

    /// Starts the server (again), on the data it kept.
    pub fn restart(&mut self) -> Result<()> {
        let dir = self.dir.dir().to_str().expect("UTF-8 path").to_string();
        let mut cmd = self.ns.command(tools::require("redis-server")?);
        cmd.args([
            "--bind",
            REDIS_HOST,
            "--port",
            &REDIS_PORT.to_string(),
            "--dir",
            &dir,
            "--aclfile",
            &format!("{dir}/users.acl"),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]);
        if self.tls {
            let file = |name: &str| self.dir.path(name).display().to_string();
            cmd.args(["--port", "0", "--tls-port", &REDIS_PORT.to_string()])
                .args(["--tls-cert-file", &file("server.pem")])
                .args(["--tls-key-file", &file("server.key")])
                .args(["--tls-ca-cert-file", &file("ca.pem")])
                .args(["--tls-auth-clients", "no"]);
        }
        let mut process = Process::spawn("redis", &mut cmd)?;
        process.wait_logged("Ready to accept connections", START)?;
        self.process = Some(process);
        Ok(())
    }

    /// Stops the server the normal way (it syncs its data).
    pub fn stop(&mut self) -> Result<()> {
        match self.process.take() {
            Some(mut process) => process.stop_with(libc::SIGTERM),
            None => Ok(()),
        }
    }

    /// The server's process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref()?.pid()
    }

    pub fn url() -> String {
        format!("redis://{REDIS_HOST}:{REDIS_PORT}/0")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// A certificate authority (`ca.pem`) and the broker's certificate for its
/// address (`server.pem`, `server.key`) in `dir`, with openssl.
fn make_certificates(dir: &Scratch) -> Result<()> {
    let openssl = tools::require("openssl")?;
    let path = |name: &str| dir.path(name).display().to_string();
    fs::write(
        dir.path("san.ext"),
        format!("subjectAltName=IP:{REDIS_HOST}\n"),
    )?;
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=smtpgate test CA",
            "-keyout",
            &path("ca.key"),
            "-out",
            &path("ca.pem"),
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=redis",
            "-keyout",
            &path("server.key"),
            "-out",
            &path("server.csr"),
        ],
        &[
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &path("server.csr"),
            "-CA",
            &path("ca.pem"),
            "-CAkey",
            &path("ca.key"),
            "-CAcreateserial",
            "-extfile",
            &path("san.ext"),
            "-out",
            &path("server.pem"),
        ],
    ];
    for args in steps {
        sh(openssl.to_str().expect("UTF-8 path"), args)?;
    }
    Ok(())
}

/// A credentials file for `--redis-auth-file`, mode 0600.
pub fn auth_file(dir: &Scratch, name: &str, (user, password): (&str, &str)) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path(name);
    fs::write(&path, format!("{user}\n{password}\n"))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
    Ok(path)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// What a relay of the farm runs with.
#[derive(Clone, Copy)]
pub struct RelaySpec<'a> {
    /// At most 3 bytes: interface names are short.
    pub name: &'a str,
    pub addr: &'a str,
    /// Prepended to the agent's command line (e.g. faketime).
    pub wrapper: &'a [&'a str],
    /// Added to the agent's flags.
    pub flags: &'a [&'a str],
    /// Lines added to Postfix's `main.cf`.
    pub postfix: &'a str,
}

impl<'a> RelaySpec<'a> {
    /// A relay `name` at `addr` with nothing added.
    pub const fn new(name: &'a str, addr: &'a str) -> Self {
        Self {
            name,
            addr,
            wrapper: &[],
            flags: &[],
            postfix: "",
        }
    }
}

/// A relay: a host on the bridge with a real Postfix on port 25, its own
/// bpffs, and `smtpgate run --subscribe` gating its link.
pub struct Relay {
    pub name: String,
    pub addr: Ipv4Addr,
    agent: Option<Process>,
    pub postfix: Postfix,
    pub ns: Netns,
    iface: String,
    bpffs: BpfFs,
    state: Scratch,
    auth: PathBuf,
    /// The broker's URL and the flags that go with it.
    endpoint: Vec<String>,
    /// Prepended to the agent's command line (e.g. faketime).
    wrapper: Vec<String>,
    flags: Vec<String>,
}

impl Relay {
    /// The relay of `spec`, delivering into the maildirs under
    /// `mail_root`, its agent started with `flags` added to the spec's.
    pub fn start(
        router: &Router,
        spec: RelaySpec,
        broker: (&[String], PathBuf),
        mail_root: &Path,
        flags: &[&str],
    ) -> Result<Self> {
        let mut relay = Self::prepare(router, spec, broker, mail_root, flags)?;
        relay.start_agent()?;
        Ok(relay)
    }

    /// [`Relay::start`] without starting the agent: the host, its Postfix
    /// and its bpffs are ready, and [`Relay::start_agent`] starts it.
    pub fn prepare(
        router: &Router,
        spec: RelaySpec,
        (endpoint, auth): (&[String], PathBuf),
        mail_root: &Path,
        flags: &[&str],
    ) -> Result<Self> {
        let (ns, iface) = router.site_host(spec.name, spec.addr)?;
        let addr: Ipv4Addr = spec.addr.parse()?;
        let postfix = Postfix::start_on(&ns, mail_root, &[IpAddr::V4(addr)], spec.postfix)?;
        let strings = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Ok(Self {
            name: spec.name.to_string(),
            addr,
            agent: None,
            postfix,
            ns,
            iface,
            bpffs: BpfFs::new(&unique_name())?,
            state: Scratch::labelled("relay-state")?,
            auth,
            endpoint: endpoint.to_vec(),
            wrapper: strings(spec.wrapper),
            flags: [strings(spec.flags), strings(flags)].concat(),
        })
    }

    /// Where the agent pins its maps (`smtpgate --bpffs-dir`).
    pub fn pin_dir(&self) -> PathBuf {
        self.bpffs.pin_dir()
    }

    /// Starts `smtpgate run --subscribe` and waits until it reads the
    /// stream.
    pub fn start_agent(&mut self) -> Result<()> {
        let mut agent = Process::spawn(&self.name, &mut self.agent_command(&self.flags))?;
        agent.wait_logged("reading grants from Redis", START)?;
        self.agent = Some(agent);
        Ok(())
    }

    /// The agent's command line, with `flags` at its end.
    pub fn agent_command(&self, flags: &[String]) -> Command {
        let (program, wrapper_args): (PathBuf, &[String]) = match self.wrapper.split_first() {
            Some((first, rest)) => (PathBuf::from(first), rest),
            None => (smtpgate_bin(), &[]),
        };
        let mut cmd = self.ns.command(program);
        cmd.args(wrapper_args);
        if !self.wrapper.is_empty() {
            cmd.arg(smtpgate_bin());
        }
        cmd.args(["run", "--iface", &self.iface, "--bpffs-dir"])
            .arg(self.bpffs.pin_dir())
            .arg("--subscribe")
            .args(&self.endpoint)
            .arg("--redis-auth-file")
            .arg(&self.auth)
            .arg("--state-dir")
            .arg(self.state.dir())
            .args(flags);
        cmd
    }

    /// The running agent.
    pub fn agent(&mut self) -> Result<&mut Process> {
        self.agent
            .as_mut()
            .context("the relay's agent is not running")
    }

    /// Kills the agent at once (SIGKILL): no state is saved on the way out.
    pub fn kill_agent(&mut self) -> Result<()> {
        self.agent
            .take()
            .context("the relay's agent is not running")?
            .stop_with(libc::SIGKILL)
    }

    /// What is left of the grant covering `ip`, to the nanosecond, read
    /// from the pinned map.
    pub fn left(&self, ip: &str) -> Result<Option<Duration>> {
        let ip: IpAddr = ip.parse()?;
        let grants = Grants::open_pinned(&PinDir::new(self.bpffs.pin_dir()))?;
        Ok(grants
            .live()?
            .into_iter()
            .find(|grant| grant.address() == ip)
            .map(|grant| grant.remaining))
    }

    /// Waits until `ip` holds a grant here; returns how long that took.
    pub fn wait_for_grant(&self, ip: &str, timeout: Duration) -> Result<Duration> {
        self.wait_for(ip, true, timeout)
    }

    /// Waits until `ip` holds no grant here; returns how long that took.
    pub fn wait_for_no_grant(&self, ip: &str, timeout: Duration) -> Result<Duration> {
        self.wait_for(ip, false, timeout)
    }

    fn wait_for(&self, ip: &str, granted: bool, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if self.left(ip)?.is_some() == granted {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                let what = if granted {
                    "got no grant"
                } else {
                    "kept its grant"
                };
                bail!("{ip} {what} on {} within {timeout:?}", self.name);
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// `smtpgate ARGS` on this relay's gate.
    pub fn smtpgate(&self, args: &[&str]) -> Result<String> {
        let out = self
            .ns
            .command(smtpgate_bin())
            .args(args)
            .arg("--bpffs-dir")
            .arg(self.bpffs.pin_dir())
            .output()?;
        stdout_of(
            &format!("smtpgate {} on {}", args.join(" "), self.name),
            out,
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.agent = None;
        let _ = self.smtpgate(&["detach"]);
    }
}

/// A client host on an outside network: logs in on the POP host and sends
/// through the relays, from its own address or others it adds.
pub struct Client {
    pub ns: Netns,
    pub addr: &'static str,
    iface: String,
}

impl Client {
    /// Whether a connect to `relay`'s port 25 is answered within `wait`
    /// (a dropped SYN is retried after a second: 1.2 s tells).
    pub fn reaches(&self, relay: &Relay, wait: Duration) -> Result<bool> {
        let target = SocketAddr::new(IpAddr::V4(relay.addr), SMTP);
        match self
            .ns
            .run(move || TcpStream::connect_timeout(&target, wait))?
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(false),
            Err(e) => bail!("connecting to {target}: {e}"),
        }
    }

    /// Sends a message with `subject` through `relay` from the client's
    /// address, by swaks.
    pub fn send_through(&self, relay: &Relay, subject: &str) -> Result<Sent> {
        mail::send(&self.ns, IpAddr::V4(relay.addr), None, subject)
    }

    /// A POP3 login as `user` on the POP host from `ip`, which the client
    /// takes on (in its own /24) if it is not its address yet.
    fn pop3_login(&self, ip: &str, user: &str) -> Result<Login> {
        let source: IpAddr = ip.parse()?;
        if ip != self.addr {
            self.ns
                .ip(&["addr", "replace", &format!("{ip}/24"), "dev", &self.iface])?;
        }
        let server = POP_HOST.parse()?;
        mail::login(&self.ns, "pop3", server, Some(source), user, PASSWORD)
    }
}

/// The POP host: a real Dovecot, and `smtpgate watch` following its log
/// and publishing to the broker.
pub struct PopHost {
    agent: Process,
    pub dovecot: Dovecot,
    pub ns: Netns,
    endpoint: Vec<String>,
    _state: Scratch,
}

/// When a login was made: no grant of it may reach a relay before
/// `started`, nor outlast its TTL counted from `done`.
pub struct LoggedIn {
    pub started: Instant,
    pub done: Instant,
}

impl PopHost {
    /// The POP host, publishing grants of `ttl` to the broker at `endpoint`.
    pub fn start(router: &Router, files: &Scratch, ttl: &str, endpoint: &[String]) -> Result<Self> {
        let (ns, _) = router.site_host("pop", POP_HOST)?;
        let dovecot = Dovecot::start_on(&ns, &[POP_HOST.parse()?], "")?;
        let log = dovecot.log_path().to_path_buf();
        let state = Scratch::labelled("pop-state")?;
        let auth = auth_file(files, "pop.auth", POP_USER)?;
        let mut cmd = ns.command(smtpgate_bin());
        cmd.args(["watch", "--log", path_str(&log), "--ttl", ttl])
            .arg("--publish")
            .args(endpoint)
            .arg("--redis-auth-file")
            .arg(&auth)
            .arg("--state-dir")
            .arg(state.dir());
        let mut agent = Process::spawn("pop", &mut cmd)?;
        agent.wait_logged(&format!("watching {} for logins", log.display()), START)?;
        Ok(Self {
            agent,
            dovecot,
            ns,
            endpoint: endpoint.to_vec(),
            _state: state,
        })
    }

    /// A real POP3 login as `user` of `client` from `ip` (curl to
    /// Dovecot); fails unless Dovecot accepts it.
    pub fn login(&self, client: &Client, ip: &str, user: &str) -> Result<LoggedIn> {
        let started = Instant::now();
        let login = client.pop3_login(ip, user)?;
        ensure!(
            login == Login::Accepted,
            "Dovecot refused the login from {ip}"
        );
        Ok(LoggedIn {
            started,
            done: Instant::now(),
        })
    }

    /// Appends a POP3 login line of `user` from `ip` to Dovecot's log, as
    /// Dovecot 2.3 writes it there (its default `log_timestamp`, local
    /// time); returns the instant it was written. For measuring the farm
    /// alone, without a client's round trips.
    pub fn login_line(&self, ip: &str, user: &str) -> Result<Instant> {
        let line = format!(
            "{} pop3-login: Info: Login: user=<{user}>, method=PLAIN, rip={ip}, lip={POP_HOST}, mpid=4242, session=<c1>\n",
            jiff::Zoned::now().strftime("%b %d %H:%M:%S")
        );
        logs::append(self.dovecot.log_path(), &line)?;
        Ok(Instant::now())
    }

    pub fn agent(&mut self) -> &mut Process {
        &mut self.agent
    }

    /// `smtpgate ARGS --publish <the broker> --redis-auth-file AUTH` on the
    /// POP host: an operator's event for every relay.
    pub fn publish(&self, args: &[&str], auth: &Path) -> Result<String> {
        let out = self
            .ns
            .command(smtpgate_bin())
            .args(args)
            .arg("--publish")
            .args(&self.endpoint)
            .arg("--redis-auth-file")
            .arg(auth)
            .output()?;
        stdout_of(&format!("smtpgate {}", args.join(" ")), out)
    }
}

/// The whole farm. Fields drop in order: the agents stop before the broker,
/// the broker before the namespaces, the namespaces before the router.
pub struct Farm {
    pub pop: PopHost,
    pub relays: Vec<Relay>,
    pub redis: Redis,
    pub customer: Client,
    pub stranger: Client,
    pub files: Scratch,
    pub router: Router,
}

impl Farm {
    /// A farm whose grants last `ttl`, with one relay per spec.
    pub fn start(ttl: &str, relays: &[RelaySpec]) -> Result<Self> {
        Self::start_with(ttl, relays, false)
    }

    /// [`Farm::start`], the broker speaking TLS if `tls`.
    pub fn start_with(ttl: &str, relays: &[RelaySpec], tls: bool) -> Result<Self> {
        // A small map: each look at it reads it whole.
        Self::start_sized(ttl, relays, tls, 1024)
    }

    /// [`Farm::start_with`], each relay's map holding `max_grants`.
    pub fn start_sized(
        ttl: &str,
        relays: &[RelaySpec],
        tls: bool,
        max_grants: u32,
    ) -> Result<Self> {
        let router = Router::new()?;
        let files = Scratch::labelled("farm")?;
        let redis = Redis::start_with(&router, tls)?;
        let endpoint = redis.endpoint();
        let client = |name: &str, addr: &'static str, gateway: &str| -> Result<Client> {
            let (ns, iface) = router.outside_host(name, addr, gateway)?;
            Ok(Client { ns, addr, iface })
        };
        let customer = client("cus", CUSTOMER, "198.51.100.1")?;
        let stranger = client("str", STRANGER, "203.0.113.1")?;
        let pop = PopHost::start(&router, &files, ttl, &endpoint)?;
        let auth = auth_file(&files, "relay.auth", RELAY_USER)?;
        let max_grants = max_grants.to_string();
        let relays = relays
            .iter()
            .map(|spec| {
                let flags = ["--ttl", ttl, "--max-grants", &max_grants];
                let broker = (endpoint.as_slice(), auth.clone());
                Relay::start(&router, *spec, broker, pop.dovecot.mail_root(), &flags)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            pop,
            relays,
            redis,
            customer,
            stranger,
            files,
            router,
        })
    }

    /// A credentials file of the POP hosts' user, for one-shot commands.
    pub fn pop_auth(&self) -> Result<PathBuf> {
        auth_file(&self.files, "pop-cli.auth", POP_USER)
    }
}
