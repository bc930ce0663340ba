//! The containers runtime: the same scenarios and snapshots with nginx and the backend in Docker,
//! images built offline and reused, and nothing of ours left behind.

use crate::support::docker_present;
use crate::support::{docker, rt, tools_present};
use harness::nginx::NginxLine;
use harness::stack::BackendSpec;
use harness::{Profile, Runtime, Stack, StackSpec};
use std::process::Command;

/// Names of our containers and networks whose name starts with `prefix`, from the docker CLI
/// (an independent view of the engine).
fn leftovers(prefix: &str) -> Vec<String> {
    crate::support::docker_names(None)
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[test]
fn every_scenario_file_passes_unchanged_in_containers() {
    if crate::support::runtime() == Runtime::Containers {
        // files.rs already runs every file under containers.
        return;
    }
    if !tools_present() || !docker_present() {
        return;
    }
    crate::files::run_every_file(&BackendSpec::Reference, Runtime::Containers, None);
}

/// Every scenario file on nginx of `line`, in containers: its outcome is 1.22's, or the
/// line's own snapshot says how it differs.
fn every_file_on(line: NginxLine) {
    if !tools_present() || !docker_present() {
        return;
    }
    crate::files::run_every_file(&BackendSpec::Reference, Runtime::Containers, Some(line));
}

#[test]
fn every_scenario_file_on_nginx_1_26() {
    every_file_on(NginxLine::V1_26);
}

#[test]
fn every_scenario_file_on_nginx_1_30() {
    every_file_on(NginxLine::V1_30);
}

#[test]
fn the_version_an_image_runs_is_read_from_nginx_in_it() {
    if !tools_present() || !docker_present() {
        return;
    }
    let images = rt()
        .block_on(harness::images::build_nginx_images(
            &NginxLine::ALL,
            &|_| {},
        ))
        .unwrap();
    for (line, (version, _)) in &images {
        assert!(
            version.starts_with(&format!("nginx/{}.", line.name())),
            "{line}: {version}"
        );
    }
    assert_eq!(images[&NginxLine::V1_22].0, "nginx/1.22.1");
}

#[test]
fn a_container_stack_runs_in_docker_and_leaves_nothing_behind_even_on_panic() {
    if !tools_present() || !docker_present() {
        return;
    }
    let network = std::thread::spawn(|| {
        let rt = rt();
        let mut network = String::new();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(async {
                let mut spec = StackSpec::new(Profile::Fixed);
                spec.runtime = Runtime::Containers;
                let stack = Stack::start(spec).await.unwrap();
                network = stack.container_network().unwrap().to_string();
                // The stack answers through the published port, and really runs in Docker.
                let r = stack
                    .client()
                    .get(stack.url("/healthz"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                assert!(stack.url("/").starts_with("http://127.0.0.1:"));
                let running = leftovers(&network);
                assert!(running.contains(&format!("{network}-nginx")), "{running:?}");
                assert!(
                    running.contains(&format!("{network}-backend")),
                    "{running:?}"
                );
                assert!(running.contains(&network), "{running:?}");
                // Started through testcontainers, with nginx published on loopback only.
                for role in ["nginx", "backend"] {
                    let label = docker(&[
                        "inspect",
                        "-f",
                        "{{index .Config.Labels \"org.testcontainers.managed-by\"}}",
                        &format!("{network}-{role}"),
                    ]);
                    assert_eq!(label.trim(), "testcontainers", "{role}");
                }
                let ports = docker(&["port", &format!("{network}-nginx")]);
                assert!(
                    ports.lines().count() == 1 && ports.contains("-> 127.0.0.1:"),
                    "{ports}"
                );
                // Its backend's memory and fds are read from this host's /proc, as a
                // process's are: the container's main process is the backend itself.
                let pid = stack.backend_measured_pids()[0].expect("a pid on this host");
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
                assert_eq!(comm.trim(), "recordings-back", "pid {pid}");
                let (rss_kb, fds) = harness::process::gauges(pid).unwrap();
                assert!(rss_kb > 0 && fds > 2, "{rss_kb} kB, {fds} fds");
                assert_eq!(stack.backend_pids(), [None], "no process of ours to signal");
                panic!("on purpose, mid-scenario");
            })
        }));
        // Only the panic on purpose: a failed check above would be a panic of its own.
        let payload = result.expect_err("the stack panicked on purpose");
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"on purpose, mid-scenario"),
            "a check failed before the panic on purpose"
        );
        network
    })
    .join()
    .unwrap();
    assert!(!network.is_empty());
    assert_eq!(leftovers(&network), Vec::<String>::new(), "left behind");
}

#[test]
fn a_second_image_build_reuses_the_images() {
    if !tools_present() || !docker_present() {
        return;
    }
    let bin = harness::stack::find_backend().unwrap();
    let rt = rt();
    let said = std::sync::Mutex::new(Vec::<String>::new());
    let first = rt
        .block_on(harness::images::build_images(
            &bin,
            harness::nginx::NginxLine::DEFAULT,
            &|_| {},
        ))
        .unwrap();
    let second = rt
        .block_on(harness::images::build_images(
            &bin,
            harness::nginx::NginxLine::DEFAULT,
            &|l| said.lock().unwrap().push(l.to_string()),
        ))
        .unwrap();
    assert_eq!(first, second);
    let said = said.into_inner().unwrap();
    assert!(said.iter().all(|l| l.ends_with(": present")), "{said:?}");
    // One backend image of ours, not one per build (it may carry a second, stable tag).
    let out = Command::new("docker")
        .args(["images", "-q", "recordings-harness/backend"])
        .output()
        .unwrap();
    let ids: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

/// A TCP front for the local engine's socket, as an engine elsewhere is reached
/// (`DOCKER_HOST=tcp://…`): it forwards each connection and keeps what the clients sent (the
/// Engine API requests, small). Stops when dropped.
struct EngineFront {
    addr: std::net::SocketAddr,
    sent: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    _rt: tokio::runtime::Runtime,
}

/// An engine's answer to a network removal it refuses, as Docker 20.10 gave it for a network
/// it still counted an endpoint on.
const REFUSED_NETWORK_REMOVAL: &str = "HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\nContent-Length: 72\r\n\r\n{\"message\":\"error while removing network: network has active endpoints\"}";

impl EngineFront {
    fn start(socket: String) -> EngineFront {
        EngineFront::refusing(socket, false)
    }

    /// A front that, when `refuse_network_removal`, answers every `DELETE …/networks/…` itself
    /// with the engine's refusal ([`REFUSED_NETWORK_REMOVAL`]) and forwards everything else.
    fn refusing(socket: String, refuse_network_removal: bool) -> EngineFront {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = rt();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = sent.clone();
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (socket, kept) = (socket.clone(), kept.clone());
                tokio::spawn(async move {
                    let Ok(engine) = tokio::net::UnixStream::connect(&socket).await else {
                        return;
                    };
                    let (mut from_client, to_client) = client.into_split();
                    let to_client = std::sync::Arc::new(tokio::sync::Mutex::new(to_client));
                    let (mut from_engine, mut to_engine) = engine.into_split();
                    let answers_to = to_client.clone();
                    let answers = tokio::spawn(async move {
                        let mut buf = vec![0u8; 16384];
                        while let Ok(n @ 1..) = from_engine.read(&mut buf).await {
                            if answers_to.lock().await.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = answers_to.lock().await.shutdown().await;
                    });
                    let mut buf = vec![0u8; 16384];
                    while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                        kept.lock().unwrap().extend_from_slice(&buf[..n]);
                        // A request head arrives in one read (the client waits for each answer).
                        let head = String::from_utf8_lossy(&buf[..n.min(200)]).to_string();
                        if refuse_network_removal
                            && head.starts_with("DELETE ")
                            && head
                                .lines()
                                .next()
                                .is_some_and(|l| l.contains("/networks/"))
                        {
                            let refusal = REFUSED_NETWORK_REMOVAL.as_bytes();
                            if to_client.lock().await.write_all(refusal).await.is_err() {
                                break;
                            }
                            continue;
                        }
                        if to_engine.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = to_engine.shutdown().await;
                    let _ = answers.await;
                });
            }
        });
        EngineFront {
            addr,
            sent,
            _rt: rt,
        }
    }

    /// The request lines the clients sent (`POST /v1.41/containers/create?… HTTP/1.1`).
    fn request_lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.sent.lock().unwrap())
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| l.ends_with(" HTTP/1.1"))
            .map(String::from)
            .collect()
    }
}

/// `harness --runtime containers run FILE --profile fixed` from the checkout, with `DOCKER_HOST`.
fn run_in_containers_at(docker_host: &str) -> std::process::Output {
    crate::support::harness_command()
        .env("DOCKER_HOST", docker_host)
        .args(["--runtime", "containers", "run"])
        .arg("scenarios/checks/seed-manual-checks.toml")
        .args(["--profile", "fixed"])
        .output()
        .unwrap()
}

/// The local engine's socket, where a tcp:// front can be put before it; `None` (a skip, or a
/// failure under `HARNESS_REQUIRE_TOOLS=1`) when `DOCKER_HOST` names an engine elsewhere.
fn engine_socket() -> Option<String> {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => match host.strip_prefix("unix://") {
            Some(path) => Some(path.to_string()),
            None => {
                let need = format!(
                    "a local engine socket to put a tcp:// front before (DOCKER_HOST={host})"
                );
                crate::support::present_or_skip(false, &need);
                None
            }
        },
        _ => Some("/var/run/docker.sock".to_string()),
    }
}

#[test]
fn a_network_the_engine_will_not_remove_is_tried_again_then_said_with_how_to_remove_it() {
    if !tools_present() || !docker_present() {
        return;
    }
    let Some(socket) = engine_socket() else {
        return;
    };
    let front = EngineFront::refusing(socket, true);
    let host = format!("tcp://{}", front.addr);
    let out = run_in_containers_at(&host);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let network = stderr
        .split("could not remove the Docker network ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .map(str::to_string);
    // Removed first, through the engine's own socket, so that a failed check below leaves
    // nothing behind.
    if let Some(n) = &network {
        let _ = Command::new("docker").args(["network", "rm", n]).output();
    }
    let network = network.unwrap_or_else(|| panic!("no word of a network left: {out:?}"));
    assert!(network.starts_with("harness-"), "{network}");
    assert!(
        stderr.contains(&format!("Remove it with `docker network rm {network}`")),
        "{stderr}"
    );
    // Only the removal failed: the scenario ran and passed, its containers went, and the
    // removal was tried again.
    assert!(out.status.success(), "{out:?}");
    let tries = front
        .request_lines()
        .into_iter()
        .filter(|l| l.starts_with("DELETE") && l.contains(&format!("/networks/{network}")))
        .count();
    // (The kept watchdog's own try, at the harness's exit, may add one.)
    assert!(tries >= 3, "the removal was tried {tries} time(s)");
    assert_eq!(leftovers(&network), Vec::<String>::new(), "left behind");
}

#[test]
fn the_containers_runtime_talks_to_the_engine_docker_host_names() {
    if !tools_present() || !docker_present() {
        return;
    }
    let Some(socket) = engine_socket() else {
        return;
    };
    let front = EngineFront::start(socket);
    let host = format!("tcp://{}", front.addr);
    let out = run_in_containers_at(&host);
    assert!(out.status.success(), "DOCKER_HOST={host}: {out:?}");
    // The stack's containers were created (by testcontainers) and removed, and its network
    // removed, through the engine DOCKER_HOST named.
    let lines = front.request_lines();
    for (method, path) in [
        ("POST", "/containers/create"),
        ("DELETE", "/containers/harness-"),
        ("DELETE", "/networks/harness-"),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(method) && l.contains(path)),
            "no {method} {path}… through DOCKER_HOST={host}: {lines:#?}"
        );
    }
    // The control: an address nothing listens on. The run fails, naming it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let host = format!("tcp://{closed}");
    let out = run_in_containers_at(&host);
    // The report (stdout) says why the file did not run.
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "DOCKER_HOST={host}: {out:?}");
    assert!(
        report.contains(&format!(
            "the Docker engine at DOCKER_HOST={host} does not answer"
        )),
        "the error names the engine it tried: {report}"
    );
    assert!(
        !report.contains("not found"),
        "an engine that does not answer is not a missing tool: {report}"
    );
}
