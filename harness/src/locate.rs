//! Where things are: the workspace (configs, scenarios, snapshots) and the reference backend's
//! binary, and what that binary says of its own defaults.

use crate::error::HarnessError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (where `docker/`, `scenarios/` and `snapshots/` are).
pub fn workspace_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HARNESS_WORKSPACE") {
        return PathBuf::from(dir);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Finds `recordings-backend`: `$HARNESS_BACKEND_BIN`, or beside the running executable
/// (cargo puts workspace binaries in `target/<profile>/`, tests in `target/<profile>/deps/`).
pub fn find_backend() -> Result<PathBuf, HarnessError> {
    if let Some(p) = std::env::var_os("HARNESS_BACKEND_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(HarnessError::io("current_exe"))?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("recordings-backend"))
        .find(|p| p.is_file())
        .ok_or_else(|| HarnessError::ToolMissing {
            tool: "recordings-backend",
            hint: "build it with `cargo build -p recordings-backend` (`cargo test --workspace` does), or set HARNESS_BACKEND_BIN".into(),
        })
}

/// A flag's default as the backend's `--help` states it (`[default: 75]`).
pub fn backend_default(backend: &Path, flag: &str) -> Option<f64> {
    // `--help` is read once per binary, not on every stack start.
    static HELP: std::sync::Mutex<Option<(PathBuf, String)>> = std::sync::Mutex::new(None);
    let mut cached = HELP.lock().unwrap_or_else(|e| e.into_inner());
    if cached.as_ref().is_none_or(|(path, _)| path != backend) {
        let out = Command::new(backend)
            .arg("--help")
            .env_clear()
            .output()
            .ok()?;
        *cached = Some((
            backend.to_path_buf(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ));
    }
    let help = &cached.as_ref()?.1;
    let after = &help[help.find(&format!("{flag} "))?..];
    let default = after.split("[default: ").nth(1)?.split(']').next()?;
    default.trim().parse().ok()
}

/// When run from the workspace: a message if `recordings-backend` is older than its sources
/// (`cargo test -p harness` does not rebuild it; `cargo test --workspace` does).
pub fn stale_backend(binary: &Path) -> Option<String> {
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
    let src = workspace_dir().join("backend/src");
    let newest = std::fs::read_dir(&src)
        .ok()?
        .flatten()
        .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
        .max()?;
    (newest > built).then(|| {
        format!(
            "{} is older than {}: run `cargo build -p recordings-backend` (or `cargo test --workspace`)",
            binary.display(),
            src.display()
        )
    })
}
