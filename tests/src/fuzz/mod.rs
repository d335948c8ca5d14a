//! The differential frame fuzzer (issue 9): the kernel's own stack is the
//! oracle for what opens a connection, and the gate must let none of those
//! through to a gated port without a grant.
//!
//! [`generate`] draws seeded, structure-aware cases; [`shape`] renders them
//! to frames with valid checksums; [`lab`] builds the namespaces; [`oracle`]
//! sends a phase's cases in one burst and maps each SYN-ACK back to its
//! case; [`campaign`] runs the phases (no gate, then the gate on each hook)
//! and [`report`] prints what they found. The same oracle judges the fixed
//! regression rows; [`rng`] is the seeded generator behind every choice.

pub mod campaign;
pub mod generate;
pub mod lab;
pub mod oracle;
pub mod report;
pub mod rng;
pub mod shape;

use std::{fmt, net::IpAddr};

use anyhow::{ensure, Context, Result};

use shape::{hex, Ids, Shape};

/// What a SYN-ACK names of the case it answers: the case's source address
/// and port, and its sequence number (the SYN-ACK acknowledges seq + 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub src: IpAddr,
    pub sport: u16,
    pub seq: u32,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} port {} seq {:#010x}", self.src, self.sport, self.seq)
    }
}

/// Frames to send, in order, and the key their answer would carry.
#[derive(Clone, Debug)]
pub struct Case {
    pub key: Key,
    pub frames: Vec<Vec<u8>>,
}

impl Case {
    pub fn new(shape: &Shape, ids: Ids) -> Self {
        Self {
            key: Key {
                src: shape.src(),
                sport: shape.tcp.sport,
                seq: ids.seq,
            },
            frames: shape.frames(ids),
        }
    }

    /// A case as [`Case::to_source`] prints it: the key of its SYN and each
    /// frame in hex.
    pub fn from_hex(src: &str, sport: u16, seq: u32, frames: &[&str]) -> Result<Self> {
        let src = src
            .parse()
            .with_context(|| format!("bad source address {src:?}"))?;
        let frames = frames.iter().map(|f| unhex(f)).collect::<Result<_>>()?;
        Ok(Self {
            key: Key { src, sport, seq },
            frames,
        })
    }

    /// The case as Rust source, ready to paste as a regression row.
    pub fn to_source(&self) -> String {
        let frames: Vec<String> = self
            .frames
            .iter()
            .map(|f| format!("        \"{}\",\n", hex(f)))
            .collect();
        format!(
            "Case::from_hex(\"{}\", {}, {:#010x}, &[\n{}    ])?",
            self.key.src,
            self.key.sport,
            self.key.seq,
            frames.concat()
        )
    }
}

fn unhex(text: &str) -> Result<Vec<u8>> {
    ensure!(
        text.is_ascii() && text.len().is_multiple_of(2),
        "a frame must be an even number of hex digits"
    );
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16)
                .with_context(|| format!("bad hex {:?}", &text[i..i + 2]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_rows_round_trip() {
        let case = Case::new(
            &generate::case(1, 3),
            Ids {
                seq: 0x2000_0003,
                ip_id: 3,
                frag_id: 9,
            },
        );
        let frames: Vec<String> = case.frames.iter().map(|f| hex(f)).collect();
        let refs: Vec<&str> = frames.iter().map(String::as_str).collect();
        let back = Case::from_hex(
            &case.key.src.to_string(),
            case.key.sport,
            case.key.seq,
            &refs,
        )
        .unwrap();
        assert_eq!((back.key, back.frames), (case.key, case.frames));
        assert!(Case::from_hex("198.51.100.1", 1, 1, &["0g"]).is_err());
        assert!(Case::from_hex("198.51.100.1", 1, 1, &["abc"]).is_err());
    }
}
