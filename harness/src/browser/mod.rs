//! The real client: a browser driven over WebDriver (through `fantoccini`), one of three
//! engines ([`Engine`]: Chromium, Firefox, WebKit). It loads the player page the stack's nginx
//! serves (`web/player.html`), presses Play, seeks (near the end and back, or to a point), and
//! reports what the page saw. Which Range requests it made is read from nginx's access log
//! (see [`BrowserRequest`]).

mod engine;
mod fresh;
mod pool;

pub use engine::{find, Engine, EngineTools};
pub use pool::BrowserPool;

use crate::access::AccessLine;
use crate::error::HarnessError;
use crate::ready::poll;
use crate::tcp::{self, TcpState};
use engine::Driver;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// How long a WebDriver server and its browser get to start, and nginx to log a play's requests.
const LAUNCH_DEADLINE: Duration = Duration::from_secs(30);

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
    /// The engine that played.
    pub engine: Engine,
    /// The page's view.
    pub page: PageOutcome,
    /// The browser's requests for the recording, in the order they started.
    pub requests: Vec<BrowserRequest>,
}

/// A browser session, with its WebDriver server (and X display); all are killed when it drops.
pub struct Browser {
    engine: Engine,
    client: fantoccini::Client,
    driver: Driver,
    scratch: tempfile::TempDir,
    /// The process's browser slot, when this browser took it itself (see [`BrowserSlot`]).
    slot: Option<BrowserSlot>,
    /// The first window (Chromium's plays each open one of their own).
    home: Option<fantoccini::wd::WindowHandle>,
    /// Its session has ended (WebKit's, with its play).
    ended: bool,
    /// Chromium's DevTools on its browser target, once a play has used it.
    devtools: Option<fresh::DevTools>,
}

/// The right to play in a browser: one of [`browser_slots`] machine-wide slots, each a lock file
/// held with `flock`, so that every process of the harness (`cargo test`'s one, nextest's one per
/// test, two `harness run`s) shares them. The runner takes one for a whole scenario run that
/// plays, once its stack has started and before its first step, so that no step waits for a
/// slot in the middle of a scenario's timing.
pub struct BrowserSlot {
    lock: crate::machine_lock::MachineLock,
    /// The process's turn: its waiters take slots first come, first served.
    _turn: tokio::sync::OwnedSemaphorePermit,
}

impl BrowserSlot {
    /// Waits for a free slot: the process's turn, then a machine-wide slot.
    pub async fn acquire() -> Result<BrowserSlot, HarnessError> {
        let turn = process_turns()
            .clone()
            .acquire_owned()
            .await
            .expect("the turns are never closed");
        let lock = crate::machine_lock::MachineLock::any(&slot_names()).await?;
        Ok(BrowserSlot { lock, _turn: turn })
    }

    /// A free slot now, if there is one.
    pub fn try_acquire() -> Result<Option<BrowserSlot>, HarnessError> {
        let Ok(turn) = process_turns().clone().try_acquire_owned() else {
            return Ok(None);
        };
        let lock = crate::machine_lock::MachineLock::try_any(&slot_names())?;
        Ok(lock.map(|lock| BrowserSlot { lock, _turn: turn }))
    }

    /// The lock file this slot holds.
    pub fn path(&self) -> &Path {
        self.lock.path()
    }
}

/// This process's share of the slots, handed out in order of asking.
fn process_turns() -> &'static std::sync::Arc<tokio::sync::Semaphore> {
    static TURNS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::OnceLock::new();
    TURNS.get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(browser_slots())))
}

/// The slots' lock file names.
fn slot_names() -> Vec<String> {
    (0..browser_slots())
        .map(|i| format!("recordings-harness-browser-{i}.lock"))
        .collect()
}

/// How many browsers play at once on this machine: `HARNESS_BROWSERS`, default one per core,
/// at most [`DEFAULT_MAX_BROWSERS`] (Chromium is heavy: more at once starve the stacks whose
/// timings a scenario is about; two were measured on 2 cores, docs/records/suite-time.txt).
pub fn browser_slots() -> usize {
    std::env::var("HARNESS_BROWSERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| cores().min(DEFAULT_MAX_BROWSERS))
}

/// The most browser slots by default, however many cores (`HARNESS_BROWSERS` allows more).
pub const DEFAULT_MAX_BROWSERS: usize = 4;

/// The machine's cores (as the process may use them), at least 1.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl Browser {
    /// Starts `engine`'s WebDriver server (on a port of its own) and a browser session, taking a
    /// browser slot of its own. Logs go to `log_dir` (`chromedriver-N-ATTEMPT.log`, ...).
    pub async fn launch(engine: Engine, log_dir: &Path) -> Result<Browser, HarnessError> {
        find(engine)?;
        let slot = BrowserSlot::acquire().await?;
        let mut browser = Browser::launch_in(engine, log_dir, &slot).await?;
        browser.slot = Some(slot);
        Ok(browser)
    }

    /// Like [`Browser::launch`], within a slot the caller holds.
    pub async fn launch_in(
        engine: Engine,
        log_dir: &Path,
        _slot: &BrowserSlot,
    ) -> Result<Browser, HarnessError> {
        let tools = find(engine)?;
        let scratch = tempfile::Builder::new()
            .prefix(&format!("harness-{engine}-"))
            .tempdir()
            .map_err(HarnessError::io("create a browser profile dir"))?;
        let driver = engine::start_driver(&tools, log_dir, scratch.path()).await?;
        let url = format!("http://127.0.0.1:{}", driver.port);
        let client = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        )
        .capabilities(engine::capabilities(&tools, scratch.path()))
        .connect(&url)
        .await
        .map_err(|e| HarnessError::Browser {
            what: format!(
                "start {engine} ({}) through {} at {url}",
                tools.browser.display(),
                tools.driver.display()
            ),
            message: format!("{e}\n{}", driver.process.log().tail(20)),
        })?;
        Ok(Browser {
            engine,
            client,
            driver,
            scratch,
            slot: None,
            home: None,
            ended: false,
            devtools: None,
        })
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Opens `page_url` (the player page), runs its `harnessPlay` and returns what it saw. Each
    /// of the page's waits (for `canplay`, `ended`, a seek) has `options.wait` as its deadline.
    pub async fn play(
        &self,
        page_url: &str,
        options: &PlayOptions,
    ) -> Result<PageOutcome, HarnessError> {
        let wait = options.wait;
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
                vec![serde_json::json!({
                    "seek": options.seek,
                    "seek_to": options.seek_to.map(SeekTo::to_json),
                    "wait_ms": wait.as_millis() as u64,
                })],
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

    /// The session's own folder (Chromium's `--user-data-dir`, Firefox's TMPDIR, WebKit's XDG
    /// folders), removed when the browser drops: every process of the session names it on its
    /// command line or in its environment.
    pub fn scratch_dir(&self) -> &Path {
        self.scratch.path()
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

    /// Ends the session (the browser exits) and stops its WebDriver server and X display.
    pub async fn close(mut self) {
        if !self.ended {
            self.end_session().await;
        }
        self.driver.process.kill();
        if let Some(x) = &self.driver.display {
            x.kill();
        }
    }
}

/// Is `engine` installed? `Err` carries the install command (for skip messages).
pub fn available(engine: Engine) -> Result<(), String> {
    find(engine).map(|_| ()).map_err(|e| e.to_string())
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

/// A point to seek to: a fraction of the duration (`"50%"`) or a time (`"12s"`, `"1.5s"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SeekTo {
    /// This fraction of the duration (0 to 1).
    Fraction(f64),
    /// This many seconds from the start (capped at the duration).
    Secs(f64),
}

impl SeekTo {
    /// The form the player page's `harnessPlay` takes.
    fn to_json(self) -> serde_json::Value {
        match self {
            SeekTo::Fraction(f) => serde_json::json!({ "fraction": f }),
            SeekTo::Secs(s) => serde_json::json!({ "secs": s }),
        }
    }
}

impl std::str::FromStr for SeekTo {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("{s:?} is not a point to seek to: a percentage (\"50%\") or seconds (\"12s\")")
        };
        let number = |n: &str| {
            n.trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
        };
        if let Some(pct) = s.strip_suffix('%') {
            let pct = number(pct).filter(|p| *p <= 100.0).ok_or_else(bad)?;
            Ok(SeekTo::Fraction(pct / 100.0))
        } else if let Some(secs) = s.strip_suffix('s') {
            number(secs).map(SeekTo::Secs).ok_or_else(bad)
        } else {
            Err(bad())
        }
    }
}

impl std::fmt::Display for SeekTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SeekTo::Fraction(x) => write!(f, "{}%", x * 100.0),
            SeekTo::Secs(s) => write!(f, "{s}s"),
        }
    }
}

impl Serialize for SeekTo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SeekTo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("seek_to: {e}")))
    }
}

impl schemars::JsonSchema for SeekTo {
    fn schema_name() -> String {
        "SeekTo".into()
    }

    fn json_schema(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        serde_json::from_value(serde_json::json!({
            "description": "A percentage of the duration (\"50%\") or seconds from the start (\"12s\")",
            "type": "string",
            "pattern": "^[0-9]+(\\.[0-9]+)?(%|s)$"
        }))
        .expect("a valid schema")
    }
}

/// How a `play` is done.
#[derive(Debug, Clone, Copy)]
pub struct PlayOptions {
    /// The browser engine (default Chromium).
    pub engine: Engine,
    /// `?format=` (default: the recording's own).
    pub format: Option<mock_twilio::MediaFormat>,
    /// Seek near the end, let it end, then seek back to the start (unless `seek_to` is set).
    pub seek: bool,
    /// Seek to this point once it can play, and let it play from there to the end (instead of
    /// `seek`).
    pub seek_to: Option<SeekTo>,
    /// Deadline for each of the page's waits.
    pub wait: Duration,
}

impl Default for PlayOptions {
    fn default() -> Self {
        PlayOptions {
            engine: Engine::Chromium,
            format: None,
            seek: true,
            seek_to: None,
            wait: Duration::from_secs(10),
        }
    }
}

impl Browser {
    /// Plays `recording` through `stack`: the player page from the stack's nginx, its `<audio>`
    /// element on the recording's download, afresh (see [`Browser::plays_again`]). Returns once
    /// nginx has logged every request the browser made for it: every connection of the play is
    /// closed by then.
    pub async fn play_on(
        &mut self,
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
        let page = self.play_afresh(&page_url, &options).await?;
        // Every connection the browser opened is closed by nginx once it has logged it. One
        // still open would leave its requests out of the outcome: that is an error, not a guess.
        let still_open = || open_client_ports(port).difference(&before).count();
        let closed = poll(LAUNCH_DEADLINE, || async {
            (still_open() == 0).then_some(())
        })
        .await;
        let open = closed.map_or_else(still_open, |()| 0);
        if open > 0 {
            return Err(HarnessError::Browser {
                what: format!("wait for the connections of the play of {page_url} to close"),
                message: format!(
                    "{open} of them still open to nginx {} s after the play ended",
                    LAUNCH_DEADLINE.as_secs()
                ),
            });
        }
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
        Ok(BrowserOutcome {
            engine: options.engine,
            page,
            requests,
        })
    }
}

impl crate::stack::Stack {
    /// Plays `recording` in a new browser of `options.engine` through this stack (see
    /// [`Browser::play_on`]), closed after.
    pub async fn play(
        &self,
        recording: &mock_twilio::Recording,
        options: PlayOptions,
    ) -> Result<BrowserOutcome, HarnessError> {
        let mut browser = Browser::launch(options.engine, self.sandbox()).await?;
        let outcome = browser.play_on(self, recording, options).await;
        browser.close().await;
        outcome
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
