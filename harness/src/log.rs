//! [`LogFile`]: a file a component appends to, read incrementally by offset.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// A log file that a component appends to.
#[derive(Debug, Clone)]
pub struct LogFile {
    path: PathBuf,
}

impl LogFile {
    /// The log at `path` (it need not exist yet).
    pub fn new(path: PathBuf) -> Self {
        LogFile { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current length in bytes (0 if missing).
    pub fn len(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// True when missing or empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The complete lines written since byte `offset`, and the offset after them.
    pub fn lines_since(&self, offset: u64) -> (Vec<String>, u64) {
        let Ok(mut f) = File::open(&self.path) else {
            return (Vec::new(), offset);
        };
        if f.seek(SeekFrom::Start(offset)).is_err() {
            return (Vec::new(), offset);
        }
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        // Only whole lines: a line being written is read next time.
        let end = buf
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..end]);
        (
            text.lines().map(str::to_string).collect(),
            offset + end as u64,
        )
    }

    /// Everything written since byte `offset`, a line being written included.
    pub fn text_since(&self, offset: u64) -> String {
        let Ok(mut f) = File::open(&self.path) else {
            return String::new();
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// The last `n` lines, for error reports.
    pub fn tail(&self, n: usize) -> String {
        let (lines, _) = self.lines_since(0);
        let start = lines.len().saturating_sub(n);
        lines[start..].join("\n")
    }
}
