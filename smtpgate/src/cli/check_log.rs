//! `smtpgate check-log`: what the agent would make of a log, line by line.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    path::Path,
};

use anyhow::{Context, Result};
use jiff::Timestamp;
use smtpgate_logins::Verdict;
use smtpgate_tail::ReadLines;

use crate::agent::{settings::LoginParser, watch::LogJudge};

/// Judges every line of `file` (`-`: standard input) through the agent's
/// own [`LogJudge`], read with the agent's bound on line length, and prints
/// each verdict (only the grants with `grants_only`) and a summary.
pub fn check_log(file: &Path, parser: &LoginParser, grants_only: bool) -> Result<()> {
    let parser = parser.parser();
    for warning in parser.warnings() {
        eprintln!("smtpgate: warning: {warning}");
    }
    let input: Box<dyn Read> = if file == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?)
    };
    let now = Timestamp::now();
    let mut judge = LogJudge::new(parser);
    let (mut lines, mut grants) = (0u64, 0u64);
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut out = std::io::stdout().lock();
    for (index, line) in ReadLines::new(input).enumerate() {
        let line = line.with_context(|| format!("reading {}", file.display()))?;
        lines += 1;
        let number = index + 1;
        match judge.judge(&line.bytes, line.cut, now) {
            Verdict::Grant(login) => {
                grants += 1;
                let user = if login.user.is_empty() {
                    "-"
                } else {
                    &login.user
                };
                let when = login
                    .time
                    .map_or_else(|| "no time stamp".to_string(), |t| t.to_string());
                writeln!(
                    out,
                    "{number}: grant {} ({} via {}, user {user}, {when})",
                    login.ip, login.service, login.server
                )?;
            }
            Verdict::NoGrant(reason) => {
                *reasons.entry(reason.as_str().to_string()).or_default() += 1;
                if !grants_only {
                    writeln!(out, "{number}: no grant: {reason}")?;
                }
            }
        }
    }
    writeln!(
        out,
        "{lines} lines: {grants} grant, {} do not",
        lines - grants
    )?;
    for (reason, count) in reasons {
        writeln!(out, "  {count:>8}  {reason}")?;
    }
    Ok(())
}
