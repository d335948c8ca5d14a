//! What the bench loads into a gate before it measures it: grants to the
//! plan's granted sources and the scattered allowlist, topped up level by
//! level. The per-packet gate and the flood's agent are loaded alike.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use smtpgate::gate::{
    allowlist::{Allowlist, Origin},
    maps::Grants,
};

use crate::sources::{self, Family, Sources};

/// Long enough that no grant expires while the benchmark runs.
pub const GRANT_TTL: Duration = Duration::from_secs(3600);

/// One fill level: grants, half of each address family, and allowlist
/// prefixes (on top of the loopback entries the agent always keeps).
#[derive(Clone, Copy, Serialize)]
pub struct Load {
    pub grants: u32,
    pub allowlist: usize,
}

/// What a gate holds so far. Levels only ever grow.
#[derive(Default)]
pub struct Loaded {
    granted_per_family: u32,
    allowlisted: usize,
}

impl Loaded {
    /// Grants and allowlists more until the gate holds `load`.
    pub fn top_up(
        &mut self,
        grants: &mut Grants,
        allowlist: &mut Allowlist,
        load: Load,
    ) -> Result<()> {
        let per_family = load.grants / 2;
        for index in self.granted_per_family..per_family {
            for family in [Family::V4, Family::V6] {
                grants
                    .grant(sources::nth(Sources::Granted, family, index), GRANT_TTL)
                    .context("filling the grant map")?;
            }
        }
        self.granted_per_family = self.granted_per_family.max(per_family);
        for net in sources::scattered_allowlist(load.allowlist)
            .into_iter()
            .skip(self.allowlisted)
        {
            allowlist.add(net, Origin::Cli)?;
        }
        self.allowlisted = self.allowlisted.max(load.allowlist);
        Ok(())
    }

    /// Grants of each family in the map: sources `0..granted` of
    /// [`Sources::Granted`].
    pub fn granted_per_family(&self) -> u32 {
        self.granted_per_family
    }
}
