//! Where Postfix reaches the policy service: a TCP address or a Unix socket.

use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
};

use crate::agent::{settings::PolicyListen, unix_socket};

/// One client's connection, whichever kind of listener took it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A bound listener.
pub enum Listener {
    Inet(TcpListener),
    Unix(UnixListener),
}

/// Mode of the policy socket. Postfix's smtpd runs as its own user and
/// needs write access to connect; who may reach the socket at all is left
/// to the directory it is in (Postfix's `private/` is the usual place),
/// just as anyone on the host may reach an `inet:127.0.0.1` listener.
const SOCKET_MODE: u32 = 0o666;

impl Listener {
    /// Binds `listen`, so that a taken port or a bad path fails the start.
    pub async fn bind(listen: &PolicyListen) -> Result<Self> {
        match listen {
            PolicyListen::Inet(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listening on {addr} for policy requests"))?;
                tracing::info!("policy service on inet:{addr}");
                Ok(Self::Inet(listener))
            }
            PolicyListen::Unix(path) => {
                unix_socket::make_way(path)?;
                let listener = UnixListener::bind(path).with_context(|| {
                    format!("listening on {} for policy requests", path.display())
                })?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
                    .with_context(|| format!("chmod {SOCKET_MODE:o} {}", path.display()))?;
                tracing::info!("policy service on unix:{}", path.display());
                Ok(Self::Unix(listener))
            }
        }
    }

    /// The next connection, and who made it (for logs).
    pub async fn accept(&self) -> std::io::Result<(Box<dyn Stream>, String)> {
        match self {
            Self::Inet(listener) => {
                let (stream, peer) = listener.accept().await?;
                Ok((Box::new(stream), peer.to_string()))
            }
            Self::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                let peer = stream.peer_cred().map_or_else(
                    |_| "unknown uid".to_string(),
                    |c| format!("uid {}", c.uid()),
                );
                Ok((Box::new(stream), peer))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// A fresh directory of this test's own, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("smtpgate-policy-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_another_file_is_refused() {
        let dir = TempDir::new("listen");
        let path = dir.0.join("sub/policy.sock");
        let listen = PolicyListen::Unix(path.clone());
        let first = Listener::bind(&listen).await.unwrap();
        drop(first);
        assert!(path.exists(), "the test needs the stale socket left behind");
        Listener::bind(&listen)
            .await
            .expect("the stale socket stood in the way");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);

        let file = dir.0.join("sub/not-a-socket");
        std::fs::write(&file, "keep me").unwrap();
        let err = Listener::bind(&PolicyListen::Unix(file.clone()))
            .await
            .err()
            .expect("bound over a regular file");
        assert!(err.to_string().contains("is not a socket"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }
}
