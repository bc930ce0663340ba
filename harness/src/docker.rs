//! The Docker engine: connecting to it (`DOCKER_HOST` or the local socket), and its errors.

use crate::error::HarnessError;
use bollard::Docker;
use std::time::Duration;

pub(crate) fn err<E: std::fmt::Display>(
    what: impl std::fmt::Display,
) -> impl FnOnce(E) -> HarnessError {
    move |e| HarnessError::Docker {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// How long the engine may take to answer a ping. A stopped engine refuses at once; a busy one
/// (Docker creating and removing several stacks' containers beside a browser, on 2 cores) was
/// seen to take over 5 s.
const PING_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the engine is looked for: `DOCKER_HOST=…` when it is set, else the local socket.
fn engine_address() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => format!("DOCKER_HOST={host}"),
        _ => "the local socket (unix:///var/run/docker.sock; DOCKER_HOST names another)".into(),
    }
}

/// Connects to the Docker engine (`DOCKER_HOST` or the local socket) and checks it answers.
pub async fn engine() -> Result<Docker, HarnessError> {
    let docker = Docker::connect_with_defaults().map_err(|e| HarnessError::ToolMissing {
        tool: "docker",
        hint: format!(
            "no Docker engine to connect to at {} ({e}); install docker.io and start it",
            engine_address()
        ),
    })?;
    let problem = match tokio::time::timeout(PING_TIMEOUT, docker.ping()).await {
        Ok(Ok(_)) => return Ok(docker),
        Ok(Err(e)) => format!("does not answer: {e}; start it (service docker start)"),
        Err(_) => format!("did not answer a ping within {} s", PING_TIMEOUT.as_secs()),
    };
    Err(HarnessError::EngineUnreachable {
        address: engine_address(),
        problem,
    })
}

/// Whether an engine answers, from synchronous code (tests); `Err` says why not.
pub fn available() -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(engine()).map(|_| ()).map_err(|e| e.to_string())
}
