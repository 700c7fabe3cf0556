//! The JSON-lines reporter (`ckflow run --events FILE|-`): one [`Event`] per line, as the
//! engine produced it (already redacted), flushed when the stream goes quiet so that a
//! `tail -f` follows along.

use std::io::{self, BufWriter, Write};

use crate::engine::Event;

/// Writes events as JSON lines.
pub struct JsonLines<W: Write> {
    out: BufWriter<W>,
}

impl<W: Write> JsonLines<W> {
    /// A writer over `out`.
    pub fn new(out: W) -> JsonLines<W> {
        JsonLines {
            out: BufWriter::new(out),
        }
    }

    /// Write one event.
    pub fn event(&mut self, e: &Event) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, e)?;
        self.out.write_all(b"\n")
    }

    /// Flush what is buffered.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EventKind;

    #[test]
    fn one_line_per_event_with_a_kind_tag() {
        let mut buf = Vec::new();
        {
            let mut w = JsonLines::new(&mut buf);
            let e = Event {
                at: 1,
                elapsed_us: 2,
                run_id: "r".into(),
                kind: EventKind::RunStarted {
                    workflow: "w".into(),
                    steps: 3,
                },
            };
            w.event(&e).unwrap();
            w.event(&e).unwrap();
            w.flush().unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["kind"], "run_started");
        assert_eq!(v["steps"], 3);
        let back: Event = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(back.run_id, "r");
    }
}
