//! Where the reference backend's binary is, and what it says of its own defaults.

use crate::error::HarnessError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The reference backend's executable name.
pub const BACKEND_BIN: &str = "recordings-backend";

/// The mock Twilio's executable name.
pub const MOCK_TWILIO_BIN: &str = "mock-twilio";

/// Finds `recordings-backend`: `$HARNESS_BACKEND_BIN`; else beside the running executable
/// (cargo puts workspace binaries in `target/<profile>/`, tests in `target/<profile>/deps/`,
/// `cargo install` both in one folder); else on `PATH`.
pub fn find_backend() -> Result<PathBuf, HarnessError> {
    find_binary(BACKEND_BIN, "HARNESS_BACKEND_BIN", "backend")
}

/// Finds `mock-twilio` as [`find_backend`] finds the backend (`$HARNESS_MOCK_TWILIO_BIN` first).
pub fn find_mock_twilio() -> Result<PathBuf, HarnessError> {
    find_binary(MOCK_TWILIO_BIN, "HARNESS_MOCK_TWILIO_BIN", "mock-twilio")
}

/// `name` from `$env_var`, beside the running executable, or on `PATH`; else how to install it
/// from the harness's source folder `crate_dir`.
fn find_binary(
    name: &'static str,
    env_var: &str,
    crate_dir: &str,
) -> Result<PathBuf, HarnessError> {
    if let Some(p) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(p));
    }
    beside_exe_named(name)
        .or_else(|| which(name))
        .ok_or_else(|| HarnessError::ToolMissing {
            tool: name,
            hint: format!(
                "install it with `cargo install --path {crate_dir}` from the harness's source \
                 (in the checkout, `cargo test --workspace` builds it), or set {env_var}"
            ),
        })
}

/// `recordings-backend` in the running executable's folder or the one above.
pub fn beside_exe() -> Option<PathBuf> {
    beside_exe_named(BACKEND_BIN)
}

fn beside_exe_named(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(name))
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
