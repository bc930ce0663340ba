//! `harness soak`: seeded chaos under load on one stack. Clients run numbered steps whose plans
//! come from the seed alone (which recording, which request, which Twilio fault), while the
//! backend is restarted on a fixed schedule; every answer is checked as it arrives, and the
//! cache, the backend's memory and fds, and Twilio's traffic are checked around it.
//!
//! Step `K` of seed `S` is always the same plan, so `harness soak --seed S --only-step K`
//! replays a failure on a fresh stack. The order in which concurrent clients run steps, and so
//! which step meets a restart, is not reproducible.

use crate::error::HarnessError;
use crate::gateway::classify;
use crate::outcome::{AnsweredBy, BodyCheck, Outcome};
use crate::runner::backend_event;
use crate::stack::{BackendSpec, Profile, Runtime, Stack, StackSpec};
use mock_twilio::{sid, Fault, FaultMatch, FaultRule, MediaFormat, Recording, Signing};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a soak does.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// How long clients keep starting steps.
    pub duration: Duration,
    /// The seed every plan derives from.
    pub seed: u64,
    /// The stack soaked: profile, runtime, and backend (the reference, or a stack file's).
    pub stack: StackSpec,
    /// Concurrent clients.
    pub clients: usize,
    /// Share of steps that download a fresh recording through an armed Twilio fault.
    pub fault_rate: f64,
    /// The formats recordings are made in; a plan's other format becomes the first of these
    /// (for a backend that serves mp3 only: `[Mp3]`).
    pub formats: Vec<MediaFormat>,
    /// Backend restarts (SIGTERM, drain, start) this often during load; `None`: never.
    pub restart_every: Option<Duration>,
    /// Run only this step, alone, on a fresh stack.
    pub only_step: Option<u64>,
    /// How far the backend's resident memory may rise above its start within one process life
    /// (kB). The soak's largest recording is 50 MB: a backend that holds one whole in memory
    /// goes over the default, 64 MiB.
    pub rss_budget_kb: u64,
    /// How many more open fds than at its start a backend process may hold when its life ends,
    /// beyond [`FDS_PER_CLIENT`] for each client's request in flight (default 64: more than
    /// nginx's idle upstream pool and Twilio's, far less than one leaked fd per request).
    pub fd_budget: u64,
}

/// How long the end of a soak waits for the downloads under way to end.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);

/// Open fds one client's request in flight may hold in the backend: nginx's connection,
/// Twilio's, the cache file and its temp file.
pub const FDS_PER_CLIENT: u64 = 4;

impl SoakConfig {
    /// A soak of `duration` with `seed` on the fixed profile against the reference backend:
    /// 4 clients, 20 % faults, mp3 and wav, a restart every 15 s, 64 MiB and 64 fds of budget.
    pub fn new(duration: Duration, seed: u64) -> Self {
        SoakConfig {
            duration,
            seed,
            stack: StackSpec::new(Profile::Fixed),
            clients: 4,
            fault_rate: 0.2,
            formats: vec![MediaFormat::Mp3, MediaFormat::Wav],
            restart_every: Some(Duration::from_secs(15)),
            only_step: None,
            rss_budget_kb: 64 * 1024,
            fd_budget: 64,
        }
    }

    /// `format`, if the soak makes recordings in it; else the first format it does.
    fn format(&self, format: MediaFormat) -> MediaFormat {
        if self.formats.contains(&format) || self.formats.is_empty() {
            format
        } else {
            self.formats[0]
        }
    }

    /// The command that runs this soak again (every plan with it), without `--only-step`.
    pub fn command(&self) -> String {
        let mut c = String::from("harness ");
        if self.stack.runtime == Runtime::Containers {
            c.push_str("--runtime containers ");
        }
        c.push_str(&format!(
            "soak --seed {} --profile {} --fault-rate {}",
            self.seed,
            self.stack.profile.name(),
            self.fault_rate
        ));
        if let BackendSpec::File(f) = &self.stack.backend {
            c.push_str(&format!(" --stack {}", f.path.display()));
        }
        if self.formats != [MediaFormat::Mp3, MediaFormat::Wav] {
            let names: Vec<&str> = self.formats.iter().map(|f| f.extension()).collect();
            c.push_str(&format!(" --formats {}", names.join(",")));
        }
        c
    }
}

/// splitmix64: the plan's only source of randomness.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Draws for one step, in order.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    /// Log-uniform in `lo..=hi`.
    fn size(&mut self, lo: u64, hi: u64) -> u64 {
        let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
        let t = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (a + (b - a) * t).exp().round() as u64
    }
}

/// The recordings every soak of a seed shares (cached on first use): 1 KB to 50 MB, mp3 and wav
/// (before [`SoakConfig::formats`] applies).
fn pool(seed: u64) -> Vec<Recording> {
    let mut d = Draws(mix(seed));
    let mut sizes: Vec<u64> = (0..6).map(|_| d.size(1_000, 2_000_000)).collect();
    sizes.push(1_000);
    sizes.push(50_000_000);
    sizes
        .into_iter()
        .enumerate()
        .map(|(i, size)| {
            let format = if i % 3 == 2 {
                MediaFormat::Wav
            } else {
                MediaFormat::Mp3
            };
            Recording::new(
                sid("RE", i as u64 + 1),
                sid("CA", i as u64 + 1),
                format,
                size,
            )
        })
        .collect()
}

/// One step's plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepPlan {
    /// Its number.
    pub step: u64,
    /// `GET`, `HEAD` or `WEBHOOK`.
    pub method: String,
    /// The Range header, if any.
    pub range: Option<String>,
    /// Send `If-Range` with the recording's current ETag (`strong`) or a stale one (`stale`).
    pub if_range: Option<String>,
    /// For a webhook: signed or forged.
    pub forged: bool,
    /// The recording: an index into the pool, or a fresh one for a fault step.
    pub recording: usize,
    /// A fresh recording's size and format, for a fault step.
    pub fresh: Option<(u64, MediaFormat)>,
    /// The Twilio fault armed (once) for the fresh recording.
    pub fault: Option<Fault>,
}

/// Every fault kind mock-twilio has, with values that matter under the default timeouts
/// (Twilio budget 3 s): slowness inside the budget, statuses, cuts, hangs past it.
fn fault(d: &mut Draws, size: u64) -> Fault {
    match d.below(11) {
        0 => Fault::Delay {
            ms: 100 + d.below(1500),
            max_ms: None,
            seed: None,
        },
        1 => Fault::Throttle {
            bytes_per_sec: (size * 2).max(50_000),
        },
        2 => Fault::Dribble {
            chunk_bytes: (size / 4).max(1),
            pause_ms: 100,
        },
        3 => Fault::Status {
            status: 404,
            retry_after: None,
        },
        4 => Fault::Status {
            status: 429,
            retry_after: Some(0),
        },
        5 => Fault::Status {
            status: 500,
            retry_after: None,
        },
        6 => Fault::Status {
            status: 503,
            retry_after: None,
        },
        7 => Fault::Reset,
        8 => Fault::CloseAfter {
            bytes: (size / 2).max(1),
        },
        9 => Fault::Hang,
        _ => Fault::Garbage,
    }
}

/// The plan of step `k` of `seed`: a function of the two alone.
pub fn plan(seed: u64, k: u64, fault_rate: f64) -> StepPlan {
    let mut d = Draws(mix(seed ^ mix(k.wrapping_add(1))));
    let pool_len = pool(seed).len() as u64;
    let mut p = StepPlan {
        step: k,
        method: "GET".into(),
        range: None,
        if_range: None,
        forged: false,
        recording: d.below(pool_len) as usize,
        fresh: None,
        fault: None,
    };
    if d.chance(fault_rate) {
        let size = d.size(1_000, 2_000_000);
        let format = if d.chance(0.3) {
            MediaFormat::Wav
        } else {
            MediaFormat::Mp3
        };
        p.fault = Some(fault(&mut d, size));
        p.fresh = Some((size, format));
        return p;
    }
    match d.below(10) {
        0 => p.method = "HEAD".into(),
        1 => {
            p.method = "WEBHOOK".into();
            p.forged = d.chance(0.5);
        }
        _ => {
            p.range = match d.below(7) {
                0 => None,
                1 => Some("bytes=0-".into()),
                2 => Some(format!("bytes=-{}", 1 + d.below(5000))),
                3 => Some(format!("bytes={}-", d.below(3000))),
                4 => {
                    let a = d.below(3000);
                    Some(format!("bytes={a}-{}", a + d.below(3000)))
                }
                5 => Some("bytes=999999999-".into()),
                _ => Some("bytes=0-0".into()),
            };
            if p.range.is_some() && d.chance(0.2) {
                p.if_range = Some(if d.chance(0.5) { "strong" } else { "stale" }.into());
            }
        }
    }
    p
}

/// A check that failed, with how to replay it.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// The step (none for end-of-run checks).
    pub step: Option<u64>,
    /// What went wrong.
    pub what: String,
    /// One line that replays it.
    pub reproduce: String,
}

/// Start, peak and end of a measurement.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Gauge {
    /// At the start.
    pub start: u64,
    /// Highest seen.
    pub peak: u64,
    /// At the end.
    pub end: u64,
}

impl Gauge {
    fn see(&mut self, v: u64) {
        if self.start == 0 {
            self.start = v;
        }
        self.peak = self.peak.max(v);
        self.end = v;
    }
}

/// One backend process's life, from its first sample to its last (its restart, or the end of
/// the soak once every download has settled).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Life {
    /// Its process id.
    pub pid: u32,
    /// Its resident memory (kB).
    pub rss_kb: Gauge,
    /// Its open file descriptors.
    pub fds: Gauge,
}

/// What a soak found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakReport {
    /// The seed.
    pub seed: u64,
    /// `fixed` or `legacy`.
    pub profile: String,
    /// Steps run.
    pub steps: u64,
    /// Steps by kind (`GET`, `HEAD`, `WEBHOOK`, `fault:<kind>`).
    pub kinds: BTreeMap<String, u64>,
    /// Answers by status (`none` when the connection failed).
    pub statuses: BTreeMap<String, u64>,
    /// Backend restarts done.
    pub restarts: u64,
    /// Requests that overlapped a backend restart and failed because of it: an nginx 502/504,
    /// a failed connection, or a body cut when the draining backend's grace time ran out.
    pub failed_during_restart: u64,
    /// Gateway errors in nginx's error log, by cause.
    pub gateway_causes: BTreeMap<String, u64>,
    /// Cache files compared byte for byte with their recordings at the end.
    pub cache_files_checked: u64,
    /// The backend's resident memory (kB) over the whole soak, across its restarts.
    pub backend_rss_kb: Gauge,
    /// The backend's open file descriptors over the whole soak, across its restarts.
    pub backend_fds: Gauge,
    /// Each backend process's own memory and fds, in order (none under containers).
    pub lives: Vec<Life>,
    /// Twilio's requests for a path it was still answering (the same recording downloaded
    /// twice at once), as mock-twilio saw them.
    pub twilio_overlaps: u64,
    /// How long the downloads under way took to end once the load stopped (seconds).
    pub settle_secs: f64,
    /// Every violation.
    pub violations: Vec<Violation>,
}

fn proc_gauges(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

/// Shared by the clients.
struct Shared {
    config: SoakConfig,
    stack_url: String,
    client: reqwest::Client,
    twilio: Arc<mock_twilio::FaultSet>,
    webhook_url: String,
    auth_token: String,
    pool: Vec<Recording>,
    fresh: Mutex<HashMap<u64, Recording>>,
    next: AtomicU64,
    /// Restart windows (start, end), end `None` while one is in progress.
    restarts: Mutex<Vec<(Instant, Option<Instant>)>>,
    report: Mutex<SoakReport>,
    /// The stack: clients lock it briefly (to add a recording), the controller to restart.
    stack: tokio::sync::Mutex<Stack>,
}

impl Shared {
    fn overlaps_restart(&self, from: Instant, to: Instant) -> bool {
        self.restarts
            .lock()
            .unwrap()
            .iter()
            .any(|(a, b)| *a <= to && b.is_none_or(|b| b >= from))
    }

    fn reproduce(&self, step: u64) -> String {
        format!("{} --only-step {step}", self.config.command())
    }

    fn violation(&self, step: u64, what: String) {
        let v = Violation {
            step: Some(step),
            what,
            reproduce: self.reproduce(step),
        };
        self.report.lock().unwrap().violations.push(v);
    }
}

fn fault_name(f: &Fault) -> String {
    serde_json::to_value(f)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
        .map(|k| match f {
            Fault::Status { status, .. } => format!("{k}_{status}"),
            _ => k,
        })
        .unwrap_or_else(|| "?".into())
}

/// Runs step `k`: one request, checked.
async fn step(shared: &Shared, k: u64) {
    let p = plan(shared.config.seed, k, shared.config.fault_rate);
    let (rec, kind) = match (&p.fresh, &p.fault) {
        (Some((size, format)), Some(f)) => {
            let n = 10_000 + k;
            let format = shared.config.format(*format);
            let rec = shared
                .stack
                .lock()
                .await
                .twilio()
                .add_recording(Recording::new(sid("RE", n), sid("CA", n), format, *size));
            let rule = FaultRule {
                matcher: FaultMatch {
                    recording_sid: Some(rec.sid.clone()),
                    path_regex: Some(r"\.(mp3|wav)$".into()),
                    method: None,
                },
                fault: f.clone(),
                times: Some(1),
            };
            if let Err(e) = shared.twilio.arm(rule) {
                shared.violation(k, format!("arming {f:?}: {e}"));
                return;
            }
            shared.fresh.lock().unwrap().insert(n, rec.clone());
            (rec, format!("fault:{}", fault_name(f)))
        }
        _ => (shared.pool[p.recording].clone(), p.method.clone()),
    };
    *shared.report.lock().unwrap().kinds.entry(kind).or_default() += 1;
    let media = rec.media(rec.format);
    let started = Instant::now();
    let outcome: Outcome = if p.method == "WEBHOOK" {
        let callback = shared.stack.lock().await.twilio().status_callback(&rec);
        let signing = if p.forged {
            Signing::Forged
        } else {
            Signing::Valid
        };
        let mut req = shared
            .client
            .post(&shared.webhook_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(callback.body());
        if let Some(sig) = callback.signature(&shared.webhook_url, &shared.auth_token, signing) {
            req = req.header("x-twilio-signature", sig);
        }
        crate::runner::send(req, false, None).await
    } else {
        // Without ?format= the backend serves mp3 (the write-up's contract).
        let query = match rec.format {
            MediaFormat::Mp3 => "",
            MediaFormat::Wav => "?format=wav",
        };
        let url = format!(
            "{}/api/calls/{}/download{query}",
            shared.stack_url, rec.call_sid
        );
        let head = p.method == "HEAD";
        let mut req = if head {
            shared.client.head(&url)
        } else {
            shared.client.get(&url)
        };
        if let Some(r) = &p.range {
            req = req.header("range", r);
        }
        if let Some(which) = &p.if_range {
            let etag = format!("\"{}-{}-{}\"", rec.sid, rec.format.extension(), media.len());
            // The real validator is whatever the backend sent; a made-up one must never match.
            let value = if which == "strong" {
                let got = shared.client.head(&url).send().await.ok();
                got.and_then(|r| {
                    r.headers()
                        .get("etag")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                })
                .unwrap_or(etag)
            } else {
                "\"stale\"".to_string()
            };
            req = req.header("if-range", value);
        }
        crate::runner::send(req, head, Some(&media)).await
    };
    let ended = Instant::now();
    let status = outcome
        .status
        .map(|s| s.to_string())
        .unwrap_or_else(|| "none".into());
    *shared
        .report
        .lock()
        .unwrap()
        .statuses
        .entry(status.clone())
        .or_default() += 1;
    let gateway = outcome.status.is_none()
        || (outcome.answered_by == AnsweredBy::Nginx && matches!(outcome.status, Some(502..=504)));
    let cut = matches!(outcome.body.check, BodyCheck::Truncated { .. });
    if (gateway || cut) && shared.overlaps_restart(started, ended) {
        shared.report.lock().unwrap().failed_during_restart += 1;
        return;
    }
    let fixed = shared.config.stack.profile == Profile::Fixed;
    let what = format!(
        "{} {}{}{}",
        p.method,
        rec.sid,
        p.range
            .as_deref()
            .map(|r| format!(" (Range: {r})"))
            .unwrap_or_default(),
        p.fault
            .as_ref()
            .map(|f| format!(" [Twilio {}]", fault_name(f)))
            .unwrap_or_default()
    );
    if let BodyCheck::Differs { at } = outcome.body.check {
        shared.violation(
            k,
            format!("{what}: body differs from the recording at byte {at}"),
        );
    }
    if gateway {
        if fixed {
            shared.violation(k, format!("{what}: {}", outcome.summary()));
        }
        return;
    }
    let code = outcome.status.unwrap_or(0);
    // A Twilio failure: the reference backend answers 503 (with Retry-After); another backend
    // passes with any 5xx of its own (not nginx's).
    let (failure_answer, after_failure) = match shared.config.stack.backend {
        BackendSpec::Reference => (code == 503, "200 or 503 after a Twilio fault"),
        BackendSpec::File(_) => (
            outcome.answered_by == AnsweredBy::Backend && (500..=599).contains(&code),
            "200 or the backend's own 5xx after a Twilio fault",
        ),
    };
    let (ok, expected) = match (p.method.as_str(), &p.fault) {
        ("WEBHOOK", _) if p.forged => (code == 403, "403 for a forged signature"),
        ("WEBHOOK", _) => (code == 204, "204"),
        (_, None) => (matches!(code, 200 | 206 | 416), "200, 206 or 416"),
        // A fault: a clean answer from the backend, or a body cut after the headers.
        (_, Some(Fault::Status { status: 404, .. })) => {
            (matches!(code, 200 | 404), "200 or 404 after Twilio's 404")
        }
        (_, Some(_)) => (code == 200 || failure_answer, after_failure),
    };
    let truncated_ok = matches!(
        p.fault,
        Some(Fault::CloseAfter { .. } | Fault::Reset | Fault::Garbage)
    );
    if !ok {
        shared.violation(
            k,
            format!("{what}: {}, expected {expected}", outcome.summary()),
        );
    } else if cut && !truncated_ok {
        shared.violation(k, format!("{what}: body cut short"));
    }
}

/// Samples the backend process's memory and fds into the life it belongs to (a new one when the
/// process is new) and into the whole-soak gauges.
#[derive(Default)]
struct Sampler {
    rss: Gauge,
    fds: Gauge,
    lives: Vec<Life>,
}

impl Sampler {
    fn sample(&mut self, pid: Option<u32>) {
        let Some((pid, (rss, fds))) = pid.and_then(|p| Some((p, proc_gauges(p)?))) else {
            return;
        };
        if self.lives.last().is_none_or(|l| l.pid != pid) {
            self.lives.push(Life {
                pid,
                ..Default::default()
            });
        }
        let life = self.lives.last_mut().expect("pushed");
        life.rss_kb.see(rss);
        life.fds.see(fds);
        self.rss.see(rss);
        self.fds.see(fds);
    }
}

/// The recording a Twilio path names, shortened for a report (`…/Recordings/RE….mp3`).
fn twilio_path(path: &str) -> String {
    match path.find("/Recordings/").or_else(|| path.find("/Calls/")) {
        Some(i) => format!("…{}", &path[i..]),
        None => path.to_string(),
    }
}

/// Runs a soak (or, with `only_step`, one step on a fresh stack).
pub async fn soak(config: SoakConfig) -> Result<SoakReport, HarnessError> {
    let stack = Stack::start(config.stack.clone()).await?;
    let pool: Vec<Recording> = pool(config.seed)
        .into_iter()
        .map(|mut r| {
            r.format = config.format(r.format);
            r
        })
        .collect();
    for r in &pool {
        stack.twilio().add_recording(r.clone());
    }
    let start_error_log = stack.error_log().len();
    let start_backend_log = stack.backend_log().len();
    let shared = Arc::new(Shared {
        stack_url: stack.url(""),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client"),
        twilio: stack.twilio().faults().clone(),
        webhook_url: stack.url("/webhook/recording-status"),
        auth_token: stack.twilio().auth_token().to_string(),
        pool,
        fresh: Mutex::default(),
        next: AtomicU64::new(config.only_step.unwrap_or(0)),
        restarts: Mutex::default(),
        report: Mutex::new(SoakReport {
            seed: config.seed,
            profile: config.stack.profile.name().into(),
            ..Default::default()
        }),
        stack: tokio::sync::Mutex::new(stack),
        config: config.clone(),
    });
    let deadline = Instant::now() + config.duration;
    let clients = if config.only_step.is_some() {
        1
    } else {
        config.clients.max(1)
    };
    let mut sampler = Sampler::default();
    sampler.sample(shared.stack.lock().await.backend_pid());
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let shared = shared.clone();
        workers.spawn(async move {
            loop {
                if shared.config.only_step.is_none() && Instant::now() >= deadline {
                    break;
                }
                let k = shared.next.fetch_add(1, Ordering::SeqCst);
                step(&shared, k).await;
                shared.report.lock().unwrap().steps += 1;
                if shared.config.only_step.is_some() {
                    break;
                }
            }
        });
    }
    // The controller: samples the backend, restarts it on schedule, until the clients are done.
    let mut next_restart = config
        .restart_every
        .filter(|_| config.only_step.is_none())
        .map(|every| Instant::now() + every);
    // Where the current backend process's log begins: a download that a restart cut short
    // never logs its end, so only the last life's downloads are waited for.
    let mut life_log = start_backend_log;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            done = workers.join_next() => {
                if done.is_none() { break; }
                continue;
            }
            _ = tick.tick() => {}
        }
        sampler.sample(shared.stack.lock().await.backend_pid());
        if let Some(at) = next_restart {
            if Instant::now() >= at && Instant::now() < deadline {
                let mut stack = shared.stack.lock().await;
                // The life's last sample, then the next one's first.
                sampler.sample(stack.backend_pid());
                shared.restarts.lock().unwrap().push((Instant::now(), None));
                let result = stack.restart_backend().await;
                if let Some(w) = shared.restarts.lock().unwrap().last_mut() {
                    w.1 = Some(Instant::now());
                }
                result?;
                life_log = stack.backend_log().len();
                sampler.sample(stack.backend_pid());
                drop(stack);
                shared.report.lock().unwrap().restarts += 1;
                next_restart = config.restart_every.map(|e| Instant::now() + e);
            }
        }
    }
    let stack = shared.stack.lock().await;
    // Downloads the clients started may still be filling the cache: wait until Twilio answers
    // nothing more (what mock-twilio saw, for any backend), and the backend process logged the
    // end of every download it began (what the reference backend, and a backend that keeps its
    // log contract, says).
    let settle = Instant::now();
    loop {
        let (lines, _) = stack.backend_log().lines_since(life_log);
        let (mut started, mut ended) = (0, 0);
        for event in lines.iter().filter_map(|l| backend_event(l)) {
            match event {
                "cache_miss" => started += 1,
                "saved" | "not_found_at_twilio" | "fetch_failed" => ended += 1,
                _ => {}
            }
        }
        let quiet = stack.twilio().open_requests().is_empty();
        if (quiet && ended >= started) || settle.elapsed() > SETTLE_DEADLINE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sampler.sample(stack.backend_pid());
    let mut report = shared.report.lock().unwrap().clone();
    report.backend_rss_kb = sampler.rss;
    report.backend_fds = sampler.fds;
    report.lives = sampler.lives;
    report.settle_secs = settle.elapsed().as_secs_f64();
    let reproduce_all = config.command();
    // A backend must give up on a Twilio that never finishes; the load has long stopped.
    for e in stack.twilio().open_requests() {
        report.violations.push(Violation {
            step: None,
            what: format!(
                "Twilio request #{} ({} {}) still open {}s after the load stopped",
                e.seq,
                e.method,
                twilio_path(&e.path),
                SETTLE_DEADLINE.as_secs()
            ),
            reproduce: reproduce_all.clone(),
        });
    }
    // nginx's account of its gateway errors.
    let (lines, _) = stack.error_log().lines_since(start_error_log);
    for e in lines.iter().filter_map(|l| classify(l)) {
        *report
            .gateway_causes
            .entry(e.cause.name().to_string())
            .or_default() += 1;
    }
    // Twilio was never asked for one recording twice at once: what mock-twilio saw, so it holds
    // for any backend. A request counts as open until its final write began.
    for o in stack.twilio().overlaps() {
        if o.method != "GET" {
            continue;
        }
        report.twilio_overlaps += 1;
        report.violations.push(Violation {
            step: None,
            what: format!(
                "Twilio was asked for {} (request #{}) while still answering request #{} for it",
                twilio_path(&o.path),
                o.second,
                o.first
            ),
            reproduce: reproduce_all.clone(),
        });
    }
    // Memory and fds stay flat within each backend process's life.
    let fd_allowance = config.fd_budget + FDS_PER_CLIENT * clients as u64;
    for life in &report.lives {
        let grew = life.rss_kb.peak.saturating_sub(life.rss_kb.start);
        if grew > config.rss_budget_kb {
            report.violations.push(Violation {
                step: None,
                what: format!(
                    "backend pid {}: resident memory rose {grew} kB ({} → peak {} kB), over the budget of {} kB",
                    life.pid, life.rss_kb.start, life.rss_kb.peak, config.rss_budget_kb
                ),
                reproduce: reproduce_all.clone(),
            });
        }
        let held = life.fds.end.saturating_sub(life.fds.start);
        if held > fd_allowance {
            report.violations.push(Violation {
                step: None,
                what: format!(
                    "backend pid {}: {held} more open fds at the end of its life than at its start ({} → {}), over the allowance of {fd_allowance}",
                    life.pid, life.fds.start, life.fds.end
                ),
                reproduce: reproduce_all.clone(),
            });
        }
    }
    // Every cache file is its recording, byte for byte.
    let mut all: HashMap<String, Recording> = shared
        .pool
        .iter()
        .map(|r| (r.sid.clone(), r.clone()))
        .collect();
    for r in shared.fresh.lock().unwrap().values() {
        all.insert(r.sid.clone(), r.clone());
    }
    let dir = stack.sandbox().join("recordings");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some((sid, ext)) = name.split_once('.') else {
                continue;
            };
            let (Some(rec), Some(format)) = (all.get(sid), MediaFormat::from_extension(ext)) else {
                continue; // temp files of aborted downloads are the backend's business
            };
            report.cache_files_checked += 1;
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            if bytes != rec.media(format).to_vec() {
                report.violations.push(Violation {
                    step: None,
                    what: format!("cache file {name} differs from the recording"),
                    reproduce: reproduce_all.clone(),
                });
            }
        }
    }
    Ok(report)
}
