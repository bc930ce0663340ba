//! Where the reference backend's binary is, and what it says of its own defaults.

use crate::error::HarnessError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The reference backend's executable name.
pub const BACKEND_BIN: &str = "recordings-backend";

/// Finds `recordings-backend`: `$HARNESS_BACKEND_BIN`; else beside the running executable
/// (cargo puts workspace binaries in `target/<profile>/`, tests in `target/<profile>/deps/`,
/// `cargo install` both in one folder); else on `PATH`.
pub fn find_backend() -> Result<PathBuf, HarnessError> {
    if let Some(p) = std::env::var_os("HARNESS_BACKEND_BIN") {
        return Ok(PathBuf::from(p));
    }
    beside_exe()
        .or_else(|| which(BACKEND_BIN))
        .ok_or_else(|| HarnessError::ToolMissing {
            tool: BACKEND_BIN,
            hint: "install it with `cargo install --path backend` from the harness's source \
                   (in the checkout, `cargo test --workspace` builds it), or set HARNESS_BACKEND_BIN"
                .into(),
        })
}

/// `recordings-backend` in the running executable's folder or the one above.
pub fn beside_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(BACKEND_BIN))
        .find(|p| p.is_file())
}

/// The first file named `name` in a folder of `PATH`, then in the sbin folders a non-root
/// `PATH` lacks (where Debian puts nginx and debootstrap).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
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
