//! Following mail log files by name (rotation handled by smtpgate-tail).

use std::{path::PathBuf, sync::Arc, time::Duration};

use smtpgate_tail::{Follower, StartAt};

use super::Watch;

/// How long to wait before retrying a log that cannot be read.
const RETRY: Duration = Duration::from_secs(1);

pub async fn follow(watch: Arc<Watch>, path: PathBuf, start: StartAt) {
    let mut follower = loop {
        match Follower::open(&path, start.clone()).await {
            Ok(follower) => break follower,
            Err(e) => {
                tracing::warn!("cannot follow {}: {e}; retrying", path.display());
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    tracing::info!("watching {} for logins", path.display());
    loop {
        match follower.next_line().await {
            Ok(line) => {
                watch.handle_line(&line.bytes, "log");
                watch.state.record_file(&path, line.position);
            }
            Err(e) => {
                tracing::warn!("reading {}: {e}; retrying", path.display());
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
