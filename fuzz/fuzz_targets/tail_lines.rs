//! smtpgate-tail's line splitter, read through `ReadLines` in chunks of any
//! size: the lines are the input's, every line is at most `MAX_LINE_LEN`
//! bytes, and a line is marked cut exactly when it was longer.

#![no_main]

use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use smtpgate_tail::{ReadLine, ReadLines, MAX_LINE_LEN};

/// Input bytes as runs, so that short inputs make lines beyond the bound:
/// each pair (byte, count) is `count` × 1 KiB of `byte` for counts of 200
/// and more, else `count` + 1 bytes. At most 512 KiB in all.
fn expand(runs: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    for pair in runs.chunks_exact(2) {
        let count = match pair[1] {
            n @ 200.. => (n as usize - 199) << 10,
            n => n as usize + 1,
        };
        if data.len() + count > 512 << 10 {
            break;
        }
        data.resize(data.len() + count, pair[0]);
    }
    data
}

/// Hands out its data in the chunk sizes the fuzzer chose.
struct Chunks<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    turn: usize,
}

impl Read for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self
            .sizes
            .get(self.turn % self.sizes.len().max(1))
            .map_or(buf.len(), |&s| (s as usize + 1) * 97);
        self.turn += 1;
        let n = size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The lines of `data` as the splitter must give them: a `\r` before the
/// `\n` is part of the line end, unless the line was cut; an unterminated
/// last line comes as it is.
fn expected(data: &[u8]) -> Vec<ReadLine> {
    let mut lines: Vec<(&[u8], bool)> = data
        .split(|&b| b == b'\n')
        .map(|line| (line, true))
        .collect();
    if let Some(last) = lines.last_mut() {
        last.1 = false;
        if last.0.is_empty() {
            lines.pop();
        }
    }
    lines
        .into_iter()
        .map(|(line, terminated)| {
            let cut = line.len() > MAX_LINE_LEN;
            let kept = &line[..line.len().min(MAX_LINE_LEN)];
            let kept = if terminated && !cut {
                kept.strip_suffix(b"\r").unwrap_or(kept)
            } else {
                kept
            };
            ReadLine {
                bytes: kept.to_vec(),
                cut,
            }
        })
        .collect()
}

fuzz_target!(|input: &[u8]| {
    let split = input.iter().position(|&b| b == 0xff).unwrap_or(input.len());
    let (runs, sizes) = input.split_at(split);
    let data = expand(runs);
    let reader = Chunks {
        data: &data,
        sizes: sizes.get(1..).unwrap_or_default(),
        turn: 0,
    };
    let lines: Vec<ReadLine> = ReadLines::new(reader)
        .map(|line| line.expect("reading memory"))
        .collect();
    assert!(lines.iter().all(|line| line.bytes.len() <= MAX_LINE_LEN));
    assert_eq!(lines, expected(&data));
});
