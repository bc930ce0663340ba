//! The containers runtime: nginx and the backend as Docker containers on a network of their own,
//! driven through the Engine API (`bollard`). mock-twilio and the hop fault point stay in this
//! process and listen on the network's gateway address, which the containers reach as the host.
//!
//! Its images are built offline (`harness images build`).

use crate::docker::{engine, err};
use crate::error::HarnessError;
use crate::process::LogFile;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::StreamExt;
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    containers: std::sync::Mutex<Vec<String>>,
    log_tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// How long a new network waits for an address pool while the engine's are all in use (each
/// stack has a network; many stacks at once, as `cargo test` under containers runs, can take
/// every default pool, about 30).
const POOL_WAIT: Duration = Duration::from_secs(120);

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
            log_tasks: Default::default(),
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
        let labels = HashMap::from([(OWNER_LABEL.to_string(), std::process::id().to_string())]);
        let mut host = HostConfig {
            binds: Some(spec.binds.clone()),
            network_mode: Some(self.network.clone()),
            ..Default::default()
        };
        let mut exposed = None;
        if let Some(port) = spec.publish {
            let key = format!("{port}/tcp");
            host.port_bindings = Some(HashMap::from([(
                key.clone(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(String::new()),
                }]),
            )]));
            exposed = Some(vec![key]);
        }
        let cmd = match &spec.output_file {
            Some(file) => {
                let mut c = vec![
                    "sh".to_string(),
                    "-c".to_string(),
                    "f=$1; shift; exec \"$@\" >>\"$f\" 2>&1".to_string(),
                    "run".to_string(),
                    file.display().to_string(),
                ];
                c.extend(spec.cmd.iter().cloned());
                Some(c)
            }
            None => (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd,
            user: Some(format!(
                "{}:{}",
                nix::unistd::getuid(),
                nix::unistd::getgid()
            )),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            exposed_ports: exposed,
            host_config: Some(host),
            networking_config: Some(bollard::models::NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.network.clone(),
                    EndpointSettings::default(),
                )])),
            }),
            ..Default::default()
        };
        // Owned from here: removed on drop, by name, even if creating or starting it is cut off.
        self.containers.lock().unwrap().push(name.clone());
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .map_err(err(format!("create container {name} from {}", spec.image)))?;
        let container = Container {
            id: created.id,
            name,
            output_to_file: spec.output_file.is_some(),
        };
        self.docker
            .start_container(&container.id, None)
            .await
            .map_err(err(format!("start container {}", container.name)))?;
        if spec.output_file.is_none() {
            self.follow_logs(&container, log);
        }
        Ok(container)
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
        let info = self
            .docker
            .inspect_container(&c.id, None)
            .await
            .map_err(err(format!("inspect {}", c.name)))?;
        info.network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.get(&self.network).cloned())
            .and_then(|e| e.ip_address)
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| HarnessError::Docker {
                what: format!("inspect {}", c.name),
                message: format!("it has no address on {}", self.network),
            })
    }

    /// The loopback address its published `port` is mapped to.
    pub async fn published(&self, c: &Container, port: u16) -> Result<SocketAddr, HarnessError> {
        let info = self
            .docker
            .inspect_container(&c.id, None)
            .await
            .map_err(err(format!("inspect {}", c.name)))?;
        info.network_settings
            .and_then(|n| n.ports)
            .and_then(|p| p.get(&format!("{port}/tcp")).cloned().flatten())
            .and_then(|b| b.into_iter().find_map(|b| b.host_port))
            .and_then(|p| p.parse::<u16>().ok())
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .ok_or_else(|| HarnessError::Docker {
                what: format!("inspect {}", c.name),
                message: format!("port {port} is not published"),
            })
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
        let info = self
            .docker
            .inspect_container(&c.id, None)
            .await
            .map_err(|e| e.to_string())?;
        let state = info.state.unwrap_or_default();
        if state.running == Some(true) {
            Ok(())
        } else {
            Err(format!(
                "exited with status {}",
                state.exit_code.unwrap_or(-1)
            ))
        }
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
        let _ = self
            .docker
            .stop_container(
                &c.id,
                Some(
                    StopContainerOptionsBuilder::default()
                        .t(grace.as_secs().max(1) as i32)
                        .build(),
                ),
            )
            .await;
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
        self.docker
            .start_container(&c.id, None)
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
        let network = self.network.clone();
        // Drop cannot await: remove everything on a thread with a runtime of its own.
        let done = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                for id in ids {
                    let _ = docker
                        .remove_container(
                            &id,
                            Some(
                                RemoveContainerOptionsBuilder::default()
                                    .force(true)
                                    .v(true)
                                    .build(),
                            ),
                        )
                        .await;
                }
                let _ = docker.remove_network(&network).await;
            });
        });
        let _ = done.join();
    }
}
