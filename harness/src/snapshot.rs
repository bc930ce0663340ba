//! Snapshots of scenario runs, in insta's format and workflow, shared by `cargo test` and
//! `harness run`: a changed outcome fails; with updating on, it is written as a `.snap.new`
//! beside the snapshot for `cargo insta review`, never silently accepted. insta's mode comes
//! from its environment (`INSTA_UPDATE`, `CI`), which the CLI sets once, before any thread
//! starts; the library never changes the environment.

use crate::runner::ScenarioRun;
use std::path::Path;

/// Compares `run` with `dir/{name}.snap`; returns insta's message on a mismatch.
pub fn check(dir: &Path, run: &ScenarioRun) -> Result<(), String> {
    // insta takes a relative path as relative to this source file: make it absolute.
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(&dir);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    let name = run.snapshot_name();
    let snapshot = run.snapshot();
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
