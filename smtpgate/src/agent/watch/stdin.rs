//! `--log -`: log lines piped into the agent.

use std::sync::Arc;

use smtpgate_tail::ReadLines;

use super::{LogSource, Watch};

/// Reads standard input on a thread of its own, with the follower's bound
/// on line length. The read blocks; on a thread outside the runtime it does
/// not hold up the agent's exit, as a blocking task of the runtime would.
pub fn spawn(watch: Arc<Watch>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut log = LogSource::new("standard input".into(), &watch.parser);
            for line in ReadLines::new(std::io::stdin().lock()) {
                match line {
                    Ok(line) => watch.handle_line(&mut log, &line.bytes, line.cut, "stdin"),
                    Err(e) => {
                        tracing::warn!("reading standard input: {e}");
                        return;
                    }
                }
            }
            tracing::info!("standard input closed; no more logins from it");
        })?;
    Ok(())
}
