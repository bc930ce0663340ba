//! The real client: headless Chromium (Debian's `chromium`) driven over WebDriver
//! (`chromedriver`, through `fantoccini`). It loads the player page the stack's nginx serves
//! (`web/player.html`), presses Play, seeks near the end and back, and reports what the page saw.
//! Which Range requests it made is read from nginx's access log (see [`BrowserRequest`]).

use crate::access::AccessLine;
use crate::error::HarnessError;
use crate::process::ChildGuard;
use crate::ready::{poll, wait_ready, Probe};
use crate::tcp::{self, TcpState};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How to install the browser.
pub const INSTALL_HINT: &str =
    "install Debian's packages: `apt-get install chromium chromium-driver` \
     (or point HARNESS_CHROMIUM and HARNESS_CHROMEDRIVER at the binaries)";

/// How long chromedriver and Chromium get to start.
const LAUNCH_DEADLINE: Duration = Duration::from_secs(30);

/// The browser's binaries.
#[derive(Debug, Clone)]
pub struct BrowserTools {
    /// Chromium itself.
    pub chromium: PathBuf,
    /// Its WebDriver server.
    pub chromedriver: PathBuf,
}

fn find_tool(env: &str, names: &[&str], extra: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    extra
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path).flat_map(|d| names.iter().map(move |n| d.join(n))))
        .find(|p| p.is_file())
}

/// Finds Chromium and chromedriver (`HARNESS_CHROMIUM`, `HARNESS_CHROMEDRIVER`, else `PATH`).
pub fn find_browser() -> Result<BrowserTools, HarnessError> {
    // Debian's /usr/bin/chromium is a wrapper script; the binary proper is under /usr/lib.
    let chromium = find_tool(
        "HARNESS_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
        &["/usr/lib/chromium/chromium"],
    )
    .ok_or_else(|| HarnessError::ToolMissing {
        tool: "chromium",
        hint: INSTALL_HINT.to_string(),
    })?;
    let chromedriver =
        find_tool("HARNESS_CHROMEDRIVER", &["chromedriver"], &[]).ok_or_else(|| {
            HarnessError::ToolMissing {
                tool: "chromedriver",
                hint: INSTALL_HINT.to_string(),
            }
        })?;
    Ok(BrowserTools {
        chromium,
        chromedriver,
    })
}

/// What the player page saw (the `<audio>` element's view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageOutcome {
    /// Where the page stopped: `played`, `playable`, `error before canplay`, `timeout waiting for …`.
    pub stage: String,
    /// Every media event, in order (`loadstart`, `canplay`, `seeking`, `ended`, `error`, …).
    pub events: Vec<String>,
    /// The media's duration in ms, as the browser decoded it.
    pub duration_ms: Option<u64>,
    /// `canplay` fired.
    pub canplay: bool,
    /// `ended` fired (it played through the end after the seek).
    pub ended: bool,
    /// `MediaError.code` (1 aborted, 2 network, 3 decode, 4 source not supported).
    pub error_code: Option<u16>,
    /// Its name, `MEDIA_ERR_NETWORK` and so on.
    pub error_name: Option<String>,
    /// The browser's message (varies by version; kept out of snapshots).
    pub error_message: Option<String>,
    /// `HTMLMediaElement.readyState` at the end.
    pub ready_state: u8,
}

impl PageOutcome {
    /// True when the page played: `canplay`, then `ended` (or `playable` without a seek), no error.
    pub fn played(&self) -> bool {
        self.error_code.is_none() && matches!(self.stage.as_str(), "played" | "playable")
    }
}

/// How much of what a request asked for arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivered {
    /// All the range asked for.
    Complete,
    /// Less: cut short by the browser (a cancelled read) or by the stack.
    Partial,
    /// An error answer (nginx's 502/504 page, a backend 5xx, a 416).
    Error,
}

impl std::fmt::Display for Delivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Delivered::Complete => "complete",
            Delivered::Partial => "partial",
            Delivered::Error => "error",
        })
    }
}

/// One request the browser made for the recording, as nginx logged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrowserRequest {
    /// When it started, in ms since the first one started.
    pub at_ms: u64,
    /// `$request_time` in ms.
    pub took_ms: u64,
    /// The Range header the browser chose (`bytes=0-`), `None` when it sent none.
    pub range: Option<String>,
    /// nginx's status.
    pub status: u16,
    /// `$body_bytes_sent`.
    pub bytes_sent: u64,
    /// `$upstream_status`.
    pub upstream_status: String,
    /// How much of what it asked for arrived.
    pub body: Delivered,
}

impl BrowserRequest {
    /// The request an access-log line records, for a recording of `size` bytes (`at_ms` still
    /// absolute: when it started, in ms since the epoch).
    pub fn from_access(a: &AccessLine, size: u64) -> BrowserRequest {
        let body = match a.status {
            200 | 206 if Some(a.bytes_sent) == expected_len(a.range.as_deref(), size, a.status) => {
                Delivered::Complete
            }
            200 | 206 => Delivered::Partial,
            _ => Delivered::Error,
        };
        BrowserRequest {
            at_ms: a.started_at_ms().unwrap_or(0),
            took_ms: a.request_time_ms,
            range: a.range.clone(),
            status: a.status,
            bytes_sent: a.bytes_sent,
            upstream_status: a.upstream_status.clone(),
            body,
        }
    }
}

/// What a `play` step observed in the browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrowserOutcome {
    /// The page's view.
    pub page: PageOutcome,
    /// The browser's requests for the recording, in the order they started.
    pub requests: Vec<BrowserRequest>,
}

/// A headless Chromium session, with its chromedriver; both are killed when it drops.
pub struct Browser {
    client: fantoccini::Client,
    driver: ChildGuard,
    _profile: tempfile::TempDir,
    /// The process's browser slot, when this browser took it itself (see [`BrowserSlot`]).
    slot: Option<BrowserSlot>,
}

/// The right to run a browser: one of [`browser_slots`]. The runner takes one for a whole
/// scenario run that plays, before its stack starts, so that no step waits for a slot in the
/// middle of a scenario's timing.
pub struct BrowserSlot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl BrowserSlot {
    /// Waits for a free slot.
    pub async fn acquire() -> Result<BrowserSlot, HarnessError> {
        browser_slots()
            .clone()
            .acquire_owned()
            .await
            .map(BrowserSlot)
            .map_err(|_| HarnessError::Browser {
                what: "take a browser slot".into(),
                message: "the slots are closed".into(),
            })
    }
}

/// How many browsers one process runs at once: `HARNESS_BROWSERS`, default 1. Chromium is
/// heavy; several at once on a small machine starve the stacks whose timings a scenario is about.
pub fn browser_slots() -> &'static std::sync::Arc<tokio::sync::Semaphore> {
    static SLOTS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let n = std::env::var("HARNESS_BROWSERS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(1);
        std::sync::Arc::new(tokio::sync::Semaphore::new(n))
    })
}

impl Browser {
    /// Starts chromedriver (on a port the OS picks) and a headless Chromium session, taking a
    /// browser slot of its own. Logs go to `log_dir/chromedriver-N-ATTEMPT.log`.
    pub async fn launch(log_dir: &Path) -> Result<Browser, HarnessError> {
        find_browser()?;
        let slot = BrowserSlot::acquire().await?;
        let mut browser = Browser::launch_in(log_dir, &slot).await?;
        browser.slot = Some(slot);
        Ok(browser)
    }

    /// Like [`Browser::launch`], within a slot the caller holds.
    pub async fn launch_in(log_dir: &Path, _slot: &BrowserSlot) -> Result<Browser, HarnessError> {
        let tools = find_browser()?;
        let (driver, port) = start_driver(&tools, log_dir).await?;
        let profile = tempfile::Builder::new()
            .prefix("harness-chromium-")
            .tempdir()
            .map_err(HarnessError::io("create a Chromium profile dir"))?;
        let url = format!("http://127.0.0.1:{port}");
        let client = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(chromium_capabilities(&tools, profile.path()))
        .connect(&url)
        .await
        .map_err(|e| HarnessError::Browser {
            what: format!(
                "start headless Chromium ({}) through chromedriver at {url}",
                tools.chromium.display()
            ),
            message: format!("{e}\n{}", driver.log().tail(20)),
        })?;
        Ok(Browser {
            client,
            driver,
            _profile: profile,
            slot: None,
        })
    }

    /// Opens `page_url` (the player page), runs its `harnessPlay` and returns what it saw. Each
    /// of the page's waits (for `canplay`, `ended`, the seek back) has `wait` as its deadline.
    pub async fn play(
        &self,
        page_url: &str,
        seek: bool,
        wait: Duration,
    ) -> Result<PageOutcome, HarnessError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| HarnessError::Browser {
            what: format!("{what} {page_url}"),
            message: e.to_string(),
        };
        let script_ms = wait.as_millis() as u64 * 4;
        self.client
            .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                Some(Duration::from_millis(script_ms)),
                // Loading the player page is not what is measured; a loaded machine is slow.
                Some(wait.max(LAUNCH_DEADLINE)),
                None,
            ))
            .await
            .map_err(|e| fail("set timeouts for", &e))?;
        self.client
            .goto(page_url)
            .await
            .map_err(|e| fail("open", &e))?;
        let value = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 window.harnessPlay(arguments[0]).then(done, e => done({ stage: 'script error: ' + e }));",
                vec![serde_json::json!({ "seek": seek, "wait_ms": wait.as_millis() as u64 })],
            )
            .await
            .map_err(|e| fail("play on", &e))?;
        serde_json::from_value(value.clone())
            .map_err(|e| fail(&format!("read the page's result {value} from"), &e))
    }

    /// Opens `url` in the window.
    pub async fn open(&self, url: &str) -> Result<(), HarnessError> {
        self.client
            .goto(url)
            .await
            .map_err(|e| HarnessError::Browser {
                what: format!("open {url}"),
                message: e.to_string(),
            })
    }

    /// A PNG screenshot of the window.
    pub async fn screenshot(&self) -> Result<Vec<u8>, HarnessError> {
        self.client
            .screenshot()
            .await
            .map_err(|e| HarnessError::Browser {
                what: "take a screenshot".into(),
                message: e.to_string(),
            })
    }

    /// Chromium's profile folder (`--user-data-dir`), removed when the browser drops: every
    /// Chromium process of this session has it on its command line.
    pub fn profile_dir(&self) -> &Path {
        self._profile.path()
    }

    /// Runs `script` in the current page and returns its value.
    pub async fn eval(&self, script: &str) -> Result<serde_json::Value, HarnessError> {
        self.client
            .execute(script, vec![])
            .await
            .map_err(|e| HarnessError::Browser {
                what: "run a script".into(),
                message: e.to_string(),
            })
    }

    /// Ends the session (Chromium exits) and stops chromedriver.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
        self.driver.kill();
    }
}

/// Starts chromedriver on a port the OS picks, and returns once it accepts connections.
/// chromedriver binds the port the OS gave it on IPv4 on IPv6 too; where that port is taken on
/// IPv6 it gives up, so a failed start is tried again (on another port), up to three times.
async fn start_driver(
    tools: &BrowserTools,
    log_dir: &Path,
) -> Result<(ChildGuard, u16), HarnessError> {
    // One log per launch: a stack plays several times.
    static LAUNCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let port_line =
        regex::Regex::new(r"started successfully on port (\d+)\.").expect("valid regex");
    let mut attempt = 0;
    loop {
        attempt += 1;
        let log = log_dir.join(format!("chromedriver-{n}-{attempt}.log"));
        let mut cmd = Command::new(&tools.chromedriver);
        cmd.arg("--port=0");
        let driver = ChildGuard::spawn("chromedriver", cmd, &log)?;
        // Only once the number is complete (followed by its full stop).
        let announced = Probe::LogLine {
            log: driver.log().clone(),
            offset: 0,
            pattern: port_line.clone(),
        };
        let exited = || async { driver.try_exit().map(|s| s.to_string()) };
        let port =
            match wait_ready("chromedriver", &announced, exited, || driver.log().tail(20)).await {
                Ok(port) => port.parse::<u16>().unwrap_or(0),
                Err(e) if attempt >= 3 => return Err(e),
                Err(_) => continue,
            };
        // It announces the port a moment before it accepts on it.
        let accepts = Probe::Connect {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        };
        wait_ready("chromedriver", &accepts, exited, || driver.log().tail(20)).await?;
        return Ok((driver, port));
    }
}

/// The WebDriver capabilities of a headless Chromium with its own profile folder.
fn chromium_capabilities(
    tools: &BrowserTools,
    profile: &Path,
) -> serde_json::Map<String, serde_json::Value> {
    let mut args = vec![
        "--headless=new".to_string(),
        "--autoplay-policy=no-user-gesture-required".to_string(),
        "--mute-audio".to_string(),
        "--disable-gpu".to_string(),
        "--disable-dev-shm-usage".to_string(),
        "--no-first-run".to_string(),
        "--disable-background-networking".to_string(),
        "--window-size=1280,900".to_string(),
        format!("--user-data-dir={}", profile.display()),
    ];
    // Chromium refuses to start as root with its sandbox on; only then is it turned off.
    if nix::unistd::geteuid().is_root() {
        args.push("--no-sandbox".to_string());
    }
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), "chrome".into());
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "binary": tools.chromium, "args": args }),
    );
    caps
}

/// Is a browser installed? `Err` carries the install command (for skip messages).
pub fn available() -> Result<(), String> {
    find_browser().map(|_| ()).map_err(|e| e.to_string())
}

/// How many bytes a full answer to `range` carries for a recording of `size` bytes.
fn expected_len(range: Option<&str>, size: u64, status: u16) -> Option<u64> {
    let Some(range) = range.filter(|_| status != 200) else {
        return Some(size);
    };
    let spec = range.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => (size.saturating_sub(n.parse().ok()?), size - 1),
        (a, "") => (a.parse().ok()?, size - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(size - 1)),
    };
    Some(end + 1 - start)
}

/// Connections to nginx's port that nginx has not closed yet (ESTABLISHED or CLOSE_WAIT on its
/// side), by their client's port.
fn open_client_ports(port: u16) -> std::collections::BTreeSet<u16> {
    tcp::sockets()
        .iter()
        .filter(|s| {
            s.local.port() == port
                && s.local.ip().is_loopback()
                && matches!(s.state, TcpState::Established | TcpState::CloseWait)
        })
        .map(|s| s.remote.port())
        .collect()
}

/// How a `play` is done.
#[derive(Debug, Clone, Copy)]
pub struct PlayOptions {
    /// `?format=` (default: the recording's own).
    pub format: Option<mock_twilio::MediaFormat>,
    /// Seek near the end, let it end, then seek back to the start.
    pub seek: bool,
    /// Deadline for each of the page's waits.
    pub wait: Duration,
}

impl Default for PlayOptions {
    fn default() -> Self {
        PlayOptions {
            format: None,
            seek: true,
            wait: Duration::from_secs(10),
        }
    }
}

impl Browser {
    /// Plays `recording` through `stack`: the player page from the stack's nginx, its `<audio>`
    /// element on the recording's download. Returns once nginx has logged every request the
    /// browser made for it (the browser is closed first: `self` is consumed).
    pub async fn play_on(
        self,
        stack: &crate::stack::Stack,
        recording: &mock_twilio::Recording,
        options: PlayOptions,
    ) -> Result<BrowserOutcome, HarnessError> {
        let port = stack.nginx_addr().port();
        let before = open_client_ports(port);
        let mark = stack.access_log().len();
        let page_url = stack.url(&crate::app::player_path(
            &recording.call_sid,
            options.format,
        ));
        let page = self.play(&page_url, options.seek, options.wait).await;
        self.close().await;
        let page = page?;
        // Every connection the browser opened is closed by nginx once it has logged it.
        poll(LAUNCH_DEADLINE, || async {
            open_client_ports(port)
                .difference(&before)
                .next()
                .is_none()
                .then_some(())
        })
        .await;
        let path = crate::app::download_path(&recording.call_sid, options.format);
        let size = recording
            .media(options.format.unwrap_or(recording.format))
            .len();
        let (lines, _) = stack.access_log().lines_since(mark);
        let mut requests: Vec<BrowserRequest> = crate::access::parse_all(&lines)
            .iter()
            .filter(|a| a.method == "GET" && a.path == path)
            .map(|a| BrowserRequest::from_access(a, size))
            .collect();
        let first = requests.iter().map(|r| r.at_ms).min().unwrap_or(0);
        for r in &mut requests {
            r.at_ms -= first;
        }
        requests.sort_by_key(|r| r.at_ms);
        Ok(BrowserOutcome { page, requests })
    }
}

impl crate::stack::Stack {
    /// Plays `recording` in a fresh headless Chromium through this stack (see
    /// [`Browser::play_on`]).
    pub async fn play(
        &self,
        recording: &mock_twilio::Recording,
        options: PlayOptions,
    ) -> Result<BrowserOutcome, HarnessError> {
        Browser::launch(self.sandbox())
            .await?
            .play_on(self, recording, options)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_lengths_follow_rfc_9110() {
        assert_eq!(expected_len(None, 1000, 206), Some(1000));
        assert_eq!(expected_len(Some("bytes=0-"), 1000, 206), Some(1000));
        assert_eq!(expected_len(Some("bytes=900-"), 1000, 206), Some(100));
        assert_eq!(expected_len(Some("bytes=-500"), 1000, 206), Some(500));
        assert_eq!(expected_len(Some("bytes=0-99"), 1000, 206), Some(100));
        assert_eq!(expected_len(Some("bytes=990-5000"), 1000, 206), Some(10));
        assert_eq!(expected_len(Some("bytes=0-99"), 1000, 200), Some(1000));
    }

    #[test]
    fn access_lines_become_browser_requests() {
        let line = r#"127.0.0.1 [25/Nov/2026:14:00:00 +0000] "GET /api/calls/CA1/download HTTP/1.1" status=206 bytes=600 range="bytes=400-" upstream_status="206" upstream_response_time="0.004" upstream_connect_time="0.000" request_time=0.005 request_id="-" msec=1764079200.123"#;
        let r = BrowserRequest::from_access(&AccessLine::parse(line).unwrap(), 1000);
        assert_eq!(r.range.as_deref(), Some("bytes=400-"));
        assert_eq!(r.body, Delivered::Complete);
        assert_eq!(r.took_ms, 5);
        assert_eq!(r.at_ms, 1_764_079_200_118);
        let cut = line.replace("bytes=600", "bytes=100");
        let r = BrowserRequest::from_access(&AccessLine::parse(&cut).unwrap(), 1000);
        assert_eq!(r.body, Delivered::Partial);
    }
}
