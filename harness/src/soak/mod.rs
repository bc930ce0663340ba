//! `harness soak`: seeded chaos under load on one stack. Clients run numbered steps whose plans
//! come from the seed alone (which recording, which request, which Twilio fault), while the
//! backend is restarted on a fixed schedule; every answer is checked as it arrives (each plan's
//! steps go through the one executor, and a violation is a failed expectation), and the cache,
//! the backend's memory and fds, and Twilio's traffic are checked around it.
//!
//! Step `K` of seed `S` is always the same plan, so `harness soak --seed S --only-step K`
//! replays a failure on a fresh stack. The order in which concurrent clients run steps, and so
//! which step meets a restart, is not reproducible.

mod checks;
pub mod plan;
mod report;

pub use plan::{fault_name, pool, SoakPlan};
pub use report::{DeployRecord, Gauge, Life, SoakReport, Violation};

use crate::error::HarnessError;
use crate::events::{self, BackendEvent};
use crate::outcome::{BodyCheck, Outcome};
use crate::ready::poll;
use crate::runtime::Runtime;
use crate::scenario::Step;
use crate::spec::{BackendSpec, Profile, StackSpec};
use crate::stack::Stack;
use crate::step::{execute, Executed, Observe, Session, Target};
use mock_twilio::{MediaFormat, Recording};
use report::Sampler;
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
    /// Deploys (every backend instance in turn: its listener closes, it drains on SIGTERM, it
    /// starts again) this often during load; `None`: never.
    pub restart_every: Option<Duration>,
    /// Run only this step, alone, on a fresh stack.
    pub only_step: Option<u64>,
    /// How far the backend's resident memory may rise above its start within one process life
    /// (kB). The soak's largest recording is 50 MB: a backend that holds one whole in memory
    /// goes over the default, 32 MiB (the reference backend rises by about 8 MiB).
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
    /// 4 clients, 20 % faults, mp3 and wav, a deploy every 15 s, 32 MiB and 64 fds of budget.
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
            rss_budget_kb: 32 * 1024,
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

    /// The stack the soak starts: its own, with nginx's retry window unscaled unless set.
    fn stack_spec(&self) -> StackSpec {
        let mut spec = self.stack.clone();
        spec.timeouts.next_upstream_scale.get_or_insert(1.0);
        spec
    }

    /// The plan of step `k` under this soak's settings.
    pub fn plan(&self, k: u64) -> SoakPlan {
        plan::plan(
            self.seed,
            k,
            self.fault_rate,
            &self.stack.backend,
            &self.formats,
        )
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

/// Shared by the clients.
struct Shared {
    config: SoakConfig,
    stack: Stack,
    session: Session,
    next: AtomicU64,
    /// Every recording made (the pool and each fault step's fresh one), for the cache check.
    recordings: Mutex<Vec<Recording>>,
    /// Deploy windows (start, end), end `None` while one is in progress.
    restarts: Mutex<Vec<(Instant, Option<Instant>)>>,
    report: Mutex<SoakReport>,
}

impl Shared {
    /// The deploy a request from `from` to `to` overlapped, if any.
    fn overlapped_deploy(&self, from: Instant, to: Instant) -> Option<usize> {
        self.restarts
            .lock()
            .unwrap()
            .iter()
            .position(|(a, b)| *a <= to && b.is_none_or(|b| b >= from))
    }

    fn violation(&self, step: u64, what: String) {
        let reproduce = format!("{} --only-step {step}", self.config.command());
        self.report.lock().unwrap().violations.push(Violation {
            step: Some(step),
            what,
            reproduce,
        });
    }

    /// Runs step `k`'s plan and judges what its last step observed; true when a deploy failed
    /// it (counted apart).
    async fn step(&self, k: u64) -> Result<bool, HarnessError> {
        let plan = self.config.plan(k);
        let fresh = plan.fresh.clone().map(|rec| {
            self.recordings.lock().unwrap().push(rec.clone());
            self.session
                .add_recording(self.stack.twilio().add_recording(rec))
        });
        let steps = plan.bind(fresh);
        let started = Instant::now();
        let mut last = None;
        for (i, step) in steps.iter().enumerate() {
            // The validator an `{etag}` in this step's If-Range stands for.
            let etag = match step {
                Step::Request(r) => self.session.validators(r.recording).map(|v| v.etag),
                _ => None,
            };
            if let Executed::Outcome(o) =
                execute(Target::Stack(&self.stack), &self.session, step, i).await?
            {
                last = Some((*o, step, etag));
            }
        }
        let ended = Instant::now();
        *self
            .report
            .lock()
            .unwrap()
            .kinds
            .entry(plan.kind.clone())
            .or_default() += 1;
        Ok(last.is_some_and(|(o, step, etag)| {
            self.judge(k, &o, step, etag.as_deref(), started, ended)
        }))
    }

    /// Under `fixed` and `legacy`, a request that met a deploy and failed because of it is
    /// counted apart, by deploy and cause; under `hardened` nothing is (a deploy must cost no
    /// request). A gateway error otherwise is a violation under `fixed` and `hardened` (and
    /// reported by cause under `legacy`); then the step's expectations and RFC 9110's Range
    /// rules. True when the request was counted apart as failed by a deploy.
    fn judge(
        &self,
        k: u64,
        o: &Outcome,
        step: &Step,
        etag: Option<&str>,
        from: Instant,
        to: Instant,
    ) -> bool {
        *self
            .report
            .lock()
            .unwrap()
            .statuses
            .entry(o.status_text())
            .or_default() += 1;
        let gateway = o.status.is_none() || o.is_gateway_failure();
        let cut = matches!(o.body.check, BodyCheck::Truncated { .. });
        let apart = self.config.stack.profile != Profile::Hardened;
        if gateway || cut {
            if let Some(n) = self.overlapped_deploy(from, to).filter(|_| apart) {
                let cause = if cut { "cut".into() } else { o.status_text() };
                self.report.lock().unwrap().failed_by_deploy(n, cause);
                return true;
            }
        }
        if gateway {
            if self.config.stack.profile != Profile::Legacy {
                self.violation(k, format!("{}: {}", o.step, o.summary()));
            }
            return false;
        }
        for failure in step.expect().map(|e| e.failures(o)).unwrap_or_default() {
            self.violation(k, failure);
        }
        if let Err(e) = self.range_rfc(o, step, etag) {
            self.violation(k, format!("{}: {e}", o.step));
        }
        false
    }

    /// A GET's answer is one RFC 9110 allows for its Range and If-Range: every 206 has the
    /// Content-Range, length and bytes of the range asked, a valid single range is honoured.
    fn range_rfc(&self, o: &Outcome, step: &Step, etag: Option<&str>) -> Result<(), String> {
        let Step::Request(r) = step else {
            return Ok(());
        };
        // A cut body is the step's expectations' business (a Twilio fault may cut one).
        let cut = matches!(o.body.check, BodyCheck::Truncated { .. });
        if r.method != crate::scenario::Method::Get
            || cut
            || !matches!(o.status, Some(200 | 206 | 416))
        {
            return Ok(());
        }
        let Some(rec) = self.session.recording(r.recording) else {
            return Ok(());
        };
        let size = rec.media(r.format.unwrap_or(rec.format)).len();
        // An If-Range holds when it names the validator the answer carries (the current one);
        // an answer without one (a 416) does not say, and the Range alone is judged.
        let current = o.validators.as_ref().map(|v| v.etag.as_str());
        let holds = match (&r.if_range, current) {
            (Some(template), Some(c)) if !c.is_empty() => {
                Some(template.replace("{etag}", etag.unwrap_or("")) == c)
            }
            _ => None,
        };
        let allowed = crate::range_rfc::allowed(r.range.as_deref(), holds, size);
        crate::range_rfc::check(o, allowed, size, false)
    }
}

/// Runs a soak (or, with `only_step`, one step on a fresh stack). nginx's retry window
/// (proxy_next_upstream_timeout) is kept unscaled unless the stack's timeouts set it: scaled,
/// whether an attempt a deploy's drain failed is still retried would be the machine's load.
pub async fn soak(config: SoakConfig) -> Result<SoakReport, HarnessError> {
    let stack = Stack::start(config.stack_spec()).await?;
    let session = Session::new(Observe::Client);
    let pool: Vec<Recording> = pool(config.seed)
        .into_iter()
        .map(|mut r| {
            r.format = config.format(r.format);
            r
        })
        .collect();
    for r in &pool {
        session.add_recording(stack.twilio().add_recording(r.clone()));
    }
    let error_log_from = stack.error_log().len();
    let shared = Arc::new(Shared {
        next: AtomicU64::new(config.only_step.unwrap_or(0)),
        recordings: Mutex::new(pool),
        restarts: Mutex::default(),
        report: Mutex::new(SoakReport {
            seed: config.seed,
            profile: config.stack.profile.name().into(),
            ..Default::default()
        }),
        config: config.clone(),
        stack,
        session,
    });
    let clients = if config.only_step.is_some() {
        1
    } else {
        config.clients.max(1)
    };
    let deadline = Instant::now() + config.duration;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let shared = shared.clone();
        workers.spawn(async move { client(&shared, deadline).await });
    }
    let mut sampler = Sampler::default();
    let life_log = control(&shared, &mut workers, &mut sampler, deadline).await?;
    let settle = settle(&shared.stack, life_log).await;
    sampler.sample_all(shared.stack.backend_measured_pids());
    let mut report = shared.report.lock().unwrap().clone();
    report.backend_rss_kb = sampler.rss;
    report.backend_fds = sampler.fds;
    report.lives = sampler.lives;
    report.settle_secs = settle.as_secs_f64();
    let recordings = shared.recordings.lock().unwrap().clone();
    checks::run(
        &shared.stack,
        &config,
        clients,
        &recordings,
        error_log_from,
        &mut report,
    );
    Ok(report)
}

/// How long a client waits after a request a deploy failed before its next step.
const USER_RETRY: Duration = Duration::from_millis(250);

/// One client: numbered steps until time is up (or the one step to replay).
async fn client(shared: &Shared, deadline: Instant) -> Result<(), HarnessError> {
    loop {
        let replay = shared.config.only_step.is_some();
        if !replay && Instant::now() >= deadline {
            return Ok(());
        }
        let k = shared.next.fetch_add(1, Ordering::SeqCst);
        let failed_by_deploy = shared.step(k).await?;
        shared.report.lock().unwrap().steps += 1;
        if failed_by_deploy {
            // Pacing, as a user who saw the error presses Play again: without it a client
            // that fails at once would send thousands of requests while an instance is out.
            tokio::time::sleep(USER_RETRY).await;
        }
        if replay {
            return Ok(());
        }
    }
}

/// The controller: samples the backend instances and deploys on schedule until the clients
/// are done. Returns where the last deploy's backend processes' log begins.
async fn control(
    shared: &Shared,
    workers: &mut tokio::task::JoinSet<Result<(), HarnessError>>,
    sampler: &mut Sampler,
    deadline: Instant,
) -> Result<u64, HarnessError> {
    let config = &shared.config;
    let stack = &shared.stack;
    sampler.sample_all(stack.backend_measured_pids());
    let began = Instant::now();
    let mut next_deploy = config
        .restart_every
        .filter(|_| config.only_step.is_none())
        .map(|every| Instant::now() + every);
    // A download that a restart cut short never logs its end, so only the last lives'
    // downloads are waited for at the end.
    let mut life_log = stack.backend_log().len();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            done = workers.join_next() => match done {
                None => return Ok(life_log),
                Some(Ok(Err(e))) => return Err(e),
                Some(_) => continue,
            },
            _ = tick.tick() => {}
        }
        sampler.sample_all(stack.backend_measured_pids());
        let due = next_deploy.is_some_and(|at| Instant::now() >= at && Instant::now() < deadline);
        if due {
            deploy(shared, sampler, began).await?;
            life_log = stack.backend_log().len();
            next_deploy = config.restart_every.map(|e| Instant::now() + e);
        }
    }
}

/// One deploy during the load: its window (for the requests it fails), each instance's last
/// sample before it goes and first after it is back, and nginx's causes meanwhile.
async fn deploy(
    shared: &Shared,
    sampler: &mut Sampler,
    began: Instant,
) -> Result<(), HarnessError> {
    let stack = &shared.stack;
    let error_log = stack.error_log().len();
    let start = Instant::now();
    shared.restarts.lock().unwrap().push((start, None));
    shared.report.lock().unwrap().deploys.push(DeployRecord {
        at_secs: start.duration_since(began).as_secs_f64(),
        ..Default::default()
    });
    sampler.sample_all(stack.backend_measured_pids());
    let result = stack.deploy(|_| async {}).await;
    sampler.sample_all(stack.backend_measured_pids());
    if let Some(w) = shared.restarts.lock().unwrap().last_mut() {
        w.1 = Some(Instant::now());
    }
    result?;
    let (lines, _) = stack.error_log().lines_since(error_log);
    let mut report = shared.report.lock().unwrap();
    report.restarts += 1;
    if let Some(d) = report.deploys.last_mut() {
        d.took_secs = start.elapsed().as_secs_f64();
        for e in lines.iter().filter_map(|l| crate::gateway::classify(l)) {
            *d.nginx_causes
                .entry(e.cause.name().to_string())
                .or_default() += 1;
        }
    }
    Ok(())
}

/// Downloads the clients started may still be filling the cache: waits until Twilio answers
/// nothing more (what mock-twilio saw, for any backend), and the backend process logged the
/// end of every download it began (what a backend that keeps its log contract says).
async fn settle(stack: &Stack, life_log: u64) -> Duration {
    let start = Instant::now();
    poll(SETTLE_DEADLINE, || async {
        let (lines, _) = stack.backend_log().lines_since(life_log);
        let events: Vec<BackendEvent> = lines
            .iter()
            .filter_map(|l| BackendEvent::parse(l))
            .collect();
        let (started, ended) = events::downloads(&events);
        (stack.twilio().open_requests().is_empty() && ended >= started).then_some(())
    })
    .await;
    start.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soak_keeps_nginx_s_retry_window_unscaled_unless_its_stack_sets_one() {
        let mut config = SoakConfig::new(Duration::from_secs(1), 1);
        let spec = config.stack_spec();
        assert_eq!(spec.timeouts.next_upstream_scale, Some(1.0));
        assert_eq!(spec.timeouts.scale, 0.1, "the other timeouts stay scaled");
        config.stack.timeouts.next_upstream_scale = Some(0.5);
        assert_eq!(config.stack_spec().timeouts.next_upstream_scale, Some(0.5));
    }
}
