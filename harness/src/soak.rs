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
use crate::stack::{Profile, Runtime, Stack, StackSpec};
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
    /// nginx configuration.
    pub profile: Profile,
    /// Where the stack runs.
    pub runtime: Runtime,
    /// Concurrent clients.
    pub clients: usize,
    /// Share of steps that download a fresh recording through an armed Twilio fault.
    pub fault_rate: f64,
    /// Backend restarts (SIGTERM, drain, start) this often during load; `None`: never.
    pub restart_every: Option<Duration>,
    /// Run only this step, alone, on a fresh stack.
    pub only_step: Option<u64>,
}

impl SoakConfig {
    /// A soak of `duration` with `seed` on the fixed profile: 4 clients, 20 % faults, a restart
    /// every 15 s.
    pub fn new(duration: Duration, seed: u64) -> Self {
        SoakConfig {
            duration,
            seed,
            profile: Profile::Fixed,
            runtime: Runtime::Processes,
            clients: 4,
            fault_rate: 0.2,
            restart_every: Some(Duration::from_secs(15)),
            only_step: None,
        }
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

/// The recordings every soak of a seed shares (cached on first use): 1 KB to 50 MB, mp3 and wav.
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
    /// The backend's resident memory (kB).
    pub backend_rss_kb: Gauge,
    /// The backend's open file descriptors.
    pub backend_fds: Gauge,
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
        format!(
            "harness soak --seed {} --profile {} --fault-rate {} --only-step {step}",
            self.config.seed,
            self.config.profile.name(),
            self.config.fault_rate
        )
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
            let rec = shared
                .stack
                .lock()
                .await
                .twilio()
                .add_recording(Recording::new(sid("RE", n), sid("CA", n), *format, *size));
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
    let fixed = shared.config.profile == Profile::Fixed;
    if let BodyCheck::Differs { at } = outcome.body.check {
        shared.violation(
            k,
            format!(
                "{} {}: body differs from the recording at byte {at}",
                p.method, rec.sid
            ),
        );
    }
    if gateway {
        if fixed {
            shared.violation(
                k,
                format!("{} {}: {}", p.method, rec.sid, outcome.summary()),
            );
        }
        return;
    }
    let code = outcome.status.unwrap_or(0);
    let ok = match (p.method.as_str(), &p.fault) {
        ("WEBHOOK", _) => code == if p.forged { 403 } else { 204 },
        (_, None) => matches!(code, 200 | 206 | 416),
        // A fault: a clean answer from the backend, or a body cut after the headers.
        (_, Some(Fault::Status { status: 404, .. })) => matches!(code, 200 | 404),
        (_, Some(_)) => matches!(code, 200 | 503),
    };
    let truncated_ok = matches!(
        p.fault,
        Some(Fault::CloseAfter { .. } | Fault::Reset | Fault::Garbage)
    );
    if !ok {
        shared.violation(
            k,
            format!(
                "{} {} {:?}: {}",
                p.method,
                rec.sid,
                p.range,
                outcome.summary()
            ),
        );
    } else if cut && !truncated_ok {
        shared.violation(
            k,
            format!("{} {} {:?}: body cut short", p.method, rec.sid, p.range),
        );
    }
}

/// Runs a soak (or, with `only_step`, one step on a fresh stack).
pub async fn soak(config: SoakConfig) -> Result<SoakReport, HarnessError> {
    let mut spec = StackSpec::new(config.profile);
    spec.runtime = config.runtime;
    let stack = Stack::start(spec).await?;
    let pool = pool(config.seed);
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
            profile: config.profile.name().into(),
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
    let mut rss = Gauge::default();
    let mut fds = Gauge::default();
    let mut next_restart = config
        .restart_every
        .filter(|_| config.only_step.is_none())
        .map(|every| Instant::now() + every);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            done = workers.join_next() => {
                if done.is_none() { break; }
                continue;
            }
            _ = tick.tick() => {}
        }
        if let Some((r, f)) = shared
            .stack
            .lock()
            .await
            .backend_pid()
            .and_then(proc_gauges)
        {
            rss.see(r);
            fds.see(f);
        }
        if let Some(at) = next_restart {
            if Instant::now() >= at && Instant::now() < deadline {
                shared.restarts.lock().unwrap().push((Instant::now(), None));
                let result = shared.stack.lock().await.restart_backend().await;
                if let Some(w) = shared.restarts.lock().unwrap().last_mut() {
                    w.1 = Some(Instant::now());
                }
                result?;
                shared.report.lock().unwrap().restarts += 1;
                next_restart = config.restart_every.map(|e| Instant::now() + e);
            }
        }
    }
    let stack = shared.stack.lock().await;
    // Downloads the clients started may still be filling the cache: wait until every one ended.
    let settle = Instant::now();
    loop {
        let (lines, _) = stack.backend_log().lines_since(start_backend_log);
        let count = |p: &str| lines.iter().filter(|l| l.contains(p)).count();
        let started = count("Cache miss - downloading");
        let ended = count("Recording saved")
            + count("Recording file not found at Twilio")
            + lines
                .iter()
                .filter(|l| l.contains("Failed to fetch recording") && l.contains("\"cause\""))
                .count();
        if ended >= started || settle.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some((r, f)) = stack.backend_pid().and_then(proc_gauges) {
        rss.see(r);
        fds.see(f);
    }
    let mut report = shared.report.lock().unwrap().clone();
    report.backend_rss_kb = rss;
    report.backend_fds = fds;
    let reproduce_all = format!(
        "harness soak --seed {} --profile {} --fault-rate {}",
        config.seed,
        config.profile.name(),
        config.fault_rate
    );
    // nginx's account of its gateway errors.
    let (lines, _) = stack.error_log().lines_since(start_error_log);
    for e in lines.iter().filter_map(|l| classify(l)) {
        *report
            .gateway_causes
            .entry(e.cause.name().to_string())
            .or_default() += 1;
    }
    // Twilio was never asked for one recording twice at once (the backend's log, in order).
    let (lines, _) = stack.backend_log().lines_since(start_backend_log);
    let mut in_flight: HashMap<String, i64> = HashMap::new();
    for line in &lines {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(msg), Some(call)) = (
            v.get("message").and_then(|m| m.as_str()),
            v.get("call_sid").and_then(|c| c.as_str()),
        ) else {
            continue;
        };
        let n = in_flight.entry(call.to_string()).or_default();
        if msg.starts_with("Cache miss") {
            *n += 1;
            if *n > 1 {
                report.violations.push(Violation {
                    step: None,
                    what: format!("two downloads of {call} from Twilio at once"),
                    reproduce: reproduce_all.clone(),
                });
            }
        } else if msg.starts_with("Recording saved")
            || msg.starts_with("Recording file not found")
            || (msg.starts_with("Failed to fetch recording") && v.get("cause").is_some())
        {
            *n = (*n - 1).max(0);
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
