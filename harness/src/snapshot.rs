//! Snapshots of scenario runs in `snapshots/`, in insta's format and workflow, shared by
//! `cargo test` and `harness run`: a changed outcome fails; with updating on, it is written as a
//! `.snap.new` beside the snapshot for `cargo insta review`, never silently accepted.

use crate::runner::ScenarioRun;
use std::path::Path;

/// What to do when a run differs from its snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// Fail; write nothing (CI).
    No,
    /// Fail, and write the new result as `{name}.snap.new` to review.
    New,
}

/// Compares `run` with `dir/{name}.snap`; returns insta's message on a mismatch. `update: None`
/// leaves insta's mode to the environment (`INSTA_UPDATE`, `CI`), as under `cargo test`.
pub fn check(dir: &Path, run: &ScenarioRun, update: Option<Update>) -> Result<(), String> {
    // insta takes a relative path as relative to this source file: make it absolute.
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(&dir);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let name = run.snapshot_name();
    let snapshot = run.snapshot();
    // insta reads its mode from the environment at assertion time.
    if let Some(update) = update {
        let mode = match update {
            Update::No => "no",
            Update::New => "new",
        };
        std::env::set_var("INSTA_UPDATE", mode);
        std::env::set_var("INSTA_FORCE_PASS", "0");
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_yaml_snapshot!(name, snapshot));
    }));
    outcome.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "snapshot differs".into())
    })
}
