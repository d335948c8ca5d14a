//! `--log -`: log lines piped into the agent.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::Watch;

pub async fn read(watch: Arc<Watch>) {
    let mut input = BufReader::new(tokio::io::stdin());
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line).await {
            Ok(0) => {
                tracing::info!("standard input closed; no more logins from it");
                return;
            }
            Ok(_) => watch.handle_line(line.strip_suffix(b"\n").unwrap_or(&line), "stdin"),
            Err(e) => {
                tracing::warn!("reading standard input: {e}");
                return;
            }
        }
    }
}
