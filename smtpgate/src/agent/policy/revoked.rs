//! The addresses whose grants a user over quota lost.
//!
//! Revoking a grant shuts out new connections only: an SMTP session opened
//! before goes on, and without a grant its next recipients would look like
//! an allowlisted host's and pass. So the service remembers which user each
//! revoked address belonged to and keeps deferring its recipients while the
//! user's cooldown runs. Like the counts, this lives in memory only; a
//! session outliving an agent restart is the one that slips through.

use std::{collections::HashMap, net::IpAddr};

/// Revoked address (as its grant covered it) -> the user who lost it.
#[derive(Debug, Default)]
pub struct Revoked {
    users: HashMap<IpAddr, String>,
}

impl Revoked {
    /// Notes that `user` lost the grants of `addresses`.
    pub fn note(&mut self, user: &str, addresses: impl IntoIterator<Item = IpAddr>) {
        for address in addresses {
            self.users.insert(address, user.to_string());
        }
    }

    /// Who lost the grant of `address`, if someone did.
    pub fn user_of(&self, address: IpAddr) -> Option<&str> {
        self.users.get(&address).map(String::as_str)
    }

    /// Keeps the addresses of users for whom `cooling` holds.
    pub fn retain(&mut self, mut cooling: impl FnMut(&str) -> bool) {
        self.users.retain(|_, user| cooling(user));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_kept_while_their_user_cools_down() {
        let mut revoked = Revoked::default();
        let (a, b): (IpAddr, IpAddr) =
            ("192.0.2.2".parse().unwrap(), "2001:db8::".parse().unwrap());
        revoked.note("alice", [a]);
        revoked.note("bob", [b]);
        assert_eq!(revoked.user_of(a), Some("alice"));
        revoked.retain(|user| user == "bob");
        assert_eq!(revoked.user_of(a), None);
        assert_eq!(revoked.user_of(b), Some("bob"));
    }
}
