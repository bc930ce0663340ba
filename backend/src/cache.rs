//! The on-disk cache of recordings, and single-flight downloads that stream to clients while
//! they are written.
//!
//! A download writes to a hidden temp file in the cache directory; readers follow it as it
//! grows, so the time to first byte does not depend on the recording's size. Only a complete
//! file (length checked against Twilio's `Content-Length`, fsynced) is renamed to its final
//! name, so a later request never serves a partial download. One download per recording at a
//! time, however many requests want it.

use crate::error::AppError;
use crate::lock_file::LockFile;
use crate::twilio::{error_chain, FetchError, Format, Twilio};
use bytes::Bytes;
use futures::Stream;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// Bytes read from disk per chunk of a response body.
pub(crate) const CHUNK: u64 = 64 * 1024;

/// The temp file a download writes, and how far it has come.
#[derive(Debug, Clone)]
pub struct TempFile {
    /// The file (open; removed from the folder once the download fails).
    pub file: Arc<File>,
    /// Twilio's Content-Length.
    pub size: u64,
    /// When the download started.
    pub started: SystemTime,
    /// Bytes on disk so far.
    pub written: u64,
}

impl TempFile {
    /// A reader's view of it, following `progress` as it grows.
    fn source(self, progress: watch::Receiver<Phase>) -> Source {
        Source::Live {
            file: self.file,
            size: self.size,
            modified: self.started,
            progress,
        }
    }
}

/// How far a download has come (shared with every reader through a watch channel).
#[derive(Debug, Clone)]
pub enum Phase {
    /// Waiting for Twilio's response headers.
    Connecting,
    /// Writing the body into its temp file.
    Writing(TempFile),
    /// Complete and renamed to its final name: by this download (`downloaded_here`), or by
    /// another process sharing the cache (this one waited for its lock, then found the file).
    Complete {
        /// Whether this process wrote it. Its readers may have met it while it was writing
        /// (the watch shows them only the latest phase), so they are misses; readers of another
        /// process's file never saw a byte of it before it was saved.
        downloaded_here: bool,
    },
    /// Failed; nothing was left in the cache. Readers still get the bytes that reached the temp
    /// file, then an error, also a reader that never saw `Writing` (a fast cut): the answer
    /// must not depend on which phase a reader looked at first.
    Failed {
        /// Why.
        error: FetchError,
        /// The temp file as it was when the download failed, if it got that far.
        partial: Option<TempFile>,
    },
}

impl Phase {
    /// Bytes on disk: so far while writing, before the failure once failed.
    fn written(&self) -> u64 {
        match self {
            Phase::Writing(t)
            | Phase::Failed {
                partial: Some(t), ..
            } => t.written,
            _ => 0,
        }
    }
}

/// Where a response's bytes come from.
pub enum Source {
    /// A complete cached file.
    Cached {
        /// The open file.
        file: Arc<File>,
        /// Its length.
        size: u64,
        /// When it was downloaded (its mtime).
        modified: SystemTime,
        /// Whether the request is a hit: it found the file saved, or waited for another
        /// process to save it (false when it met this process's download, finished or not).
        hit: bool,
    },
    /// A download in progress, followed as it grows.
    Live {
        /// The temp file being written.
        file: Arc<File>,
        /// The final length.
        size: u64,
        /// When the download started (the file's future mtime).
        modified: SystemTime,
        /// Progress of the download.
        progress: watch::Receiver<Phase>,
    },
}

impl Source {
    /// Length in bytes.
    pub fn size(&self) -> u64 {
        match self {
            Source::Cached { size, .. } | Source::Live { size, .. } => *size,
        }
    }

    /// Last-Modified.
    pub fn modified(&self) -> SystemTime {
        match self {
            Source::Cached { modified, .. } | Source::Live { modified, .. } => *modified,
        }
    }

    /// True when the request is answered from a file saved before its answer could begin: found
    /// in the cache, or saved by another process sharing it that this one waited for. A request
    /// that met this process's download is a miss even if the download finished before it was
    /// answered: who answers depends on what the request met, not on how tasks were scheduled.
    pub fn is_hit(&self) -> bool {
        matches!(self, Source::Cached { hit: true, .. })
    }

    /// Waits until byte `pos` is on disk, so that a response can promise a status: if the
    /// download fails before reaching it, the client gets a clean error instead of a 200 whose
    /// body breaks off before its first byte.
    pub async fn ready_at(&mut self, pos: u64) -> Result<(), AppError> {
        let Source::Live { progress, .. } = self else {
            return Ok(());
        };
        loop {
            match &*progress.borrow_and_update() {
                phase if phase.written() > pos => return Ok(()),
                Phase::Complete { .. } => return Ok(()),
                Phase::Failed { error, .. } => return Err(fetch_error(error.clone())),
                _ => {}
            }
            if progress.changed().await.is_err() {
                return Err(AppError::Internal {
                    cause: "download task ended without a result".into(),
                });
            }
        }
    }

    /// The bytes `start..=end` as a stream; ends with an error if the download breaks off.
    pub fn stream(self, start: u64, end: u64) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
        let (file, progress) = match self {
            Source::Cached { file, .. } => (file, None),
            Source::Live { file, progress, .. } => (file, Some(progress)),
        };
        futures::stream::unfold((start, progress), move |(pos, mut progress)| {
            let file = file.clone();
            async move {
                if pos > end {
                    return None;
                }
                // How much is on disk: everything for a cached file, else wait for the writer.
                let available = match progress.as_mut() {
                    None => end + 1,
                    Some(rx) => loop {
                        let phase = rx.borrow_and_update().clone();
                        match phase {
                            // What arrived before a failure is still served; then the cut.
                            phase if phase.written() > pos => break phase.written().min(end + 1),
                            Phase::Complete { .. } => break end + 1,
                            Phase::Failed { error, .. } => {
                                // Pending once before the error, so hyper flushes the bytes
                                // already handed to it before it aborts the connection.
                                tokio::task::yield_now().await;
                                return Some((
                                    Err(std::io::Error::other(error.to_string())),
                                    (end + 1, None),
                                ));
                            }
                            _ => {}
                        }
                        if rx.changed().await.is_err() {
                            let err = std::io::Error::other("download stopped");
                            return Some((Err(err), (end + 1, None)));
                        }
                    },
                };
                let len = (available - pos).min(CHUNK) as usize;
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; len];
                    file.read_exact_at(&mut buf, pos).map(|_| buf)
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                match read {
                    Ok(buf) => Some((Ok(Bytes::from(buf)), (pos + len as u64, progress))),
                    Err(e) => Some((Err(e), (end + 1, None))),
                }
            }
        })
    }
}

fn fetch_error(e: FetchError) -> AppError {
    match e {
        FetchError::NotFound => AppError::FileNotFound,
        FetchError::Failed(cause) => AppError::Upstream { cause },
    }
}

/// The line that says this process downloads a recording from Twilio.
fn log_miss(call_sid: &str, recording_sid: &str) {
    tracing::info!(
        call_sid,
        recording_sid,
        "Cache miss - downloading from Twilio for {call_sid}"
    );
}

/// The recordings cache.
pub struct Cache {
    dir: PathBuf,
    twilio: Arc<Twilio>,
    slow: Duration,
    inflight: Mutex<HashMap<String, watch::Receiver<Phase>>>,
}

/// A recording's file name in the cache, `{sid}.{ext}`: also the name of its download (in
/// flight, its temp file `.{name}.part`) and of its lock (`.{name}.lock`).
fn file_name(recording_sid: &str, format: Format) -> String {
    format!("{recording_sid}.{}", format.ext())
}

/// The lock file of `name` in the cache folder `dir`.
fn lock_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.lock"))
}

/// The temp file the download of `name` writes, in the cache folder `dir`.
fn part_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.part"))
}

/// Removes the temp file of `name` that a crashed run left, holding its recording's lock while
/// it does: one that an instance sharing the cache is writing (it holds the lock) stays.
fn remove_if_unheld(dir: &Path, name: &str) {
    if let Ok(Some(_held)) = LockFile::try_acquire(&lock_file(dir, name)) {
        let _ = std::fs::remove_file(part_file(dir, name));
    }
}

impl Cache {
    /// A cache in `dir` (created if missing; temp files of a crashed run are removed, those an
    /// instance sharing the cache is writing are left alone).
    pub fn new(dir: &Path, twilio: Arc<Twilio>, slow: Duration) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(recording) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".part")) {
                remove_if_unheld(dir, recording);
            }
            // A lock file a killed process left: taken and so removed, unless it is held.
            if name.starts_with('.') && name.ends_with(".lock") {
                drop(LockFile::try_acquire(&entry.path()));
            }
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
            twilio,
            slow,
            inflight: Mutex::new(HashMap::new()),
        })
    }

    fn path(&self, recording_sid: &str, format: Format) -> PathBuf {
        self.dir.join(file_name(recording_sid, format))
    }

    /// The saved file, if there is one; `hit` says whether the request found it there.
    fn open_cached(&self, path: &Path, hit: bool) -> Option<Source> {
        let file = File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        Some(Source::Cached {
            size: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            file: Arc::new(file),
            hit,
        })
    }

    /// The recording's bytes: from the cache, from a download in progress, or from a new one.
    pub async fn open(
        self: &Arc<Self>,
        call_sid: &str,
        recording_sid: &str,
        format: Format,
    ) -> Result<Source, AppError> {
        let path = self.path(recording_sid, format);
        if let Some(source) = self.open_cached(&path, true) {
            return Ok(source);
        }
        let mut rx = self.join_or_start(call_sid, recording_sid, format);
        loop {
            let phase = rx.borrow_and_update().clone();
            match phase {
                Phase::Connecting => {}
                Phase::Writing(temp) => return Ok(temp.source(rx)),
                Phase::Complete { downloaded_here } => {
                    return self.open_cached(&path, !downloaded_here).ok_or_else(|| {
                        AppError::Internal {
                            cause: format!("cached file {} vanished", path.display()),
                        }
                    })
                }
                // Cut after some bytes: those first, then the error (the fast cut's reader
                // never saw `Writing`).
                Phase::Failed {
                    partial: Some(temp),
                    ..
                } if temp.written > 0 => return Ok(temp.source(rx)),
                Phase::Failed { error, .. } => return Err(fetch_error(error)),
            }
            if rx.changed().await.is_err() {
                return Err(AppError::Internal {
                    cause: "download task ended without a result".into(),
                });
            }
        }
    }

    /// Downloads a recording into the cache unless it is there; for webhook pre-downloads.
    /// Starts it now (when this process downloads, its `Cache miss` line is logged before this
    /// returns); the download goes on in the background.
    pub fn prefetch(self: &Arc<Self>, call_sid: &str, recording_sid: &str, format: Format) {
        if !self.path(recording_sid, format).exists() {
            self.join_or_start(call_sid, recording_sid, format);
        }
    }

    fn join_or_start(
        self: &Arc<Self>,
        call_sid: &str,
        recording_sid: &str,
        format: Format,
    ) -> watch::Receiver<Phase> {
        let key = file_name(recording_sid, format);
        let mut inflight = self.inflight.lock().unwrap();
        if let Some(rx) = inflight.get(&key) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(Phase::Connecting);
        inflight.insert(key.clone(), rx.clone());
        // Logged before this returns: `Cache miss` only when this process downloads (another
        // instance sharing the cache may hold the recording's lock: this one then waits for it).
        let held = LockFile::try_acquire(&self.lock_path(&key));
        match &held {
            Ok(Some(_)) if !self.path(recording_sid, format).exists() => {
                log_miss(call_sid, recording_sid)
            }
            Ok(None) => tracing::info!(
                call_sid,
                recording_sid,
                "Waiting for another process's download of {recording_sid}"
            ),
            _ => {}
        }
        let cache = self.clone();
        let (call_sid, recording_sid) = (call_sid.to_string(), recording_sid.to_string());
        tokio::spawn(async move {
            cache
                .download(&tx, held, &call_sid, &recording_sid, format)
                .await;
            cache.inflight.lock().unwrap().remove(&key);
        });
        rx
    }

    /// Downloads the recording into the cache, holding its lock (`held`: taken already, or
    /// `None` while another process holds it, which this one waits for).
    async fn download(
        &self,
        tx: &watch::Sender<Phase>,
        held: std::io::Result<Option<LockFile>>,
        call_sid: &str,
        recording_sid: &str,
        format: Format,
    ) {
        let began = Instant::now();
        let started = SystemTime::now();
        let final_path = self.path(recording_sid, format);
        // One download per recording across processes sharing the cache (several instances
        // behind one upstream): the lock's holder downloads, the others wait and serve its file.
        let (lock, waited) = match held {
            Ok(Some(lock)) => (Ok(lock), false),
            Ok(None) => (self.lock(recording_sid, format).await, true),
            Err(e) => (Err(e), false),
        };
        let lock = match lock {
            Ok(lock) => lock,
            Err(e) => {
                let cause = format!("lock {}: {e}", final_path.display());
                tx.send_replace(Phase::Failed {
                    error: FetchError::Failed(cause),
                    partial: None,
                });
                return;
            }
        };
        if final_path.exists() {
            drop(lock);
            if waited {
                tracing::info!(
                    call_sid,
                    recording_sid,
                    "Another process saved {recording_sid} - waited {:.2}s",
                    began.elapsed().as_secs_f64()
                );
            }
            tx.send_replace(Phase::Complete {
                downloaded_here: false,
            });
            return;
        }
        if waited {
            // The other process's download failed: this one downloads.
            log_miss(call_sid, recording_sid);
        }
        let tmp = self.temp_path(recording_sid, format);
        // Shared with the blocking task that renames the temp file: if this task is dropped
        // (the runtime shutting down), the lock still goes only once the rename is done, so the
        // lock's next holder never has its own temp file renamed under it.
        let lock = Arc::new(lock);
        let result = match self
            .fetch_into(tx, recording_sid, format, &tmp, started)
            .await
        {
            Ok((file, size)) => save(file, &tmp, &final_path, started, lock.clone())
                .await
                .map(|()| size),
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Before the lock goes: a temp file found by the lock's next holder is a killed one's.
            let _ = std::fs::remove_file(&tmp);
        }
        // Released (and its file removed) before the log line that says the download is over,
        // so a reader of that line finds the cache as it stays.
        drop(lock);
        self.report(tx, result, call_sid, recording_sid, began);
    }

    /// Logs how the download ended and tells its readers.
    fn report(
        &self,
        tx: &watch::Sender<Phase>,
        result: Result<u64, FetchError>,
        call_sid: &str,
        recording_sid: &str,
        began: Instant,
    ) {
        match result {
            Ok(size) => {
                let took = began.elapsed().as_secs_f64();
                // The warning first: "saved" is the line that says the download is over.
                if began.elapsed() > self.slow {
                    tracing::warn!(
                        call_sid,
                        recording_sid,
                        seconds = took,
                        "Slow download detected ({took:.2}s) - consider pre-downloading"
                    );
                }
                tracing::info!(
                    call_sid,
                    recording_sid,
                    bytes = size,
                    seconds = took,
                    "Recording saved - took {took:.2}s"
                );
                tx.send_replace(Phase::Complete {
                    downloaded_here: true,
                });
            }
            Err(e) => {
                match &e {
                    FetchError::NotFound => tracing::warn!(
                        call_sid,
                        recording_sid,
                        "Recording file not found at Twilio"
                    ),
                    FetchError::Failed(cause) => {
                        tracing::error!(call_sid, recording_sid, cause = %cause, "Failed to fetch recording")
                    }
                }
                let partial = match &*tx.borrow() {
                    Phase::Writing(temp) => Some(temp.clone()),
                    _ => None,
                };
                tx.send_replace(Phase::Failed { error: e, partial });
            }
        }
    }

    /// The recording's temp file (`.{sid}.{ext}.part`), free to create: called holding its lock.
    /// Only the lock's holder writes it, and a download that fails removes it before it lets the
    /// lock go, so one found now is a killed holder's (an instance sharing the cache, or an
    /// earlier run of this one) and is removed. Readers of an earlier download of this process
    /// keep their open file: removing the name leaves its bytes to them.
    fn temp_path(&self, recording_sid: &str, format: Format) -> PathBuf {
        let path = part_file(&self.dir, &file_name(recording_sid, format));
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        // One unlink, on this task rather than the blocking pool: were this task dropped (a
        // stopping runtime) during a pooled unlink, the lock would go before the unlink ended.
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(file = %name, "Removed a killed download's temp file"),
            // The download then fails to create it, and says so; this says why.
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(file = %name, error = %e, "Cannot remove a killed download's temp file")
            }
            Err(_) => {}
        }
        path
    }

    fn lock_path(&self, name: &str) -> PathBuf {
        lock_file(&self.dir, name)
    }

    /// An exclusive lock on the recording, shared with other processes (see [`LockFile`]).
    async fn lock(&self, recording_sid: &str, format: Format) -> std::io::Result<LockFile> {
        self.lock_named(&file_name(recording_sid, format)).await
    }

    /// An exclusive lock named `name`, shared with every process using this cache folder
    /// (several backend instances): held until the returned guard drops.
    pub async fn lock_named(&self, name: &str) -> std::io::Result<LockFile> {
        let path = self.lock_path(name);
        tokio::task::spawn_blocking(move || LockFile::acquire(&path))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }

    async fn fetch_into(
        &self,
        tx: &watch::Sender<Phase>,
        recording_sid: &str,
        format: Format,
        tmp: &Path,
        started: SystemTime,
    ) -> Result<(Arc<File>, u64), FetchError> {
        let io = |what: &str, e: std::io::Error| FetchError::Failed(format!("{what}: {e}"));
        let mut resp = self.twilio.open_media(recording_sid, format).await?;
        let size = resp
            .content_length()
            .ok_or_else(|| FetchError::Failed("Twilio sent no Content-Length".into()))?;
        let file = Arc::new(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(tmp)
                .map_err(|e| io("cannot create temp file", e))?,
        );
        tx.send_replace(Phase::Writing(TempFile {
            file: file.clone(),
            size,
            started,
            written: 0,
        }));
        let mut written = 0u64;
        let stall = self.twilio.budget();
        loop {
            let chunk = match tokio::time::timeout(stall, resp.chunk()).await {
                Err(_) => {
                    return Err(FetchError::Failed(format!(
                        "Twilio stalled for {:.1}s after {written} of {size} bytes",
                        stall.as_secs_f64()
                    )))
                }
                Ok(Err(e)) => {
                    return Err(FetchError::Failed(format!(
                        "Twilio broke off after {written} of {size} bytes: {}",
                        error_chain(&e)
                    )))
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => chunk,
            };
            if written + chunk.len() as u64 > size {
                return Err(FetchError::Failed(format!(
                    "Twilio sent more than its Content-Length {size}"
                )));
            }
            let f = file.clone();
            let at = written;
            tokio::task::spawn_blocking(move || f.write_all_at(&chunk, at).map(|_| chunk.len()))
                .await
                .map_err(|e| FetchError::Failed(e.to_string()))?
                .map(|n| written += n as u64)
                .map_err(|e| io("cannot write temp file", e))?;
            tx.send_modify(|p| {
                if let Phase::Writing(temp) = p {
                    temp.written = written;
                }
            });
        }
        if written != size {
            return Err(FetchError::Failed(format!(
                "Twilio sent {written} of {size} bytes"
            )));
        }
        Ok((file, size))
    }
}

/// Saves a complete temp file under its final name: synced, its mtime set to the download's
/// start (the ETag's), renamed, the folder synced. `lock` is the recording's, held until the
/// rename is done even if the calling task is dropped.
async fn save(
    file: Arc<File>,
    tmp: &Path,
    final_path: &Path,
    started: SystemTime,
    lock: Arc<LockFile>,
) -> Result<(), FetchError> {
    let (tmp, final_path) = (tmp.to_path_buf(), final_path.to_path_buf());
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        file.sync_all()?;
        file.set_modified(started)?;
        std::fs::rename(&tmp, &final_path)?;
        if let Some(dir) = final_path.parent() {
            File::open(dir)?.sync_all()?;
        }
        drop(lock);
        Ok(())
    })
    .await
    .map_err(|e| FetchError::Failed(e.to_string()))?
    .map_err(|e| FetchError::Failed(format!("cannot store the download: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    const BEFORE_THE_CUT: &[u8] = b"the first bytes";
    const SIZE: u64 = 1000;

    fn cache(dir: &Path) -> Arc<Cache> {
        // Never asked: every download in these tests is one the test itself puts in flight.
        let twilio = Twilio::new("http://127.0.0.1:9", "AC0", "token", Duration::from_secs(1));
        Arc::new(Cache::new(dir, Arc::new(twilio), Duration::from_secs(1)).unwrap())
    }

    /// A download of `RE1.mp3` in flight, in `phase`: what a reader sees first.
    fn in_flight(cache: &Cache, phase: Phase) -> watch::Sender<Phase> {
        let (tx, rx) = watch::channel(phase);
        cache.inflight.lock().unwrap().insert("RE1.mp3".into(), rx);
        tx
    }

    /// The temp file of a download that has written [`BEFORE_THE_CUT`] of [`SIZE`] bytes.
    fn temp_file(dir: &Path) -> TempFile {
        let path = dir.join(".RE1.mp3.part");
        std::fs::write(&path, BEFORE_THE_CUT).unwrap();
        TempFile {
            file: Arc::new(File::open(&path).unwrap()),
            size: SIZE,
            started: SystemTime::UNIX_EPOCH,
            written: BEFORE_THE_CUT.len() as u64,
        }
    }

    fn cut(partial: Option<TempFile>) -> Phase {
        Phase::Failed {
            error: FetchError::Failed("Twilio broke off".into()),
            partial,
        }
    }

    /// A reader of the whole recording gets [`BEFORE_THE_CUT`], then the cut's error.
    async fn assert_gets_the_bytes_then_the_cut(source: Source) {
        let (body, error) = read_all(source).await;
        assert_eq!(body, BEFORE_THE_CUT);
        assert_eq!(error.as_deref(), Some("Twilio broke off"));
    }

    /// The body a reader of the whole recording gets: its chunks, then the error if any.
    async fn read_all(mut source: Source) -> (Vec<u8>, Option<String>) {
        source.ready_at(0).await.expect("a first byte");
        let mut body = Vec::new();
        let mut chunks = std::pin::pin!(source.stream(0, SIZE - 1));
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(bytes) => body.extend_from_slice(&bytes),
                Err(e) => return (body, Some(e.to_string())),
            }
        }
        (body, None)
    }

    #[tokio::test]
    async fn a_reader_that_first_sees_the_cut_gets_the_bytes_before_it_then_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let _tx = in_flight(&cache, cut(Some(temp_file(dir.path()))));
        let source = cache.open("CA1", "RE1", Format::Mp3).await.unwrap();
        assert_eq!(source.size(), SIZE);
        assert_gets_the_bytes_then_the_cut(source).await;
    }

    #[tokio::test]
    async fn a_reader_that_saw_the_download_writing_gets_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let temp = temp_file(dir.path());
        let tx = in_flight(&cache, Phase::Writing(temp.clone()));
        let source = cache.open("CA1", "RE1", Format::Mp3).await.unwrap();
        tx.send_replace(cut(Some(temp)));
        assert_gets_the_bytes_then_the_cut(source).await;
    }

    #[tokio::test]
    async fn a_cut_before_any_byte_is_an_error_answer() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache(dir.path());
        let mut nothing = temp_file(dir.path());
        nothing.written = 0;
        for partial in [None, Some(nothing)] {
            let _tx = in_flight(&cache, cut(partial));
            let answer = cache.open("CA1", "RE1", Format::Mp3).await;
            assert!(
                matches!(answer, Err(AppError::Upstream { .. })),
                "{:?}",
                answer.err()
            );
        }
    }

    /// A request that meets a download in flight, which then saves the whole file (by this
    /// process or another, as `downloaded_here` says) before the request is polled again.
    async fn met_then_saved(dir: &Path, downloaded_here: bool) -> Source {
        let cache = cache(dir);
        let tx = in_flight(&cache, Phase::Connecting);
        let mut opening = std::pin::pin!(cache.open("CA1", "RE1", Format::Mp3));
        assert!(futures::poll!(opening.as_mut()).is_pending(), "waits");
        std::fs::write(dir.join("RE1.mp3"), vec![7u8; SIZE as usize]).unwrap();
        tx.send_replace(Phase::Complete { downloaded_here });
        opening.await.unwrap()
    }

    #[tokio::test]
    async fn who_saved_the_file_a_request_met_decides_whether_it_is_a_hit() {
        let dir = tempfile::tempdir().unwrap();
        let ours = met_then_saved(dir.path(), true).await;
        assert!(
            !ours.is_hit(),
            "a request that met this process's download is a miss"
        );
        assert_eq!(read_all(ours).await, (vec![7u8; SIZE as usize], None));
        // The control: the next request finds the saved file.
        let found = cache(dir.path())
            .open("CA1", "RE1", Format::Mp3)
            .await
            .unwrap();
        assert!(
            found.is_hit(),
            "a request that found the saved file is a hit"
        );
        // Another process's download: this one only waited for its lock, never wrote a byte.
        let dir = tempfile::tempdir().unwrap();
        let theirs = met_then_saved(dir.path(), false).await;
        assert!(
            theirs.is_hit(),
            "a request that waited for another process's file is a hit"
        );
    }
}
