//! [`StackSpec`]: what a stack is made of (profile, backend, timeouts), as data; the
//! [`crate::Runtime`] says how it runs and [`crate::Stack`] runs it.

use crate::runtime::Runtime;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Which nginx config and backend keep-alive a stack runs with.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// `docker/nginx.conf`; backend keep-alive 75 s, above nginx's upstream 60 s.
    Fixed,
    /// `docker/nginx.legacy.conf`; backend keep-alive 5 s (uvicorn's default), below nginx's 60 s.
    Legacy,
}

impl Profile {
    /// Both profiles, fixed first.
    pub const ALL: [Profile; 2] = [Profile::Fixed, Profile::Legacy];

    /// The config file under `docker/`.
    pub fn config_file(self) -> &'static str {
        match self {
            Profile::Fixed => "nginx.conf",
            Profile::Legacy => "nginx.legacy.conf",
        }
    }

    /// The backend's `KEEP_ALIVE_TIMEOUT` before scaling, in seconds: under `fixed`, the
    /// backend's own default (so a backend whose default drifts below nginx's is caught);
    /// under `legacy`, uvicorn's default of 5 s.
    pub fn backend_keep_alive_secs(self, backend: &Path) -> f64 {
        match self {
            Profile::Fixed => {
                crate::locate::backend_default(backend, "--keep-alive-timeout").unwrap_or(75.0)
            }
            Profile::Legacy => 5.0,
        }
    }

    /// `fixed` or `legacy`.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Fixed => "fixed",
            Profile::Legacy => "legacy",
        }
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fixed" => Ok(Profile::Fixed),
            "legacy" => Ok(Profile::Legacy),
            _ => Err(format!("unknown profile {s:?} (profiles: fixed, legacy)")),
        }
    }
}

/// Scaling of the stack's timeouts (nginx's and the backend's together, ratios kept).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Factor for request timeouts: nginx's proxy_read/send/connect_timeout, the backend's
    /// Twilio budget (30 s), slow-download threshold (10 s) and drain time (30 s).
    pub scale: f64,
    /// Factor for keep-alive timeouts: nginx's upstream/client keepalive_timeout and the
    /// backend's KEEP_ALIVE_TIMEOUT.
    pub keepalive_scale: f64,
    /// The backend's Twilio budget in seconds, unscaled, when it must differ from the profile's
    /// (to show what happens when it exceeds nginx's read timeout, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub twilio_timeout_secs: Option<f64>,
    /// The backend's slow-download warning threshold in seconds, unscaled, when the scaled one
    /// (10 s × `scale`) is too tight: a large recording fetched at full speed can take longer
    /// than 1 s on a loaded machine, and the warning would then depend on load, not on a fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_download_secs: Option<f64>,
}

impl Default for Timeouts {
    fn default() -> Self {
        // 300 s → 30 s, 60 s → 6 s, Twilio 30 s → 3 s, slow download 10 s → 1 s: fast, every
        // ratio kept, and wide margins around each threshold on a loaded machine for recordings
        // of a few MB. A scenario that downloads tens of MB sets `slow_download_secs`.
        Timeouts {
            scale: 0.1,
            keepalive_scale: 1.0,
            twilio_timeout_secs: None,
            slow_download_secs: None,
        }
    }
}

/// Which backend the stack runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum BackendSpec {
    /// `recordings-backend` from this workspace.
    #[default]
    Reference,
    /// Another backend, from a stack file.
    File(Box<crate::backend::StackFile>),
}

impl BackendSpec {
    /// `reference`, or the stack file's name.
    pub fn name(&self) -> &str {
        match self {
            BackendSpec::Reference => "reference",
            BackendSpec::File(f) => &f.name,
        }
    }
}

/// What a stack is made of.
#[derive(Debug, Clone)]
pub struct StackSpec {
    /// nginx config and backend keep-alive.
    pub profile: Profile,
    /// Processes or containers.
    pub runtime: Runtime,
    /// Which backend.
    pub backend: BackendSpec,
    /// Timeout scaling.
    pub timeouts: Timeouts,
    /// Folder holding `nginx.conf` and `nginx.legacy.conf`.
    pub docker_dir: PathBuf,
    /// Extra environment for the backend (overrides the harness's).
    pub backend_env: Vec<(String, String)>,
}

impl StackSpec {
    /// A stack of `profile` with the workspace's configs and default timeouts.
    pub fn new(profile: Profile) -> Self {
        StackSpec {
            profile,
            runtime: Runtime::Processes,
            backend: BackendSpec::Reference,
            timeouts: Timeouts::default(),
            docker_dir: crate::locate::workspace_dir().join("docker"),
            backend_env: Vec::new(),
        }
    }

    /// With these timeouts.
    #[must_use]
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Under this runtime.
    #[must_use]
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = runtime;
        self
    }

    /// With this backend.
    #[must_use]
    pub fn backend(mut self, backend: BackendSpec) -> Self {
        self.backend = backend;
        self
    }

    /// The nginx config this stack deploys: the stack file's for its profile, else the
    /// profile's file in `docker_dir`.
    pub fn nginx_config(&self) -> PathBuf {
        if let BackendSpec::File(f) = &self.backend {
            let own = match self.profile {
                Profile::Fixed => &f.nginx,
                Profile::Legacy => &f.nginx_legacy,
            };
            if let Some(own) = own {
                return f.dir.join(own);
            }
        }
        self.docker_dir.join(self.profile.config_file())
    }

    /// The backend's keep-alive before scaling, in seconds: a stack file's own under `fixed`,
    /// else the profile's (see [`Profile::backend_keep_alive_secs`]).
    pub fn backend_keep_alive_secs(&self, reference_bin: Option<&Path>) -> f64 {
        match (&self.backend, reference_bin) {
            (BackendSpec::File(f), _) if self.profile == Profile::Fixed => {
                f.backend.keep_alive_secs.unwrap_or(75.0)
            }
            (_, Some(bin)) => self.profile.backend_keep_alive_secs(bin),
            _ => Profile::Legacy.backend_keep_alive_secs(Path::new("")),
        }
    }
}
