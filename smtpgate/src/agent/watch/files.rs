//! Following mail log files by name (rotation handled by smtpgate-tail).

use std::{path::PathBuf, sync::Arc, time::Duration};

use smtpgate_tail::{Follower, StartAt};

use super::Watch;
use crate::gate::owners::Source;

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
    let mut log = watch.open_log(path.display().to_string());
    // The file being read; each file's lines are judged as a log of their own.
    let mut file = None;
    loop {
        match follower.next_line().await {
            Ok(line) => {
                let this_file = Some((line.position.dev, line.position.inode));
                if file.is_some() && file != this_file {
                    watch.restart_log(&mut log);
                }
                file = this_file;
                watch.handle_line(&mut log, &line.bytes, line.cut, Source::Log);
                watch.record_file(&path, line.position);
            }
            Err(e) => {
                tracing::warn!("reading {}: {e}; retrying", path.display());
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}
