//! Carrying a gate of an older pinned layout over into this one.
//!
//! A host upgraded in place still runs the old program, which enforces with
//! its own maps until this version's program takes its link over. So `run`
//! copies every live grant of the older grant maps into this layout's map
//! before it attaches (the new program starts with all of them), copies
//! again after the swap (for grants the old side made meanwhile), and only
//! then retires the old pins. At no moment does either program run without
//! the grants; a grant made in between is late by one copy, never lost.

use std::fs;

use anyhow::{Context, Result};
use aya::maps::MapData;
use smtpgate_common::{AddrKey, SynBudget, OLDER_GRANT_MAPS};

use crate::gate::{addr, batch, clock, maps::Grants, pins::PinDir};

/// Copies every live grant of the older grant maps under `pins` into
/// `grants`, expiry unchanged, with `budget`; returns how many. A grant
/// already in `grants` keeps the later of the two expiries.
pub fn carry_over(pins: &PinDir, grants: &mut Grants, budget: SynBudget) -> Result<usize> {
    let now = clock::monotonic_ns();
    let mut carried = 0;
    for name in OLDER_GRANT_MAPS {
        let path = pins.map(name);
        if !path.exists() {
            continue;
        }
        let old =
            MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut live = Vec::new();
        batch::for_each_entry(&old, |key: &AddrKey, &expiry: &u64| {
            if expiry > now {
                live.push((*key, expiry));
            }
        })
        .with_context(|| format!("reading {}", path.display()))?;
        for (key, expiry) in live {
            grants.grant_until(addr::from_key(key), expiry, budget, None)?;
            carried += 1;
        }
    }
    Ok(carried)
}

/// Unpins the maps older versions kept (see `smtpgate_common::RETIRED_MAPS`),
/// once their grants are carried over and their program is swapped out.
pub fn retire(pins: &PinDir) -> Result<()> {
    for path in pins.retired_maps() {
        if path.exists() {
            tracing::info!(
                "{} was kept by an older smtpgate in another layout; retiring it",
                path.display()
            );
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}
