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
use crate::process::{ChildGuard, LogFile};
use regex::Regex;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// The fixed profile's nginx config (default: docker/nginx.conf).
    #[serde(default)]
    pub nginx: Option<PathBuf>,
    /// The legacy profile's nginx config (default: docker/nginx.legacy.conf).
    #[serde(default)]
    pub nginx_legacy: Option<PathBuf>,
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
        let de = toml::Deserializer::new(&text);
        let mut file: StackFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let (line, column) = inner
                .span()
                .map(|s| {
                    let before = &text[..s.start.min(text.len())];
                    (
                        before.matches('\n').count() + 1,
                        before.len() - before.rfind('\n').map(|p| p + 1).unwrap_or(0) + 1,
                    )
                })
                .unwrap_or((0, 0));
            HarnessError::Scenario {
                file: path.display().to_string(),
                line,
                column,
                field,
                message: inner.message().to_string(),
                hint: None,
            }
        })?;
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

/// Values the harness fills into a backend's command and environment.
#[derive(Debug, Clone, Default)]
pub struct Placeholders {
    /// `{twilio_account_sid}`, `{twilio_auth_token}`, `{twilio_api_base}`.
    pub twilio: (String, String, String),
    /// `{recordings_dir}`: a cache directory of its own.
    pub recordings_dir: PathBuf,
    /// `{public_url}`: nginx's URL.
    pub public_url: String,
    /// `{keep_alive}`, `{graceful_timeout}`, `{slow_download}`, `{twilio_timeout}`: seconds
    /// (`{keep_alive_int}` and `{graceful_timeout_int}`: rounded up to whole seconds).
    pub keep_alive: f64,
    /// Drain time on SIGTERM.
    pub graceful_timeout: f64,
    /// Slow-download threshold.
    pub slow_download: f64,
    /// Twilio budget.
    pub twilio_timeout: f64,
    /// `{sandbox}`.
    pub sandbox: PathBuf,
}

impl Placeholders {
    fn fill(&self, s: &str, bind: &str, fd: Option<i32>) -> String {
        s.replace("{twilio_account_sid}", &self.twilio.0)
            .replace("{twilio_auth_token}", &self.twilio.1)
            .replace("{twilio_api_base}", &self.twilio.2)
            .replace(
                "{recordings_dir}",
                &self.recordings_dir.display().to_string(),
            )
            .replace("{public_url}", &self.public_url)
            .replace(
                "{keep_alive_int}",
                &(self.keep_alive.ceil() as u64).to_string(),
            )
            .replace("{keep_alive}", &self.keep_alive.to_string())
            .replace(
                "{graceful_timeout_int}",
                &(self.graceful_timeout.ceil() as u64).to_string(),
            )
            .replace("{graceful_timeout}", &self.graceful_timeout.to_string())
            .replace("{slow_download}", &self.slow_download.to_string())
            .replace("{twilio_timeout}", &self.twilio_timeout.to_string())
            .replace("{sandbox}", &self.sandbox.display().to_string())
            .replace("{bind}", bind)
            .replace("{fd}", &fd.map(|f| f.to_string()).unwrap_or_default())
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
        let regex = listen_regex.unwrap_or(r"listening on http://([0-9.]+:\d+)");
        Ok(Launch {
            command: command.iter().map(|c| values.fill(c, bind, fd)).collect(),
            cwd,
            env: env
                .iter()
                .map(|(k, v)| (k.clone(), values.fill(v, bind, fd)))
                .collect(),
            listener,
            listen_regex: Regex::new(regex)
                .map_err(|e| HarnessError::Other(format!("listen_regex {regex:?}: {e}")))?,
            health: health.to_string(),
        })
    }
}

/// A running backend.
pub struct RunningBackend {
    /// Its process (group).
    pub process: ChildGuard,
    /// Where it listens.
    pub addr: SocketAddr,
    /// How to start it again (same address).
    pub launch: Launch,
}

/// Starts a backend and waits until its health URL answers 200.
pub async fn start(
    launch: &Launch,
    log: &LogFile,
    deadline: Duration,
) -> Result<RunningBackend, HarnessError> {
    let mut cmd = Command::new(&launch.command[0]);
    cmd.args(&launch.command[1..])
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for key in ["HOME", "LANG", "VIRTUAL_ENV", "PYTHONPATH"] {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    if let Some(dir) = &launch.cwd {
        cmd.current_dir(dir);
    }
    if let Some(listener) = &launch.listener {
        crate::process::inherit_fd(&mut cmd, listener.as_raw_fd());
    }
    let offset = log.len();
    let mut process = ChildGuard::spawn("backend", cmd, log.path())?;
    let start = Instant::now();
    let fail = |process: &mut ChildGuard, what: &str| -> Option<HarnessError> {
        let logs = format!(
            "--- backend ({}) ---\n{}",
            log.path().display(),
            log.tail(25)
        );
        if let Some(status) = process.try_exit() {
            return Some(HarnessError::Exited {
                component: "backend".into(),
                status: status.to_string(),
                logs,
            });
        }
        (start.elapsed() > deadline).then(|| HarnessError::NotReady {
            component: "backend".into(),
            url: what.to_string(),
            waited: start.elapsed(),
            logs,
        })
    };
    let addr = match &launch.listener {
        Some(l) => l
            .local_addr()
            .map_err(HarnessError::io("backend socket address"))?,
        None => loop {
            let (lines, _) = log.lines_since(offset);
            if let Some(addr) = lines.iter().find_map(|l| {
                launch
                    .listen_regex
                    .captures(l)
                    .and_then(|c| c.get(1))
                    .and_then(|m| m.as_str().parse().ok())
            }) {
                break addr;
            }
            if let Some(e) = fail(
                &mut process,
                &format!("(a log line matching {})", launch.listen_regex),
            ) {
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        },
    };
    let url = format!("http://{addr}{}", launch.health);
    let client = reqwest::Client::new();
    loop {
        if let Ok(r) = client
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            if r.status().is_success() {
                break;
            }
        }
        if let Some(e) = fail(&mut process, &url) {
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut launch = launch.clone();
    // Restarts bind the same address again, so nginx's upstream stays right.
    let bind = addr.to_string();
    for (k, v) in launch.env.iter_mut() {
        if k == "BIND" && v == "127.0.0.1:0" {
            *v = bind.clone();
        }
    }
    for a in launch.command.iter_mut() {
        if a == "127.0.0.1:0" {
            *a = bind.clone();
        }
    }
    Ok(RunningBackend {
        process,
        addr,
        launch,
    })
}
