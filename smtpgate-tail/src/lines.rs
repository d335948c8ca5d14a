//! Splitting a byte stream into lines with bounded memory.

use std::collections::VecDeque;
use std::io::{self, Read};

use crate::position::Position;

/// Longest line handed out, in bytes; longer lines are cut to this length.
///
/// Mail log lines are a few hundred bytes. The cap keeps a runaway writer
/// (a binary dumped into the log, a missing newline) from growing the
/// follower's memory without bound.
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The line without its `\n` or `\r\n`, as raw bytes (logs need not be
    /// UTF-8), cut to at most [`MAX_LINE_LEN`] bytes.
    pub bytes: Vec<u8>,
    /// The line was longer than [`MAX_LINE_LEN`], and only its start is
    /// kept: what it said at its end is lost.
    pub cut: bool,
    /// Just past this line: saving it marks the line as done.
    pub position: Position,
}

/// Accumulates bytes into complete lines.
///
/// An unfinished line is held back until its newline arrives. Of a line
/// longer than the cap only the first `max` bytes are kept and the rest is
/// counted but dropped; the cut line is still delivered when its newline
/// arrives, so every line's end offset is exact.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    /// Kept bytes of the unfinished line, at most `max`.
    partial: Vec<u8>,
    /// Bytes of the unfinished line seen so far, kept or dropped.
    pending: u64,
    max: usize,
}

impl LineSplitter {
    pub fn new(max: usize) -> LineSplitter {
        LineSplitter {
            partial: Vec::new(),
            pending: 0,
            max,
        }
    }

    /// Bytes read but not yet part of a complete line.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Feeds `chunk`, calling `emit(line, cut, end)` for each line it
    /// completes, where `cut` says the line was longer than the cap and
    /// `end` is the index in `chunk` just past the line's newline. The line
    /// comes without its `\n` or `\r\n`.
    pub fn feed(&mut self, chunk: &[u8], mut emit: impl FnMut(Vec<u8>, bool, usize)) {
        let mut start = 0;
        while let Some(newline) = chunk[start..].iter().position(|&b| b == b'\n') {
            let end = start + newline;
            self.keep(&chunk[start..end]);
            let cut = self.is_cut();
            let mut line = self.take();
            if !cut && line.last() == Some(&b'\r') {
                line.pop();
            }
            start = end + 1;
            emit(line, cut, start);
        }
        self.keep(&chunk[start..]);
    }

    /// Hands out the unfinished line, if any, as it stands, and whether it
    /// was cut: used when its file has ended for good and no newline will
    /// come.
    pub fn finish(&mut self) -> Option<(Vec<u8>, bool)> {
        (self.pending > 0).then(|| {
            let cut = self.is_cut();
            (self.take(), cut)
        })
    }

    fn is_cut(&self) -> bool {
        self.pending > self.partial.len() as u64
    }

    fn keep(&mut self, bytes: &[u8]) {
        self.pending += bytes.len() as u64;
        let room = self.max - self.partial.len();
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn take(&mut self) -> Vec<u8> {
        self.pending = 0;
        std::mem::take(&mut self.partial)
    }
}

/// A line read by [`ReadLines`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadLine {
    /// The line without its `\n` or `\r\n`, at most [`MAX_LINE_LEN`] bytes.
    pub bytes: Vec<u8>,
    /// The line was longer, and only its first [`MAX_LINE_LEN`] bytes are
    /// kept.
    pub cut: bool,
}

/// The lines of a reader read once (standard input, a file to check), with
/// the bound a [`Follower`](crate::Follower) keeps: however long a line,
/// at most [`MAX_LINE_LEN`] bytes of it and one read's worth of complete
/// lines are held.
pub struct ReadLines<R> {
    reader: R,
    splitter: LineSplitter,
    ready: VecDeque<ReadLine>,
    buf: Box<[u8]>,
    ended: bool,
}

/// How much to read at a time.
const READ_CHUNK: usize = 64 * 1024;

impl<R: Read> ReadLines<R> {
    pub fn new(reader: R) -> ReadLines<R> {
        ReadLines {
            reader,
            splitter: LineSplitter::new(MAX_LINE_LEN),
            ready: VecDeque::new(),
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            ended: false,
        }
    }
}

impl<R: Read> Iterator for ReadLines<R> {
    type Item = io::Result<ReadLine>;

    /// The next line; an unterminated last line comes as a line too. After
    /// an error, the next call reads on.
    fn next(&mut self) -> Option<io::Result<ReadLine>> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                return Some(Ok(line));
            }
            if self.ended {
                return None;
            }
            match self.reader.read(&mut self.buf) {
                Ok(0) => {
                    self.ended = true;
                    if let Some((bytes, cut)) = self.splitter.finish() {
                        return Some(Ok(ReadLine { bytes, cut }));
                    }
                }
                Ok(n) => {
                    let ready = &mut self.ready;
                    self.splitter.feed(&self.buf[..n], |bytes, cut, _| {
                        ready.push_back(ReadLine { bytes, cut })
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(splitter: &mut LineSplitter, chunk: &[u8]) -> Vec<(Vec<u8>, usize)> {
        let mut lines = Vec::new();
        splitter.feed(chunk, |line, _, end| lines.push((line, end)));
        lines
    }

    #[test]
    fn splits_and_reports_ends() {
        let mut s = LineSplitter::new(100);
        let lines = split(&mut s, b"one\ntwo\r\nthr");
        assert_eq!(lines, vec![(b"one".to_vec(), 4), (b"two".to_vec(), 9)]);
        assert_eq!(s.pending(), 3);
        assert_eq!(split(&mut s, b"ee\n"), vec![(b"three".to_vec(), 3)]);
        assert_eq!(s.pending(), 0);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn empty_lines_are_lines() {
        let mut s = LineSplitter::new(100);
        let lines = split(&mut s, b"\n\r\n");
        assert_eq!(lines, vec![(vec![], 1), (vec![], 3)]);
    }

    #[test]
    fn long_line_is_cut_but_fully_consumed() {
        let mut s = LineSplitter::new(4);
        assert!(split(&mut s, b"abcdef").is_empty());
        assert_eq!(s.pending(), 6);
        assert!(split(&mut s, b"gh\r").is_empty());
        let lines = split(&mut s, b"\nok\n");
        assert_eq!(lines, vec![(b"abcd".to_vec(), 1), (b"ok".to_vec(), 4)]);
    }

    #[test]
    fn carriage_return_survives_when_line_was_cut() {
        let mut s = LineSplitter::new(3);
        assert_eq!(split(&mut s, b"ab\rcd\n"), vec![(b"ab\r".to_vec(), 6)]);
    }

    #[test]
    fn finish_hands_out_unterminated_tail() {
        let mut s = LineSplitter::new(100);
        assert!(split(&mut s, b"tail").is_empty());
        assert_eq!(s.finish(), Some((b"tail".to_vec(), false)));
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn cut_lines_say_so() {
        let mut s = LineSplitter::new(4);
        let mut cuts = Vec::new();
        s.feed(b"abcdef\nab\nabcd", |line, cut, _| cuts.push((line, cut)));
        assert_eq!(
            cuts,
            vec![(b"abcd".to_vec(), true), (b"ab".to_vec(), false)]
        );
        assert_eq!(s.finish(), Some((b"abcd".to_vec(), false)));
        s.feed(b"abcde", |_, _, _| unreachable!());
        assert_eq!(s.finish(), Some((b"abcd".to_vec(), true)));
    }

    /// A reader that hands out its bytes a few at a time, with interruptions.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
        calls: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 3 == 0 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = self.bytes.len().min(self.step).min(buf.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn read_lines_of_any_reader() {
        let mut text = b"one\r\n\ntwo\n".to_vec();
        text.extend(vec![b'x'; MAX_LINE_LEN + 10]);
        text.extend_from_slice(b"\nlast");
        for step in [1, 7, 4096, usize::MAX] {
            let reader = Trickle {
                bytes: &text,
                step,
                calls: 0,
            };
            let lines: Vec<ReadLine> = ReadLines::new(reader).map(Result::unwrap).collect();
            let line = |bytes: &[u8], cut| ReadLine {
                bytes: bytes.to_vec(),
                cut,
            };
            assert_eq!(
                lines,
                vec![
                    line(b"one", false),
                    line(b"", false),
                    line(b"two", false),
                    line(&vec![b'x'; MAX_LINE_LEN], true),
                    line(b"last", false),
                ],
                "step {step}"
            );
        }
    }
}
