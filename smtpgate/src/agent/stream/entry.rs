//! One stream entry: what a POP host or an operator publishes and every
//! relay applies. Its fields are flat strings, readable with `redis-cli
//! XRANGE`:
//!
//! | field | value |
//! | --- | --- |
//! | `kind` | `grant`, `revoke`, `revoke-user` or `pardon` |
//! | `addr` | the address that logged in, with the prefix its grant covers (`192.0.2.7/32`, `2001:db8::7/64`) |
//! | `ttl_ms` | a grant's lifetime counted from the entry's own ID, in milliseconds |
//! | `cooldown_ms` | with `revoke-user`, a quota's cooldown counted from the entry's ID (absent: none) |
//! | `user`, `service` | who earned the grant, by which login (absent: nobody) |
//! | `origin`, `seq` | the publishing host and its count of entries, for tracing |
//!
//! No wall-clock time of the publisher is in an entry: the only time is the
//! broker's, in the entry ID (see `broker_clock`).

use std::{fmt, net::IpAddr, str::FromStr, time::Duration};

use anyhow::{anyhow, bail, Context, Result};

/// What an entry asks of the relays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Grant `ip`'s prefix for `ttl` from the entry's time, unless a
    /// relay's grant lasts longer.
    Grant {
        ip: IpAddr,
        prefix: u8,
        ttl: Duration,
        user: Option<String>,
        service: String,
    },
    /// Remove the grant covering `ip` if it is older than the entry.
    Revoke { ip: IpAddr, prefix: u8 },
    /// Remove every grant `user` earned before the entry and, with a
    /// `cooldown` (a relay's quota caught the user), let no grant of theirs
    /// in for that long from the entry's time.
    RevokeUser {
        user: String,
        cooldown: Option<Duration>,
    },
    /// End `user`'s cooldown.
    Pardon { user: String },
}

/// An event and who published it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub event: Event,
    pub origin: String,
    pub seq: u64,
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Grant { .. } => "grant",
            Event::Revoke { .. } => "revoke",
            Event::RevokeUser { .. } => "revoke-user",
            Event::Pardon { .. } => "pardon",
        }
    }

    /// Whether the event can only shut customers out, never let one in:
    /// what a relay may publish.
    pub fn only_closes(&self) -> bool {
        matches!(self, Event::Revoke { .. } | Event::RevokeUser { .. })
    }
}

impl Entry {
    /// The entry as it stands `waited` after it was made: a grant has that
    /// much less left, since its lifetime counts from the ID the broker
    /// gives it when it is sent. `None` for a grant with nothing left.
    pub fn aged(&self, waited: Duration) -> Option<Entry> {
        let mut entry = self.clone();
        if let Event::Grant { ttl, .. } = &mut entry.event {
            *ttl = ttl.checked_sub(waited).filter(|left| !left.is_zero())?;
        }
        Some(entry)
    }

    /// The entry's fields, in the order XADD writes them.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![("kind", self.event.kind().to_string())];
        match &self.event {
            Event::Grant {
                ip,
                prefix,
                ttl,
                user,
                service,
            } => {
                fields.push(("addr", format!("{ip}/{prefix}")));
                fields.push(("ttl_ms", ttl.as_millis().to_string()));
                if let Some(user) = user {
                    fields.push(("user", user.clone()));
                }
                fields.push(("service", service.clone()));
            }
            Event::Revoke { ip, prefix } => fields.push(("addr", format!("{ip}/{prefix}"))),
            Event::RevokeUser { user, cooldown } => {
                fields.push(("user", user.clone()));
                if let Some(cooldown) = cooldown {
                    fields.push(("cooldown_ms", cooldown.as_millis().to_string()));
                }
            }
            Event::Pardon { user } => fields.push(("user", user.clone())),
        }
        fields.push(("origin", self.origin.clone()));
        fields.push(("seq", self.seq.to_string()));
        fields
    }

    /// The entry whose fields `field` looks up; an error names what is
    /// missing or wrong.
    pub fn parse(field: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let need = |name: &str| field(name).with_context(|| format!("no {name} field"));
        let event = match need("kind")?.as_str() {
            "grant" => {
                let (ip, prefix) = parse_addr(&need("addr")?)?;
                Event::Grant {
                    ip,
                    prefix,
                    ttl: millis(&need("ttl_ms")?, "ttl_ms")?,
                    user: field("user").filter(|user| !user.is_empty()),
                    service: field("service").unwrap_or_else(|| "-".to_string()),
                }
            }
            "revoke" => {
                let (ip, prefix) = parse_addr(&need("addr")?)?;
                Event::Revoke { ip, prefix }
            }
            "revoke-user" => Event::RevokeUser {
                user: need("user")?,
                cooldown: field("cooldown_ms")
                    .map(|text| millis(&text, "cooldown_ms"))
                    .transpose()?,
            },
            "pardon" => Event::Pardon {
                user: need("user")?,
            },
            other => bail!("unknown kind '{other}'"),
        };
        Ok(Self {
            event,
            origin: field("origin").unwrap_or_default(),
            seq: field("seq").and_then(|seq| seq.parse().ok()).unwrap_or(0),
        })
    }
}

/// A whole number of milliseconds, the value of the field `name`.
fn millis(text: &str, name: &str) -> Result<Duration> {
    text.parse()
        .map(Duration::from_millis)
        .map_err(|_| anyhow!("{name} is not a whole number"))
}

/// `IP/LEN`, the length no longer than the address.
fn parse_addr(text: &str) -> Result<(IpAddr, u8)> {
    let (ip, prefix) = text
        .split_once('/')
        .with_context(|| format!("addr '{text}' is not IP/LENGTH"))?;
    let ip = IpAddr::from_str(ip)
        .map_err(|_| anyhow!("addr '{text}' holds no address"))?
        .to_canonical();
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = prefix
        .parse::<u8>()
        .ok()
        .filter(|len| *len <= bits)
        .with_context(|| format!("addr '{text}' has no prefix length up to {bits}"))?;
    Ok((ip, prefix))
}

/// A stream entry ID, `MILLISECONDS-SEQUENCE`: the broker's clock when the
/// entry was added, and its place among entries of that millisecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl FromStr for EntryId {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let (ms, seq) = text.split_once('-').unwrap_or((text, "0"));
        match (ms.parse(), seq.parse()) {
            (Ok(ms), Ok(seq)) => Ok(Self { ms, seq }),
            _ => bail!("'{text}' is not a stream entry ID"),
        }
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn round_trip(entry: &Entry) -> Entry {
        let fields: HashMap<_, _> = entry.fields().into_iter().collect();
        Entry::parse(|name| fields.get(name).cloned()).unwrap()
    }

    #[test]
    fn every_kind_survives_its_fields() {
        for event in [
            Event::Grant {
                ip: "2001:db8::7".parse().unwrap(),
                prefix: 64,
                ttl: Duration::from_millis(600_250),
                user: Some("alice".into()),
                service: "imap".into(),
            },
            Event::Grant {
                ip: "192.0.2.7".parse().unwrap(),
                prefix: 32,
                ttl: Duration::from_secs(60),
                user: None,
                service: "-".into(),
            },
            Event::Revoke {
                ip: "192.0.2.7".parse().unwrap(),
                prefix: 32,
            },
            Event::RevokeUser {
                user: "alice".into(),
                cooldown: None,
            },
            Event::RevokeUser {
                user: "alice".into(),
                cooldown: Some(Duration::from_secs(3600)),
            },
            Event::Pardon {
                user: "alice".into(),
            },
        ] {
            let entry = Entry {
                event,
                origin: "pop1".into(),
                seq: 41,
            };
            assert_eq!(round_trip(&entry), entry);
        }
    }

    #[test]
    fn a_grant_that_waited_to_be_sent_has_that_much_less_left() {
        let grant = Entry {
            event: Event::Grant {
                ip: "192.0.2.7".parse().unwrap(),
                prefix: 32,
                ttl: Duration::from_secs(600),
                user: None,
                service: "pop3".into(),
            },
            origin: "pop1".into(),
            seq: 1,
        };
        let aged = grant.aged(Duration::from_secs(90)).unwrap();
        assert!(matches!(aged.event, Event::Grant { ttl, .. } if ttl == Duration::from_secs(510)));
        assert_eq!(grant.aged(Duration::from_secs(600)), None);
        let revoke = Entry {
            event: Event::RevokeUser {
                user: "a".into(),
                cooldown: Some(Duration::from_secs(60)),
            },
            ..grant
        };
        assert_eq!(revoke.aged(Duration::from_secs(3600)), Some(revoke.clone()));
    }

    #[test]
    fn a_bad_entry_says_what_is_wrong() {
        let parse = |pairs: &[(&str, &str)]| {
            let fields: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            format!(
                "{:#}",
                Entry::parse(|name| fields.get(name).cloned()).unwrap_err()
            )
        };
        assert!(parse(&[]).contains("no kind"));
        assert!(parse(&[("kind", "open")]).contains("unknown kind"));
        assert!(parse(&[("kind", "grant"), ("addr", "192.0.2.7")]).contains("IP/LENGTH"));
        assert!(parse(&[("kind", "grant"), ("addr", "192.0.2.7/33")]).contains("up to 32"));
        assert!(parse(&[
            ("kind", "grant"),
            ("addr", "192.0.2.7/32"),
            ("ttl_ms", "-1")
        ])
        .contains("ttl_ms"));
        assert!(parse(&[("kind", "revoke-user")]).contains("no user"));
        assert!(parse(&[
            ("kind", "revoke-user"),
            ("user", "a"),
            ("cooldown_ms", "1h")
        ])
        .contains("cooldown_ms"));
        assert!(parse(&[("kind", "pardon")]).contains("no user"));
    }

    #[test]
    fn entry_ids_parse_and_order() {
        let a: EntryId = "1700000000000-0".parse().unwrap();
        let b: EntryId = "1700000000000-3".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "1700000000000-3");
        assert_eq!("1700000000001".parse::<EntryId>().unwrap().seq, 0);
        assert!("soon-1".parse::<EntryId>().is_err());
    }
}
