//! The connection to the broker: how to make one from the settings, which
//! failures are the operator's to fix (credentials, permissions) rather than
//! the network's, and what a broken connection does (one warning per
//! outage, retries with a growing pause).

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use redis::{
    aio::MultiplexedConnection, AsyncConnectionConfig, Client, ErrorKind, IntoConnectionInfo,
    RedisError, TlsCertificates,
};
use tokio::time::sleep;

use crate::agent::{metrics::StreamMetrics, settings::StreamSettings};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first pause after a failure, and the longest.
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(5);

/// A client for the stream's broker, with the settings' credentials and
/// roots. Connects to nothing yet.
pub fn client(settings: &StreamSettings) -> Result<Client> {
    // rustls takes its cryptography from a process-wide provider; ring is
    // the one built in. A second install (another client) changes nothing.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut info = settings
        .url
        .as_str()
        .into_connection_info()
        .with_context(|| format!("{} is not a redis:// or rediss:// URL", settings.url))?;
    if let Some(credentials) = &settings.credentials {
        let mut redis = info.redis_settings().clone();
        if let Some(user) = &credentials.user {
            redis = redis.set_username(user);
        }
        info = info.set_redis_settings(redis.set_password(&credentials.password));
    }
    let client = match &settings.ca {
        Some(pem) => Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.clone()),
            },
        ),
        None => Client::open(info),
    };
    client.with_context(|| format!("setting up the connection to {}", settings.url))
}

/// Connects; replies may take `response_timeout` (a blocking read's own
/// wait, plus the network's).
pub async fn connect(
    client: &Client,
    response_timeout: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(response_timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Whether the broker refused who we are or what we asked, which waiting
/// does not fix.
pub fn is_refusal(e: &RedisError) -> bool {
    e.kind() == ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOPERM" | "NOAUTH"))
}

/// `e` as an error for the operator, naming the broker and, for a refusal,
/// the credentials.
pub fn explain(e: RedisError, settings: &StreamSettings) -> anyhow::Error {
    if is_refusal(&e) {
        let whose = settings.credentials.as_ref().map_or_else(
            || "no credentials (give --redis-auth-file)".to_string(),
            |c| format!("the credentials in {}", c.file.display()),
        );
        anyhow!("Redis at {} refused {whose}: {e}", settings.url)
    } else {
        anyhow!("Redis at {}: {e}", settings.url)
    }
}

/// The first connection, made before the agent starts serving: a refusal
/// stops the start with a clear error; an unreachable broker is only
/// warned about, since the agent retries (and a relay enforces meanwhile).
pub async fn first_connection(
    client: &Client,
    settings: &StreamSettings,
    response_timeout: Duration,
) -> Result<Option<MultiplexedConnection>> {
    match connect(client, response_timeout).await {
        Ok(conn) => Ok(Some(conn)),
        Err(e) if is_refusal(&e) => Err(explain(e, settings)),
        Err(e) => {
            tracing::warn!("{:#}; retrying in the background", explain(e, settings));
            Ok(None)
        }
    }
}

/// Whether the broker can be reached, and what to do when it cannot: say
/// so once per outage, not once per retry, and retry after a pause that
/// doubles up to [`LAST_RETRY`].
pub struct Link {
    url: String,
    metrics: StreamMetrics,
    down_since: Option<Instant>,
    pause: Duration,
}

impl Link {
    pub fn new(settings: &StreamSettings, metrics: StreamMetrics) -> Self {
        Self {
            url: settings.url.clone(),
            metrics,
            down_since: None,
            pause: FIRST_RETRY,
        }
    }

    /// The broker answered.
    pub fn up(&mut self) {
        if let Some(since) = self.down_since.take() {
            tracing::info!(
                "Redis at {} is back after {:.1}s",
                self.url,
                since.elapsed().as_secs_f64()
            );
        }
        self.metrics.connected.set(1);
        self.pause = FIRST_RETRY;
    }

    /// The broker failed `what`; the first failure of an outage is logged
    /// with `consequence`.
    pub fn down(&mut self, what: &str, e: &RedisError, consequence: &str) {
        self.metrics.connected.set(0);
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            tracing::warn!(
                "Redis at {} failed {what}: {e}; {consequence}; retrying until it is back",
                self.url
            );
        } else {
            tracing::debug!("Redis at {} still failing {what}: {e}", self.url);
        }
    }

    /// Waits before the next attempt, a little longer each time.
    pub async fn pause(&mut self) {
        sleep(self.pause).await;
        self.pause = (self.pause * 2).min(LAST_RETRY);
    }
}
