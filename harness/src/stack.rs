//! [`Stack`]: real nginx + a backend + mock-twilio, each on an OS-chosen port, in a sandbox of
//! its own, with the [`Hop`] fault point between nginx and the backend. [`StackSpec`] says what
//! runs, [`Runtime`](crate::Runtime) how; [`Stack::start`] is one sequence for both runtimes.

use crate::backend::{Launch, ListenMode, Placeholders, TimingValues};
use crate::error::HarnessError;
use crate::hop::Hop;
use crate::nginx::{self, Render};
use crate::process::LogFile;
use crate::ready::{wait_ready, Probe};
use crate::runtime::{Component, Launcher};
use mock_twilio::{FaultSet, Journal, MockTwilio};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::locate::{backend_default, find_backend};
pub use crate::ready::READY_DEADLINE;
pub use crate::spec::*;

/// The sandbox directory: removed on drop unless `HARNESS_KEEP=1`.
struct Sandbox {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Sandbox {
    /// A fresh sandbox with nginx's static root (an index page and the player page).
    fn create() -> Result<Sandbox, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("harness-stack-")
            .tempdir()
            .map_err(HarnessError::io("create sandbox"))?;
        let path = dir.path().to_path_buf();
        // nginx's workers (not root) must reach their temp dirs and the static root.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(HarnessError::io("chmod sandbox"))?;
        for sub in ["www", "tmp"] {
            std::fs::create_dir_all(path.join(sub))
                .map_err(HarnessError::io(format!("create {sub} in the sandbox")))?;
        }
        let www = path.join("www");
        std::fs::write(
            www.join("index.html"),
            "<!doctype html><title>recordings</title>\n",
        )
        .map_err(HarnessError::io("write index.html"))?;
        std::fs::write(www.join("player.html"), crate::assets::PLAYER_PAGE)
            .map_err(HarnessError::io("write player.html"))?;
        Ok(Sandbox {
            dir: Some(dir),
            path,
        })
    }

    /// A short id for names (the container network's).
    fn id(&self) -> String {
        self.path
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_start_matches("harness-stack-")
                    .to_lowercase()
            })
            .unwrap_or_default()
    }
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

/// One backend instance and the hop fault point in front of it (nginx's upstream server).
struct Instance {
    hop: Hop,
    backend: Component,
}

/// A running stack. Dropping it stops every process and container and removes the sandbox,
/// also on panic. Field order is teardown order: nginx first, sandbox last.
#[must_use = "the stack stops when dropped"]
pub struct Stack {
    nginx: Component,
    instances: Vec<Instance>,
    hop_faults: Arc<FaultSet>,
    hop_journal: Arc<Journal>,
    twilio: MockTwilio,
    /// Under containers, the network (which removes every container when it goes).
    launcher: Launcher,
    spec: StackSpec,
    nginx_version: String,
    client: reqwest::Client,
    sandbox: Sandbox,
}

impl Stack {
    /// Starts mock-twilio, nginx, the backend and the hop, and waits until each is ready.
    pub async fn start(spec: StackSpec) -> Result<Stack, HarnessError> {
        let reference_bin = match &spec.backend {
            BackendSpec::Reference => Some(crate::locate::find_backend()?),
            BackendSpec::File(_) => None,
        };
        let sandbox = Sandbox::create()?;
        let launcher = Launcher::new(
            spec.runtime,
            spec.nginx,
            &sandbox.id(),
            reference_bin.as_deref(),
        )
        .await?;
        let twilio = MockTwilio::builder()
            .bind(SocketAddr::new(launcher.host_ip(), 0))
            .start()
            .await
            .map_err(HarnessError::io("start mock-twilio"))?;
        let (hop_faults, hop_journal) = (Arc::<FaultSet>::default(), Arc::<Journal>::default());
        let hops = (0..spec.instances())
            .map(|_| Hop::reserve(launcher.host_ip(), hop_faults.clone(), hop_journal.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        // nginx first: the backend must know its public URL (webhook signatures).
        let (listen, listener) = launcher.nginx_listen()?;
        let upstreams = hops.iter().map(Hop::addr).collect();
        let conf = render_nginx_conf(&spec, &sandbox.path, listen, upstreams)?;
        let nginx = launcher.nginx(&sandbox.path, &conf, listener).await?;
        let logs = || logs_of(&sandbox.path);
        let nginx_addr = nginx.start(&logs).await?;
        let mut instances = Vec::new();
        for (n, hop) in hops.into_iter().enumerate() {
            let launch = backend_launch(
                &spec,
                reference_bin.as_deref(),
                &twilio,
                &sandbox.path,
                nginx_addr,
            )?;
            // Every instance writes to one log: its events are the backend's, whichever runs.
            let backend_log = LogFile::new(sandbox.path.join("backend.log"));
            let reference = matches!(spec.backend, BackendSpec::Reference);
            let backend = launcher
                .backend(INSTANCE_NAMES[n], launch, backend_log, reference)
                .await?;
            hop.up(backend.start(&logs).await?).await?;
            instances.push(Instance { hop, backend });
        }
        let stack = Stack {
            nginx_version: launcher.nginx_version(),
            nginx,
            instances,
            hop_faults,
            hop_journal,
            twilio,
            launcher,
            spec,
            // A safety net only: nginx's own timeouts end every request first (a diagnosis
            // waits, in real time, for a read timeout of several minutes).
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(600))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("reqwest client"),
            sandbox,
        };
        stack.ready_again().await?;
        Ok(stack)
    }

    /// Stops the stack as dropping it does, but on tokio's blocking pool: the engine takes most
    /// of a second to remove a container stack, and a process stack's teardown waits for its
    /// processes to go, time in which the caller's task (the other scenarios `run_many` runs
    /// beside it) and the runtime's worker keep going.
    pub async fn stop(self) {
        if let Err(e) = tokio::task::spawn_blocking(move || drop(self)).await {
            // A teardown that panicked panics here, as a drop on the task would have.
            if let Ok(panic) = e.try_into_panic() {
                std::panic::resume_unwind(panic);
            }
        }
    }

    /// Checks through nginx that the stack answers, as its start ends, and forgets what the
    /// hop saw of it. A stack that waited after its start (for a browser slot) then meets its
    /// first step as a stack just started does: with the idle upstream connection a readiness
    /// check leaves, whether or not the backend closed the first one meanwhile.
    pub async fn ready_again(&self) -> Result<(), HarnessError> {
        let probe = Probe::Http {
            url: self.url("/healthz"),
        };
        wait_ready("nginx", &probe, || self.nginx.exited(), || self.logs()).await?;
        self.hop_journal.clear();
        Ok(())
    }

    /// The URL of `path` through nginx.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.nginx_addr())
    }

    /// nginx's address.
    pub fn nginx_addr(&self) -> SocketAddr {
        self.nginx
            .addr()
            .expect("nginx runs for the stack's whole life")
    }

    /// The (first) backend instance's own address (bypassing nginx), while it runs.
    pub fn backend_addr(&self) -> Option<SocketAddr> {
        self.instances[0].backend.addr()
    }

    /// How many backend instances run behind nginx.
    pub fn instances(&self) -> usize {
        self.instances.len()
    }

    /// Under the containers runtime, the stack's Docker network (its containers are named
    /// `{network}-nginx`, `{network}-backend` and, for a second instance, `{network}-backend-2`).
    pub fn container_network(&self) -> Option<&str> {
        self.launcher.network()
    }

    /// The fake Twilio.
    pub fn twilio(&self) -> &MockTwilio {
        &self.twilio
    }

    /// Fault rules of the nginx→backend hop (every instance's).
    pub fn hop_faults(&self) -> &Arc<FaultSet> {
        &self.hop_faults
    }

    /// Connections nginx has opened to the backend (through the hops) since the stack started.
    pub fn hop_connections(&self) -> u64 {
        self.instances.iter().map(|i| i.hop.connections()).sum()
    }

    /// Requests that crossed the nginx→backend hops.
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
    pub fn error_log(&self) -> LogFile {
        LogFile::new(self.sandbox.path.join("error.log"))
    }

    /// nginx's access log.
    pub fn access_log(&self) -> LogFile {
        LogFile::new(self.sandbox.path.join("access.log"))
    }

    /// The backend's output, every instance's (one event per line).
    pub fn backend_log(&self) -> LogFile {
        self.instances[0].backend.log().clone()
    }

    /// The (first) backend instance's process id, while it runs as a process of ours.
    pub fn backend_pid(&self) -> Option<u32> {
        self.instances[0].backend.pid()
    }

    /// Each backend instance's process id, while it runs as a process of ours.
    pub fn backend_pids(&self) -> Vec<Option<u32>> {
        self.instances.iter().map(|i| i.backend.pid()).collect()
    }

    /// Each backend instance's process to measure memory and fds on, while it runs: its own
    /// process, or its container's main process (see [`Component::measured_pid`]).
    pub fn backend_measured_pids(&self) -> Vec<Option<u32>> {
        self.instances
            .iter()
            .map(|i| i.backend.measured_pid())
            .collect()
    }

    /// The process groups it owns (nginx's, the backends'): every process it started is in one.
    pub fn process_groups(&self) -> Vec<u32> {
        std::iter::once(self.nginx.pid())
            .chain(self.instances.iter().map(|i| i.backend.pid()))
            .flatten()
            .collect()
    }

    /// The tail of every component's log.
    pub fn logs(&self) -> String {
        logs_of(&self.sandbox.path)
    }

    /// Kills every backend instance (SIGKILL) and takes the hops down, so nginx's connects are
    /// refused; returns once nginx has let go of every connection it had cached.
    pub async fn stop_backend(&self) {
        for i in &self.instances {
            i.backend.stop(None).await;
            i.hop.down().await;
        }
    }

    /// Starts every backend instance again after [`Stack::stop_backend`], on the same address.
    pub async fn start_backend(&self) -> Result<(), HarnessError> {
        for i in &self.instances {
            self.start_instance(i).await?;
        }
        Ok(())
    }

    async fn start_instance(&self, i: &Instance) -> Result<(), HarnessError> {
        if i.backend.addr().is_some() {
            return Ok(());
        }
        let addr = i.backend.start(&|| self.logs()).await?;
        i.hop.up(addr).await
    }

    /// The drain time a backend gets on SIGTERM (its GRACEFUL_SHUTDOWN_TIMEOUT).
    fn grace(&self) -> Duration {
        Duration::from_secs_f64(
            self.spec.profile.row().graceful_timeout_secs * self.spec.timeouts.scale,
        )
    }

    /// Stops every instance at once with SIGTERM (each drains), waits, and starts them again:
    /// the backend is away for a moment.
    pub async fn restart_backend(&self) -> Result<(), HarnessError> {
        let grace = self.grace();
        futures::future::join_all(self.instances.iter().map(|i| async move {
            i.backend.stop(Some(grace)).await;
            i.hop.down().await;
        }))
        .await;
        self.start_backend().await
    }

    /// A deploy: each instance in turn stops listening (its connects are refused, so nginx
    /// moves to another instance if it has one), drains on SIGTERM, and starts again.
    /// `out` is called once per instance while it is out of service, after its listener
    /// closed and before it starts again.
    pub async fn deploy<F, Fut>(&self, mut out: F) -> Result<(), HarnessError>
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        for (n, i) in self.instances.iter().enumerate() {
            i.hop.refuse().await;
            i.backend.stop(Some(self.grace())).await;
            i.hop.down().await;
            out(n).await;
            self.start_instance(i).await?;
            if n + 1 < self.instances.len() {
                self.until_nginx_reaches(i).await?;
            }
        }
        Ok(())
    }

    /// Sends `/healthz` through nginx until one of them reaches instance `i` again, so the next
    /// instance goes out of service only once nginx routes to this one: a request nginx had
    /// just found this one refusing and moved to the next must not meet that one closing too.
    async fn until_nginx_reaches(&self, i: &Instance) -> Result<(), HarnessError> {
        let before = i.hop.connections();
        let url = self.url("/healthz");
        let reached = crate::ready::poll(READY_DEADLINE, || async {
            let _ = self.client.get(&url).send().await;
            (i.hop.connections() > before).then_some(())
        });
        reached.await.ok_or_else(|| HarnessError::NotReady {
            component: i.backend.name().into(),
            url,
            waited: READY_DEADLINE,
            logs: self.logs(),
        })
    }
}

/// Container and log names of the backend instances (a profile runs at most this many).
pub const INSTANCE_NAMES: [&str; 2] = ["backend", "backend-2"];

/// The tail of each component's log in `sandbox`.
fn logs_of(sandbox: &Path) -> String {
    [
        ("nginx error.log", "error.log"),
        ("nginx output", "nginx.stdout.log"),
        ("backend", "backend.log"),
    ]
    .iter()
    .map(|(name, file)| {
        let log = LogFile::new(sandbox.join(file));
        format!(
            "--- {name} ({}) ---\n{}",
            log.path().display(),
            log.tail(25)
        )
    })
    .collect::<Vec<_>>()
    .join("\n")
}

/// Renders the profile's (or the stack file's) nginx config for this stack into
/// `sandbox/nginx.conf` and returns its path.
fn render_nginx_conf(
    spec: &StackSpec,
    sandbox: &Path,
    listen: SocketAddr,
    upstreams: Vec<SocketAddr>,
) -> Result<PathBuf, HarnessError> {
    let source = spec.nginx_config()?;
    let text = source.read()?;
    let rendered = nginx::render(
        &source.label(),
        &text,
        &Render {
            listen,
            upstreams,
            recordings_dir: sandbox.join("recordings"),
            sandbox: sandbox.to_path_buf(),
            static_root: sandbox.join("www"),
            timeout_scale: spec.timeouts.scale,
            keepalive_scale: spec.timeouts.keepalive_scale,
            next_upstream_scale: spec
                .timeouts
                .next_upstream_scale
                .unwrap_or(spec.timeouts.scale),
        },
    )?;
    let conf = sandbox.join("nginx.conf");
    std::fs::write(&conf, rendered)
        .map_err(HarnessError::io(format!("write {}", conf.display())))?;
    Ok(conf)
}

/// How the stack's backend is started: its command and environment with the harness's
/// values filled in (Twilio, directories, public URL, scaled timeouts).
fn backend_launch(
    spec: &StackSpec,
    reference_bin: Option<&Path>,
    twilio: &MockTwilio,
    sandbox: &Path,
    nginx: SocketAddr,
) -> Result<Launch, HarnessError> {
    let t = spec.timeouts;
    let timing = TimingValues {
        keep_alive: spec.backend_keep_alive_secs(reference_bin) * t.keepalive_scale,
        graceful_timeout: spec.profile.row().graceful_timeout_secs * t.scale,
        slow_download: t.slow_download(),
        twilio_timeout: t.twilio_timeout_secs.unwrap_or(30.0 * t.scale),
    };
    let values = Placeholders {
        twilio: (
            twilio.account_sid().into(),
            twilio.auth_token().into(),
            twilio.uri(),
        ),
        recordings_dir: sandbox.join("recordings"),
        public_url: format!("http://{nginx}"),
        timing: (!spec.as_deployed).then_some(timing),
        sandbox: sandbox.to_path_buf(),
    };
    let contract = Placeholders::contract();
    let mut launch = match (&spec.backend, reference_bin) {
        (BackendSpec::File(f), _) => Launch::new(
            &f.backend.command,
            Some(f.dir.join(f.backend.cwd.clone().unwrap_or_default())),
            f.backend.env.as_ref().unwrap_or(&contract),
            f.backend.listen,
            f.backend.listen_regex.as_deref(),
            &f.backend.health,
            &values,
        )?,
        (BackendSpec::Reference, bin) => Launch::new(
            &[bin.map(|b| b.display().to_string()).unwrap_or_default()],
            None,
            &contract,
            ListenMode::Log,
            None,
            "/healthz",
            &values,
        )?,
    };
    if matches!(spec.backend, BackendSpec::Reference) {
        for (k, v) in spec.profile.row().backend_env {
            launch.env.push((k.to_string(), v.to_string()));
        }
    }
    for (k, v) in &spec.backend_env {
        launch.env.retain(|(name, _)| name != k);
        launch.env.push((k.clone(), v.clone()));
    }
    Ok(launch)
}
