//! How a stack's nginx and backend run: [`Runtime`] is the choice (a value, passed from the
//! CLI or a test), [`Launcher`] starts components under it, and each running one is a
//! [`Component`] with the same operations whichever runtime runs it (address, stop, start
//! again, has it exited), so [`crate::Stack::start`] reads as one sequence.

use crate::backend::Launch;
use crate::containers::{Container, ContainerSpec, ContainerStack};
use crate::error::HarnessError;
use crate::images::Images;
use crate::nginx::NginxLine;
use crate::process::{ChildGuard, LogFile};
use crate::ready::{wait_ready, Probe};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// `processes` or `containers`.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Processes => "processes",
            Runtime::Containers => "containers",
        }
    }
}

impl std::str::FromStr for Runtime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" | "processes" => Ok(Runtime::Processes),
            "containers" => Ok(Runtime::Containers),
            other => Err(format!(
                "{other:?} is not a runtime (runtimes: processes, containers)"
            )),
        }
    }
}

/// The port the reference backend listens on inside its container.
const BACKEND_CONTAINER_PORT: u16 = 8000;

/// Where a component listens, once started.
#[derive(Debug, Clone, Copy)]
enum Reach {
    /// Its address is known before it starts (a socket the harness bound and handed over).
    Bound(SocketAddr),
    /// It logs its address (`listen = "log"`).
    Logged,
    /// A container: on its network address at this port.
    Network(u16),
    /// A container: on the loopback port Docker published for this one.
    Published(u16),
}

enum How {
    Process {
        launch: Box<Mutex<Launch>>,
        child: Mutex<Option<ChildGuard>>,
    },
    Container {
        engine: Arc<ContainerStack>,
        container: Container,
        /// Its main process's id on this host as of its last start (see
        /// [`ContainerStack::host_pid`]); [`Component::measured_pid`] checks it is still there.
        host_pid: Mutex<Option<u32>>,
    },
}

/// One running component (nginx, the backend) and how to stop it and start it again.
pub struct Component {
    name: &'static str,
    log: LogFile,
    how: How,
    reach: Reach,
    health: Option<String>,
    addr: Mutex<Option<SocketAddr>>,
}

impl Component {
    /// Its name (`nginx`, `backend`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Where it listens, while it runs.
    pub fn addr(&self) -> Option<SocketAddr> {
        *self.addr.lock().unwrap()
    }

    /// Its output log.
    pub fn log(&self) -> &LogFile {
        &self.log
    }

    /// Its process id (and process group), when it is a process of ours that runs.
    pub fn pid(&self) -> Option<u32> {
        match &self.how {
            How::Process { child, .. } => child.lock().unwrap().as_ref().and_then(|c| c.pid()),
            How::Container { .. } => None,
        }
    }

    /// The process whose memory and fds are its own, as this host's `/proc` shows them: its
    /// process, or its container's main process when the engine runs on this host.
    pub fn measured_pid(&self) -> Option<u32> {
        match &self.how {
            How::Process { .. } => self.pid(),
            How::Container {
                container,
                host_pid,
                ..
            } => host_pid.lock().unwrap().filter(|p| container.holds(*p)),
        }
    }

    /// Its container's name, under the containers runtime.
    pub fn container_name(&self) -> Option<&str> {
        match &self.how {
            How::Container { container, .. } => Some(&container.name),
            How::Process { .. } => None,
        }
    }

    /// Its exit status, once it has exited.
    pub async fn exited(&self) -> Option<String> {
        match &self.how {
            How::Process { child, .. } => {
                let child = child.lock().unwrap();
                child.as_ref()?.try_exit().map(|s| s.to_string())
            }
            How::Container {
                engine, container, ..
            } => engine.running(container).await.err(),
        }
    }

    /// Starts it (again, on the same address) and waits until it is ready; `logs` gives the
    /// log tails an error carries.
    pub async fn start(
        &self,
        logs: &(dyn Fn() -> String + Sync),
    ) -> Result<SocketAddr, HarnessError> {
        let offset = self.log.len();
        match &self.how {
            How::Process { launch, child } => {
                let mut launch = launch.lock().unwrap();
                let spawned = spawn(self.name, &launch, &self.log)?;
                *child.lock().unwrap() = Some(spawned);
                if launch.hand_over_once {
                    // The child holds its own copy of the socket; ours would keep the port open
                    // after the child is gone.
                    launch.listener = None;
                }
            }
            How::Container {
                engine, container, ..
            } => {
                if engine.running(container).await.is_err() {
                    engine.start(container, &self.log).await?;
                }
            }
        }
        let addr = self.locate(offset, logs).await?;
        if let Some(path) = &self.health {
            let probe = Probe::Http {
                url: format!("http://{addr}{path}"),
            };
            wait_ready(self.name, &probe, || self.exited(), logs).await?;
        }
        if let How::Process { launch, .. } = &self.how {
            // Restarts bind the same address again, so nginx's upstream stays right.
            launch.lock().unwrap().pin_address(addr);
        }
        if let How::Container {
            engine,
            container,
            host_pid,
        } = &self.how
        {
            *host_pid.lock().unwrap() = engine.host_pid(container).await;
        }
        *self.addr.lock().unwrap() = Some(addr);
        Ok(addr)
    }

    /// Where it listens now that it started.
    async fn locate(
        &self,
        offset: u64,
        logs: &(dyn Fn() -> String + Sync),
    ) -> Result<SocketAddr, HarnessError> {
        let unreadable = |what: String| HarnessError::NotReady {
            component: self.name.into(),
            url: what,
            waited: Duration::ZERO,
            logs: logs(),
        };
        match (&self.reach, &self.how) {
            (Reach::Bound(addr), _) => Ok(*addr),
            (Reach::Logged, How::Process { launch, .. }) => {
                let pattern = launch.lock().unwrap().listen_regex.clone();
                let probe = Probe::LogLine {
                    log: self.log.clone(),
                    offset,
                    pattern,
                };
                let found = wait_ready(self.name, &probe, || self.exited(), logs).await?;
                found.parse().map_err(|_| unreadable(found))
            }
            (
                Reach::Network(port),
                How::Container {
                    engine, container, ..
                },
            ) => {
                let ip = engine.ip(container).await?;
                Ok(SocketAddr::new(ip, *port))
            }
            (
                Reach::Published(port),
                How::Container {
                    engine, container, ..
                },
            ) => engine.published(container, *port).await,
            _ => Err(unreadable(format!("{} has no address", self.name))),
        }
    }

    /// Stops it: SIGTERM and up to `grace` to drain (then SIGKILL), or SIGKILL at once.
    pub async fn stop(&self, grace: Option<Duration>) {
        *self.addr.lock().unwrap() = None;
        match &self.how {
            How::Process { child, .. } => {
                let Some(c) = child.lock().unwrap().take() else {
                    return;
                };
                if let Some(grace) = grace {
                    c.signal(Signal::SIGTERM);
                    c.wait_exit(grace + crate::ready::READY_DEADLINE).await;
                }
                c.kill();
            }
            // Its host pid stays: `measured_pid` stops counting it once the process is gone.
            How::Container {
                engine, container, ..
            } => match grace {
                Some(grace) => engine.stop(container, grace).await,
                None => engine.kill(container).await,
            },
        }
    }
}

/// Spawns a launch as a process in a group of its own, its output appended to `log`.
fn spawn(name: &str, launch: &Launch, log: &LogFile) -> Result<ChildGuard, HarnessError> {
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
    ChildGuard::spawn(name, cmd, log.path())
}

/// Starts components under one runtime. Under containers it owns the stack's network (and,
/// through it, every container: they are removed when the last owner drops).
pub struct Launcher {
    runtime: Runtime,
    engine: Option<Arc<ContainerStack>>,
    images: Option<Images>,
}

impl Launcher {
    /// A launcher for `runtime` with nginx of `line` (`None`: the host's under processes, the
    /// default line's under containers); under containers, a network named after `id` and the
    /// images for `backend_bin` (built once, cached by content).
    pub async fn new(
        runtime: Runtime,
        line: Option<NginxLine>,
        id: &str,
        backend_bin: Option<&Path>,
    ) -> Result<Launcher, HarnessError> {
        let (engine, images) = match runtime {
            Runtime::Processes => {
                host_nginx_is(line)?;
                (None, None)
            }
            Runtime::Containers => {
                let bin = match backend_bin {
                    Some(b) => b.to_path_buf(),
                    None => crate::locate::find_backend()?,
                };
                let line = line.unwrap_or(NginxLine::DEFAULT);
                let images = crate::images::images_once(&bin, line).await?;
                let engine = ContainerStack::create(id).await?;
                (Some(Arc::new(engine)), Some(images))
            }
        };
        Ok(Launcher {
            runtime,
            engine,
            images,
        })
    }

    /// The runtime.
    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// The host's address as the components see it: loopback, or the network's gateway.
    pub fn host_ip(&self) -> IpAddr {
        self.engine
            .as_ref()
            .map(|e| e.gateway)
            .unwrap_or(IpAddr::from([127, 0, 0, 1]))
    }

    /// The stack's Docker network, under containers.
    pub fn network(&self) -> Option<&str> {
        self.engine.as_deref().map(|e| e.network.as_str())
    }

    /// What nginx's `listen` says, and the socket handed to it (processes: bound by us on an
    /// OS-chosen port; containers: port 80, published by Docker).
    pub fn nginx_listen(&self) -> Result<(SocketAddr, Option<TcpListener>), HarnessError> {
        if self.engine.is_some() {
            return Ok((SocketAddr::from(([0, 0, 0, 0], 80)), None));
        }
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(HarnessError::io("bind nginx listener"))?;
        let addr = listener
            .local_addr()
            .map_err(HarnessError::io("nginx listener address"))?;
        Ok((addr, Some(listener)))
    }

    /// nginx's version, e.g. `nginx/1.22.1` (its image's, under containers).
    pub fn nginx_version(&self) -> String {
        match &self.images {
            Some(images) => images.nginx_version.clone(),
            None => crate::nginx::find_nginx()
                .ok()
                .and_then(|bin| crate::nginx::version(&bin))
                .unwrap_or_default(),
        }
    }

    /// Starts nginx on `conf` in `sandbox` (its error log in `sandbox/error.log`).
    pub async fn nginx(
        &self,
        sandbox: &Path,
        conf: &Path,
        listener: Option<TcpListener>,
    ) -> Result<Component, HarnessError> {
        let sb = sandbox.display().to_string();
        let command = vec![
            "nginx".to_string(),
            "-p".into(),
            sb.clone(),
            "-c".into(),
            conf.display().to_string(),
            "-e".into(),
            format!("{sb}/error.log"),
        ];
        let log = LogFile::new(sandbox.join("nginx.stdout.log"));
        let (how, reach) = match (&self.engine, listener) {
            (Some(engine), _) => {
                let spec = ContainerSpec {
                    image: self.images.as_ref().expect("images").nginx.clone(),
                    cmd: command,
                    binds: vec![format!("{sb}:{sb}")],
                    publish: Some(80),
                    output_file: Some(log.path().to_path_buf()),
                    ..Default::default()
                };
                (
                    self.container(engine, "nginx", &spec, &log).await?,
                    Reach::Published(80),
                )
            }
            (None, Some(listener)) => {
                let addr = listener
                    .local_addr()
                    .map_err(HarnessError::io("nginx listener address"))?;
                let mut command = command;
                command[0] = crate::nginx::find_nginx()?.display().to_string();
                // nginx's inherited-sockets variable: the listener is handed over, never guessed.
                let env = vec![("NGINX".into(), format!("{};", listener.as_raw_fd()))];
                let launch = Launch::handing_over(command, env, listener);
                (process(launch), Reach::Bound(addr))
            }
            (None, None) => unreachable!("nginx_listen binds a socket for processes"),
        };
        Ok(self.component("nginx", log, how, reach, None))
    }

    /// Starts a backend instance named `name` (not yet: [`Component::start`] does). The reference backend runs
    /// in a container under containers; any other runs as a process.
    pub async fn backend(
        &self,
        name: &'static str,
        launch: Launch,
        log: LogFile,
        reference: bool,
    ) -> Result<Component, HarnessError> {
        let health = Some(launch.health.clone());
        let (how, reach) = match (&self.engine, reference) {
            (Some(engine), true) => {
                let spec = backend_container(&launch, self.images.as_ref().expect("images"), &log);
                let how = self.container(engine, name, &spec, &log).await?;
                (how, Reach::Network(BACKEND_CONTAINER_PORT))
            }
            _ => {
                let reach = match &launch.listener {
                    Some(l) => Reach::Bound(
                        l.local_addr()
                            .map_err(HarnessError::io("backend socket address"))?,
                    ),
                    None => Reach::Logged,
                };
                (process(launch), reach)
            }
        };
        Ok(self.component(name, log, how, reach, health))
    }

    async fn container(
        &self,
        engine: &Arc<ContainerStack>,
        role: &str,
        spec: &ContainerSpec,
        log: &LogFile,
    ) -> Result<How, HarnessError> {
        let container = engine.run(role, spec, log).await?;
        Ok(How::Container {
            engine: engine.clone(),
            container,
            host_pid: Mutex::new(None),
        })
    }

    fn component(
        &self,
        name: &'static str,
        log: LogFile,
        how: How,
        reach: Reach,
        health: Option<String>,
    ) -> Component {
        Component {
            name,
            log,
            how,
            reach,
            health,
            addr: Mutex::new(None),
        }
    }
}

/// Under processes, a line can only be the host's nginx's.
fn host_nginx_is(line: Option<NginxLine>) -> Result<(), HarnessError> {
    let Some(line) = line else { return Ok(()) };
    let version = crate::nginx::version(&crate::nginx::find_nginx()?).unwrap_or_default();
    if NginxLine::of_version(&version) == Some(line) {
        return Ok(());
    }
    Err(HarnessError::ToolMissing {
        tool: "nginx of that line",
        hint: format!(
            "the host's nginx is {version}; nginx {line} runs under the containers runtime (--runtime containers, or HARNESS_NGINX_VERSION={line} alone)"
        ),
    })
}

/// The runtime a stack with nginx of `line` needs: the host's nginx runs as a process when it
/// is of that line; any other line runs from its image.
pub fn runtime_for(line: NginxLine) -> Runtime {
    let host = crate::nginx::find_nginx()
        .ok()
        .and_then(|bin| crate::nginx::version(&bin))
        .and_then(|v| NginxLine::of_version(&v));
    if host == Some(line) {
        Runtime::Processes
    } else {
        Runtime::Containers
    }
}

fn process(launch: Launch) -> How {
    How::Process {
        launch: Box::new(Mutex::new(launch)),
        child: Mutex::new(None),
    }
}

/// The reference backend's container: the same environment, listening on the container's
/// network; the sandbox is mounted at its own path, so RECORDINGS_DIR and friends stay valid.
fn backend_container(launch: &Launch, images: &Images, log: &LogFile) -> ContainerSpec {
    let mut env = launch.env.clone();
    env.retain(|(k, _)| k != "BIND");
    env.push(("BIND".into(), format!("0.0.0.0:{BACKEND_CONTAINER_PORT}")));
    let sb = log
        .path()
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    // Our image: its output straight into backend.log. Someone else's: followed.
    let ours = std::env::var_os("HARNESS_BACKEND_IMAGE").is_none();
    ContainerSpec {
        image: images.backend.clone(),
        cmd: if ours {
            vec!["/usr/local/bin/recordings-backend".into()]
        } else {
            Vec::new()
        },
        env,
        binds: vec![format!("{sb}:{sb}")],
        publish: Some(BACKEND_CONTAINER_PORT),
        output_file: ours.then(|| log.path().to_path_buf()),
    }
}
