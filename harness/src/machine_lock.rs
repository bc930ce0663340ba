//! Locks every process of the harness on the machine shares: lock files in one folder held with
//! `flock` (released when the holder drops, or dies). The browser slots and the image
//! builds use them, so `cargo test`'s one process, nextest's process per test and several
//! `harness run`s agree.

use crate::error::HarnessError;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A held lock; released on drop.
pub struct MachineLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl MachineLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first of `names` that is free now, if any.
    pub fn try_any(names: &[String]) -> Result<Option<MachineLock>, HarnessError> {
        for name in names {
            let path = lock_dir().join(name);
            if let Ok(lock) = Flock::lock(open(&path)?, FlockArg::LockExclusiveNonblock) {
                return Ok(Some(MachineLock { _lock: lock, path }));
            }
        }
        Ok(None)
    }

    /// Waits until one of `names` is free and takes it. Waiting is cancellable: it tries again
    /// every 50 ms and holds nothing in between.
    pub async fn any(names: &[String]) -> Result<MachineLock, HarnessError> {
        loop {
            if let Some(lock) = MachineLock::try_any(names)? {
                return Ok(lock);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Where the lock files are: `HARNESS_LOCK_DIR`, else `/tmp`, whatever this process's TMPDIR
/// says (two processes with different TMPDIRs, as the tests give the harnesses they start, must
/// meet at the same files), else the temp folder.
pub fn lock_dir() -> PathBuf {
    match std::env::var_os("HARNESS_LOCK_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ if Path::new("/tmp").is_dir() => PathBuf::from("/tmp"),
        _ => std::env::temp_dir(),
    }
}

/// Opens (creating it, writable by every user) a lock file: `flock` needs no write access, so
/// a file another user created is opened read-only.
fn open(path: &Path) -> Result<File, HarnessError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = HarnessError::io(format!("open the lock file {}", path.display()));
    match File::open(path) {
        Ok(file) => Ok(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o666)
                .open(path)
                .map_err(fail)?;
            // The umask narrowed the mode: every user's harness shares the file.
            let _ = file.set_permissions(std::fs::Permissions::from_mode(0o666));
            Ok(file)
        }
        Err(e) => Err(fail(e)),
    }
}
