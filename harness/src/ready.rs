//! Waiting, as data: [`poll`] re-checks a condition until a deadline, and [`wait_ready`] waits
//! for a component through a [`Probe`] (an HTTP answer, a log line, a port that accepts),
//! failing early when the component exits. No sleep stands in for either.

use crate::error::HarnessError;
use crate::log::LogFile;
use regex::Regex;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long any component may take to become ready (nginx, a backend, a container,
/// chromedriver): one rule for all of them.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);

/// How often a condition is re-checked.
const EVERY: Duration = Duration::from_millis(5);

/// Re-checks `check` until it yields a value, or `deadline` passes (`None`).
pub async fn poll<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if start.elapsed() > deadline {
            return None;
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// What says a component is ready.
#[derive(Debug, Clone)]
pub enum Probe {
    /// `GET url` answers 2xx.
    Http {
        /// The URL.
        url: String,
    },
    /// A line matching `pattern` appears in `log` after byte `offset`; the first capture
    /// group (an address, a port) is what the probe finds.
    LogLine {
        /// The log.
        log: LogFile,
        /// Where to start reading.
        offset: u64,
        /// The pattern; its first group is returned.
        pattern: Regex,
    },
    /// A TCP connect to `addr` succeeds.
    Connect {
        /// The address.
        addr: SocketAddr,
    },
}

impl Probe {
    /// What the probe looks at, for error messages.
    pub fn describe(&self) -> String {
        match self {
            Probe::Http { url } => url.clone(),
            Probe::LogLine { log, pattern, .. } => {
                format!("a line matching {pattern} in {}", log.path().display())
            }
            Probe::Connect { addr } => format!("tcp://{addr}"),
        }
    }

    /// Checks once: `Some` (the captured text, or empty) when it holds.
    pub async fn check(&self) -> Option<String> {
        match self {
            Probe::Http { url } => {
                let client = http_client();
                let r = client.get(url).send().await.ok()?;
                r.status().is_success().then(String::new)
            }
            Probe::LogLine {
                log,
                offset,
                pattern,
            } => {
                // A line may not be terminated yet: read the raw text.
                let text = log.text_since(*offset);
                let c = pattern.captures(&text)?;
                Some(c.get(1).map(|m| m.as_str().to_string()).unwrap_or_default())
            }
            Probe::Connect { addr } => tokio::net::TcpStream::connect(addr)
                .await
                .ok()
                .map(|_| String::new()),
        }
    }
}

fn http_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("reqwest client")
    })
}

/// Waits until `probe` holds, at most [`READY_DEADLINE`]. `exited` is asked on every round
/// whether the component has exited (its status): then the wait fails at once. `logs` gives
/// the log tails an error carries.
pub async fn wait_ready<E, Fut>(
    component: &str,
    probe: &Probe,
    mut exited: E,
    logs: impl Fn() -> String,
) -> Result<String, HarnessError>
where
    E: FnMut() -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let start = Instant::now();
    loop {
        if let Some(status) = exited().await {
            return Err(HarnessError::Exited {
                component: component.to_string(),
                status,
                logs: logs(),
            });
        }
        if let Some(found) = probe.check().await {
            return Ok(found);
        }
        if start.elapsed() > READY_DEADLINE {
            return Err(HarnessError::NotReady {
                component: component.to_string(),
                url: probe.describe(),
                waited: start.elapsed(),
                logs: logs(),
            });
        }
        tokio::time::sleep(EVERY).await;
    }
}
