//! Postfix's SMTP access policy delegation protocol, as `check_policy_service`
//! speaks it: a request is `name=value` lines ended by an empty line; the
//! answer is one `action=...` line and an empty line. One connection
//! carries any number of requests in turn.
//!
//! Whoever can reach the listener writes these bytes, so every line and the
//! number of attributes are bounded; a request that breaks a bound or the
//! format is read to its end and reported as malformed, and the connection
//! goes on with the next one.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// Longest attribute line. Postfix's own values (addresses, host names,
/// certificate fields) stay far below it.
pub const MAX_LINE: usize = 4096;
/// Most attributes in one request. Postfix 3.7 sends about 40.
pub const MAX_ATTRIBUTES: usize = 128;

/// One request's attributes, in the order sent.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    attributes: Vec<(String, String)>,
}

impl Request {
    /// The value of attribute `name`; the first if it repeats.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Malformed {
    LineTooLong,
    TooManyAttributes,
    NoEquals { line: usize },
    NotUtf8 { line: usize },
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::LineTooLong => {
                write!(f, "an attribute line is longer than {MAX_LINE} bytes")
            }
            Malformed::TooManyAttributes => write!(f, "more than {MAX_ATTRIBUTES} attributes"),
            Malformed::NoEquals { line } => write!(f, "line {line} is not name=value"),
            Malformed::NotUtf8 { line } => write!(f, "line {line} is not UTF-8"),
        }
    }
}

/// What one read found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    Request(Request),
    /// A whole request (up to its empty line) that breaks the format.
    Malformed(Malformed),
    /// The client closed the connection between requests (or in the middle
    /// of one, which Postfix never does).
    Closed,
}

/// Reads the next request. Only I/O errors fail.
pub async fn read_request(reader: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<Read> {
    let mut request = Request::default();
    let mut problem = None;
    let mut line = Vec::with_capacity(256);
    for number in 1.. {
        line.clear();
        let complete = read_bounded_line(reader, &mut line).await?;
        if line.is_empty() && !complete {
            return Ok(Read::Closed);
        }
        if !complete {
            problem.get_or_insert(Malformed::LineTooLong);
            skip_line(reader).await?;
            continue;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if text.is_empty() {
            break;
        }
        if problem.is_some() {
            continue;
        }
        if request.attributes.len() == MAX_ATTRIBUTES {
            problem = Some(Malformed::TooManyAttributes);
            continue;
        }
        let Ok(text) = std::str::from_utf8(text) else {
            problem = Some(Malformed::NotUtf8 { line: number });
            continue;
        };
        match text.split_once('=') {
            Some((name, value)) if !name.is_empty() => request
                .attributes
                .push((name.to_string(), value.to_string())),
            _ => problem = Some(Malformed::NoEquals { line: number }),
        }
    }
    Ok(match problem {
        Some(problem) => Read::Malformed(problem),
        None => Read::Request(request),
    })
}

/// Reads up to and including a line feed into `line`, at most [`MAX_LINE`]
/// bytes; true if the line feed came within them.
async fn read_bounded_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
) -> std::io::Result<bool> {
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(false);
        }
        let room = MAX_LINE + 1 - line.len();
        let (take, done) = match buffer.iter().take(room).position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (buffer.len().min(room), false),
        };
        line.extend_from_slice(&buffer[..take]);
        reader.consume(take);
        if done {
            return Ok(true);
        }
        if line.len() > MAX_LINE {
            return Ok(false);
        }
    }
}

/// Discards the rest of a line that was too long.
async fn skip_line(reader: &mut (impl AsyncBufRead + Unpin)) -> std::io::Result<()> {
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(());
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => {
                reader.consume(at + 1);
                return Ok(());
            }
            None => {
                let all = buffer.len();
                reader.consume(all);
            }
        }
    }
}

/// Writes the answer `action`, e.g. `DUNNO` or `DEFER_IF_PERMIT text`.
/// Line breaks in it would end the answer early, so they become spaces.
pub async fn answer(writer: &mut (impl AsyncWrite + Unpin), action: &str) -> std::io::Result<()> {
    let action: String = action
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    writer
        .write_all(format!("action={action}\n\n").as_bytes())
        .await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn reads(input: &[u8]) -> Vec<Read> {
        let mut reader = tokio::io::BufReader::with_capacity(64, input);
        let mut all = Vec::new();
        loop {
            let read = read_request(&mut reader).await.unwrap();
            let closed = read == Read::Closed;
            all.push(read);
            if closed {
                return all;
            }
        }
    }

    fn request(pairs: &[(&str, &str)]) -> Read {
        Read::Request(Request {
            attributes: pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        })
    }

    #[tokio::test]
    async fn requests_follow_each_other_on_one_connection() {
        let input = b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.7\n\nrequest=smtpd_access_policy\nrecipient=a=b@example.org\n\n";
        assert_eq!(
            reads(input).await,
            [
                request(&[
                    ("request", "smtpd_access_policy"),
                    ("protocol_state", "RCPT"),
                    ("client_address", "192.0.2.7")
                ]),
                request(&[
                    ("request", "smtpd_access_policy"),
                    ("recipient", "a=b@example.org")
                ]),
                Read::Closed,
            ]
        );
    }

    #[tokio::test]
    async fn a_malformed_request_is_read_to_its_end_and_the_next_one_stands() {
        let long = format!("sender={}\n", "x".repeat(3 * MAX_LINE));
        let many: String = (0..=MAX_ATTRIBUTES).map(|n| format!("a{n}=1\n")).collect();
        let mut input =
            format!("{long}client_address=192.0.2.1\n\nno equals here\n\n{many}\n=value\n\n")
                .into_bytes();
        input.extend_from_slice(b"\xff=1\n\nrecipient=ok@example.org\n\n");
        let got = reads(&input).await;
        assert_eq!(
            got,
            [
                Read::Malformed(Malformed::LineTooLong),
                Read::Malformed(Malformed::NoEquals { line: 1 }),
                Read::Malformed(Malformed::TooManyAttributes),
                Read::Malformed(Malformed::NoEquals { line: 1 }),
                Read::Malformed(Malformed::NotUtf8 { line: 1 }),
                request(&[("recipient", "ok@example.org")]),
                Read::Closed,
            ]
        );
    }

    #[tokio::test]
    async fn a_line_of_exactly_the_limit_is_taken() {
        let value = "y".repeat(MAX_LINE - "sender=".len() - 1);
        let input = format!("sender={value}\n\n");
        assert_eq!(
            reads(input.as_bytes()).await[0],
            request(&[("sender", &value)])
        );
    }

    #[tokio::test]
    async fn answers_are_one_line() {
        let mut out = Vec::new();
        answer(&mut out, "DEFER_IF_PERMIT over\nquota")
            .await
            .unwrap();
        assert_eq!(out, b"action=DEFER_IF_PERMIT over quota\n\n");
    }
}
