//! The project a run belongs to: the nearest folder, from the working directory up, that holds
//! a `harness.toml` (as Cargo finds `Cargo.toml`). Scenarios, snapshots and nginx configs
//! resolve from its root, and the harness writes nothing outside it.

use crate::error::HarnessError;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The file that marks a project's root.
pub const MANIFEST: &str = "harness.toml";

/// Names a project root instead of the search from the working directory.
pub const ROOT_ENV: &str = "HARNESS_PROJECT";

/// `harness.toml`: where the project keeps its files, each relative to its root.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    /// Scenario files (`harness run` with no path runs every one).
    #[serde(default = "default_scenarios")]
    scenarios: PathBuf,
    /// Snapshots (`{scenario}.snap`).
    #[serde(default = "default_snapshots")]
    snapshots: PathBuf,
    /// nginx configs, one per profile (`nginx.conf`, `nginx.legacy.conf`, ...); a profile
    /// whose file is not there runs the config the harness carries.
    #[serde(default = "default_configs")]
    configs: PathBuf,
}

fn default_scenarios() -> PathBuf {
    "scenarios".into()
}

fn default_snapshots() -> PathBuf {
    "snapshots".into()
}

fn default_configs() -> PathBuf {
    "nginx".into()
}

/// A project: its root and its folders (absolute).
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// The folder holding `harness.toml`.
    pub root: PathBuf,
    /// Scenario files.
    pub scenarios: PathBuf,
    /// Snapshots.
    pub snapshots: PathBuf,
    /// nginx configs.
    pub configs: PathBuf,
}

impl Project {
    /// The project whose root is `dir` or its nearest parent holding a `harness.toml`.
    pub fn find(dir: &Path) -> Result<Project, HarnessError> {
        let dir = std::path::absolute(dir).map_err(HarnessError::io("absolute path"))?;
        let root = dir
            .ancestors()
            .find(|d| d.join(MANIFEST).is_file())
            .ok_or_else(|| HarnessError::NoProject { from: dir.clone() })?;
        Project::open(root)
    }

    /// The project rooted at `root`, as its `harness.toml` says.
    pub fn open(root: &Path) -> Result<Project, HarnessError> {
        let root = std::path::absolute(root).map_err(HarnessError::io("absolute path"))?;
        let path = root.join(MANIFEST);
        let file = path.display().to_string();
        let text =
            std::fs::read_to_string(&path).map_err(HarnessError::io(format!("read {file}")))?;
        let manifest: Manifest = crate::toml_file::parse(&file, &text, |_, _| {
            Some("harness.toml knows scenarios, snapshots and configs (folders)".into())
        })?;
        let inside = |field: &str, dir: PathBuf| {
            let escapes = dir.components().any(|c| {
                !matches!(
                    c,
                    std::path::Component::Normal(_) | std::path::Component::CurDir
                )
            });
            if escapes {
                let message = format!(
                    "{}: must be a folder inside the project root (relative, no ..)",
                    dir.display()
                );
                return Err(crate::toml_file::refused(
                    &file,
                    &text,
                    field.into(),
                    message,
                ));
            }
            Ok(root.join(dir))
        };
        Ok(Project {
            scenarios: inside("scenarios", manifest.scenarios)?,
            snapshots: inside("snapshots", manifest.snapshots)?,
            configs: inside("configs", manifest.configs)?,
            root: root.clone(),
        })
    }

    /// `path` as written relative to the root when it is inside it.
    pub fn relative<'a>(&self, path: &'a Path) -> &'a Path {
        path.strip_prefix(&self.root).unwrap_or(path)
    }
}

/// The current project: under `$HARNESS_PROJECT` if set, else found from the working
/// directory up. Found once per process.
pub fn current() -> Result<&'static Project, HarnessError> {
    static CURRENT: OnceLock<Project> = OnceLock::new();
    if let Some(p) = CURRENT.get() {
        return Ok(p);
    }
    let found = match std::env::var_os(ROOT_ENV).filter(|v| !v.is_empty()) {
        Some(root) if !Path::new(&root).join(MANIFEST).is_file() => {
            return Err(HarnessError::Config {
                file: format!("{ROOT_ENV}={}", Path::new(&root).display()),
                line: 0,
                message: format!(
                    "no {MANIFEST} there (run `harness init` in it, or unset {ROOT_ENV})"
                ),
            })
        }
        Some(root) => Project::open(Path::new(&root))?,
        None => {
            let cwd = std::env::current_dir().map_err(HarnessError::io("working directory"))?;
            Project::find(&cwd)?
        }
    };
    Ok(CURRENT.get_or_init(|| found))
}
