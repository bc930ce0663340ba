//! Runs a [`Scenario`] on a fresh [`Stack`] per profile and turns every step into an [`Outcome`].

use crate::browser::{Browser, BrowserSlot, PlayOptions};
use crate::error::HarnessError;
use crate::gateway::{classify, GatewayError};
use crate::outcome::{
    AccessLine, AnsweredBy, BodyCheck, LoadOutcome, Outcome, SnapshotOutcome, KEPT_HEADERS,
};
use crate::scenario::{Expect, FaultPoint, PlayStep, RequestStep, Scenario, Step};
use crate::stack::{BackendSpec, Profile, Runtime, Stack, StackSpec};
use futures::StreamExt;
use mock_twilio::{Media, MediaFormat, Recording, Signing};
use regex::Regex;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the runner waits for logs to settle after a step (access-log line, downloads).
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(15);

/// A scenario's run under one profile.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileRun {
    /// The profile.
    pub profile: Profile,
    /// One outcome per request or webhook step.
    pub outcomes: Vec<Outcome>,
    /// Explicit expectations that did not hold.
    pub failures: Vec<String>,
}

/// A scenario's runs, one per profile, side by side.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioRun {
    /// The scenario's name.
    pub name: String,
    /// The backend it ran against (`reference`, or a stack file's name).
    pub backend: String,
    /// Its description.
    pub description: String,
    /// The runs.
    pub runs: Vec<ProfileRun>,
}

/// The snapshot form of a scenario run: profiles side by side.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioSnapshot {
    /// What it shows.
    pub description: String,
    /// Profile name → its outcomes.
    pub profiles: BTreeMap<String, Vec<SnapshotOutcome>>,
}

impl ScenarioRun {
    /// The snapshot's name: the scenario's, with `@backend` for another backend than ours.
    pub fn snapshot_name(&self) -> String {
        if self.backend == "reference" {
            self.name.clone()
        } else {
            format!("{}@{}", self.name, self.backend)
        }
    }

    /// The redacted form stored in `snapshots/`.
    pub fn snapshot(&self) -> ScenarioSnapshot {
        ScenarioSnapshot {
            description: self.description.clone(),
            profiles: self
                .runs
                .iter()
                .map(|r| {
                    (
                        r.profile.name().to_string(),
                        r.outcomes.iter().map(Outcome::snapshot).collect(),
                    )
                })
                .collect(),
        }
    }

    /// Every failed expectation, prefixed by its profile.
    pub fn failures(&self) -> Vec<String> {
        self.runs
            .iter()
            .flat_map(|r| {
                r.failures
                    .iter()
                    .map(move |f| format!("[{}] {f}", r.profile.name()))
            })
            .collect()
    }
}

/// Runs `scenario` under each of its profiles against the reference backend.
pub async fn run(scenario: &Scenario, runtime: Runtime) -> Result<ScenarioRun, HarnessError> {
    run_with(scenario, runtime, &BackendSpec::Reference).await
}

/// Runs `scenario` under each of its profiles (concurrently: each has its own stack).
pub async fn run_with(
    scenario: &Scenario,
    runtime: Runtime,
    backend: &BackendSpec,
) -> Result<ScenarioRun, HarnessError> {
    scenario.validate().map_err(|(field, message)| {
        HarnessError::Other(format!("scenario {}: {field}: {message}", scenario.name))
    })?;
    let runs = futures::future::join_all(
        scenario
            .profiles
            .iter()
            .map(|p| run_profile(scenario, *p, runtime, backend)),
    )
    .await;
    Ok(ScenarioRun {
        name: scenario.name.clone(),
        backend: backend.name().to_string(),
        description: scenario.description.clone(),
        runs: runs.into_iter().collect::<Result<_, _>>()?,
    })
}

/// Runs `scenario` under one profile on a fresh stack.
pub async fn run_profile(
    scenario: &Scenario,
    profile: Profile,
    runtime: Runtime,
    backend: &BackendSpec,
) -> Result<ProfileRun, HarnessError> {
    let mut spec = StackSpec::new(profile).timeouts(scenario.timeouts);
    spec.runtime = runtime;
    spec.backend = backend.clone();
    // A scenario that plays holds a browser slot from before its stack starts to its end.
    let slot = if scenario.needs_browser() {
        crate::browser::find_browser()?;
        Some(BrowserSlot::acquire().await?)
    } else {
        None
    };
    let mut stack = Stack::start(spec).await?;
    let result = drive(&mut stack, scenario, profile, slot.as_ref()).await;
    if let Err(e) = &result {
        return Err(HarnessError::Other(format!("{e}\n{}", stack.logs())));
    }
    result
}

struct Ctx {
    recordings: Vec<Recording>,
    /// Last ETag and Last-Modified seen per recording.
    validators: HashMap<usize, (String, String)>,
    nonce: u64,
}

async fn drive(
    stack: &mut Stack,
    scenario: &Scenario,
    profile: Profile,
    slot: Option<&BrowserSlot>,
) -> Result<ProfileRun, HarnessError> {
    let mut ctx = Ctx {
        recordings: Vec::new(),
        validators: HashMap::new(),
        nonce: 0,
    };
    for (i, spec) in scenario.recordings.iter().enumerate() {
        let rec = Recording::new(spec.sid_at(i), spec.call_sid_at(i), spec.format, spec.size);
        ctx.recordings.push(stack.twilio().add_recording(rec));
    }
    // Pre-download the cached ones through the real path: a signed webhook via nginx.
    for (i, spec) in scenario.recordings.iter().enumerate() {
        if spec.cached {
            let rec = &ctx.recordings[i];
            let offset = stack.backend_log().len();
            let resp = stack
                .twilio()
                .send_status_callback(&stack.url("/webhook/recording-status"), rec, Signing::Valid)
                .await
                .map_err(|e| {
                    HarnessError::Other(format!("pre-download webhook for {}: {e}", rec.sid))
                })?;
            if resp.status() != 204 {
                return Err(HarnessError::Other(format!(
                    "pre-download webhook for {} answered {}",
                    rec.sid,
                    resp.status()
                )));
            }
            // One pre-download at a time, so the next "saved" line since `offset` is this one's
            // (other backends' log lines need not name the recording).
            wait_backend_log(stack, offset, "Recording saved", SETTLE_DEADLINE).await?;
        }
    }
    for rule in &scenario.twilio_faults {
        stack
            .twilio()
            .arm(rule.clone())
            .map_err(HarnessError::Other)?;
    }
    for rule in &scenario.hop_faults {
        stack
            .hop_faults()
            .arm(rule.clone())
            .map_err(HarnessError::Other)?;
    }
    let mut run = ProfileRun {
        profile,
        outcomes: Vec::new(),
        failures: Vec::new(),
    };
    for (i, step) in scenario.steps.iter().enumerate() {
        match step {
            Step::Request(r) => {
                let outcome = request(stack, &mut ctx, r, i).await?;
                check(&r.expect, &outcome, &mut run.failures);
                run.outcomes.push(outcome);
            }
            Step::Play(p) => {
                // The browser starts before the idle time, which is what the scenario is about.
                let slot = slot.expect("a scenario that plays holds a browser slot");
                let browser = Browser::launch_in(stack.sandbox(), slot).await?;
                pause(p.pause_ms).await;
                let outcome = play(stack, &ctx, browser, p, i).await?;
                check(&p.expect, &outcome, &mut run.failures);
                run.outcomes.push(outcome);
            }
            Step::Webhook {
                recording,
                signing,
                pause_ms,
                expect,
            } => {
                pause(*pause_ms).await;
                let outcome = webhook(stack, &mut ctx, *recording, *signing, i).await?;
                check(expect, &outcome, &mut run.failures);
                run.outcomes.push(outcome);
            }
            Step::Arm { at, rule } => {
                let set = match at {
                    FaultPoint::Twilio => stack.twilio().faults().clone(),
                    FaultPoint::Hop => stack.hop_faults().clone(),
                };
                set.arm(rule.clone()).map_err(HarnessError::Other)?;
            }
            Step::ClearFaults { at } => {
                if *at != Some(FaultPoint::Hop) {
                    stack.twilio().clear_faults();
                }
                if *at != Some(FaultPoint::Twilio) {
                    stack.hop_faults().clear();
                }
            }
            Step::StopBackend => stack.stop_backend().await,
            Step::StartBackend => stack.start_backend().await?,
            Step::RestartBackend => stack.restart_backend().await?,
            Step::WaitLog { text, timeout_ms } => {
                let deadline = Duration::from_millis(*timeout_ms);
                if wait_backend_log(stack, 0, text, deadline).await.is_err() {
                    run.failures.push(format!(
                        "step {i}: no backend log line with {text:?} within {timeout_ms} ms"
                    ));
                }
            }
        }
    }
    Ok(run)
}

async fn pause(ms: u64) {
    if ms > 0 {
        // The idle gap is what the scenario is about (a keep-alive expiring), not synchronisation.
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

fn check(expect: &Expect, o: &Outcome, failures: &mut Vec<String>) {
    if let Some(load) = &o.load {
        // Every response of a load step must pass.
        let statuses: Vec<&String> = load.statuses.keys().collect();
        if let Some(status) = expect.status {
            if statuses != [&status.to_string()] {
                failures.push(format!(
                    "{}: expected status {status} for all, got {:?}",
                    o.step, load.statuses
                ));
            }
        }
        if let Some(body) = &expect.body {
            if load.bodies.keys().collect::<Vec<_>>() != [body] {
                failures.push(format!(
                    "{}: expected body {body} for all, got {:?}",
                    o.step, load.bodies
                ));
            }
        }
        if expect.no_gateway_errors == Some(true) && !load.gateway_errors.is_empty() {
            failures.push(format!(
                "{}: expected no gateway errors, got {:?}",
                o.step, load.gateway_errors
            ));
        }
        return;
    }
    if let (Some(want), Some(b)) = (expect.plays, &o.browser) {
        if b.page.played() != want {
            failures.push(format!(
                "{}: expected the page {}, it stopped at {:?}{}",
                o.step,
                if want { "to play" } else { "to fail to play" },
                b.page.stage,
                b.page
                    .error_name
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ));
        }
    }
    if let Some(status) = expect.status {
        if o.status != Some(status) {
            failures.push(format!(
                "{}: expected status {status}, got {}",
                o.step,
                o.summary()
            ));
        }
    }
    if expect.no_gateway_errors == Some(true) && !o.gateway_errors.is_empty() {
        let causes: Vec<&str> = o.gateway_errors.iter().map(|e| e.cause.name()).collect();
        failures.push(format!(
            "{}: expected no gateway errors, got {}",
            o.step,
            causes.join(", ")
        ));
    }
    if let Some(want) = &expect.body {
        let got = o.body.check.kind();
        if want != got {
            failures.push(format!("{}: expected body {want}, got {got}", o.step));
        }
    }
}

/// Where a step's observations start in each log.
struct Marks {
    error_log: u64,
    backend_log: u64,
    twilio: usize,
    hop_connections: u64,
}

fn marks(stack: &Stack) -> Marks {
    Marks {
        error_log: stack.error_log().len(),
        backend_log: stack.backend_log().len(),
        twilio: stack.twilio().journal().len(),
        hop_connections: stack.hop_connections(),
    }
}

fn request_id(ctx: &mut Ctx, step: usize) -> String {
    ctx.nonce += 1;
    format!("harness-{}-{step}-{}", std::process::id(), ctx.nonce)
}

async fn request(
    stack: &Stack,
    ctx: &mut Ctx,
    r: &RequestStep,
    step: usize,
) -> Result<Outcome, HarnessError> {
    let rec = ctx.recordings.get(r.recording).cloned();
    let format = r
        .format
        .or(rec.as_ref().map(|x| x.format))
        .unwrap_or(MediaFormat::Mp3);
    let path = match (&r.path, &rec) {
        (Some(p), rec) => p.replace(
            "{call_sid}",
            rec.as_ref().map(|x| x.call_sid.as_str()).unwrap_or(""),
        ),
        (None, Some(rec)) => {
            let q = if format == MediaFormat::Mp3 && r.format.is_none() {
                String::new()
            } else {
                format!("?format={}", format.extension())
            };
            format!("/api/calls/{}/download{q}", rec.call_sid)
        }
        (None, None) => {
            return Err(HarnessError::Other(format!(
                "step {step}: no recording {}",
                r.recording
            )))
        }
    };
    let media = rec.as_ref().map(|x| x.media(format));
    let (etag, modified) = ctx
        .validators
        .get(&r.recording)
        .cloned()
        .unwrap_or_default();
    let fill = |v: &str| {
        v.replace("{etag}", &etag)
            .replace("{last_modified}", &modified)
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(range) = &r.range {
        headers.push(("range".into(), fill(range)));
    }
    if let Some(ir) = &r.if_range {
        headers.push(("if-range".into(), fill(ir)));
    }
    for (k, v) in &r.headers {
        headers.push((k.to_lowercase(), fill(v)));
    }
    let mut line = format!("{} {path}", r.method);
    for (k, v) in &headers {
        let shown = if k == "if-range"
            && !etag.is_empty()
            && fill(r.if_range.as_deref().unwrap_or("")) == etag
        {
            "{etag}".to_string()
        } else if k == "if-range"
            && !modified.is_empty()
            && fill(r.if_range.as_deref().unwrap_or("")) == modified
        {
            "{last_modified}".to_string()
        } else {
            v.clone()
        };
        line.push_str(&format!(" {k}={shown}"));
    }
    pause(r.pause_ms).await;
    let name = r.name.clone().unwrap_or_else(|| line.clone());
    let ids: Vec<String> = (0..r.count.max(1)).map(|_| request_id(ctx, step)).collect();
    let marks = marks(stack);
    let method = reqwest::Method::from_bytes(r.method.as_bytes())
        .map_err(|_| HarnessError::Other(format!("step {step}: bad method {:?}", r.method)))?;
    let url = stack.url(&path);
    let head = method == reqwest::Method::HEAD;
    let build = |id: &str| {
        let mut req = stack
            .client()
            .request(method.clone(), &url)
            .header("x-request-id", id);
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(b) = &r.body {
            req = req.body(b.clone());
        }
        req
    };
    let mut outcomes: Vec<Outcome> =
        futures::stream::iter(ids.iter().map(|id| send(build(id), head, media.as_ref())))
            .buffered(r.concurrency.max(1) as usize)
            .collect()
            .await;
    let mut outcome = outcomes.remove(0);
    if r.count > 1 {
        let mut load = LoadOutcome {
            count: r.count,
            ..Default::default()
        };
        for o in std::iter::once(&outcome).chain(&outcomes) {
            let status = o
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "none".into());
            *load.statuses.entry(status).or_default() += 1;
            *load
                .bodies
                .entry(o.body.check.kind().to_string())
                .or_default() += 1;
        }
        outcome.load = Some(load);
    }
    outcome.step = name;
    outcome.request = if r.count > 1 {
        format!("{line} ×{} ({} at once)", r.count, r.concurrency)
    } else {
        line
    };
    if let Some(etag) = outcome.headers.get("etag-value").cloned() {
        let modified = outcome
            .headers
            .get("last-modified-value")
            .cloned()
            .unwrap_or_default();
        ctx.validators.insert(r.recording, (etag, modified));
    }
    outcome.headers.retain(|k, _| !k.ends_with("-value"));
    settle(stack, &marks, &ids, false, &mut outcome).await;
    if let Some(load) = outcome.load.as_mut() {
        for e in &outcome.gateway_errors {
            *load
                .gateway_errors
                .entry(e.cause.name().to_string())
                .or_default() += 1;
        }
    }
    Ok(outcome)
}

async fn webhook(
    stack: &Stack,
    ctx: &mut Ctx,
    recording: usize,
    signing: Signing,
    step: usize,
) -> Result<Outcome, HarnessError> {
    let rec = ctx
        .recordings
        .get(recording)
        .cloned()
        .ok_or_else(|| HarnessError::Other(format!("step {step}: no recording {recording}")))?;
    let id = request_id(ctx, step);
    let marks = marks(stack);
    let url = stack.url("/webhook/recording-status");
    let callback = stack.twilio().status_callback(&rec);
    let mut req = stack
        .client()
        .post(&url)
        .header("x-request-id", &id)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(callback.body());
    if let Some(sig) = callback.signature(&url, stack.twilio().auth_token(), signing) {
        req = req.header("x-twilio-signature", sig);
    }
    let mut outcome = send(req, false, None).await;
    let signing_name = format!("{signing:?}").to_lowercase();
    outcome.step = format!("webhook {signing_name} {}", rec.sid);
    outcome.request = format!(
        "POST /webhook/recording-status signing={signing_name} RecordingSid={}",
        rec.sid
    );
    outcome.headers.retain(|k, _| !k.ends_with("-value"));
    // An accepted webhook for a recording the backend never fetched starts a pre-download, and
    // a backend may log its start only after it has answered (the uvicorn example does). Wait for
    // it, or its events would fall to this step or to none by timing alone.
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

/// A `play` step: headless Chromium plays the recording through the player page.
async fn play(
    stack: &Stack,
    ctx: &Ctx,
    browser: Browser,
    p: &PlayStep,
    step: usize,
) -> Result<Outcome, HarnessError> {
    let rec = ctx
        .recordings
        .get(p.recording)
        .ok_or_else(|| HarnessError::Other(format!("step {step}: no recording {}", p.recording)))?;
    let marks = marks(stack);
    let options = PlayOptions {
        format: p.format,
        seek: p.seek,
        wait: Duration::from_millis(p.timeout_ms),
    };
    let browser = browser.play_on(stack, rec, options).await?;
    let format = p.format.unwrap_or(rec.format);
    let request = format!(
        "PLAY /player.html?call={}{}{}",
        rec.call_sid,
        p.format
            .map(|f| format!("&format={}", f.extension()))
            .unwrap_or_default(),
        if p.seek {
            " (seek to the end and back)"
        } else {
            ""
        }
    );
    let mut outcome = Outcome::blank(
        p.name
            .clone()
            .unwrap_or_else(|| format!("play {} ({})", rec.sid, format.extension())),
        request,
    );
    outcome.browser = Some(browser);
    settle(stack, &marks, &[], false, &mut outcome).await;
    Ok(outcome)
}

/// Sends a request and reads its response, checking audio bodies byte for byte as they stream.
pub(crate) async fn send(
    req: reqwest::RequestBuilder,
    head: bool,
    media: Option<&Media>,
) -> Outcome {
    let mut outcome = Outcome::blank(String::new(), String::new());
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            outcome.client_error = Some(client_error_kind(&e));
            return outcome;
        }
    };
    outcome.status = Some(resp.status().as_u16());
    let h = resp.headers();
    for name in KEPT_HEADERS {
        if let Some(v) = h.get(*name).and_then(|v| v.to_str().ok()) {
            outcome.headers.insert(name.to_string(), v.to_string());
        }
    }
    for (name, key) in [
        ("etag", "etag-value"),
        ("last-modified", "last-modified-value"),
    ] {
        if let Some(v) = h.get(name).and_then(|v| v.to_str().ok()) {
            outcome.headers.insert(name.to_string(), "present".into());
            outcome.headers.insert(key.to_string(), v.to_string());
        }
    }
    let ctype = outcome
        .headers
        .get("content-type")
        .cloned()
        .unwrap_or_default();
    let announced: Option<u64> = outcome
        .headers
        .get("content-length")
        .and_then(|v| v.parse().ok());
    // Which bytes of the recording the body should be, per the response's own headers.
    // (A HEAD has no body to check: it must simply be empty.)
    let expected = match (outcome.status, media.filter(|_| !head)) {
        (Some(200), Some(m)) if ctype.starts_with("audio/") => Some((0, m.len())),
        (Some(206), Some(m)) => {
            parse_content_range(outcome.headers.get("content-range").map(String::as_str))
                .filter(|(_, end, total)| *total == m.len() && *end < m.len())
                .map(|(s, e, _)| (s, e + 1))
        }
        _ => None,
    };
    let mut head = Vec::new();
    let mut differs: Option<u64> = None;
    let mut received = 0u64;
    let mut scratch = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if let (Some((start, _)), Some(m)) = (expected, media) {
                    if differs.is_none() {
                        let at = start + received;
                        let n = (chunk.len() as u64).min(m.len().saturating_sub(at)) as usize;
                        scratch.resize(n, 0);
                        m.fill(at, &mut scratch);
                        if let Some(p) = chunk.iter().zip(&scratch).position(|(a, b)| a != b) {
                            differs = Some(received + p as u64);
                        } else if n < chunk.len() {
                            differs = Some(received + n as u64);
                        }
                    }
                } else if head.len() < 64 * 1024 {
                    head.extend_from_slice(&chunk);
                }
                received += chunk.len() as u64;
            }
            Ok(None) => break,
            Err(e) => {
                outcome.client_error = Some(format!("body cut short ({})", client_error_kind(&e)));
                break;
            }
        }
    }
    outcome.body.bytes = received;
    let cut = outcome.client_error.is_some();
    outcome.body.check = if let Some(at) = differs {
        BodyCheck::Differs { at }
    } else if cut && expected.is_some() {
        BodyCheck::Truncated {
            announced: announced.unwrap_or(0),
        }
    } else if let Some((start, end)) = expected {
        if received != end - start {
            BodyCheck::Truncated {
                announced: end - start,
            }
        } else if start == 0
            && end == media.map(|m| m.len()).unwrap_or(0)
            && outcome.status == Some(200)
        {
            BodyCheck::Whole
        } else {
            BodyCheck::Slice {
                start,
                end: end - 1,
            }
        }
    } else if received == 0 {
        BodyCheck::Empty
    } else if ctype.contains("json") {
        let error = serde_json::from_slice::<serde_json::Value>(&head)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string));
        BodyCheck::Json { error }
    } else if String::from_utf8_lossy(&head).contains("<center>nginx") {
        BodyCheck::NginxErrorPage
    } else {
        BodyCheck::Other {
            kind: if ctype.is_empty() {
                "no content-type".into()
            } else {
                ctype.clone()
            },
        }
    };
    outcome.answered_by = match (&outcome.body.check, outcome.status) {
        (_, None) => AnsweredBy::None,
        (BodyCheck::NginxErrorPage, _) => AnsweredBy::Nginx,
        // A HEAD or bodiless nginx error: nginx error pages are text/html, the backend's never.
        (BodyCheck::Empty, Some(s)) if s >= 500 && ctype.starts_with("text/html") => {
            AnsweredBy::Nginx
        }
        _ => AnsweredBy::Backend,
    };
    outcome
}

fn client_error_kind(e: &reqwest::Error) -> String {
    let text = error_chain(e);
    for (needle, kind) in [
        (
            "Parse(Version)",
            "the response is not HTTP/1.x (nginx passed the upstream's bytes on as HTTP/0.9)",
        ),
        ("reset by peer", "connection reset"),
        (
            "IncompleteMessage",
            "connection closed before a complete message",
        ),
        (
            "connection closed before message completed",
            "connection closed before a complete message",
        ),
        (
            "end of file before message length reached",
            "connection closed before the announced length",
        ),
        ("error decoding response body", "body cut short"),
        ("timed out", "timed out"),
        ("Connection refused", "connection refused"),
    ] {
        if text.contains(needle) {
            return kind.into();
        }
    }
    text
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = format!("{e} / {e:?}");
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// `bytes a-b/total` → `(a, b, total)`.
pub fn parse_content_range(v: Option<&str>) -> Option<(u64, u64, u64)> {
    let rest = v?.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

fn access_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(
            r#"status=(\S+) bytes=(\S+) range="[^"]*" upstream_status="([^"]*)" upstream_response_time="([^"]*)" upstream_connect_time="([^"]*)" request_time=(\S+) request_id="([^"]*)""#,
        )
        .expect("valid regex")
    })
}

/// Parses a line of the `timing` access-log format, returning it with its request id.
pub fn parse_access_line(line: &str) -> Option<(AccessLine, String)> {
    let c = access_re().captures(line)?;
    Some((
        AccessLine {
            status: c[1].to_string(),
            bytes_sent: c[2].to_string(),
            upstream_status: c[3].to_string(),
            upstream_response_time: c[4].to_string(),
            upstream_connect_time: c[5].to_string(),
            request_time: c[6].to_string(),
        },
        c[7].to_string(),
    ))
}

/// A backend log line's event name, if it is one the Outcome records.
pub fn backend_event(line: &str) -> Option<&'static str> {
    let message = serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| line.to_string());
    let m = message.as_str();
    let starts = |p: &str| m.starts_with(p) || (!line.starts_with('{') && m.contains(p));
    Some(if starts("Cache miss - downloading from Twilio") {
        "cache_miss"
    } else if starts("Recording saved - took") {
        "saved"
    } else if starts("Slow download detected") {
        "slow_download"
    } else if starts("Failed to fetch recording") {
        "fetch_failed"
    } else if starts("Recording file not found at Twilio") {
        "not_found_at_twilio"
    } else if starts("Twilio request failed, retrying") {
        "twilio_retry"
    } else if starts("webhook rejected") {
        "webhook_rejected"
    } else {
        return None;
    })
}

/// Waits up to `deadline` for a backend log line (after byte `offset`) containing `text`.
async fn wait_backend_log(
    stack: &Stack,
    offset: u64,
    text: &str,
    deadline: Duration,
) -> Result<(), HarnessError> {
    let start = Instant::now();
    loop {
        let (lines, _) = stack.backend_log().lines_since(offset);
        if lines.iter().any(|l| l.contains(text)) {
            return Ok(());
        }
        if start.elapsed() > deadline {
            return Err(HarnessError::Other(format!(
                "no backend log line with {text:?} within {deadline:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the step's traces are complete (its access-log line; every download it started
/// has ended; with `download_due`, a download that may begin after its response has started and
/// ended), then fills in gateway errors, backend events and Twilio requests.
async fn settle(
    stack: &Stack,
    marks: &Marks,
    ids: &[String],
    download_due: bool,
    outcome: &mut Outcome,
) {
    let start = Instant::now();
    loop {
        let (lines, _) = stack.access_log().lines_since(0);
        let seen: HashMap<String, AccessLine> = lines
            .iter()
            .filter_map(|l| parse_access_line(l))
            .filter(|(_, rid)| ids.contains(rid))
            .map(|(a, rid)| (rid, a))
            .collect();
        if ids.iter().all(|id| seen.contains_key(id)) {
            outcome.access = ids.first().and_then(|id| seen.get(id)).cloned();
            break;
        }
        if start.elapsed() > SETTLE_DEADLINE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let events = loop {
        let (lines, _) = stack.backend_log().lines_since(marks.backend_log);
        let events: Vec<&'static str> = lines.iter().filter_map(|l| backend_event(l)).collect();
        let started = events.iter().filter(|e| **e == "cache_miss").count();
        let ended = events
            .iter()
            .filter(|e| matches!(**e, "saved" | "fetch_failed" | "not_found_at_twilio"))
            .count();
        let done = ended >= started && (started > 0 || !download_due);
        if done || start.elapsed() > SETTLE_DEADLINE {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    outcome.backend_events = events.into_iter().map(str::to_string).collect();
    outcome.upstream_connections_opened = stack
        .hop_connections()
        .saturating_sub(marks.hop_connections);
    let (lines, _) = stack.error_log().lines_since(marks.error_log);
    outcome.gateway_errors = lines
        .iter()
        .filter_map(|l| classify(l))
        .collect::<Vec<GatewayError>>();
    let account = stack.twilio().account_sid().to_string();
    outcome.twilio_requests = stack.twilio().journal()[marks.twilio..]
        .iter()
        .map(|e| {
            let path = e
                .path
                .replace(&format!("/2010-04-01/Accounts/{account}"), "…");
            let status = e
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "no response".into());
            let faults = if e.faults.is_empty() {
                String::new()
            } else {
                format!(" [{}]", e.faults.join(", "))
            };
            format!("{} {path} → {status}{faults}", e.method)
        })
        .collect();
}
