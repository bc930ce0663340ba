//! Locks shared by every backend process using one cache folder: a lock file held with
//! `flock`, removed on release so the folder holds only recordings.
//!
//! Removing a lock file races with a process that opened it before the removal and waits for
//! it: that process then holds a lock on a file no longer in the folder. So whoever takes the
//! lock checks that the path still names the file it locked, and tries again if not.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A held lock; dropping it removes the lock file, then releases the lock.
#[derive(Debug)]
pub struct LockFile {
    _file: File,
    path: PathBuf,
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // Still held here: the file closes (and the lock goes) after this.
        let _ = std::fs::remove_file(&self.path);
    }
}

impl LockFile {
    /// Waits for the lock at `path` (blocking: call it off the async runtime).
    pub fn acquire(path: &Path) -> std::io::Result<LockFile> {
        Self::take(path, true).map(|held| held.expect("a waiting lock is always taken"))
    }

    /// Takes the lock at `path` if no one holds it; `None` if another holder has it.
    pub fn try_acquire(path: &Path) -> std::io::Result<Option<LockFile>> {
        Self::take(path, false)
    }

    fn take(path: &Path, wait: bool) -> std::io::Result<Option<LockFile>> {
        loop {
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)?;
            if wait {
                file.lock()?;
            } else {
                match file.try_lock() {
                    Ok(()) => {}
                    Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
                    Err(std::fs::TryLockError::Error(e)) => return Err(e),
                }
            }
            let locked = file.metadata()?;
            match std::fs::metadata(path) {
                Ok(now) if now.ino() == locked.ino() && now.dev() == locked.dev() => {
                    return Ok(Some(LockFile {
                        _file: file,
                        path: path.to_path_buf(),
                    }))
                }
                // Removed (or replaced) by its last holder while this one waited: again.
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_lock_leaves_no_file_and_excludes_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".x.lock");
        let held = LockFile::acquire(&path).unwrap();
        assert!(LockFile::try_acquire(&path).unwrap().is_none());
        drop(held);
        assert!(!path.exists());
        let again = LockFile::try_acquire(&path).unwrap();
        assert!(again.is_some());
    }

    #[test]
    fn a_waiter_on_a_removed_file_takes_the_lock_on_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".x.lock");
        let held = LockFile::acquire(&path).unwrap();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || LockFile::acquire(&path).unwrap())
        };
        drop(held);
        let second = waiter.join().unwrap();
        // The waiter holds the file the path names now, so a third process is excluded.
        assert!(path.exists());
        assert!(LockFile::try_acquire(&path).unwrap().is_none());
        drop(second);
        assert!(!path.exists());
    }
}
