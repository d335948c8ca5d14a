//! `--log -`: log lines piped into the agent.

use std::sync::Arc;

use smtpgate_tail::ReadLines;

use super::Watch;
use crate::gate::owners::Source;

/// Reads standard input on a thread of its own, with the follower's bound
/// on line length. The read blocks; on a thread outside the runtime it does
/// not hold up the agent's exit, as a blocking task of the runtime would.
pub fn spawn(watch: Arc<Watch>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut log = watch.open_log("standard input".into());
            for line in ReadLines::new(std::io::stdin().lock()) {
                match line {
                    Ok(line) => watch.handle_line(&mut log, &line.bytes, line.cut, Source::Stdin),
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
