//! Runs every line of `tests/logs/*.log` through the parser, each
//! file as one log (a [`smtpgate_logins::Stream`]), and compares the
//! verdict with the line's expectation. The syntax is described
//! in `tests/logs/README.md`.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use jiff::tz::TimeZone;
use jiff::Timestamp;
use smtpgate_logins::{Format, Parser, ParserOptions, Service, Verdict};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/logs");

#[test]
fn every_fixture_line_meets_its_expectation() {
    let files = fixture_files(Path::new(FIXTURES));
    assert!(!files.is_empty(), "no *.log fixtures in {FIXTURES}");
    let mut failures = Vec::new();
    let mut checked = 0;
    for path in &files {
        checked += check_file(path, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} problem(s) in {} fixture lines:\n{}",
        failures.len(),
        checked,
        failures.join("\n")
    );
    eprintln!(
        "{checked} fixture lines in {} files met their expectations",
        files.len()
    );
}

fn fixture_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    files.sort();
    files
}

/// Checks one file, appending `file:line: problem` to `failures`; returns
/// the number of log lines checked.
fn check_file(path: &Path, failures: &mut Vec<String>) -> usize {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let bytes = std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let mut fail =
        |line: usize, problem: String| failures.push(format!("{name}:{line}: {problem}"));

    // Each file is one log, judged in order, from its start or from where
    // its settings change.
    let mut settings = Settings::default();
    let mut stream = settings.parser().stream();
    let mut pending: Option<(usize, Expectation)> = None;
    let mut checked = 0;
    for (index, line) in body.split(|&b| b == b'\n').enumerate() {
        let number = index + 1;
        if line.starts_with(b"#") {
            if let Some((at, _)) = pending.take() {
                fail(at, "expectation not followed by a log line".into());
            }
            let text = String::from_utf8_lossy(line);
            if let Some(spec) = text.strip_prefix("# expect ") {
                match Expectation::parse(spec) {
                    Ok(expectation) => pending = Some((number, expectation)),
                    Err(problem) => fail(number, problem),
                }
            } else if let Some(spec) = text.strip_prefix("# fixture ") {
                match settings.apply(spec) {
                    Ok(()) => stream = settings.parser().stream(),
                    Err(problem) => fail(number, problem),
                }
            }
            continue;
        }
        checked += 1;
        let Some((_, expectation)) = pending.take() else {
            fail(
                number,
                "log line without a preceding `# expect` line".into(),
            );
            continue;
        };
        let verdict = stream.judge(line, settings.now);
        if let Err(problem) = expectation.check(&verdict) {
            fail(number, problem);
        }
    }
    if let Some((at, _)) = pending {
        fail(at, "expectation not followed by a log line".into());
    }
    if checked == 0 {
        fail(0, "file holds no log line".into());
    }
    checked
}

/// The parser settings of `# fixture` lines.
struct Settings {
    now: Timestamp,
    timezone: TimeZone,
    format: Format,
    services: Vec<Service>,
    trusted_hosts: Vec<String>,
    patterns: Vec<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            now: "2026-11-23T12:00:00Z".parse().unwrap(),
            timezone: TimeZone::UTC,
            format: Format::Auto,
            services: vec![Service::Pop3, Service::Imap],
            trusted_hosts: Vec::new(),
            patterns: Vec::new(),
        }
    }
}

impl Settings {
    fn apply(&mut self, spec: &str) -> Result<(), String> {
        // A pattern holds spaces: it takes the rest of the line.
        let spec = match spec.split_once("pattern=") {
            Some((settings, pattern)) => {
                self.patterns.push(pattern.to_owned());
                settings
            }
            None => spec,
        };
        for pair in spec.split_whitespace() {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("fixture setting {pair:?} is not KEY=VALUE"))?;
            let bad = |err: &dyn fmt::Display| format!("fixture setting {key}: {err}");
            match key {
                "now" => self.now = value.parse().map_err(|e| bad(&e))?,
                "timezone" => self.timezone = time_zone(value).map_err(|e| bad(&e))?,
                "format" => self.format = value.parse().map_err(|e| bad(&e))?,
                "trusted-hosts" => {
                    self.trusted_hosts = value
                        .split(',')
                        .filter(|h| !h.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                "services" => {
                    self.services = value
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .map_err(|e| bad(&e))?
                }
                _ => return Err(format!("unknown fixture setting {key:?}")),
            }
        }
        Ok(())
    }

    fn parser(&self) -> Parser {
        Parser::new(ParserOptions {
            format: self.format,
            custom_patterns: self.patterns.clone(),
            timezone: self.timezone.clone(),
            services: self.services.clone(),
            trusted_hosts: self.trusted_hosts.clone(),
        })
        .unwrap()
    }
}

/// `UTC`, a fixed offset `±hh:mm`, or an IANA zone name.
fn time_zone(name: &str) -> Result<TimeZone, String> {
    if name == "UTC" {
        return Ok(TimeZone::UTC);
    }
    let Some((sign, hh_mm)) = name
        .strip_prefix('+')
        .map(|rest| (1, rest))
        .or_else(|| name.strip_prefix('-').map(|rest| (-1, rest)))
    else {
        return TimeZone::get(name).map_err(|e| e.to_string());
    };
    let seconds = hh_mm
        .split_once(':')
        .and_then(|(h, m)| Some(h.parse::<i32>().ok()? * 3600 + m.parse::<i32>().ok()? * 60))
        .ok_or_else(|| format!("bad offset {name:?} (want ±hh:mm)"))?;
    let offset = jiff::tz::Offset::from_seconds(sign * seconds).map_err(|e| e.to_string())?;
    Ok(TimeZone::fixed(offset))
}

/// What a `# expect` line demands of the next log line.
#[derive(Debug)]
enum Expectation {
    None,
    Grant {
        ip: IpAddr,
        service: Service,
        user: String,
        server: Option<String>,
        time: Option<Timestamp>,
    },
}

impl Expectation {
    fn parse(spec: &str) -> Result<Expectation, String> {
        let mut words = spec.split_whitespace();
        match words.next() {
            Some(word) if word.trim_end_matches(':') == "none" => Ok(Expectation::None),
            Some("grant") => {
                let mut next = |what: &str| {
                    words
                        .next()
                        .ok_or_else(|| format!("`# expect grant` lacks the {what}"))
                };
                let ip = next("address")?;
                let ip = ip.parse().map_err(|_| format!("bad address {ip:?}"))?;
                let service = next("service")?.parse().map_err(|e| format!("{e}"))?;
                let user = match next("user")? {
                    "-" => String::new(),
                    user => user.to_owned(),
                };
                let (mut server, mut time) = (None, None);
                for option in words {
                    match option.split_once('=') {
                        Some(("server", name)) => server = Some(name.to_owned()),
                        Some(("time", stamp)) => {
                            time = Some(
                                stamp
                                    .parse()
                                    .map_err(|e| format!("bad time {stamp:?}: {e}"))?,
                            )
                        }
                        _ => return Err(format!("unknown expectation option {option:?}")),
                    }
                }
                Ok(Expectation::Grant {
                    ip,
                    service,
                    user,
                    server,
                    time,
                })
            }
            _ => Err(format!(
                "malformed expectation {spec:?} (want `grant …` or `none`)"
            )),
        }
    }

    fn check(&self, verdict: &Verdict) -> Result<(), String> {
        match (self, verdict) {
            (Expectation::None, Verdict::NoGrant(_)) => Ok(()),
            (Expectation::None, Verdict::Grant(login)) => Err(format!(
                "expected no grant, got a grant of {} ({} {:?} via {})",
                login.ip, login.service, login.user, login.server
            )),
            (Expectation::Grant { .. }, Verdict::NoGrant(reason)) => {
                Err(format!("expected {self}, got no grant ({reason})"))
            }
            (
                Expectation::Grant {
                    ip,
                    service,
                    user,
                    server,
                    time,
                },
                Verdict::Grant(login),
            ) => {
                let matches = login.ip == *ip
                    && login.service == *service
                    && login.user == *user
                    && server.as_ref().is_none_or(|server| server == login.server)
                    && time.is_none_or(|time| login.time == Some(time));
                if matches {
                    Ok(())
                } else {
                    Err(format!(
                        "expected {self}, got a grant of {} {} {:?} server={} time={:?}",
                        login.ip, login.service, login.user, login.server, login.time
                    ))
                }
            }
        }
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expectation::None => f.write_str("no grant"),
            Expectation::Grant {
                ip, service, user, ..
            } => write!(f, "a grant of {ip} {service} {user:?}"),
        }
    }
}
