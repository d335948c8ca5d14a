//! Who earned each grant, and which users may earn none for now: the
//! pinned GRANT_OWNERS and COOLDOWNS maps. The kernel program reads
//! neither; they are pinned so that they outlive the agent as grants do,
//! and so that the one-shot commands (`list`, `revoke --user`, `pardon`)
//! see what the agent wrote.

use std::{
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use aya::maps::{HashMap, IterableMap, Map, MapData};
use smtpgate_common::{
    grant::{MAX_SERVICE_BYTES, MAX_USER_BYTES},
    AddrKey, CooldownUntil, GrantOwner, UserKey,
};

use crate::gate::{addr, batch, clock};

/// How a grant came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A followed log file.
    Log,
    /// Log lines piped into the agent.
    Stdin,
    /// The systemd journal.
    Journal,
    /// A report on the login-hook socket.
    Socket,
    /// `smtpgate allow`.
    Cli,
    /// An event read from the Redis stream the POP hosts publish to.
    Stream,
}

impl Source {
    const ALL: [Source; 6] = [
        Source::Log,
        Source::Stdin,
        Source::Journal,
        Source::Socket,
        Source::Cli,
        Source::Stream,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Log => "log",
            Source::Stdin => "stdin",
            Source::Journal => "journal",
            Source::Socket => "socket",
            Source::Cli => "cli",
            Source::Stream => "stream",
        }
    }

    /// Its number in a [`GrantOwner`]; zero is no source (a grant carried
    /// over from a layout that kept none).
    fn number(self) -> u8 {
        self as u8 + 1
    }

    fn from_number(number: u8) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|source| source.number() == number)
    }
}

/// Who earned a grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The address that logged in: the grant may cover its whole prefix.
    pub address: IpAddr,
    /// `None` for a grant nobody logged in for (`smtpgate allow` without
    /// `--user`).
    pub user: Option<String>,
    /// `pop3`, `imap`, ... or `-` for none.
    pub service: String,
    pub source: Option<Source>,
    pub granted_at: SystemTime,
}

impl Owner {
    /// An owner granted now, for a login from `address`.
    pub fn now(address: IpAddr, user: Option<&str>, service: &str, source: Source) -> Self {
        Self {
            address: address.to_canonical(),
            user: user.map(str::to_string),
            service: service.to_string(),
            source: Some(source),
            granted_at: SystemTime::now(),
        }
    }

    fn to_raw(&self) -> Result<GrantOwner> {
        let mut raw: GrantOwner = bytemuck::Zeroable::zeroed();
        raw.granted_at_ms = self
            .granted_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        raw.source = self.source.map_or(0, Source::number);
        raw.address = addr::key(self.address);
        let service = self.service.as_bytes();
        if service.len() > MAX_SERVICE_BYTES {
            bail!(
                "service name '{}' is longer than {MAX_SERVICE_BYTES} bytes",
                self.service
            );
        }
        raw.service[..service.len()].copy_from_slice(service);
        if let Some(user) = &self.user {
            raw.user = user_key(user)?;
        }
        Ok(raw)
    }

    fn from_raw(raw: &GrantOwner) -> Self {
        let text = |bytes: &[u8]| {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            String::from_utf8_lossy(&bytes[..end]).into_owned()
        };
        let user = text(&raw.user);
        Self {
            address: addr::from_key(raw.address),
            user: (!user.is_empty()).then_some(user),
            service: text(&raw.service),
            source: Source::from_number(raw.source),
            granted_at: UNIX_EPOCH + Duration::from_millis(raw.granted_at_ms),
        }
    }
}

/// `user` as a map key. Names longer than a key holds are refused, not
/// cut: two cut names could be one key.
pub fn user_key(user: &str) -> Result<UserKey> {
    let bytes = user.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_USER_BYTES || bytes.contains(&0) {
        bail!("user name '{user}' is empty, holds a NUL or is longer than {MAX_USER_BYTES} bytes");
    }
    let mut key = [0; MAX_USER_BYTES + 1];
    key[..bytes.len()].copy_from_slice(bytes);
    Ok(key)
}

/// The GRANT_OWNERS map: grant key -> who earned it.
pub struct Owners {
    map: HashMap<MapData, AddrKey, GrantOwner>,
}

impl Owners {
    pub fn new(map: Map) -> Result<Self> {
        let map = map
            .try_into()
            .context("the grant owners map has an unexpected type or layout")?;
        Ok(Self { map })
    }

    pub fn record(&mut self, key: &AddrKey, owner: &Owner) -> Result<()> {
        self.map
            .insert(key, owner.to_raw()?, 0)
            .context("recording who earned a grant")
    }

    pub fn get(&self, key: &AddrKey) -> Option<Owner> {
        self.map.get(key, 0).ok().map(|raw| Owner::from_raw(&raw))
    }

    pub fn forget(&mut self, key: &AddrKey) {
        let _ = self.map.remove(key);
    }

    /// The keys of every grant `user` earned.
    pub fn keys_of(&self, user: &str) -> Result<Vec<AddrKey>> {
        let wanted = user_key(user)?;
        let mut keys = Vec::new();
        self.for_each(|key, raw| {
            if raw.user == wanted {
                keys.push(*key);
            }
        })?;
        Ok(keys)
    }

    /// Every key with an owner record.
    pub fn keys(&self) -> Result<Vec<AddrKey>> {
        let mut keys = Vec::new();
        self.for_each(|key, _| keys.push(*key))?;
        Ok(keys)
    }

    fn for_each(&self, each: impl FnMut(&AddrKey, &GrantOwner)) -> Result<()> {
        batch::for_each_entry(self.map.map(), each).context("reading the grant owners")
    }
}

/// The COOLDOWNS map: users over a quota, who earn no grant until their
/// cooldown ends (on the monotonic clock).
pub struct Cooldowns {
    map: HashMap<MapData, UserKey, CooldownUntil>,
}

impl Cooldowns {
    pub fn new(map: Map) -> Result<Self> {
        let map = map
            .try_into()
            .context("the cooldowns map has an unexpected type or layout")?;
        Ok(Self { map })
    }

    /// Starts `user`'s cooldown of `length` from now.
    pub fn start(&mut self, user: &str, length: Duration) -> Result<()> {
        self.map
            .insert(user_key(user)?, clock::expiry_after(length), 0)
            .with_context(|| format!("starting the cooldown of {user}"))
    }

    /// What is left of `user`'s cooldown, if any.
    pub fn left(&self, user: &str) -> Option<Duration> {
        let until = self.map.get(&user_key(user).ok()?, 0).ok()?;
        let left = clock::remaining(until);
        (!left.is_zero()).then_some(left)
    }

    /// Ends `user`'s cooldown; false if there was none running.
    pub fn pardon(&mut self, user: &str) -> Result<bool> {
        let running = self.left(user).is_some();
        let _ = self.map.remove(&user_key(user)?);
        Ok(running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_survives_its_map_form() {
        let owner = Owner {
            address: "2001:db8::77".parse().unwrap(),
            user: Some("alice@example.org".into()),
            service: "pop3".into(),
            source: Some(Source::Journal),
            granted_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        };
        assert_eq!(Owner::from_raw(&owner.to_raw().unwrap()), owner);
        let nobody = Owner {
            user: None,
            source: None,
            ..owner
        };
        assert_eq!(Owner::from_raw(&nobody.to_raw().unwrap()), nobody);
    }

    #[test]
    fn user_names_a_key_cannot_hold_are_refused() {
        assert!(user_key(&"u".repeat(MAX_USER_BYTES)).is_ok());
        for bad in [String::new(), "u".repeat(MAX_USER_BYTES + 1), "a\0b".into()] {
            assert!(user_key(&bad).is_err(), "{bad:?} was taken");
        }
    }
}
