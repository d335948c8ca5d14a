//! How fast login lines are read and parsed on one core: the parser alone,
//! and the parser behind the log follower the agent reads files with.

use std::{hint::black_box, io::Write, time::Instant};

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use smtpgate_logins::{Parser, ParserOptions, Verdict};
use smtpgate_tail::{Follower, StartAt};

use super::log;
use crate::stats::median;

/// Passes over the log; the median counts.
const PASSES: usize = 3;

#[derive(Serialize)]
pub struct Throughput {
    pub lines: usize,
    pub grants: usize,
    /// The parser alone, lines in memory.
    pub parser_lines_per_s: f64,
    /// Read from a file by smtpgate-tail, then parsed: the agent's path.
    pub follower_lines_per_s: f64,
}

pub fn measure(lines: usize) -> Result<Throughput> {
    let now = jiff::Timestamp::now();
    let (log, grants) = log::mixed(&log::syslog_stamp(), lines);
    let parser = Parser::new(ParserOptions::default()).context("default parser options")?;
    let mut rates = Vec::with_capacity(PASSES);
    for _ in 0..PASSES {
        let start = Instant::now();
        let mut granted = 0;
        for line in log.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if let Verdict::Grant(login) = parser.parse(black_box(line), now) {
                black_box(login);
                granted += 1;
            }
        }
        rates.push(lines as f64 / start.elapsed().as_secs_f64());
        ensure!(
            granted == grants,
            "the parser granted {granted} of the log's {grants} logins"
        );
    }
    let follower_lines_per_s = follow(&log, lines, &parser)?;
    Ok(Throughput {
        lines,
        grants,
        parser_lines_per_s: median(&rates),
        follower_lines_per_s,
    })
}

/// Writes the log to a file and times a follower reading it from the start
/// and parsing every line.
fn follow(log: &[u8], lines: usize, parser: &Parser) -> Result<f64> {
    let mut file = tempfile::NamedTempFile::new()?;
    file.write_all(log)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let now = jiff::Timestamp::now();
        let start = Instant::now();
        let mut follower = Follower::open(file.path(), StartAt::Beginning).await?;
        for _ in 0..lines {
            let line = follower.next_line().await?;
            black_box(parser.parse(&line.bytes, now));
        }
        Ok(lines as f64 / start.elapsed().as_secs_f64())
    })
}
