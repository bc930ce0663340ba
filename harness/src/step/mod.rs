//! The one step executor: [`execute`] sends a [`Step`] to a [`Target`] and observes it. It
//! builds the request (the download URL is assembled in [`download_path`] and nowhere else, a
//! status webhook in [`webhook_request`]), sends it, reads the response into an [`Outcome`]
//! ([`crate::outcome::read`]), and, when the session observes logs, waits for the stack's
//! logs to settle and reads the step's share of them (nginx's access and error logs, the
//! backend's events, mock-twilio's journal, new upstream connections). The scenario runner,
//! the soak, the bench, `harness check` and the browser step all come through here.

pub mod deploy;

use crate::access::{self, AccessLine};
use crate::app::{download_path, player_path, WEBHOOK_PATH};
use crate::browser::{BrowserPool, BrowserSlot, PlayOptions};
use crate::error::HarnessError;
use crate::events::{self, BackendEvent};
use crate::gateway::classify;
use crate::outcome::read::{self, media_crc, Verify};
use crate::outcome::{LoadOutcome, Outcome, TwilioRequest, Validators};
use crate::ready::poll;
use crate::scenario::{FaultPoint, Method, PlayStep, RequestStep, Step};
use crate::stack::Stack;
use futures::StreamExt;
use mock_twilio::IdleClose;
use mock_twilio::{FaultSet, Media, MediaFormat, Recording, Signing};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How long a step waits for the logs to settle (its access-log line, the downloads it began).
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(15);

/// Credentials a [`UrlTarget`] sends with every request.
#[derive(Debug, Clone)]
enum Auth {
    Bearer(String),
    Basic(String, String),
}

/// A server known only by its URL (a deployed stack for `harness check`, mock-twilio for the
/// bench): requests, and no logs to read.
pub struct UrlTarget {
    base: String,
    client: reqwest::Client,
    auth: Option<Auth>,
}

impl UrlTarget {
    /// `base` (`https://calls.example.com`), with a bearer token for `/api/` if given.
    pub fn new(base: &str, token: Option<String>) -> UrlTarget {
        UrlTarget {
            base: base.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("reqwest client"),
            auth: token.map(Auth::Bearer),
        }
    }

    /// With HTTP basic auth instead.
    #[must_use]
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> UrlTarget {
        self.auth = Some(Auth::Basic(user.into(), password.into()));
        self
    }
}

/// Where a step's requests go.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    /// A stack the harness runs: requests through its nginx, its logs and journals readable.
    Stack(&'a Stack),
    /// Only a URL.
    Url(&'a UrlTarget),
}

impl Target<'_> {
    fn url(&self, path: &str) -> String {
        match self {
            Target::Stack(s) => s.url(path),
            Target::Url(u) => format!("{}{path}", u.base),
        }
    }

    fn client(&self) -> &reqwest::Client {
        match self {
            Target::Stack(s) => s.client(),
            Target::Url(u) => &u.client,
        }
    }

    fn stack(&self, step: usize) -> Result<&Stack, HarnessError> {
        match self {
            Target::Stack(s) => Ok(s),
            Target::Url(u) => Err(HarnessError::step(
                step,
                format!("needs a stack the harness runs, not only {}", u.base),
            )),
        }
    }
}

/// How a session observes its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observe {
    /// After each step, wait for the stack's logs to settle and read the step's share (one
    /// step at a time: scenarios).
    Logs,
    /// The client's view only (concurrent load, where logs cannot be told apart: the soak,
    /// the bench, `harness check`).
    Client,
}

/// What a run of steps keeps between them: its recordings (steps name them by index), the
/// validators last seen for each, and how it observes. Steps may run concurrently on one
/// session (the soak's clients).
pub struct Session {
    recordings: RwLock<Vec<Recording>>,
    validators: Mutex<HashMap<usize, Validators>>,
    crcs: Mutex<HashMap<(usize, MediaFormat), u32>>,
    by_crc: bool,
    timeout: Option<Duration>,
    nonce: AtomicU64,
    observe: Observe,
    slot: Option<Arc<BrowserSlot>>,
    browsers: Arc<BrowserPool>,
}

impl Session {
    /// A session with no recordings yet.
    pub fn new(observe: Observe) -> Session {
        Session {
            recordings: RwLock::default(),
            validators: Mutex::default(),
            crcs: Mutex::default(),
            by_crc: false,
            timeout: None,
            nonce: AtomicU64::new(0),
            observe,
            slot: None,
            browsers: BrowserPool::current_or_new(),
        }
    }

    /// Plays in the browser slot the caller holds (a scenario takes one before its first step).
    #[must_use]
    pub fn with_browser(mut self, slot: Option<BrowserSlot>) -> Session {
        self.slot = slot.map(Arc::new);
        self
    }

    /// Checks whole audio bodies by CRC-32, not byte by byte (fast enough for the bench).
    #[must_use]
    pub fn checking_by_crc(mut self) -> Session {
        self.by_crc = true;
        self
    }

    /// Gives each request up to `timeout` (instead of its client's), for long downloads.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Session {
        self.timeout = Some(timeout);
        self
    }

    /// Adds a recording; returns the index steps name it by.
    pub fn add_recording(&self, recording: Recording) -> usize {
        let mut all = self.recordings.write().unwrap();
        all.push(recording);
        all.len() - 1
    }

    /// The validators last seen for recording `index` (what `{etag}` stands for).
    pub fn validators(&self, index: usize) -> Option<Validators> {
        self.validators.lock().unwrap().get(&index).cloned()
    }

    /// How many recordings it has.
    pub fn recording_count(&self) -> usize {
        self.recordings.read().unwrap().len()
    }

    /// Recording `index`.
    pub fn recording(&self, index: usize) -> Option<Recording> {
        self.recordings.read().unwrap().get(index).cloned()
    }

    fn request_id(&self, step: usize) -> String {
        let n = self.nonce.fetch_add(1, Ordering::Relaxed) + 1;
        format!("harness-{}-{step}-{n}", std::process::id())
    }

    fn crc(&self, index: usize, format: MediaFormat, media: &Media) -> Option<u32> {
        if !self.by_crc {
            return None;
        }
        let mut crcs = self.crcs.lock().unwrap();
        Some(
            *crcs
                .entry((index, format))
                .or_insert_with(|| media_crc(media)),
        )
    }
}

/// What a step did.
#[derive(Debug)]
pub enum Executed {
    /// It observed something (a request, a webhook, a play).
    Outcome(Box<Outcome>),
    /// It changed the stack (armed a fault, restarted the backend).
    Done,
    /// It ran, and met something worth telling that a snapshot cannot hold (a wait that ran
    /// out: the next step went anyway).
    Noted(String),
    /// It did not happen as it must (a log line that never came).
    Failed(String),
}

/// Runs step `index` against `target`.
pub async fn execute(
    target: Target<'_>,
    session: &Session,
    step: &Step,
    index: usize,
) -> Result<Executed, HarnessError> {
    let outcome = |o: Outcome| Executed::Outcome(Box::new(o));
    match step {
        Step::Request(r) => request(target, session, r, index).await.map(outcome),
        Step::Play(p) => play(target.stack(index)?, session, p, index)
            .await
            .map(outcome),
        Step::Deploy(d) => deploy::deploy(target.stack(index)?, session, d, index)
            .await
            .map(outcome),
        Step::Webhook {
            recording,
            signing,
            pause_ms,
            ..
        } => {
            pause(*pause_ms).await;
            let stack = target.stack(index)?;
            webhook(stack, session, *recording, *signing, index)
                .await
                .map(outcome)
        }
        Step::WaitLog { text, timeout_ms } => {
            let log = target.stack(index)?.backend_log();
            let deadline = Duration::from_millis(*timeout_ms);
            let seen = poll(deadline, || async {
                log.lines_since(0)
                    .0
                    .iter()
                    .any(|l| l.contains(text.as_str()))
                    .then_some(())
            });
            Ok(match seen.await {
                Some(()) => Executed::Done,
                None => Executed::Failed(format!(
                    "step {index}: no backend log line with {text:?} within {timeout_ms} ms"
                )),
            })
        }
        Step::WaitIdleClose { timeout_ms } => {
            let journal = target.stack(index)?.hop_journal();
            let close = journal
                .wait_idle_close_of_latest(Duration::from_millis(*timeout_ms))
                .await;
            Ok(match close {
                IdleClose::Held => Executed::Done,
                IdleClose::AskedToClose => Executed::Noted(format!(
                    "step {index}: wait_idle_close: nginx asked for the last request's connection to be closed after it, so none was left idle to close; the next step went after {timeout_ms} ms"
                )),
                IdleClose::Ended => Executed::Noted(format!(
                    "step {index}: wait_idle_close: the last request's connection ended with it (a fault at the hop, or the backend's Connection: close), so none was left idle to close; the next step went after {timeout_ms} ms"
                )),
                IdleClose::StillOpen => Executed::Noted(format!(
                    "step {index}: wait_idle_close: the backend did not close the last request's connection within {timeout_ms} ms; the next step went on it"
                )),
            })
        }
        other => change(target.stack(index)?, other)
            .await
            .map(|()| Executed::Done),
    }
}

/// The steps that change the stack: faults armed and cleared, the backend stopped and started.
async fn change(stack: &Stack, step: &Step) -> Result<(), HarnessError> {
    match step {
        Step::Arm { at, rule } => {
            fault_set(stack, *at).arm(rule.clone())?;
        }
        Step::ClearFaults { at } => {
            for point in [FaultPoint::Twilio, FaultPoint::Hop] {
                if at.is_none_or(|a| a == point) {
                    fault_set(stack, point).clear();
                }
            }
        }
        Step::StopBackend => stack.stop_backend().await,
        Step::StartBackend => stack.start_backend().await?,
        Step::RestartBackend => stack.restart_backend().await?,
        Step::Request(_)
        | Step::Play(_)
        | Step::Webhook { .. }
        | Step::WaitLog { .. }
        | Step::WaitIdleClose { .. }
        | Step::Deploy(_) => {}
    }
    Ok(())
}

fn fault_set(stack: &Stack, at: FaultPoint) -> &Arc<FaultSet> {
    match at {
        FaultPoint::Twilio => stack.twilio().faults(),
        FaultPoint::Hop => stack.hop_faults(),
    }
}

/// A scenario's own idle gap (a keep-alive expiring): what the scenario is about, not
/// synchronisation.
async fn pause(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// A request as built from its step.
struct Built {
    method: Method,
    path: String,
    /// Headers with `{etag}` and `{last_modified}` filled in.
    headers: Vec<(String, String)>,
    body: Option<String>,
    /// `GET /path range=…` as the step wrote it (templates unfilled).
    line: String,
    /// The recording it names, and the media its body should be.
    recording: Option<(usize, MediaFormat, Media)>,
}

fn build(session: &Session, r: &RequestStep, step: usize) -> Result<Built, HarnessError> {
    let rec = session.recording(r.recording);
    let path = match (&r.path, &rec) {
        (Some(p), rec) => p.replace(
            "{call_sid}",
            rec.as_ref().map(|x| x.call_sid.as_str()).unwrap_or(""),
        ),
        (None, Some(rec)) => download_path(&rec.call_sid, asked_format(r.format, rec)),
        (None, None) => {
            return Err(HarnessError::step(
                step,
                format!("no recording {}", r.recording),
            ))
        }
    };
    let v = session
        .validators
        .lock()
        .unwrap()
        .get(&r.recording)
        .cloned()
        .unwrap_or_default();
    let fill = |t: &str| {
        t.replace("{etag}", &v.etag)
            .replace("{last_modified}", &v.last_modified)
    };
    let templates: Vec<(String, &String)> = [("range", &r.range), ("if-range", &r.if_range)]
        .into_iter()
        .filter_map(|(k, t)| Some((k.to_string(), t.as_ref()?)))
        .chain(r.headers.iter().map(|(k, t)| (k.to_lowercase(), t)))
        .collect();
    let mut line = format!("{} {path}", r.method);
    for (k, t) in &templates {
        line.push_str(&format!(" {k}={t}"));
    }
    let format = r
        .format
        .or(rec.as_ref().map(|x| x.format))
        .unwrap_or(MediaFormat::Mp3);
    Ok(Built {
        method: r.method,
        headers: templates
            .iter()
            .map(|(k, t)| (k.clone(), fill(t)))
            .collect(),
        body: r.body.clone(),
        line,
        recording: rec.map(|x| (r.recording, format, x.media(format))),
        path,
    })
}

async fn send_one(
    target: Target<'_>,
    session: &Session,
    b: &Built,
    id: String,
    verify: Verify<'_>,
) -> Outcome {
    let mut req = target
        .client()
        .request(b.method.into(), target.url(&b.path))
        .header("x-request-id", &id);
    if let Some(t) = session.timeout {
        req = req.timeout(t);
    }
    for (k, v) in &b.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if let Some(body) = &b.body {
        req = req.body(body.clone());
    }
    match target {
        Target::Url(UrlTarget {
            auth: Some(Auth::Bearer(t)),
            ..
        }) => req = req.bearer_auth(t),
        Target::Url(UrlTarget {
            auth: Some(Auth::Basic(u, p)),
            ..
        }) => req = req.basic_auth(u, Some(p)),
        _ => {}
    }
    read::send(req, b.method == Method::Head, verify).await
}

async fn request(
    target: Target<'_>,
    session: &Session,
    r: &RequestStep,
    step: usize,
) -> Result<Outcome, HarnessError> {
    let b = build(session, r, step)?;
    pause(r.pause_ms).await;
    let ids: Vec<String> = (0..r.count.max(1))
        .map(|_| session.request_id(step))
        .collect();
    let marks = observed(target, session).map(Marks::of);
    let crc = b
        .recording
        .as_ref()
        .and_then(|(i, f, m)| session.crc(*i, *f, m));
    let verify = match (&b.recording, crc) {
        (Some((_, _, media)), Some(crc)) => Verify::Crc32 { media, crc },
        (Some((_, _, media)), None) => Verify::Bytes(media),
        (None, _) => Verify::Nothing,
    };
    let sends = ids
        .iter()
        .cloned()
        .map(|id| send_one(target, session, &b, id, verify));
    let mut all: Vec<Outcome> = futures::stream::iter(sends)
        .buffered(r.concurrency.max(1) as usize)
        .collect()
        .await;
    let mut outcome = all.remove(0);
    if r.count > 1 {
        outcome.load = Some(count_load(r.count, std::iter::once(&outcome).chain(&all)));
    }
    outcome.step = r.name.clone().unwrap_or_else(|| b.line.clone());
    outcome.request = if r.count > 1 {
        format!("{} ×{} ({} at once)", b.line, r.count, r.concurrency)
    } else {
        b.line.clone()
    };
    if let Some(v) = &outcome.validators {
        session
            .validators
            .lock()
            .unwrap()
            .insert(r.recording, v.clone());
    }
    if let (Some(marks), Target::Stack(stack)) = (marks, target) {
        settle(stack, &marks, &ids, false, &mut outcome).await;
        if let Some(load) = outcome.load.as_mut() {
            for e in &outcome.gateway_errors {
                *load
                    .gateway_errors
                    .entry(e.cause.name().to_string())
                    .or_default() += 1;
            }
        }
    }
    Ok(outcome)
}

/// Every response of a load step, counted.
fn count_load<'a>(count: u32, all: impl Iterator<Item = &'a Outcome>) -> LoadOutcome {
    let mut load = LoadOutcome {
        count,
        ..Default::default()
    };
    for o in all {
        *load.statuses.entry(o.status_text()).or_default() += 1;
        *load
            .bodies
            .entry(o.body.check.kind().to_string())
            .or_default() += 1;
    }
    load
}

/// Twilio's recording-status callback for `rec`, signed as `signing` says, as a request to the
/// stack's webhook through nginx.
pub fn webhook_request(
    stack: &Stack,
    rec: &Recording,
    signing: Signing,
) -> reqwest::RequestBuilder {
    let url = stack.url(WEBHOOK_PATH);
    let callback = stack.twilio().status_callback(rec);
    let mut req = stack
        .client()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(callback.body());
    if let Some(sig) = callback.signature(&url, stack.twilio().auth_token(), signing) {
        req = req.header("x-twilio-signature", sig);
    }
    req
}

async fn webhook(
    stack: &Stack,
    session: &Session,
    recording: usize,
    signing: Signing,
    step: usize,
) -> Result<Outcome, HarnessError> {
    let rec = session
        .recording(recording)
        .ok_or_else(|| HarnessError::step(step, format!("no recording {recording}")))?;
    let id = session.request_id(step);
    let marks = Marks::of(stack);
    let req = webhook_request(stack, &rec, signing).header("x-request-id", &id);
    let mut outcome = read::send(req, false, Verify::Nothing).await;
    let signing_name = format!("{signing:?}").to_lowercase();
    outcome.step = format!("webhook {signing_name} {}", rec.sid);
    outcome.request = format!(
        "POST /webhook/recording-status signing={signing_name} RecordingSid={}",
        rec.sid
    );
    if session.observe == Observe::Logs {
        // An accepted webhook for a recording the backend never fetched starts a pre-download,
        // and a backend may log its start only after it has answered (the uvicorn example
        // does). Wait for it, or its events would fall to this step or to none by timing alone.
        let pre_download = signing == Signing::Valid
            && outcome.status.is_some_and(|s| (200..300).contains(&s))
            && !media_fetched(stack, &rec.sid);
        settle(
            stack,
            &marks,
            std::slice::from_ref(&id),
            pre_download,
            &mut outcome,
        )
        .await;
    }
    Ok(outcome)
}

/// Whether the backend has fetched this recording's media from mock-twilio before (2xx).
fn media_fetched(stack: &Stack, sid: &str) -> bool {
    let name = format!("/Recordings/{sid}.");
    stack.twilio().journal().iter().any(|e| {
        e.method == "GET"
            && e.path.contains(&name)
            && e.status.is_some_and(|s| (200..300).contains(&s))
    })
}

/// A `play` step: a browser plays the recording through the player page.
async fn play(
    stack: &Stack,
    session: &Session,
    p: &PlayStep,
    step: usize,
) -> Result<Outcome, HarnessError> {
    let slot = session
        .slot
        .as_ref()
        .ok_or_else(|| HarnessError::step(step, "a play step needs the session's browser slot"))?;
    let rec = session
        .recording(p.recording)
        .ok_or_else(|| HarnessError::step(step, format!("no recording {}", p.recording)))?;
    // The browser starts before the idle time, which is what the scenario is about.
    let engine = p.browser.list().first().copied().unwrap_or_default();
    let mut browser = session.browsers.take(engine, slot).await?;
    pause(p.pause_ms).await;
    let marks = Marks::of(stack);
    let format = asked_format(p.format, &rec);
    let options = PlayOptions {
        engine,
        format,
        seek: p.seek,
        seek_to: p.seek_to,
        wait: Duration::from_millis(p.timeout_ms),
    };
    let observed = browser.play_on(stack, &rec, options).await?;
    session.browsers.give_back(browser);
    let seek = match (p.seek_to, p.seek) {
        (Some(to), _) => format!(" (seek to {to})"),
        (None, true) => " (seek to the end and back)".into(),
        (None, false) => String::new(),
    };
    let name = p.name.clone().unwrap_or_else(|| {
        format!(
            "play {} ({})",
            rec.sid,
            format.unwrap_or(rec.format).extension()
        )
    });
    let request = format!("PLAY {}{seek}", player_path(&rec.call_sid, format));
    let mut outcome = Outcome::blank(name, request);
    outcome.browser = Some(observed);
    settle(stack, &marks, &[], false, &mut outcome).await;
    Ok(outcome)
}

/// The `?format=` a download or a play asks for: the step's `format`, else the recording's own
/// unless it is mp3 (the backend's default, asked for with no `?format=`).
fn asked_format(step_format: Option<MediaFormat>, rec: &Recording) -> Option<MediaFormat> {
    step_format.or((rec.format != MediaFormat::Mp3).then_some(rec.format))
}

/// The stack to read logs from, when this session reads them.
fn observed<'a>(target: Target<'a>, session: &Session) -> Option<&'a Stack> {
    match (target, session.observe) {
        (Target::Stack(s), Observe::Logs) => Some(s),
        _ => None,
    }
}

/// Where a step's observations start in each log.
struct Marks {
    error_log: u64,
    access_log: u64,
    backend_log: u64,
    twilio: usize,
    hop_connections: u64,
}

impl Marks {
    fn of(stack: &Stack) -> Marks {
        Marks {
            error_log: stack.error_log().len(),
            access_log: stack.access_log().len(),
            backend_log: stack.backend_log().len(),
            twilio: stack.twilio().journal().len(),
            hop_connections: stack.hop_connections(),
        }
    }
}

/// Waits until the step's traces are complete (its access-log lines; every download it started
/// has ended; with `download_due`, a download that may begin after its response has started
/// and ended), then reads its share of every log into the Outcome.
async fn settle(stack: &Stack, marks: &Marks, ids: &[String], download_due: bool, o: &mut Outcome) {
    let logged = poll(SETTLE_DEADLINE, || async {
        let lines = access::parse_all(&stack.access_log().lines_since(marks.access_log).0);
        let find = |id: &String| {
            lines
                .iter()
                .find(|a| a.request_id.as_ref() == Some(id))
                .cloned()
        };
        let found: Vec<AccessLine> = ids.iter().filter_map(find).collect();
        (found.len() == ids.len()).then(|| found.into_iter().next())
    });
    o.access = logged.await.flatten();
    let backend = stack.backend_log();
    let read_events = || -> Vec<BackendEvent> {
        let (lines, _) = backend.lines_since(marks.backend_log);
        lines
            .iter()
            .filter_map(|l| BackendEvent::parse(l))
            .collect()
    };
    let settled = poll(SETTLE_DEADLINE, || async {
        let events = read_events();
        let (started, ended) = events::downloads(&events);
        (ended >= started && (started > 0 || !download_due)).then_some(events)
    });
    o.backend_events = settled.await.unwrap_or_else(read_events);
    o.upstream_connections_opened = stack
        .hop_connections()
        .saturating_sub(marks.hop_connections);
    let (lines, _) = stack.error_log().lines_since(marks.error_log);
    o.gateway_errors = lines.iter().filter_map(|l| classify(l)).collect();
    o.twilio_requests = stack.twilio().journal()[marks.twilio..]
        .iter()
        .map(|e| TwilioRequest {
            method: e.method.clone(),
            path: e.path.clone(),
            status: e.status,
            faults: e.faults.clone(),
        })
        .collect();
}
