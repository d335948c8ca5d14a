//! One client connection: requests in turn, each answered before the next
//! is read, until the client closes it or goes quiet.

use std::{fmt, time::Duration};

use tokio::io::{AsyncRead, AsyncWrite, BufReader};

use crate::agent::policy_protocol::{answer, read_request, Malformed, Read, Request};

/// How long a connection may take to send a whole request, idle time
/// before it included. Postfix keeps an idle connection for
/// `smtpd_policy_service_max_idle` (300 s) and opens a new one when it
/// finds the old one closed, so closing sooner costs it nothing and frees
/// the slot for a busier smtpd.
pub const IDLE: Duration = Duration::from_secs(60);
/// How long writing one answer may take. Postfix reads it at once; a client
/// that never reads would otherwise hold its slot for ever.
pub const WRITE: Duration = Duration::from_secs(10);

/// An answer to Postfix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// No opinion: the next restriction decides.
    Dunno,
    /// A temporary refusal with this text, unless a later restriction
    /// rejects the recipient anyway.
    DeferIfPermit(String),
}

impl Action {
    /// The action's name in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Dunno => "dunno",
            Self::DeferIfPermit(_) => "defer_if_permit",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dunno => f.write_str("DUNNO"),
            Self::DeferIfPermit(text) => write!(f, "DEFER_IF_PERMIT {text}"),
        }
    }
}

/// Answers each request on `stream` with what `respond` makes of it (a
/// malformed one included, so that the client is never left waiting) until
/// the client closes the connection, stays quiet for [`IDLE`] or does not
/// take an answer within [`WRITE`]. Only I/O ends it early.
pub async fn converse(
    stream: impl AsyncRead + AsyncWrite + Unpin,
    mut respond: impl FnMut(Result<Request, Malformed>) -> Action,
) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    loop {
        let Ok(read) = tokio::time::timeout(IDLE, read_request(&mut stream)).await else {
            return Ok(());
        };
        let action = match read? {
            Read::Closed => return Ok(()),
            Read::Malformed(why) => respond(Err(why)),
            Read::Request(request) => respond(Ok(request)),
        };
        tokio::time::timeout(WRITE, answer(&mut stream, &action.to_string()))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "answer not taken"))??;
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn every_request_is_answered_in_turn_a_malformed_one_too() {
        let (client, server) = tokio::io::duplex(4096);
        let service = tokio::spawn(converse(server, |read| match read {
            Ok(request) if request.get("recipient") == Some("many@example.org") => {
                Action::DeferIfPermit("4.7.1 too many".into())
            }
            _ => Action::Dunno,
        }));
        let (mut from, mut to) = tokio::io::split(client);
        to.write_all(
            b"recipient=one@example.org\n\nnot an attribute\n\nrecipient=many@example.org\n\n",
        )
        .await
        .unwrap();
        to.shutdown().await.unwrap();
        let mut answers = String::new();
        from.read_to_string(&mut answers).await.unwrap();
        assert_eq!(
            answers,
            "action=DUNNO\n\naction=DUNNO\n\naction=DEFER_IF_PERMIT 4.7.1 too many\n\n"
        );
        service.await.unwrap().unwrap();
    }
}
