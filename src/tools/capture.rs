//! Capturing a process's output for a tool result: the first [`CAPTURE_LIMIT`] bytes with a
//! visible truncation mark, and the last [`TAIL_LIMIT`] bytes for error details. Shared by
//! the host `shell` tool and the Docker `run_container` tool.

/// Most bytes of each stream kept in the result.
pub(crate) const CAPTURE_LIMIT: usize = 1 << 20;
/// Most bytes of each stream in an error's details.
pub(crate) const TAIL_LIMIT: usize = 4 << 10;

/// The first [`CAPTURE_LIMIT`] bytes of a stream, how many more there were, and (once
/// over the limit) the last bytes, for error details.
#[derive(Default)]
pub(crate) struct Capture {
    head: Vec<u8>,
    dropped: u64,
    /// Only kept once `head` is full: the most recent bytes (between 4 and 8 KiB).
    tail: Vec<u8>,
}

impl Capture {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let take = (CAPTURE_LIMIT - self.head.len()).min(bytes.len());
        self.head.extend_from_slice(&bytes[..take]);
        let rest = &bytes[take..];
        if rest.is_empty() {
            return;
        }
        if self.dropped == 0 {
            self.tail
                .extend_from_slice(&self.head[self.head.len().saturating_sub(TAIL_LIMIT)..]);
        }
        self.dropped += rest.len() as u64;
        self.tail
            .extend_from_slice(&rest[rest.len().saturating_sub(TAIL_LIMIT)..]);
        if self.tail.len() > 2 * TAIL_LIMIT {
            self.tail.drain(..self.tail.len() - TAIL_LIMIT);
        }
    }

    /// The captured text, with a `…[truncated N bytes]` mark when over the limit.
    pub(crate) fn text(&self) -> String {
        if self.dropped == 0 {
            return String::from_utf8_lossy(&self.head).into_owned();
        }
        let cut = utf8_prefix_len(&self.head);
        let dropped = self.dropped + (self.head.len() - cut) as u64;
        let mut s = String::from_utf8_lossy(&self.head[..cut]).into_owned();
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(&format!("…[truncated {dropped} bytes]"));
        s
    }

    /// The last [`TAIL_LIMIT`] bytes (or fewer, to start on a character boundary).
    pub(crate) fn tail(&self) -> String {
        let src = if self.dropped == 0 {
            &self.head
        } else {
            &self.tail
        };
        let mut start = src.len().saturating_sub(TAIL_LIMIT);
        while start < src.len() && start > 0 && src[start] & 0xC0 == 0x80 {
            start += 1;
        }
        String::from_utf8_lossy(&src[start..]).into_owned()
    }
}

/// The length of `b` without a UTF-8 sequence cut short at its end.
pub(crate) fn utf8_prefix_len(b: &[u8]) -> usize {
    for back in 1..=b.len().min(4) {
        let i = b.len() - back;
        let c = b[i];
        if c & 0xC0 != 0x80 {
            let need = match c {
                0xF0.. => 4,
                0xE0.. => 3,
                0xC0.. => 2,
                _ => 1,
            };
            return if back < need { i } else { b.len() };
        }
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_marks_truncation() {
        let mut c = Capture::default();
        c.push(&vec![b'a'; CAPTURE_LIMIT + 10]);
        assert!(c.text().ends_with("\n…[truncated 10 bytes]"));
        assert_eq!(c.tail().len(), TAIL_LIMIT);
    }
}
