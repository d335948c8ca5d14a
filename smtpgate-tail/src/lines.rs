//! Splitting a byte stream into lines with bounded memory.

/// Longest line handed out, in bytes; longer lines are cut to this length.
///
/// Mail log lines are a few hundred bytes. The cap keeps a runaway writer
/// (a binary dumped into the log, a missing newline) from growing the
/// follower's memory without bound.
pub const MAX_LINE_LEN: usize = 64 * 1024;

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

    /// Feeds `chunk`, calling `emit(line, end)` for each line it completes,
    /// where `end` is the index in `chunk` just past the line's newline.
    /// The line comes without its `\n` or `\r\n`.
    pub fn feed(&mut self, chunk: &[u8], mut emit: impl FnMut(Vec<u8>, usize)) {
        let mut start = 0;
        while let Some(newline) = chunk[start..].iter().position(|&b| b == b'\n') {
            let end = start + newline;
            self.keep(&chunk[start..end]);
            let cut = self.pending > self.partial.len() as u64;
            let mut line = self.take();
            if !cut && line.last() == Some(&b'\r') {
                line.pop();
            }
            start = end + 1;
            emit(line, start);
        }
        self.keep(&chunk[start..]);
    }

    /// Hands out the unfinished line, if any, as it stands: used when its
    /// file has ended for good and no newline will come.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (self.pending > 0).then(|| self.take())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn split(splitter: &mut LineSplitter, chunk: &[u8]) -> Vec<(Vec<u8>, usize)> {
        let mut lines = Vec::new();
        splitter.feed(chunk, |line, end| lines.push((line, end)));
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
        assert_eq!(s.finish(), Some(b"tail".to_vec()));
        assert_eq!(s.pending(), 0);
    }
}
