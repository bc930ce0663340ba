//! Browsers kept between plays. A launch is much of a short play's time (Firefox's 2–3 s), so
//! the plays of one scenario, or of every scenario a [`BrowserPool::scope`] runs, start each
//! engine once; each play begins afresh in it (see `fresh.rs`).

use super::{Browser, BrowserSlot, Engine};
use crate::error::HarnessError;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

tokio::task_local! {
    static SCOPED: Arc<BrowserPool>;
}

/// Idle browsers, and the folder their WebDriver servers log to. Dropped, it ends them.
#[derive(Default)]
pub struct BrowserPool {
    /// Dropped before `logs` (fields drop in order): the drivers log into that folder.
    idle: Mutex<Vec<Browser>>,
    logs: Mutex<Option<tempfile::TempDir>>,
}

impl BrowserPool {
    /// Runs `work` with one pool for all its plays (all in this task: `join_all`, `buffered`).
    /// Its browsers end with it.
    pub async fn scope<F: Future>(work: F) -> F::Output {
        SCOPED.scope(Arc::default(), work).await
    }

    /// The pool of the [`BrowserPool::scope`] this task runs in, else a new one.
    pub fn current_or_new() -> Arc<BrowserPool> {
        SCOPED.try_with(Arc::clone).unwrap_or_default()
    }

    /// An idle browser of `engine`, or a new one (within `slot`, which the caller holds).
    pub async fn take(&self, engine: Engine, slot: &BrowserSlot) -> Result<Browser, HarnessError> {
        let idle = {
            let mut idle = self.idle.lock().expect("the pool's lock");
            let at = idle.iter().position(|b| b.engine == engine);
            at.map(|i| idle.swap_remove(i))
        };
        match idle {
            Some(browser) => Ok(browser),
            None => Browser::launch_in(engine, &self.log_dir()?, slot).await,
        }
    }

    /// Keeps `browser` for a later play, if it can play again.
    pub fn give_back(&self, browser: Browser) {
        if browser.plays_again() {
            self.idle.lock().expect("the pool's lock").push(browser);
        }
    }

    /// Where the drivers log: a folder of the pool's own, as it outlives the stacks it plays on.
    fn log_dir(&self) -> Result<PathBuf, HarnessError> {
        let mut logs = self.logs.lock().expect("the pool's lock");
        if logs.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("harness-browsers-")
                .tempdir()
                .map_err(HarnessError::io("create the browsers' log folder"))?;
            *logs = Some(dir);
        }
        Ok(logs.as_ref().expect("just made").path().to_path_buf())
    }
}
