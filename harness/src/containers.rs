//! The containers runtime: nginx and the backend as Docker containers on a network of their own,
//! started, stopped and removed through [testcontainers](https://docs.rs/testcontainers) (local
//! images, never pulled; testcontainers has no reaper, so a label sweep removes what a killed
//! harness left), with the Engine API (`bollard`) for what testcontainers does not do: the
//! network with its address-pool wait, SIGKILL, logs that follow restarts, and the host pid.
//! mock-twilio and the hop fault point stay in this process and listen on the network's gateway
//! address, which the containers reach as the host.
//!
//! Its images are built offline (`harness images build`).

use crate::docker::{engine, err};
use crate::error::HarnessError;
use crate::process::LogFile;
use bollard::models::{HostConfig, NetworkCreateRequest, PortBinding};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testcontainers::core::ContainerPort;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, GenericImage, ImageExt};

/// The label every container and network of ours carries; its value is the owning process id.
pub const OWNER_LABEL: &str = "recordings-harness.owner-pid";

/// Removes containers and networks left by harness processes that are gone (killed with
/// SIGKILL, say, so their drop never ran).
pub async fn sweep_orphans(docker: &Docker) {
    let alive = |labels: Option<&HashMap<String, String>>| {
        labels
            .and_then(|l| l.get(OWNER_LABEL))
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    };
    let filter = HashMap::from([("label", vec![OWNER_LABEL])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await
        .unwrap_or_default();
    for id in containers
        .into_iter()
        .filter(|c| !alive(c.labels.as_ref()))
        .filter_map(|c| c.id)
    {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let _ = docker.remove_container(&id, Some(options)).await;
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filter)
                .build(),
        ))
        .await
        .unwrap_or_default();
    for id in networks
        .into_iter()
        .filter(|n| !alive(n.labels.as_ref()))
        .filter_map(|n| n.id)
    {
        let _ = docker.remove_network(&id).await;
    }
}

/// One container of a stack.
#[derive(Debug, Clone)]
pub struct Container {
    /// Its id.
    pub id: String,
    /// Its name (`harness-<stack>-nginx`).
    pub name: String,
    /// Its output goes straight to a file (see [`ContainerSpec::output_file`]).
    pub output_to_file: bool,
}

impl Container {
    /// Whether this host's process `pid` is in this container (its `/proc/<pid>/cgroup` names
    /// the container): false once the process is gone, even if its pid is reused.
    pub fn holds(&self, pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(&self.id))
    }
}

/// What a container runs.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// Image.
    pub image: String,
    /// Command (empty: the image's).
    pub cmd: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// `host path:container path[:ro]` bind mounts.
    pub binds: Vec<String>,
    /// Container port published on 127.0.0.1 (an ephemeral host port).
    pub publish: Option<u16>,
    /// Run `cmd` through `sh` with its output appended straight to this file (a bind-mounted
    /// path): lines land as fast as a process's would, where `docker logs` lags behind. Needs
    /// `sh` and a command in the image; without it the output is followed through the API.
    pub output_file: Option<PathBuf>,
}

/// A network and its containers; everything is removed when it drops (also on panic).
pub struct ContainerStack {
    docker: Docker,
    /// The network's name.
    pub network: String,
    /// The network's gateway: the host, as the containers reach it.
    pub gateway: IpAddr,
    /// Every container's name, from before its creation is asked for: a run cancelled while
    /// the engine creates one (Ctrl-C) still removes it.
    containers: Mutex<Vec<String>>,
    /// The started containers, by name, as testcontainers hands them over.
    started: Mutex<HashMap<String, Arc<ContainerAsync<GenericImage>>>>,
    log_tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Removes the network and its containers if this process dies without dropping the stack
    /// (SIGKILL): see [`watchdog`].
    watchdog: Mutex<Option<std::process::Child>>,
}

/// A watchdog ([`crate::process::watchdog`]) that, if this process dies without dropping the
/// stack (SIGKILL), removes the containers on `network` and the network with the docker CLI
/// (which follows `DOCKER_HOST` as we do). Without the CLI it does nothing, and the next stack's
/// sweep ([`sweep_orphans`]) removes them.
fn watchdog(network: &str) -> Option<std::process::Child> {
    let script = "ids=$(docker ps -aq --filter \"network=$1\"); \
                  [ -n \"$ids\" ] && docker rm -fv $ids; docker network rm \"$1\"";
    crate::process::watchdog(script, network)
}

/// How long a new network waits for an address pool while the engine's are all in use (each
/// stack has a network; many stacks at once, as `cargo test` under containers runs, can take
/// every default pool, about 30).
const POOL_WAIT: Duration = Duration::from_secs(120);

/// The port bindings of a container that publishes `port`: an ephemeral port on 127.0.0.1.
fn loopback_binding(port: Option<u16>) -> HashMap<String, Option<Vec<PortBinding>>> {
    port.into_iter()
        .map(|p| {
            let binding = PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(String::new()),
            };
            (format!("{p}/tcp"), Some(vec![binding]))
        })
        .collect()
}

/// Creates our bridge network `name`, waiting (up to [`POOL_WAIT`]) while the engine has no
/// address pool left: other stacks end and give theirs back.
async fn create_network(docker: &Docker, name: &str) -> Result<(), HarnessError> {
    let labels = HashMap::from([(OWNER_LABEL.to_string(), std::process::id().to_string())]);
    let request = NetworkCreateRequest {
        name: name.to_string(),
        driver: Some("bridge".into()),
        labels: Some(labels),
        ..Default::default()
    };
    let start = std::time::Instant::now();
    loop {
        match docker.create_network(request.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.to_string().contains("address pool") && start.elapsed() < POOL_WAIT => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(err(format!("create network {name}"))(e)),
        }
    }
}

impl ContainerStack {
    /// Creates a network of its own, named after `stack_id`.
    pub async fn create(stack_id: &str) -> Result<ContainerStack, HarnessError> {
        let docker = engine().await?;
        sweep_orphans(&docker).await;
        let network = format!("harness-{stack_id}");
        create_network(&docker, &network).await?;
        let mut stack = ContainerStack {
            docker,
            network: network.clone(),
            gateway: IpAddr::from([127, 0, 0, 1]),
            containers: Default::default(),
            started: Default::default(),
            log_tasks: Default::default(),
            watchdog: Mutex::new(watchdog(&network)),
        };
        let info = stack
            .docker
            .inspect_network(&network, None)
            .await
            .map_err(err(format!("inspect network {network}")))?;
        stack.gateway = info
            .ipam
            .and_then(|i| i.config)
            .and_then(|c| c.into_iter().find_map(|c| c.gateway))
            .and_then(|g| g.parse().ok())
            .ok_or_else(|| HarnessError::Docker {
                what: format!("inspect network {network}"),
                message: "it has no gateway".into(),
            })?;
        Ok(stack)
    }

    /// Creates and starts a container on the network, its output appended to `log`.
    pub async fn run(
        &self,
        role: &str,
        spec: &ContainerSpec,
        log: &LogFile,
    ) -> Result<Container, HarnessError> {
        let name = format!("{}-{role}", self.network);
        let request = self.request(&name, spec);
        // Owned from here: removed on drop, by name, even if creating or starting it is cut off.
        self.containers.lock().unwrap().push(name.clone());
        let started = request
            .start()
            .await
            .map_err(err(format!("start container {name} from {}", spec.image)))?;
        let container = Container {
            id: started.id().to_string(),
            name: name.clone(),
            output_to_file: spec.output_file.is_some(),
        };
        self.started.lock().unwrap().insert(name, Arc::new(started));
        if spec.output_file.is_none() {
            self.follow_logs(&container, log);
        }
        Ok(container)
    }

    /// The testcontainers request for `spec`: a local image (testcontainers pulls only what
    /// the engine does not have), on our network, as this user, labelled with our pid; a
    /// published port is bound on 127.0.0.1 only.
    fn request(&self, name: &str, spec: &ContainerSpec) -> ContainerRequest<GenericImage> {
        let (repository, tag) = spec
            .image
            .rsplit_once(':')
            .unwrap_or((&spec.image, "latest"));
        let mut image = GenericImage::new(repository, tag);
        if let Some(port) = spec.publish {
            image = image.with_exposed_port(ContainerPort::Tcp(port));
        }
        let binds = spec.binds.clone();
        let publish = spec.publish;
        let mut request = image
            .with_container_name(name)
            .with_network(self.network.clone())
            .with_label(OWNER_LABEL, std::process::id().to_string())
            .with_user(format!(
                "{}:{}",
                nix::unistd::getuid(),
                nix::unistd::getgid()
            ))
            .with_host_config_modifier(move |host: &mut HostConfig| {
                host.binds = Some(binds.clone());
                host.publish_all_ports = Some(false);
                host.port_bindings = Some(loopback_binding(publish));
            });
        for (key, value) in &spec.env {
            request = request.with_env_var(key, value);
        }
        match &spec.output_file {
            Some(file) => {
                let script = "f=$1; shift; exec \"$@\" >>\"$f\" 2>&1";
                let mut cmd: Vec<String> = ["sh", "-c", script, "run"].map(String::from).into();
                cmd.push(file.display().to_string());
                cmd.extend(spec.cmd.iter().cloned());
                request.with_cmd(cmd)
            }
            None if spec.cmd.is_empty() => request,
            None => request.with_cmd(spec.cmd.clone()),
        }
    }

    /// The started container behind `c`.
    fn started(&self, c: &Container) -> Result<Arc<ContainerAsync<GenericImage>>, HarnessError> {
        self.started
            .lock()
            .unwrap()
            .get(&c.name)
            .cloned()
            .ok_or_else(|| HarnessError::Docker {
                what: format!("find {}", c.name),
                message: "it was never started".into(),
            })
    }

    /// Appends the container's output (from now on, following restarts) to `log`.
    fn follow_logs(&self, container: &Container, log: &LogFile) {
        let docker = self.docker.clone();
        let id = container.id.clone();
        let path = log.path().to_path_buf();
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i32)
            .unwrap_or(0);
        self.log_tasks
            .lock()
            .unwrap()
            .push(tokio::spawn(async move {
                let Ok(mut file) = std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(&path)
                else {
                    return;
                };
                let mut stream = docker.logs(
                    &id,
                    Some(
                        LogsOptionsBuilder::default()
                            .follow(true)
                            .stdout(true)
                            .stderr(true)
                            .since(since - 1)
                            .build(),
                    ),
                );
                while let Some(Ok(chunk)) = stream.next().await {
                    let _ = file.write_all(&chunk.into_bytes());
                }
            }));
    }

    /// The container's address on the network.
    pub async fn ip(&self, c: &Container) -> Result<IpAddr, HarnessError> {
        self.started(c)?
            .get_bridge_ip_address()
            .await
            .map_err(err(format!("inspect {}", c.name)))
    }

    /// The loopback address its published `port` is mapped to.
    pub async fn published(&self, c: &Container, port: u16) -> Result<SocketAddr, HarnessError> {
        let host_port = self
            .started(c)?
            .get_host_port_ipv4(ContainerPort::Tcp(port))
            .await
            .map_err(err(format!("inspect {}", c.name)))?;
        Ok(SocketAddr::from(([127, 0, 0, 1], host_port)))
    }

    /// Its main process's id as this host sees it, while it runs, when the engine runs on this
    /// host: the pid the engine reports, checked against `/proc/<pid>/cgroup`, which names the
    /// container (an engine elsewhere, `DOCKER_HOST=tcp://…`, reports a pid of its own host).
    pub async fn host_pid(&self, c: &Container) -> Option<u32> {
        let info = self.docker.inspect_container(&c.id, None).await.ok()?;
        let pid = u32::try_from(info.state?.pid?).ok().filter(|p| *p > 0)?;
        c.holds(pid).then_some(pid)
    }

    /// Whether it is running (`Err` when it exited: its status).
    pub async fn running(&self, c: &Container) -> Result<(), String> {
        let started = self.started(c).map_err(|e| e.to_string())?;
        if started.is_running().await.map_err(|e| e.to_string())? {
            return Ok(());
        }
        let code = started.exit_code().await.map_err(|e| e.to_string())?;
        Err(format!("exited with status {}", code.unwrap_or(-1)))
    }

    /// SIGKILL.
    pub async fn kill(&self, c: &Container) {
        let _ = self
            .docker
            .kill_container(
                &c.id,
                None::<bollard::query_parameters::KillContainerOptions>,
            )
            .await;
        self.wait_stopped(c, Duration::from_secs(10)).await;
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&self, c: &Container, grace: Duration) {
        if let Ok(started) = self.started(c) {
            let seconds = grace.as_secs().max(1) as i32;
            let _ = started.stop_with_timeout(Some(seconds)).await;
        }
        self.wait_stopped(c, grace + Duration::from_secs(10)).await;
    }

    async fn wait_stopped(&self, c: &Container, deadline: Duration) {
        crate::ready::poll(deadline, || async {
            self.running(c).await.is_err().then_some(())
        })
        .await;
    }

    /// Starts a stopped container again (its logs keep following).
    pub async fn start(&self, c: &Container, log: &LogFile) -> Result<(), HarnessError> {
        self.started(c)?
            .start()
            .await
            .map_err(err(format!("start {}", c.name)))?;
        if !c.output_to_file {
            self.follow_logs(c, log);
        }
        Ok(())
    }
}

impl Drop for ContainerStack {
    fn drop(&mut self) {
        for t in self.log_tasks.lock().unwrap().iter() {
            t.abort();
        }
        let docker = self.docker.clone();
        let ids: Vec<String> = self.containers.lock().unwrap().clone();
        let started: Vec<_> = self
            .started
            .lock()
            .unwrap()
            .drain()
            .map(|(_, c)| c)
            .collect();
        let network = self.network.clone();
        // Drop cannot await: remove everything on a thread with a runtime of its own;
        // testcontainers removes what it started, and what it never handed over (a start cut
        // off) is removed by name.
        let done = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return false;
            };
            rt.block_on(async {
                // Only the stack holds them by now (methods hold a clone while they run). The
                // containers go side by side: each removal waits for the engine to kill it.
                let owned = started.into_iter().filter_map(|c| Arc::try_unwrap(c).ok());
                futures::future::join_all(owned.map(|c| c.rm())).await;
                let options = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                let by_name = ids
                    .iter()
                    .map(|id| docker.remove_container(id, Some(options.clone())));
                futures::future::join_all(by_name).await;
                remove_network(&docker, &network).await
            })
        });
        let removed = done.join().unwrap_or(false);
        // Everything is removed: the watchdog goes without doing anything. (Until here it
        // stays, for a SIGKILL during the removal.) If the network is still there, the watchdog
        // is kept, its stdin open, to try again when this process ends.
        if let Some(mut watchdog) = self.watchdog.lock().unwrap().take() {
            if removed {
                let _ = watchdog.kill();
                let _ = watchdog.wait();
            } else {
                KEPT_WATCHDOGS.lock().unwrap().push(watchdog);
            }
        }
    }
}

/// Watchdogs of stacks whose network the engine would not remove: held (and their stdin with
/// them) until this process ends, when each tries once more.
static KEPT_WATCHDOGS: Mutex<Vec<std::process::Child>> = Mutex::new(Vec::new());

/// How long a stack's network removal is tried again while the engine still counts an endpoint
/// of a container just removed, how long one try may take, and the pause between tries.
const NETWORK_REMOVAL: (Duration, Duration, Duration) = (
    Duration::from_secs(5),
    Duration::from_secs(2),
    Duration::from_millis(250),
);

/// Removes `network`, trying again for a while; says so (and how to remove it by hand) if the
/// engine keeps refusing. True when it is gone.
async fn remove_network(docker: &Docker, network: &str) -> bool {
    let (deadline, each, pause) = NETWORK_REMOVAL;
    let until = tokio::time::Instant::now() + deadline;
    let last = loop {
        let why = match tokio::time::timeout(each, docker.remove_network(network)).await {
            Ok(Ok(()))
            | Ok(Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            })) => return true,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} s", each.as_secs()),
        };
        if tokio::time::Instant::now() + pause > until {
            break why;
        }
        tokio::time::sleep(pause).await;
    };
    eprintln!(
        "harness: could not remove the Docker network {network}: {last}. Remove it with `docker network rm {network}` (an engine that says it has active endpoints, with no container on it, may need a restart first)"
    );
    false
}
