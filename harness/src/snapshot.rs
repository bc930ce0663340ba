//! Snapshots of scenario runs, in insta's format and workflow, shared by `cargo test` and
//! `harness run`: a changed outcome fails; with updating on, it is written as a `.snap.new`
//! beside the snapshot for `cargo insta review`, never silently accepted. insta's mode comes
//! from its environment (`INSTA_UPDATE`, `CI`), which the CLI sets once, before any thread
//! starts; the library never changes the environment.

use crate::runner::ScenarioRun;
use std::path::{Path, PathBuf};

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

/// The YAML a run's snapshot holds, as insta writes it.
pub fn yaml(run: &ScenarioRun) -> String {
    use insta::_macro_support::{serialize_value, SerializationFormat};
    serialize_value(&run.snapshot(), SerializationFormat::Yaml)
}

/// Writes `run` as the pending `dir/{name}.snap.new` insta would write for a new snapshot, to
/// review and commit as `.snap`; returns its path.
pub fn write_pending(dir: &Path, name: &str, run: &ScenarioRun) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.snap.new"));
    std::fs::write(
        &path,
        format!(
            "---\nsource: harness/src/snapshot.rs\n---\n{}\n",
            yaml(run).trim_end()
        ),
    )?;
    Ok(path)
}

/// What a snapshot file holds after its header, if the file exists.
fn stored(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let body = text.strip_prefix("---\n")?;
    let end = body.find("\n---\n")?;
    Some(body[end + 5..].to_string())
}

/// Whether `dir/{name}.snap` holds exactly this run (no file: `None`). Never writes, never
/// panics: for asking whether a version's outcome is the default line's.
pub fn equals(dir: &Path, name: &str, run: &ScenarioRun) -> Option<bool> {
    let file = stored(&dir.join(format!("{name}.snap")))?;
    Some(file.trim_end() == yaml(run).trim_end())
}

/// How a run on a line other than the default compared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionVerdict {
    /// Its outcome equals the default line's snapshot: no snapshot of its own.
    SameAsDefault,
    /// It matches the snapshot of its own line.
    OwnSnapshot(String),
}

/// Compares a run with its snapshots. On the default nginx line (or an unknown one): its
/// snapshot, as [`check`]. On another line: the default line's snapshot when the outcome is
/// the same, else `{name}@nginx-{line}.snap`, which must then exist and match (and must not
/// exist when the outcome is the same: it would say a difference there is none).
pub fn check_line(dir: &Path, run: &ScenarioRun) -> Result<VersionVerdict, String> {
    let Some(own) = run.line_snapshot_name() else {
        return check(dir, run).map(|()| VersionVerdict::SameAsDefault);
    };
    let same = equals(dir, &run.snapshot_name(), run) == Some(true);
    let own_exists = dir.join(format!("{own}.snap")).exists();
    match (same, own_exists) {
        (true, false) => Ok(VersionVerdict::SameAsDefault),
        (true, true) => Err(format!(
            "{own}.snap is stale: on this line the outcome equals {}.snap; delete it",
            run.snapshot_name()
        )),
        (false, _) => {
            let renamed = ScenarioRun {
                name: own.clone(),
                backend: "reference".into(),
                ..run.clone()
            };
            check(dir, &renamed).map(|()| VersionVerdict::OwnSnapshot(own))
        }
    }
}
