//! [`StackSpec`]: what a stack is made of (profile, backend, timeouts), as data; the
//! [`crate::Runtime`] says how it runs and [`crate::Stack`] runs it.

use crate::runtime::Runtime;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Which nginx config and backend settings a stack runs with: a row of [`PROFILES`].
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
    /// `docker/nginx.conf`; the backend's own keep-alive (75 s), above nginx's upstream 60 s.
    Fixed,
    /// `docker/nginx.legacy.conf`; backend keep-alive 5 s (uvicorn's default), below nginx's 60 s.
    Legacy,
    /// `docker/nginx.stock.conf`, what teams start from (an upstream block and `proxy_pass`,
    /// nothing else); backend keep-alive 5 s (uvicorn's default).
    Stock,
    /// `docker/nginx.hardened.conf`: every fix of `fixed`, two backend instances deployed one at
    /// a time (nginx moves to the other on a refused connect), no upstream keep-alive for the
    /// webhook (a POST), and cached recordings sent by nginx itself (`X-Accel-Redirect`).
    Hardened,
}

/// The backend's keep-alive under a profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeepAlive {
    /// The backend's own default (so a backend whose default drifts below nginx's is caught).
    BackendDefault,
    /// This many seconds.
    Secs(f64),
}

/// What a profile deploys.
#[derive(Debug, Clone, Copy)]
pub struct ProfileRow {
    /// The profile.
    pub profile: Profile,
    /// Its name in files and snapshots.
    pub name: &'static str,
    /// Its nginx config under `docker/`.
    pub config_file: &'static str,
    /// The backend's keep-alive.
    pub keep_alive: KeepAlive,
    /// Backend instances behind nginx's upstream (each with its own hop fault point).
    pub instances: usize,
    /// Settings the reference backend gets under this profile.
    pub backend_env: &'static [(&'static str, &'static str)],
    /// How long a backend drains in-flight responses on SIGTERM, in seconds before scaling
    /// (its GRACEFUL_SHUTDOWN_TIMEOUT).
    pub graceful_timeout_secs: f64,
}

/// Every profile, as data: they differ in nothing else.
pub const PROFILES: [ProfileRow; 4] = [
    ProfileRow {
        profile: Profile::Fixed,
        name: "fixed",
        config_file: "nginx.conf",
        keep_alive: KeepAlive::BackendDefault,
        instances: 1,
        backend_env: &[],
        graceful_timeout_secs: 30.0,
    },
    ProfileRow {
        profile: Profile::Legacy,
        name: "legacy",
        config_file: "nginx.legacy.conf",
        keep_alive: KeepAlive::Secs(5.0),
        instances: 1,
        backend_env: &[],
        graceful_timeout_secs: 30.0,
    },
    ProfileRow {
        profile: Profile::Stock,
        name: "stock",
        config_file: "nginx.stock.conf",
        keep_alive: KeepAlive::Secs(5.0),
        instances: 1,
        backend_env: &[],
        graceful_timeout_secs: 30.0,
    },
    ProfileRow {
        profile: Profile::Hardened,
        name: "hardened",
        config_file: "nginx.hardened.conf",
        keep_alive: KeepAlive::BackendDefault,
        instances: 2,
        backend_env: &[("ACCEL_REDIRECT", "/_recordings/")],
        // A deploy waits for every download under way (up to nginx's read timeout), so none
        // is cut.
        graceful_timeout_secs: 300.0,
    },
];

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 4] = [
        Profile::Fixed,
        Profile::Legacy,
        Profile::Stock,
        Profile::Hardened,
    ];

    /// The profiles a scenario runs under unless it names its own.
    pub const DEFAULT: [Profile; 3] = [Profile::Fixed, Profile::Legacy, Profile::Hardened];

    /// Its row.
    pub fn row(self) -> &'static ProfileRow {
        PROFILES
            .iter()
            .find(|r| r.profile == self)
            .expect("every profile has a row")
    }

    /// The config file under `docker/`.
    pub fn config_file(self) -> &'static str {
        self.row().config_file
    }

    /// The backend's `KEEP_ALIVE_TIMEOUT` before scaling, in seconds (a backend default as its
    /// `--help` states it, 75 s when it does not).
    pub fn backend_keep_alive_secs(self, backend: &Path) -> f64 {
        match self.row().keep_alive {
            KeepAlive::BackendDefault => {
                crate::locate::backend_default(backend, "--keep-alive-timeout").unwrap_or(75.0)
            }
            KeepAlive::Secs(s) => s,
        }
    }

    /// `fixed`, `legacy`, `stock`, `hardened`.
    pub fn name(self) -> &'static str {
        self.row().name
    }
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PROFILES
            .iter()
            .find(|r| r.name == s)
            .map(|r| r.profile)
            .ok_or_else(|| {
                let names: Vec<&str> = PROFILES.iter().map(|r| r.name).collect();
                format!("unknown profile {s:?} (profiles: {})", names.join(", "))
            })
    }
}

/// Scaling of the stack's timeouts (nginx's and the backend's together, ratios kept).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Factor for request timeouts: nginx's proxy_read/send/connect_timeout, the backend's
    /// Twilio budget (30 s), drain time (30 s) and, in a scenario that arms a Twilio fault, its
    /// slow-download threshold (10 s).
    pub scale: f64,
    /// Factor for keep-alive timeouts: nginx's upstream/client keepalive_timeout and the
    /// backend's KEEP_ALIVE_TIMEOUT.
    pub keepalive_scale: f64,
    /// Factor for nginx's proxy_next_upstream_timeout, when it must differ from `scale`: the
    /// window in which nginx moves a failed attempt to another instance bounds how long the
    /// attempt may take to fail, which on a loaded machine is load, not a timeout being shown
    /// (the soak keeps it unscaled, 1.0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_upstream_scale: Option<f64>,
    /// The backend's Twilio budget in seconds, unscaled, when it must differ from the profile's
    /// (to show what happens when it exceeds nginx's read timeout, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub twilio_timeout_secs: Option<f64>,
    /// The backend's slow-download warning threshold in seconds, unscaled. Unset, it is
    /// 10 s × `scale` in a scenario that arms a Twilio fault, and the backend's real 10 s in one
    /// that arms none: a download at full speed can take longer than 1 s on a loaded machine,
    /// and the warning would then depend on load, not on a fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_download_secs: Option<f64>,
}

impl Timeouts {
    /// The backend's real slow-download threshold, in seconds, before scaling.
    pub const SLOW_DOWNLOAD_SECS: f64 = 10.0;

    /// The slow-download threshold the backend is given: the one set, else the real one scaled.
    pub fn slow_download(&self) -> f64 {
        self.slow_download_secs
            .unwrap_or(Self::SLOW_DOWNLOAD_SECS * self.scale)
    }

    /// For a scenario that arms no Twilio fault: the backend's real slow-download threshold
    /// (unscaled) unless one is set, since there a download's time is the machine's load.
    #[must_use]
    pub fn unfaulted(self) -> Self {
        Timeouts {
            slow_download_secs: self.slow_download_secs.or(Some(Self::SLOW_DOWNLOAD_SECS)),
            ..self
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        // 300 s → 30 s, 60 s → 6 s, Twilio 30 s → 3 s, slow download 10 s → 1 s (with a Twilio
        // fault armed; 10 s without: a 40 kB download through the uvicorn example took over 1 s
        // in a loaded CI run): fast, every ratio kept.
        Timeouts {
            scale: 0.1,
            keepalive_scale: 1.0,
            next_upstream_scale: None,
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
    /// Which nginx line: `None` is the host's nginx under processes, the default line's image
    /// under containers.
    pub nginx: Option<crate::nginx::NginxLine>,
    /// Which backend.
    pub backend: BackendSpec,
    /// Timeout scaling.
    pub timeouts: Timeouts,
    /// A folder of nginx configs instead of the current project's.
    pub configs_dir: Option<PathBuf>,
    /// Extra environment for the backend (overrides the harness's).
    pub backend_env: Vec<(String, String)>,
    /// This nginx config instead of the profile's (`harness diagnose --nginx`).
    pub nginx_config: Option<PathBuf>,
    /// The backend runs as deployed: no timing value is templated into it (it keeps its own
    /// keep-alive and timeouts), and nothing is scaled.
    pub as_deployed: bool,
}

impl StackSpec {
    /// A stack of `profile` with the workspace's configs and default timeouts.
    pub fn new(profile: Profile) -> Self {
        StackSpec {
            profile,
            runtime: Runtime::Processes,
            nginx: None,
            backend: BackendSpec::Reference,
            timeouts: Timeouts::default(),
            configs_dir: None,
            backend_env: Vec::new(),
            nginx_config: None,
            as_deployed: false,
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

    /// With nginx of this line (`None`: the runtime's default).
    #[must_use]
    pub fn nginx(mut self, line: Option<crate::nginx::NginxLine>) -> Self {
        self.nginx = line;
        self
    }

    /// With this backend.
    #[must_use]
    pub fn backend(mut self, backend: BackendSpec) -> Self {
        self.backend = backend;
        self
    }

    /// The nginx config this stack deploys: `nginx_config`, else the stack file's for its
    /// profile, else the profile's file among the project's configs, else the one the harness
    /// carries (outside any project; a `harness.toml` that does not parse is an error).
    pub fn nginx_config(&self) -> Result<NginxConfig, crate::HarnessError> {
        if let Some(own) = &self.nginx_config {
            return Ok(NginxConfig::File(own.clone()));
        }
        if let BackendSpec::File(f) = &self.backend {
            let own = match self.profile {
                Profile::Fixed => &f.nginx,
                Profile::Legacy => &f.nginx_legacy,
                Profile::Stock => &f.nginx_stock,
                Profile::Hardened => &f.nginx_hardened,
            };
            if let Some(own) = own {
                return Ok(NginxConfig::File(f.dir.join(own)));
            }
        }
        let name = self.profile.config_file();
        let dir = match (&self.configs_dir, crate::project::current()) {
            (Some(dir), _) => Some(dir.as_path()),
            (None, Ok(project)) => Some(project.configs.as_path()),
            (None, Err(crate::HarnessError::NoProject { .. })) => None,
            (None, Err(e)) => return Err(e),
        };
        Ok(match dir {
            Some(dir) if dir.join(name).is_file() => NginxConfig::File(dir.join(name)),
            _ => NginxConfig::Carried(name),
        })
    }

    /// How many backend instances run behind nginx: the profile's (one behind a config of
    /// one's own).
    pub fn instances(&self) -> usize {
        match self.nginx_config {
            Some(_) => 1,
            None => self.profile.row().instances,
        }
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

/// Where a stack's nginx config comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum NginxConfig {
    /// A file.
    File(PathBuf),
    /// The profile's config the harness carries, by its file name (see
    /// [`crate::assets::NGINX_CONFIGS`]).
    Carried(&'static str),
}

impl NginxConfig {
    /// What to call it in messages: the file's path, or `(carried) nginx.conf`.
    pub fn label(&self) -> String {
        match self {
            NginxConfig::File(p) => p.display().to_string(),
            NginxConfig::Carried(name) => format!("(carried) {name}"),
        }
    }

    /// Its text.
    pub fn read(&self) -> Result<String, crate::HarnessError> {
        match self {
            NginxConfig::File(p) => std::fs::read_to_string(p)
                .map_err(crate::HarnessError::io(format!("read {}", p.display()))),
            NginxConfig::Carried(name) => crate::assets::nginx_config(name)
                .map(str::to_string)
                .ok_or_else(|| crate::HarnessError::Config {
                    file: (*name).into(),
                    line: 0,
                    message: "the harness carries no config of this name".into(),
                }),
        }
    }
}
