//! [`Stack`]: real nginx + a backend + mock-twilio, each on an OS-chosen loopback port, in a
//! sandbox of its own. [`StackSpec`] says *what* runs; [`Runtime`] says *how*.

use crate::backend::{Launch, ListenMode, Placeholders, RunningBackend};
use crate::error::HarnessError;
use crate::nginx::{self, Nginx, Render};
use crate::process::LogFile;
use mock_twilio::{FaultProxy, FaultSet, Journal, MockTwilio, ProxyConfig};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
            Profile::Fixed => backend_default(backend, "--keep-alive-timeout").unwrap_or(75.0),
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

/// How the stack's nginx and backend run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// Local processes (the default).
    #[default]
    Processes,
    /// Docker containers: nginx and the reference backend on a network of their own
    /// (see [`crate::containers`]); a stack file's backend still runs as a process.
    Containers,
}

impl Runtime {
    /// From `HARNESS_RUNTIME` (`processes` by default).
    pub fn from_env() -> Result<Self, HarnessError> {
        match std::env::var("HARNESS_RUNTIME").as_deref() {
            Err(_) | Ok("") | Ok("processes") => Ok(Runtime::Processes),
            Ok("containers") => Ok(Runtime::Containers),
            Ok(other) => Err(HarnessError::Other(format!(
                "HARNESS_RUNTIME={other:?} is not a runtime (runtimes: processes, containers)"
            ))),
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
            docker_dir: workspace_dir().join("docker"),
            backend_env: Vec::new(),
        }
    }

    /// With these timeouts.
    #[must_use]
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }
}

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

/// How long a component may take to become ready.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);

/// The sandbox directory: removed on drop unless `HARNESS_KEEP=1`.
struct Sandbox {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let keep = std::env::var("HARNESS_KEEP").is_ok_and(|v| v == "1");
        if let Some(dir) = self.dir.take() {
            if keep {
                eprintln!("HARNESS_KEEP=1: sandbox kept at {}", dir.keep().display());
            }
        }
    }
}

/// A running stack. Dropping it stops every process and removes the sandbox, also on panic.
/// Field order is teardown order: nginx first, sandbox last.
#[must_use = "the stack stops when dropped"]
pub struct Stack {
    /// The containers runtime's network and containers (removed first on drop).
    containers: Option<ContainerParts>,
    nginx: Nginx,
    hop: Option<FaultProxy>,
    backend: Option<RunningBackend>,
    stopped_backend: Option<Launch>,
    twilio: MockTwilio,
    hop_addr: SocketAddr,
    /// While the hop is down, a socket bound (not listening) to its address: connects are
    /// refused, and no outgoing connection can take the port before the hop binds it again.
    hop_hold: Option<tokio::net::TcpSocket>,
    /// Connections accepted by earlier incarnations of the hop (before backend restarts).
    hop_connections_before: u64,
    hop_faults: Arc<FaultSet>,
    hop_journal: Arc<Journal>,
    spec: StackSpec,
    nginx_version: String,
    client: reqwest::Client,
    sandbox: Sandbox,
}

/// Binds (without listening) a socket to `addr` with SO_REUSEADDR: the port stays ours, connects
/// to it are refused, and a listener may bind it again while this is held.
fn hold_port(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// Renders the profile's (or the stack file's) nginx config for this stack into
/// `sandbox/nginx.conf` and returns its path.
fn render_nginx_conf(
    spec: &StackSpec,
    sandbox: &Path,
    www: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
) -> Result<PathBuf, HarnessError> {
    let source = match (&spec.backend, spec.profile) {
        (BackendSpec::File(f), Profile::Fixed) if f.nginx.is_some() => {
            f.dir.join(f.nginx.as_ref().unwrap())
        }
        (BackendSpec::File(f), Profile::Legacy) if f.nginx_legacy.is_some() => {
            f.dir.join(f.nginx_legacy.as_ref().unwrap())
        }
        _ => spec.docker_dir.join(spec.profile.config_file()),
    };
    let text = std::fs::read_to_string(&source)
        .map_err(HarnessError::io(format!("read {}", source.display())))?;
    let rendered = nginx::render(
        &source.display().to_string(),
        &text,
        &Render {
            listen,
            upstream,
            sandbox: sandbox.to_path_buf(),
            static_root: www.to_path_buf(),
            timeout_scale: spec.timeouts.scale,
            keepalive_scale: spec.timeouts.keepalive_scale,
        },
    )?;
    let conf = sandbox.join("nginx.conf");
    std::fs::write(&conf, rendered)
        .map_err(HarnessError::io(format!("write {}", conf.display())))?;
    Ok(conf)
}

/// Waits until the backend container answers `/healthz` on its network address.
async fn wait_backend_container(
    cs: &crate::containers::ContainerStack,
    c: &crate::containers::Container,
    log: &LogFile,
) -> Result<SocketAddr, HarnessError> {
    let start = Instant::now();
    let client = reqwest::Client::new();
    loop {
        if let Err(status) = cs.running(c).await {
            return Err(HarnessError::Exited {
                component: format!("backend container {}", c.name),
                status,
                logs: log.tail(25),
            });
        }
        if let Ok(ip) = cs.ip(c).await {
            let addr = SocketAddr::new(ip, BACKEND_CONTAINER_PORT);
            let url = format!("http://{addr}/healthz");
            if client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(addr);
            }
            if start.elapsed() > READY_DEADLINE {
                return Err(HarnessError::NotReady {
                    component: format!("backend container {}", c.name),
                    url,
                    waited: start.elapsed(),
                    logs: log.tail(25),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What the containers runtime adds to a stack.
struct ContainerParts {
    stack: crate::containers::ContainerStack,
    nginx: crate::containers::Container,
    /// The reference backend's container (a stack file's backend runs as a process).
    backend: Option<crate::containers::Container>,
    /// Its address on the network while it runs.
    backend_addr: Option<SocketAddr>,
}

/// The port the reference backend listens on inside its container.
const BACKEND_CONTAINER_PORT: u16 = 8000;

fn logs_of(parts: &[(&str, &LogFile)]) -> String {
    parts
        .iter()
        .map(|(name, log)| {
            format!(
                "--- {name} ({}) ---\n{}",
                log.path().display(),
                log.tail(25)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Stack {
    /// Starts mock-twilio, the backend, the hop fault point and nginx, and waits until each is ready.
    pub async fn start(spec: StackSpec) -> Result<Stack, HarnessError> {
        let in_containers = spec.runtime == Runtime::Containers;
        // Under containers nginx runs from its image; the host's nginx is not needed.
        let nginx_bin = if in_containers {
            None
        } else {
            Some(nginx::find_nginx()?)
        };
        let reference_bin = match &spec.backend {
            BackendSpec::Reference => Some(find_backend()?),
            BackendSpec::File(_) => None,
        };
        let dir = tempfile::Builder::new()
            .prefix("harness-stack-")
            .tempdir()
            .map_err(HarnessError::io("create sandbox"))?;
        let path = dir.path().to_path_buf();
        // nginx's workers (not root) must reach their temp dirs and the static root.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(HarnessError::io("chmod sandbox"))?;
        let sandbox = Sandbox {
            dir: Some(dir),
            path: path.clone(),
        };
        let www = path.join("www");
        std::fs::create_dir_all(&www).map_err(HarnessError::io("create static root"))?;
        std::fs::write(
            www.join("index.html"),
            "<!doctype html><title>recordings</title>\n",
        )
        .map_err(HarnessError::io("write index.html"))?;
        // The front end's player page, where the `play` step's browser goes.
        std::fs::write(www.join("player.html"), crate::browser::PLAYER_PAGE)
            .map_err(HarnessError::io("write player.html"))?;

        // Containers: a network of its own, the images (built once, cached by content), and
        // mock-twilio and the hop on the network's gateway, where the containers reach the host.
        let mut parts = None;
        let mut images = None;
        let mut host_ip = std::net::IpAddr::from([127, 0, 0, 1]);
        if in_containers {
            let id = path
                .file_name()
                .map(|n| {
                    n.to_string_lossy()
                        .trim_start_matches("harness-stack-")
                        .to_lowercase()
                })
                .unwrap_or_default();
            let cs = crate::containers::ContainerStack::create(&id).await?;
            host_ip = cs.gateway;
            let bin = find_backend()?;
            images = Some(crate::containers::images_once(&bin).await?);
            parts = Some(cs);
        }
        let twilio = MockTwilio::builder()
            .bind(SocketAddr::new(host_ip, 0))
            .start()
            .await
            .map_err(HarnessError::io("start mock-twilio"))?;
        let hop_faults: Arc<FaultSet> = Arc::default();
        let hop_journal: Arc<Journal> = Arc::default();
        let t = spec.timeouts;
        let www_for_render = www.clone();

        // nginx first: the backend must know its public URL (webhook signatures). As a process
        // it gets a socket we bound; as a container, a port Docker publishes.
        let mut nginx_parts = None;
        let (listener, nginx_addr, hop_addr, early_hop) = if let Some(cs) = parts.as_mut() {
            // The hop's address is fixed now (held, not yet listening); it listens once the
            // backend is up.
            let hold = hold_port(SocketAddr::new(host_ip, 0))
                .map_err(HarnessError::io("reserve the hop fault point's address"))?;
            let hop_addr = hold
                .local_addr()
                .map_err(HarnessError::io("hop fault point address"))?;
            let conf = render_nginx_conf(
                &spec,
                &path,
                &www_for_render,
                SocketAddr::from(([0, 0, 0, 0], 80)),
                hop_addr,
            )?;
            std::fs::create_dir_all(path.join("tmp"))
                .map_err(HarnessError::io("create nginx temp dir"))?;
            let sb = path.display().to_string();
            let image = images.as_ref().expect("images").nginx.clone();
            let container = cs
                .run(
                    "nginx",
                    &crate::containers::ContainerSpec {
                        image,
                        // The rendered config already says `daemon off;`.
                        cmd: vec![
                            "nginx".into(),
                            "-p".into(),
                            sb.clone(),
                            "-c".into(),
                            conf.display().to_string(),
                            "-e".into(),
                            format!("{sb}/error.log"),
                        ],
                        env: Vec::new(),
                        binds: vec![format!("{sb}:{sb}")],
                        publish: Some(80),
                        output_file: Some(path.join("nginx.stdout.log")),
                    },
                    &LogFile::new(path.join("nginx.stdout.log")),
                )
                .await?;
            let addr = cs.published(&container, 80).await?;
            nginx_parts = Some(container);
            (None, addr, hop_addr, Some(hold))
        } else {
            let listener = TcpListener::bind("127.0.0.1:0")
                .map_err(HarnessError::io("bind nginx listener"))?;
            let addr = listener
                .local_addr()
                .map_err(HarnessError::io("nginx listener address"))?;
            (
                Some(listener),
                addr,
                SocketAddr::from(([127, 0, 0, 1], 0)),
                None,
            )
        };

        let twilio_budget = t.twilio_timeout_secs.unwrap_or(30.0 * t.scale);
        let keep_alive = match (&spec.backend, &reference_bin) {
            (BackendSpec::File(f), _) if spec.profile == Profile::Fixed => {
                f.backend.keep_alive_secs.unwrap_or(75.0)
            }
            (_, Some(bin)) => spec.profile.backend_keep_alive_secs(bin),
            _ => Profile::Legacy.backend_keep_alive_secs(Path::new("")),
        };
        let values = Placeholders {
            twilio: (
                twilio.account_sid().into(),
                twilio.auth_token().into(),
                twilio.uri(),
            ),
            recordings_dir: path.join("recordings"),
            public_url: format!("http://{nginx_addr}"),
            keep_alive: keep_alive * t.keepalive_scale,
            graceful_timeout: 30.0 * t.scale,
            slow_download: t.slow_download_secs.unwrap_or(10.0 * t.scale),
            twilio_timeout: twilio_budget,
            sandbox: path.clone(),
        };
        let mut launch = match &spec.backend {
            BackendSpec::Reference => Launch::new(
                &[reference_bin
                    .as_ref()
                    .expect("reference backend")
                    .display()
                    .to_string()],
                None,
                &Placeholders::contract(),
                ListenMode::Log,
                None,
                "/healthz",
                &values,
            )?,
            BackendSpec::File(f) => Launch::new(
                &f.backend.command,
                Some(f.dir.join(f.backend.cwd.clone().unwrap_or_default())),
                f.backend.env.as_ref().unwrap_or(&Placeholders::contract()),
                f.backend.listen,
                f.backend.listen_regex.as_deref(),
                &f.backend.health,
                &values,
            )?,
        };
        for (k, v) in &spec.backend_env {
            launch.env.retain(|(name, _)| name != k);
            launch.env.push((k.clone(), v.clone()));
        }
        let backend_log = LogFile::new(path.join("backend.log"));
        let mut backend = None;
        let mut backend_container = None;
        let backend_addr = match (parts.as_mut(), &spec.backend) {
            (Some(cs), BackendSpec::Reference) => {
                // The same environment, but listening on the container's network; the sandbox is
                // mounted at its own path, so RECORDINGS_DIR and friends stay valid.
                let mut env = launch.env.clone();
                env.retain(|(k, _)| k != "BIND");
                env.push(("BIND".into(), format!("0.0.0.0:{BACKEND_CONTAINER_PORT}")));
                let sb = path.display().to_string();
                let image = images.as_ref().expect("images").backend.clone();
                // Our image: its output straight into backend.log. Someone else's: followed.
                let ours = std::env::var_os("HARNESS_BACKEND_IMAGE").is_none();
                let c = cs
                    .run(
                        "backend",
                        &crate::containers::ContainerSpec {
                            image,
                            cmd: if ours {
                                vec!["/usr/local/bin/recordings-backend".into()]
                            } else {
                                Vec::new()
                            },
                            env,
                            binds: vec![format!("{sb}:{sb}")],
                            publish: Some(BACKEND_CONTAINER_PORT),
                            output_file: ours.then(|| backend_log.path().to_path_buf()),
                        },
                        &backend_log,
                    )
                    .await?;
                let addr = wait_backend_container(cs, &c, &backend_log).await?;
                backend_container = Some(c);
                addr
            }
            _ => {
                let b = crate::backend::start(&launch, &backend_log, READY_DEADLINE).await?;
                let addr = b.addr;
                backend = Some(b);
                addr
            }
        };

        // The hop: on the address held for it (containers), or on one the OS picks.
        let bind = early_hop
            .as_ref()
            .map(|_| hop_addr)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let hop = FaultProxy::start_with(
            bind,
            ProxyConfig::new(backend_addr),
            hop_faults.clone(),
            hop_journal.clone(),
        )
        .await
        .map_err(HarnessError::io(format!(
            "bind the hop fault point on {bind}"
        )))?;
        drop(early_hop);
        let hop_addr = hop.addr();

        let nginx = match (listener, nginx_bin.as_ref()) {
            (Some(listener), Some(nginx_bin)) => {
                let conf = render_nginx_conf(&spec, &path, &www, nginx_addr, hop_addr)?;
                nginx::start(nginx_bin, &conf, &path, listener)?
            }
            _ => nginx::Nginx {
                process: None,
                addr: nginx_addr,
                error_log: LogFile::new(path.join("error.log")),
                access_log: LogFile::new(path.join("access.log")),
            },
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("reqwest client");
        let nginx_version = match (&nginx_bin, &images) {
            (Some(bin), _) => nginx::version(bin).unwrap_or_default(),
            (None, Some(images)) => format!("{} (container)", images.nginx),
            _ => String::new(),
        };
        let containers = match (parts, nginx_parts) {
            (Some(stack), Some(nginx)) => Some(ContainerParts {
                stack,
                nginx,
                backend_addr: backend_container.as_ref().map(|_| backend_addr),
                backend: backend_container,
            }),
            _ => None,
        };
        let mut stack = Stack {
            containers,
            nginx,
            hop: Some(hop),
            backend,
            stopped_backend: None,
            twilio,
            hop_addr,
            hop_hold: None,
            hop_connections_before: 0,
            hop_faults,
            hop_journal,
            nginx_version,
            spec,
            client,
            sandbox,
        };
        stack.wait_nginx_ready().await?;
        stack.hop_journal.clear();
        stack.hop_connections_before = 0;
        Ok(stack)
    }

    async fn wait_nginx_ready(&mut self) -> Result<(), HarnessError> {
        let url = self.url("/healthz");
        let start = Instant::now();
        loop {
            if let Some(status) = self.nginx.process.as_mut().and_then(|p| p.try_exit()) {
                return Err(HarnessError::Exited {
                    component: "nginx".into(),
                    status: status.to_string(),
                    logs: self.logs(),
                });
            }
            if let Some(c) = &self.containers {
                if let Err(status) = c.stack.running(&c.nginx).await {
                    return Err(HarnessError::Exited {
                        component: format!("nginx container {}", c.nginx.name),
                        status,
                        logs: self.logs(),
                    });
                }
            }
            if let Ok(r) = self
                .client
                .get(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if start.elapsed() > READY_DEADLINE {
                return Err(HarnessError::NotReady {
                    component: "nginx".into(),
                    url,
                    waited: start.elapsed(),
                    logs: self.logs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The URL of `path` through nginx.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.nginx.addr)
    }

    /// nginx's address.
    pub fn nginx_addr(&self) -> SocketAddr {
        self.nginx.addr
    }

    /// The backend's own address (bypassing nginx), while it runs.
    pub fn backend_addr(&self) -> Option<SocketAddr> {
        match &self.containers {
            Some(ContainerParts {
                backend: Some(_),
                backend_addr,
                ..
            }) => *backend_addr,
            _ => self.backend.as_ref().map(|b| b.addr),
        }
    }

    /// Under the containers runtime, the stack's Docker network (its containers are named
    /// `{network}-nginx` and `{network}-backend`).
    pub fn container_network(&self) -> Option<&str> {
        self.containers.as_ref().map(|c| c.stack.network.as_str())
    }

    /// The fake Twilio.
    pub fn twilio(&self) -> &MockTwilio {
        &self.twilio
    }

    /// Fault rules of the nginx→backend hop.
    pub fn hop_faults(&self) -> &Arc<FaultSet> {
        &self.hop_faults
    }

    /// Connections nginx has opened to the backend (through the hop) since the stack started.
    pub fn hop_connections(&self) -> u64 {
        self.hop_connections_before + self.hop.as_ref().map(|h| h.connections()).unwrap_or(0)
    }

    /// Requests that crossed the nginx→backend hop.
    pub fn hop_journal(&self) -> &Arc<Journal> {
        &self.hop_journal
    }

    /// What this stack was started from.
    pub fn spec(&self) -> &StackSpec {
        &self.spec
    }

    /// nginx's version, e.g. `nginx/1.22.1`.
    pub fn nginx_version(&self) -> &str {
        &self.nginx_version
    }

    /// The sandbox folder (configs, logs, cache).
    pub fn sandbox(&self) -> &Path {
        &self.sandbox.path
    }

    /// A client for requests through the stack.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// nginx's error log.
    pub fn error_log(&self) -> &LogFile {
        &self.nginx.error_log
    }

    /// nginx's access log.
    pub fn access_log(&self) -> &LogFile {
        &self.nginx.access_log
    }

    /// The backend's output (one event per line).
    pub fn backend_log(&self) -> LogFile {
        LogFile::new(self.sandbox.path.join("backend.log"))
    }

    /// The backend's process id, while it runs.
    pub fn backend_pid(&self) -> Option<u32> {
        self.backend.as_ref().and_then(|b| b.process.pid())
    }

    /// The process groups it owns (nginx's, the backend's): every process it started is in one.
    pub fn process_groups(&self) -> Vec<u32> {
        let mut groups: Vec<u32> = self
            .nginx
            .process
            .as_ref()
            .and_then(|p| p.pid())
            .into_iter()
            .collect();
        groups.extend(self.backend.as_ref().and_then(|b| b.process.pid()));
        groups
    }

    /// The tail of every component's log.
    pub fn logs(&self) -> String {
        let backend = self.backend_log();
        let stdout = LogFile::new(self.sandbox.path.join("nginx.stdout.log"));
        logs_of(&[
            ("nginx error.log", &self.nginx.error_log),
            ("nginx output", &stdout),
            ("backend", &backend),
        ])
    }

    /// Kills the backend (SIGKILL) and closes the hop, so nginx's connects are refused; returns
    /// once nginx has let go of every connection it had cached, so the next request meets a
    /// refused connect, not a race with a closing one.
    pub async fn stop_backend(&mut self) {
        if let Some(c) = self.containers.as_mut() {
            if let (Some(b), Some(_)) = (&c.backend, c.backend_addr.take()) {
                c.stack.kill(b).await;
                self.drop_hop().await;
                return;
            }
        }
        if let Some(mut b) = self.backend.take() {
            b.process.kill();
            self.stopped_backend = Some(b.launch);
        }
        self.drop_hop().await;
    }

    async fn drop_hop(&mut self) {
        if let Some(hop) = self.hop.take() {
            self.hop_connections_before += hop.connections();
            hop.shutdown().await;
            self.hop_hold = hold_port(self.hop_addr).ok();
        }
        let start = Instant::now();
        while open_connections_to(self.hop_addr) > 0 && start.elapsed() < READY_DEADLINE {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Starts the backend again after [`Stack::stop_backend`], on the same ports.
    pub async fn start_backend(&mut self) -> Result<(), HarnessError> {
        let log = self.backend_log();
        let mut container_addr = None;
        if let Some(c) = self.containers.as_mut() {
            if let (Some(b), None) = (&c.backend, c.backend_addr) {
                c.stack.start(b, &log).await?;
                let addr = wait_backend_container(&c.stack, b, &log).await?;
                c.backend_addr = Some(addr);
                container_addr = Some(addr);
            } else if c.backend.is_some() {
                return Ok(());
            }
        }
        let (addr, backend) = match container_addr {
            Some(addr) => (addr, None),
            None => {
                let Some(launch) = self.stopped_backend.take() else {
                    return Ok(());
                };
                let b = crate::backend::start(&launch, &log, READY_DEADLINE).await?;
                (b.addr, Some(b))
            }
        };
        self.hop = Some(
            FaultProxy::start_with(
                self.hop_addr,
                ProxyConfig::new(addr),
                self.hop_faults.clone(),
                self.hop_journal.clone(),
            )
            .await
            .map_err(HarnessError::io(format!(
                "rebind the hop fault point on {}",
                self.hop_addr
            )))?,
        );
        self.hop_hold = None;
        if backend.is_some() {
            self.backend = backend;
        }
        Ok(())
    }

    /// Stops the backend with SIGTERM (it drains), waits for it, and starts it again.
    pub async fn restart_backend(&mut self) -> Result<(), HarnessError> {
        let grace = Duration::from_secs_f64(30.0 * self.spec.timeouts.scale);
        if let Some(c) = self.containers.as_mut() {
            if let (Some(b), Some(_)) = (&c.backend, c.backend_addr.take()) {
                c.stack.stop(b, grace).await;
                self.drop_hop().await;
                return self.start_backend().await;
            }
        }
        if let Some(mut b) = self.backend.take() {
            b.process.signal(Signal::SIGTERM);
            let grace = Duration::from_secs_f64(30.0 * self.spec.timeouts.scale) + READY_DEADLINE;
            if b.process.wait_exit(grace).await.is_none() {
                b.process.kill();
            }
            self.drop_hop().await;
            self.stopped_backend = Some(b.launch);
        }
        self.start_backend().await
    }
}

/// Connections to the hop at `addr` that nginx has not let go of yet: in /proc/net/tcp, its
/// client side still open (ESTABLISHED or CLOSE_WAIT; visible when nginx runs here), or the
/// hop's own side not yet closed by nginx (ESTABLISHED, FIN_WAIT1/2, CLOSE_WAIT; visible also
/// when nginx runs in a container).
fn open_connections_to(addr: SocketAddr) -> usize {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    let hex = match addr.ip() {
        std::net::IpAddr::V4(ip) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(ip.octets()),
            addr.port()
        ),
        std::net::IpAddr::V6(_) => return 0,
    };
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3
                && ((f[2] == hex && matches!(f[3], "01" | "08"))
                    || (f[1] == hex && matches!(f[3], "01" | "04" | "05" | "08")))
        })
        .count()
}
