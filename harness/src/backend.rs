//! Backends the harness can start: the workspace's `recordings-backend`, or any other program
//! described by a stack file (bring your own backend, no Rust needed).
//!
//! A stack file (TOML) names the command, its working directory, how it learns its port and its
//! Twilio settings, its health URL, and optionally the nginx configs to use:
//!
//! ```toml
//! name = "uvicorn"
//! [backend]
//! command = ["python3", "-m", "uvicorn", "app:app", "--fd", "{fd}", "--timeout-keep-alive", "{keep_alive}"]
//! cwd = "."                      # relative to the stack file
//! listen = "fd"                  # the harness binds the port and passes the socket as {fd}
//! health = "/healthz"
//! [backend.env]                  # default: the reference backend's variable names
//! TWILIO_ACCOUNT_SID = "{twilio_account_sid}"
//! ```

use crate::error::HarnessError;
use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a backend gets its listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenMode {
    /// It binds `127.0.0.1:0` itself (`{bind}` is `127.0.0.1:0`) and logs `listening on http://ADDR`
    /// (or what `listen_regex` matches); the harness reads the address from its log.
    #[default]
    Log,
    /// The harness binds an OS-chosen port and passes the socket as file descriptor `{fd}`.
    Fd,
}

/// The `[backend]` table of a stack file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandBackend {
    /// Program and arguments; placeholders are filled in (see [`Placeholders`]).
    pub command: Vec<String>,
    /// Working directory, relative to the stack file (default: its folder).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// How it gets its socket.
    #[serde(default)]
    pub listen: ListenMode,
    /// With `listen = "log"`: a regex whose first group is `HOST:PORT`.
    #[serde(default)]
    pub listen_regex: Option<String>,
    /// Health URL path (default `/healthz`).
    #[serde(default = "healthz")]
    pub health: String,
    /// Environment (default: the reference backend's contract, filled in).
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Its keep-alive timeout in the fixed profile, in seconds (default 75).
    #[serde(default)]
    pub keep_alive_secs: Option<f64>,
}

fn healthz() -> String {
    "/healthz".into()
}

/// A stack file: another backend, and optionally other nginx configs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackFile {
    /// Short name; snapshots of this stack are named `{scenario}@{name}`.
    pub name: String,
    /// The backend.
    pub backend: CommandBackend,
    /// The fixed profile's nginx config (default: the project's `nginx.conf`, else the carried one).
    #[serde(default)]
    pub nginx: Option<PathBuf>,
    /// The legacy profile's nginx config (default: the project's `nginx.legacy.conf`, else the carried one).
    #[serde(default)]
    pub nginx_legacy: Option<PathBuf>,
    /// The stock profile's nginx config (default: the project's `nginx.stock.conf`, else the carried one).
    #[serde(default)]
    pub nginx_stock: Option<PathBuf>,
    /// The hardened profile's nginx config (default: the project's `nginx.hardened.conf`, else the carried one).
    #[serde(default)]
    pub nginx_hardened: Option<PathBuf>,
    /// The folder the file is in (paths are relative to it).
    #[serde(skip)]
    pub dir: PathBuf,
    /// The file itself, as it was named when loaded.
    #[serde(skip)]
    pub path: PathBuf,
}

impl StackFile {
    /// Reads a stack file, naming the file and field on error.
    pub fn load(path: &Path) -> Result<Self, HarnessError> {
        let text = std::fs::read_to_string(path)
            .map_err(HarnessError::io(format!("read {}", path.display())))?;
        let mut file: StackFile =
            crate::toml_file::parse(&path.display().to_string(), &text, |_, _| None)?;
        if file.backend.command.is_empty() {
            return Err(HarnessError::Config {
                file: path.display().to_string(),
                line: 0,
                message: "backend.command is empty".into(),
            });
        }
        file.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        file.path = path.to_path_buf();
        Ok(file)
    }
}

/// The timing values a scenario imposes on a backend (scaled with the stack's timeouts).
#[derive(Debug, Clone, Copy, Default)]
pub struct TimingValues {
    /// `{keep_alive}` (`{keep_alive_int}`: rounded up to whole seconds).
    pub keep_alive: f64,
    /// `{graceful_timeout}` (`{graceful_timeout_int}`): drain time on SIGTERM.
    pub graceful_timeout: f64,
    /// `{slow_download}`: the slow-download threshold.
    pub slow_download: f64,
    /// `{twilio_timeout}`: the Twilio budget.
    pub twilio_timeout: f64,
}

/// The placeholders that impose timing: refused where a backend runs as deployed.
pub const TIMING_PLACEHOLDERS: &[&str] = &[
    "{keep_alive}",
    "{keep_alive_int}",
    "{graceful_timeout}",
    "{graceful_timeout_int}",
    "{slow_download}",
    "{twilio_timeout}",
];

/// Values the harness fills into a backend's command and environment.
#[derive(Debug, Clone, Default)]
pub struct Placeholders {
    /// `{twilio_account_sid}`, `{twilio_auth_token}`, `{twilio_api_base}`.
    pub twilio: (String, String, String),
    /// `{recordings_dir}`: a cache directory of its own.
    pub recordings_dir: PathBuf,
    /// `{public_url}`: nginx's URL.
    pub public_url: String,
    /// The timing values; `None` where the backend runs as deployed (its own defaults).
    pub timing: Option<TimingValues>,
    /// `{sandbox}`.
    pub sandbox: PathBuf,
}

impl Placeholders {
    /// `s` with every placeholder filled in; `Err` names a timing placeholder that has no value.
    fn fill(&self, s: &str, bind: &str, fd: Option<i32>) -> Result<String, String> {
        let mut out = s
            .replace("{twilio_account_sid}", &self.twilio.0)
            .replace("{twilio_auth_token}", &self.twilio.1)
            .replace("{twilio_api_base}", &self.twilio.2)
            .replace(
                "{recordings_dir}",
                &self.recordings_dir.display().to_string(),
            )
            .replace("{public_url}", &self.public_url)
            .replace("{sandbox}", &self.sandbox.display().to_string())
            .replace("{bind}", bind)
            .replace("{fd}", &fd.map(|f| f.to_string()).unwrap_or_default());
        match &self.timing {
            Some(t) => {
                let int = |v: f64| (v.ceil() as u64).to_string();
                out = out
                    .replace("{keep_alive_int}", &int(t.keep_alive))
                    .replace("{keep_alive}", &t.keep_alive.to_string())
                    .replace("{graceful_timeout_int}", &int(t.graceful_timeout))
                    .replace("{graceful_timeout}", &t.graceful_timeout.to_string())
                    .replace("{slow_download}", &t.slow_download.to_string())
                    .replace("{twilio_timeout}", &t.twilio_timeout.to_string());
            }
            None => {
                if let Some(p) = TIMING_PLACEHOLDERS.iter().find(|p| out.contains(*p)) {
                    return Err(p.to_string());
                }
            }
        }
        Ok(out)
    }

    /// The reference backend's environment contract, as `{placeholder}` templates.
    pub fn contract() -> BTreeMap<String, String> {
        [
            ("BIND", "{bind}"),
            ("TWILIO_ACCOUNT_SID", "{twilio_account_sid}"),
            ("TWILIO_AUTH_TOKEN", "{twilio_auth_token}"),
            ("TWILIO_API_BASE", "{twilio_api_base}"),
            ("RECORDINGS_DIR", "{recordings_dir}"),
            ("PUBLIC_URL", "{public_url}"),
            ("KEEP_ALIVE_TIMEOUT", "{keep_alive}"),
            ("GRACEFUL_SHUTDOWN_TIMEOUT", "{graceful_timeout}"),
            ("SLOW_DOWNLOAD_SECS", "{slow_download}"),
            ("TWILIO_TIMEOUT_SECS", "{twilio_timeout}"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

/// Everything needed to start (and start again) one backend process.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Program and arguments, filled in.
    pub command: Vec<String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Environment, filled in.
    pub env: Vec<(String, String)>,
    /// Socket handed over as a file descriptor (`listen = "fd"`), kept across restarts.
    pub listener: Option<Arc<TcpListener>>,
    /// With the log mode: where the address is read from.
    pub listen_regex: Regex,
    /// Health path.
    pub health: String,
    /// The listener is handed to the first process only (nginx); a backend's is kept across
    /// restarts, so its port stays the same.
    pub hand_over_once: bool,
}

impl Launch {
    /// The launch of a backend from its spec and the stack's values. Restarts with log mode
    /// bind the same address again.
    pub fn new(
        command: &[String],
        cwd: Option<PathBuf>,
        env: &BTreeMap<String, String>,
        mode: ListenMode,
        listen_regex: Option<&str>,
        health: &str,
        values: &Placeholders,
    ) -> Result<Self, HarnessError> {
        let listener = match mode {
            ListenMode::Fd => Some(Arc::new(
                TcpListener::bind("127.0.0.1:0")
                    .map_err(HarnessError::io("bind the backend's socket"))?,
            )),
            ListenMode::Log => None,
        };
        let fd = listener.as_ref().map(|l| l.as_raw_fd());
        let bind = "127.0.0.1:0";
        let regex = listen_regex.unwrap_or(DEFAULT_LISTEN_REGEX);
        let as_deployed = |p: String| {
            HarnessError::Config {
            file: "stack file".into(),
            line: 0,
            message: format!(
                "{p} has no value here: the backend runs as deployed, with its own timeouts; write the value your deployment uses"
            ),
        }
        };
        // As deployed, the contract's timing variables are left unset (the backend's defaults).
        let env = env
            .iter()
            .filter(|(_, v)| values.timing.is_some() || !TIMING_PLACEHOLDERS.contains(&v.as_str()));
        Ok(Launch {
            command: command
                .iter()
                .map(|c| values.fill(c, bind, fd).map_err(as_deployed))
                .collect::<Result<_, _>>()?,
            cwd,
            env: env
                .map(|(k, v)| Ok((k.clone(), values.fill(v, bind, fd).map_err(as_deployed)?)))
                .collect::<Result<_, HarnessError>>()?,
            listener,
            listen_regex: Regex::new(regex).map_err(|e| HarnessError::Config {
                file: "stack file".into(),
                line: 0,
                message: format!("backend.listen_regex {regex:?}: {e}"),
            })?,
            health: health.to_string(),
            hand_over_once: false,
        })
    }

    /// A launch that hands `listener` over to the process it starts (nginx), once.
    pub fn handing_over(
        command: Vec<String>,
        env: Vec<(String, String)>,
        listener: TcpListener,
    ) -> Launch {
        Launch {
            command,
            cwd: None,
            env,
            listener: Some(Arc::new(listener)),
            listen_regex: Regex::new(DEFAULT_LISTEN_REGEX).expect("valid regex"),
            health: String::new(),
            hand_over_once: true,
        }
    }

    /// After the first start: the address it bound (`{bind}` was `127.0.0.1:0`) is bound
    /// again on a restart, so nginx's upstream stays right.
    pub fn pin_address(&mut self, addr: SocketAddr) {
        let bind = addr.to_string();
        for (k, v) in self.env.iter_mut() {
            if k == "BIND" && v == "127.0.0.1:0" {
                *v = bind.clone();
            }
        }
        for a in self.command.iter_mut() {
            if a == "127.0.0.1:0" {
                *a = bind.clone();
            }
        }
    }
}

/// How a backend in `listen = "log"` mode says where it listens, by default.
pub const DEFAULT_LISTEN_REGEX: &str = r"listening on http://([0-9.]+:\d+)";
