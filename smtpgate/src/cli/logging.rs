//! Where log lines go and how they look. On a terminal: coloured, with time
//! stamps. In a pipe or a file: the same without colour codes, which would
//! otherwise end up in every log shipper. Under systemd (stderr is the
//! journal stream named by `JOURNAL_STREAM`): no time stamp, which the
//! journal adds, and a `<N>` syslog priority prefix, which the journal
//! turns into the entry's PRIORITY, so `journalctl -p warning` works.

use std::{fmt, io::IsTerminal, os::unix::fs::MetadataExt};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    fmt::{format::Writer, FmtContext, FormatEvent, FormatFields},
    registry::LookupSpan,
    EnvFilter,
};

/// Sets up logging to stderr at `verbose` (0: info, 1: debug, 2: trace),
/// unless `SMTPGATE_LOG` gives a filter.
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter =
        EnvFilter::try_from_env("SMTPGATE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if stderr_is_the_journal() {
        builder.with_ansi(false).event_format(JournalLine).init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// Whether stderr is the stream systemd connected to the journal: it sets
/// `JOURNAL_STREAM` to that stream's `DEVICE:INODE`, which a redirect by
/// hand (`2>file`) does not match.
fn stderr_is_the_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
}

/// `<PRIORITY>LEVEL message fields`, one line per event.
struct JournalLine;

impl<S, N> FormatEvent<S, N> for JournalLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = *event.metadata().level();
        write!(writer, "<{}>{level:>5} ", syslog_priority(level))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The syslog priority of a log level (RFC 5424: 3 err, 4 warning, 6 info,
/// 7 debug).
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}
