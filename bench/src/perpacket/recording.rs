//! What recording refused SYNs for replay adds to the refused path: the
//! plain refused frames of each family, their sources rotating (as in a
//! flood, whose sources soon hold every slot of the table, so that most
//! SYNs find theirs taken) and from one source (whose slot holds its SYN),
//! the gate's replay window switched off and on round by round, so that
//! both take the same path but for the recording.

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use smtpgate_common::Counter;

use super::{cases, gate::Gate, reference::Harness, time_gate};
use crate::stats::lowest;

/// The agent's default window, in milliseconds.
const WINDOW_MS: u32 = 3000;

#[derive(Serialize)]
pub struct RecordingCost {
    pub rows: Vec<RecordingRow>,
}

#[derive(Serialize)]
pub struct RecordingRow {
    pub case: &'static str,
    /// One source over and over rather than rotating ones.
    pub hot_key: bool,
    pub without_recording_ns: f64,
    pub with_recording_ns: f64,
    pub ratio: f64,
    /// Share of the runs with replay on that recorded their SYN.
    pub recorded_share: f64,
}

pub fn measure(gate: &mut Gate, rounds: usize, repeat: u32) -> Result<RecordingCost> {
    let mut rows = Vec::new();
    let refused = cases::all()
        .into_iter()
        .filter(|case| case.refused() && case.packet.vlan_tags.is_empty());
    for case in refused {
        let rotation = case
            .rotation(gate.granted_per_family())
            .context("refused cases always rotate")?;
        for hot_key in [false, true] {
            let rotation = if hot_key { rotation.hot() } else { rotation };
            let mut harness = Harness::load(&rotation)?;
            let frame = case.packet.build();
            let (mut without, mut with, mut recorded) = (Vec::new(), Vec::new(), 0);
            for _ in 0..rounds {
                for (window_ms, samples) in [(0, &mut without), (WINDOW_MS, &mut with)] {
                    gate.set_replay_window(window_ms)?;
                    let before = gate.counter(Counter::SynsRecorded)?;
                    samples.push(time_gate(gate, &case, &mut harness, &frame, repeat)?);
                    let now = gate.counter(Counter::SynsRecorded)? - before;
                    ensure!(
                        window_ms != 0 || now == 0,
                        "{}: {now} runs recorded with replay off",
                        case.name
                    );
                    recorded += now;
                }
            }
            let (without_recording_ns, with_recording_ns) = (lowest(&without), lowest(&with));
            rows.push(RecordingRow {
                case: case.name,
                hot_key,
                without_recording_ns,
                with_recording_ns,
                ratio: with_recording_ns / without_recording_ns,
                recorded_share: recorded as f64 / (rounds as f64 * f64::from(repeat)),
            });
        }
    }
    gate.set_replay_window(0)?;
    Ok(RecordingCost { rows })
}
