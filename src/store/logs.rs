//! Step logs: plain append-only files `runs/<run>/logs/<step>.log`, one line per output line,
//! each prefixed by its stream (`[stdout] `, `[stderr] `, `[ckflow] `). Plain files rather
//! than database rows so that any process can read and follow a running step's log while the
//! owner holds the run's database.
//!
//! A step's log is capped (default 1 MiB, [`super::StoreOptions::log_cap_bytes`]): lines that
//! would cross the cap are dropped whole and counted, and when the step's log is closed (its
//! finish is recorded, or the run finishes) the line `…[log truncated: N bytes dropped]` says
//! how much is missing. Each line is one `write` with no buffering in between, so a follower
//! sees it at once and a `kill -9` loses nothing already written.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::error::{Result, StoreError};
use super::model::LogStream;

/// The file name for a step's log: the step id with everything but `A-Z a-z 0-9 _ -` (and a
/// `.` that is not first) written as `%XX`, then `.log`. Reversible, so ids such as
/// `build[2]` or `build/recovery` stay distinct.
pub fn log_file_name(step: &str) -> String {
    let mut out = String::with_capacity(step.len() + 4);
    for (i, b) in step.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str(".log");
    out
}

/// The step id a log file name stands for (the inverse of [`log_file_name`]).
pub fn step_of_log_file(name: &str) -> Option<String> {
    percent_decode(name.strip_suffix(".log")?)
}

/// `%XX` decoding (of log file names here, of resource URIs in the MCP server); `None` for
/// a bad escape or text that is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One step's open log file, with its cap accounting.
#[derive(Debug)]
pub(crate) struct LogWriter {
    file: File,
    path: PathBuf,
    /// Bytes in the file (what was there before this writer opened it included).
    written: u64,
    /// Bytes dropped since the last truncation mark.
    dropped: u64,
    cap: u64,
}

impl LogWriter {
    pub(crate) fn open(path: PathBuf, cap: u64) -> Result<LogWriter> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(StoreError::io("open", &path))?;
        let written = file
            .metadata()
            .map_err(StoreError::io("read", &path))?
            .len();
        Ok(LogWriter {
            file,
            path,
            written,
            dropped: 0,
            cap,
        })
    }

    /// Append `text` (split into lines, each prefixed by the stream).
    pub(crate) fn append(&mut self, stream: LogStream, text: &str) -> Result<()> {
        let text = text.strip_suffix('\n').unwrap_or(text);
        let mut buf = String::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let len = (stream.prefix().len() + line.len() + 1) as u64;
            if self.dropped > 0 || self.written + len > self.cap {
                self.dropped += len;
                continue;
            }
            buf.push_str(stream.prefix());
            buf.push_str(line);
            buf.push('\n');
            self.written += len;
        }
        if !buf.is_empty() {
            self.file
                .write_all(buf.as_bytes())
                .map_err(StoreError::io("write", &self.path))?;
        }
        Ok(())
    }

    /// Write the truncation mark if anything was dropped.
    pub(crate) fn close(&mut self) -> Result<()> {
        if self.dropped > 0 {
            let mark = format!("…[log truncated: {} bytes dropped]\n", self.dropped);
            self.file
                .write_all(mark.as_bytes())
                .map_err(StoreError::io("write", &self.path))?;
            self.written += mark.len() as u64;
            self.dropped = 0;
        }
        Ok(())
    }
}

/// Reads what is appended to a log file, line by line, for `ckflow logs --follow`.
#[derive(Debug)]
pub struct LogFollower {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl LogFollower {
    pub(crate) fn new(path: PathBuf) -> LogFollower {
        LogFollower {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// The log file followed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The complete lines appended since the last call (the whole log on the first call),
    /// without their newlines. A line still being written is kept for the next call. A log
    /// that does not exist yet reads as empty.
    pub fn poll(&mut self) -> Result<Vec<String>> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io("open", &self.path)(e)),
        };
        file.seek(SeekFrom::Start(self.offset))
            .map_err(StoreError::io("read", &self.path))?;
        let mut fresh = Vec::new();
        file.read_to_end(&mut fresh)
            .map_err(StoreError::io("read", &self.path))?;
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        let Some(last_newline) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(Vec::new());
        };
        let rest = self.partial.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        Ok(String::from_utf8_lossy(&complete[..complete.len() - 1])
            .split('\n')
            .map(str::to_owned)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_file_names_are_safe_and_reversible() {
        for id in [
            "build",
            "build[2]",
            "a.b",
            ".hidden",
            "x/y",
            "ünï",
            "build.recovery.1",
        ] {
            let name = log_file_name(id);
            assert!(!name.starts_with('.'), "{name}");
            assert!(!name.contains('/'), "{name}");
            assert_eq!(step_of_log_file(&name).as_deref(), Some(id));
        }
        assert_eq!(log_file_name("build[2]"), "build%5B2%5D.log");
    }

    #[test]
    fn lines_are_prefixed_and_multi_line_text_is_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let mut w = LogWriter::open(path.clone(), 1024).unwrap();
        w.append(LogStream::Stdout, "one\ntwo\r\n").unwrap();
        w.append(LogStream::Stderr, "oops").unwrap();
        w.close().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "[stdout] one\n[stdout] two\n[stderr] oops\n");
    }

    #[test]
    fn follower_returns_only_complete_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.log");
        let mut f = LogFollower::new(path.clone());
        assert!(f.poll().unwrap().is_empty());
        std::fs::write(&path, "a\nb").unwrap();
        assert_eq!(f.poll().unwrap(), vec!["a"]);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"c\nd\n").unwrap();
        assert_eq!(f.poll().unwrap(), vec!["bc", "d"]);
        assert!(f.poll().unwrap().is_empty());
    }
}
