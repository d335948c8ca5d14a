//! The report of a fuzz run: the tallies of each phase, the features the
//! failing cases share, and every failure as a regression row to paste.

use std::fmt;

use super::{
    campaign::Outcome,
    shape::{Ext, Net, Pad, Shape},
};

/// The features of a case that gates are known to stumble over, for the
/// summary of failures.
pub fn traits(shape: &Shape) -> Vec<&'static str> {
    let mut traits = Vec::new();
    if shape.tags.len() > 2 {
        traits.push("more than 2 VLAN tags");
    }
    // The shortest first fragment with real bytes in it (not a decoy).
    let first = shape
        .fragments
        .iter()
        .filter(|f| f.offset == 0 && f.more && f.decoy_from > 0)
        .map(|f| f.end())
        .min();
    match &shape.net {
        Net::V4(v4) => {
            if !v4.options.is_empty() {
                traits.push("IPv4 options");
            }
            // A non-last IPv4 fragment keeps only a multiple of 8 bytes.
            if first.is_some_and(|end| end & !7 < 20) {
                traits.push("first fragment without the whole TCP header");
            }
        }
        Net::V6(v6) => {
            if v6.chain.len() > 6 {
                traits.push("more than 6 IPv6 extension headers");
            }
            if let Some(split) = v6.chain.iter().position(|e| *e == Ext::Split) {
                let after = shape.datagram_len() - shape.segment_len();
                if first.is_some_and(|end| end < after) {
                    traits.push("IPv6 chain continues into a later fragment");
                } else if first.is_some_and(|end| end < after + 20) {
                    traits.push("first fragment without the whole TCP header");
                }
                if split + 1 < v6.chain.len() {
                    traits.push("extension headers after the fragment header");
                }
            }
        }
    }
    if shape
        .fragments
        .iter()
        .any(|f| f.decoy_from < f.end() || matches!(f.pad, Pad::Decoy(_)))
    {
        traits.push("decoy bytes the kernel ignores");
    }
    if shape.fragments.iter().any(|f| f.pad != Pad::None) {
        traits.push("Ethernet padding after the IP length");
    }
    traits
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        let percent = |n: u64, of: u64| {
            if of == 0 {
                0.0
            } else {
                100.0 * n as f64 / of as f64
            }
        };
        writeln!(
            f,
            "frame fuzz: seed {:#x}, cases {}..{}",
            s.seed,
            s.first,
            s.first + s.cases
        )?;
        let k = &self.kernel;
        writeln!(
            f,
            "  no gate: {} of {} cases answered ({:.1}%), {} of them to a gated port without a grant ({:.1}% of the {} such cases); {} frames, {:.1} s",
            k.answered,
            s.cases,
            percent(k.answered, s.cases),
            k.answered_gated,
            percent(k.answered_gated, self.gated_cases),
            self.gated_cases,
            k.frames,
            k.seconds
        )?;
        for (hook, t) in &self.gates {
            writeln!(
                f,
                "  {}: {} answered, {} to a gated port without a grant (failures), {} granted (no gate: {}); {} strays; {:.1} s",
                hook.name(),
                t.answered,
                t.answered_gated,
                t.answered_granted,
                k.answered_granted,
                t.strays,
                t.seconds
            )?;
        }
        if self.failures.is_empty() {
            return writeln!(f, "  no failures");
        }
        let mut by_trait: Vec<(&str, usize)> = Vec::new();
        for trait_name in self.failures.iter().flat_map(|x| traits(&x.shape)) {
            match by_trait.iter_mut().find(|(t, _)| *t == trait_name) {
                Some((_, n)) => *n += 1,
                None => by_trait.push((trait_name, 1)),
            }
        }
        by_trait.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        writeln!(
            f,
            "  {} failures; features among them:",
            self.failures.len()
        )?;
        for (trait_name, n) in by_trait {
            writeln!(f, "    {n:5}  {trait_name}")?;
        }
        for x in &self.failures {
            let name = format!(
                "seed {:#x} case {} on {}: {}",
                s.seed,
                x.index,
                x.hook.name(),
                x.shape.describe()
            );
            writeln!(
                f,
                "FAILURE {name}\n  features: {}\n    ({name:?}, {}),",
                traits(&x.shape).join(", "),
                x.case.to_source()
            )?;
        }
        Ok(())
    }
}
