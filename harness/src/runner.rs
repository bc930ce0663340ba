//! Runs a [`Scenario`] on a fresh [`Stack`] per profile: recordings and faults first, then each
//! step through the one executor ([`crate::step::execute`]), each Outcome checked against its
//! step's [`crate::Expect`].

use crate::browser::BrowserSlot;
use crate::error::HarnessError;
use crate::events::BackendEvent;
use crate::nginx::NginxLine;
use crate::outcome::{Outcome, SnapshotOutcome};
use crate::runtime::Runtime;
use crate::scenario::{Scenario, Step};
use crate::spec::{BackendSpec, Profile, StackSpec};
use crate::stack::Stack;
use crate::step::{execute, Executed, Observe, Session, Target};
use mock_twilio::{Recording, Signing};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// A scenario's run under one profile.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileRun {
    /// The profile.
    pub profile: Profile,
    /// The nginx version it ran on (`nginx/1.30.6`).
    pub nginx_version: String,
    /// One outcome per request, webhook or play step.
    pub outcomes: Vec<Outcome>,
    /// Explicit expectations that did not hold.
    pub failures: Vec<String>,
    /// What its set-up met and mended before the first step: a pre-download's webhook sent once
    /// more after it met a connection the backend had closed (not in snapshots: a race decides
    /// it).
    pub set_up: Vec<String>,
    /// What its steps met that a snapshot cannot hold: a `wait_idle_close` that ran out (not in
    /// snapshots: a race decides it).
    pub notes: Vec<String>,
    /// How long it took, its stack's start and end included, a wait for a browser slot not (not
    /// in snapshots: it varies).
    #[serde(skip)]
    pub elapsed: std::time::Duration,
}

impl ProfileRun {
    /// Each request the load of a `deploy` step among `steps` (indexes) failed, as `step:
    /// request (when): what came back`; a step whose failed `failed` expectation lists them
    /// already is left out.
    pub fn deploy_failures(&self, steps: &[usize]) -> Vec<String> {
        let listed = |step: &str, first: &str| {
            self.failures.iter().any(|f| {
                f.starts_with(&format!("{step}: ")) && f.lines().any(|l| l.trim() == first)
            })
        };
        steps
            .iter()
            .filter_map(|i| self.outcomes.get(*i))
            .flat_map(|o| {
                let failed = o.deploy.iter().flat_map(|d| &d.failed_requests);
                let shown = o.deploy.as_ref().and_then(|d| d.failed_requests.first());
                let shown = shown.is_some_and(|first| !listed(&o.step, first));
                failed
                    .filter(move |_| shown)
                    .map(move |f| format!("{}: {f}", o.step))
            })
            .collect()
    }
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
    /// The nginx version it ran on (`nginx/1.22.1`).
    pub nginx_version: String,
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

    /// The nginx line it ran on, if the harness knows it.
    pub fn nginx_line(&self) -> Option<NginxLine> {
        NginxLine::of_version(&self.nginx_version)
    }

    /// On a line other than the default: the name of that line's own snapshot
    /// (`{snapshot name}@nginx-1.30`), used where its outcome differs from the default line's.
    pub fn line_snapshot_name(&self) -> Option<String> {
        let line = self.nginx_line().filter(|l| *l != NginxLine::DEFAULT)?;
        Some(format!("{}@nginx-{line}", self.snapshot_name()))
    }

    /// The redacted form stored in `snapshots/`.
    pub fn snapshot(&self) -> ScenarioSnapshot {
        ScenarioSnapshot {
            description: self.description.clone(),
            profiles: self
                .runs
                .iter()
                .map(|r| {
                    let mut outcomes: Vec<_> = r.outcomes.iter().map(Outcome::snapshot).collect();
                    // Behind several instances, which one a request meets (and so whether a
                    // pooled connection waits for it) follows nginx's round robin, whose
                    // position after the stack's readiness checks is timing: left out.
                    if r.profile.row().instances > 1 {
                        for o in &mut outcomes {
                            o.upstream_connections_opened = None;
                        }
                    }
                    (r.profile.name().to_string(), outcomes)
                })
                .collect(),
        }
    }

    /// Each request the load of a `deploy` step failed, where that step's snapshot differs
    /// (`differing`: each profile's steps, as [`crate::snapshot::differing_steps`] gives them),
    /// prefixed by its profile and step: what to read beside a snapshot that says only that
    /// some failed.
    pub fn deploy_failures(&self, differing: &BTreeMap<String, Vec<usize>>) -> Vec<String> {
        self.runs
            .iter()
            .flat_map(|r| {
                let profile = r.profile.name();
                let steps = differing.get(profile).map_or(&[][..], Vec::as_slice);
                r.deploy_failures(steps)
                    .into_iter()
                    .map(move |f| format!("[{profile}] {f}"))
            })
            .collect()
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
    run_on(scenario, runtime, None, backend).await
}

/// Runs `scenarios` with nginx of `line`, at most `jobs` at a time, and gives their runs in
/// their order; `done` is told of each as it ends. Those that play are started first, but no
/// more of them at once than there are browser slots ([`crate::browser::browser_slots`]) while
/// others wait: the others run beside the plays instead of queueing behind them.
pub async fn run_many<'a>(
    scenarios: impl IntoIterator<Item = &'a Scenario>,
    (runtime, line): (Runtime, Option<NginxLine>),
    backend: &BackendSpec,
    jobs: usize,
    done: impl Fn(&Scenario),
) -> Vec<Result<ScenarioRun, HarnessError>> {
    let scenarios: Vec<&Scenario> = scenarios.into_iter().collect();
    let lanes = Lanes {
        jobs,
        slots: crate::browser::browser_slots(),
    };
    lanes
        .run(
            &scenarios,
            |s| s.needs_browser(),
            |s| run_on(s, runtime, line, backend),
            |s| done(s),
        )
        .await
}

/// How many items run at once (`jobs`), and how many of those may play (`slots`) while others
/// wait.
struct Lanes {
    jobs: usize,
    slots: usize,
}

impl Lanes {
    /// Runs `run` on every item, results in the items' order.
    async fn run<T, R, Fut>(
        &self,
        items: &[T],
        plays: impl Fn(&T) -> bool,
        run: impl Fn(&T) -> Fut,
        done: impl Fn(&T),
    ) -> Vec<R>
    where
        Fut: std::future::Future<Output = R>,
    {
        use futures::StreamExt;
        let (mut playing_queue, mut others): (VecDeque<usize>, VecDeque<usize>) =
            (0..items.len()).partition(|i| plays(&items[*i]));
        let mut results: Vec<Option<R>> = items.iter().map(|_| None).collect();
        let mut running = futures::stream::FuturesUnordered::new();
        let mut playing = 0;
        loop {
            while running.len() < self.jobs.max(1) {
                let next = if playing < self.slots {
                    playing_queue.pop_front().or_else(|| others.pop_front())
                } else {
                    others.pop_front().or_else(|| playing_queue.pop_front())
                };
                let Some(i) = next else { break };
                playing += usize::from(plays(&items[i]));
                let fut = run(&items[i]);
                running.push(async move { (i, fut.await) });
            }
            let Some((i, result)) = running.next().await else {
                break;
            };
            playing -= usize::from(plays(&items[i]));
            done(&items[i]);
            results[i] = Some(result);
        }
        results
            .into_iter()
            .map(|r| r.expect("every item was run"))
            .collect()
    }
}

/// Runs `scenario` with nginx of `line` (`None`: the runtime's default nginx).
pub async fn run_on(
    scenario: &Scenario,
    runtime: Runtime,
    line: Option<NginxLine>,
    backend: &BackendSpec,
) -> Result<ScenarioRun, HarnessError> {
    scenario
        .validate()
        .map_err(|e| HarnessError::InvalidScenario {
            scenario: scenario.name.clone(),
            field: e.field,
            message: e.message,
        })?;
    let runs = futures::future::join_all(
        scenario
            .profiles
            .iter()
            .map(|p| run_profile(scenario, *p, runtime, line, backend)),
    )
    .await;
    let runs: Vec<ProfileRun> = runs.into_iter().collect::<Result<_, _>>()?;
    Ok(ScenarioRun {
        name: scenario.name.clone(),
        backend: backend.name().to_string(),
        description: scenario.description.clone(),
        nginx_version: runs
            .first()
            .map(|r| r.nginx_version.clone())
            .unwrap_or_default(),
        runs,
    })
}

/// Runs `scenario` under one profile on a fresh stack.
pub async fn run_profile(
    scenario: &Scenario,
    profile: Profile,
    runtime: Runtime,
    line: Option<NginxLine>,
    backend: &BackendSpec,
) -> Result<ProfileRun, HarnessError> {
    let mut spec = StackSpec::new(profile)
        .timeouts(scenario.timeouts)
        .runtime(runtime)
        .nginx(line)
        .backend(backend.clone());
    if let Some(config) = scenario.configs.get(&profile) {
        spec.nginx_config = Some(crate::project::current()?.root.join(config));
    }
    run_spec(scenario, spec).await
}

/// Runs `scenario` on a fresh stack of `spec` (its profile is the run's). A scenario that arms
/// no Twilio fault gets the backend's real slow-download threshold ([`crate::spec::Timeouts::unfaulted`]).
pub async fn run_spec(
    scenario: &Scenario,
    mut spec: StackSpec,
) -> Result<ProfileRun, HarnessError> {
    if !scenario.arms_twilio_faults() {
        spec.timeouts = spec.timeouts.unfaulted();
    }
    let profile = spec.profile;
    for engine in scenario.engines() {
        crate::browser::find(engine)?;
    }
    let starting = std::time::Instant::now();
    let stack = Stack::start(spec).await?;
    let start_took = starting.elapsed();
    // A scenario that plays takes a browser slot once its stack has started (a container
    // stack's start takes seconds no browser needs) and holds it to its end, so that no step
    // waits for a slot in the middle of the scenario's timing; its stack, which may have waited
    // idle for the slot, is checked again first, so its first step meets it as just started.
    let run = async {
        let slot = if scenario.needs_browser() {
            let slot = BrowserSlot::acquire().await?;
            stack.ready_again().await?;
            Some(slot)
        } else {
            None
        };
        let running = std::time::Instant::now();
        let run = run_on_stack(&stack, scenario, slot, profile).await?;
        Ok::<_, HarnessError>((run, running))
    }
    .await;
    // Torn down off the task whether the run passed or not.
    stack.stop().await;
    let (mut run, running) = run?;
    // Its own time: the stack's start, then its run and teardown, not the wait for a slot.
    run.elapsed = start_took + running.elapsed();
    Ok(run)
}

/// Runs `scenario`'s recordings, faults and steps on a running `stack`.
pub async fn run_on_stack(
    stack: &Stack,
    scenario: &Scenario,
    slot: Option<BrowserSlot>,
    profile: Profile,
) -> Result<ProfileRun, HarnessError> {
    let session = Session::new(Observe::Logs).with_browser(slot);
    drive(stack, &session, scenario, profile)
        .await
        .map_err(|e| HarnessError::Stack {
            source: Box::new(e),
            logs: stack.logs(),
        })
}

async fn drive(
    stack: &Stack,
    session: &Session,
    scenario: &Scenario,
    profile: Profile,
) -> Result<ProfileRun, HarnessError> {
    let set_up = prepare(stack, session, scenario).await?;
    let mut run = ProfileRun {
        profile,
        nginx_version: stack.nginx_version().to_string(),
        outcomes: Vec::new(),
        failures: Vec::new(),
        set_up,
        notes: Vec::new(),
        elapsed: std::time::Duration::ZERO,
    };
    for (i, steps) in scenario.steps.iter().enumerate() {
        for step in steps.per_engine() {
            match execute(Target::Stack(stack), session, &step, i).await? {
                Executed::Outcome(o) => {
                    if let Some(expect) = step.expect() {
                        run.failures.extend(expect.failures(&o));
                    }
                    run.outcomes.push(*o);
                }
                Executed::Failed(why) => run.failures.push(why),
                Executed::Noted(note) => run.notes.push(note),
                Executed::Done => {}
            }
        }
    }
    Ok(run)
}

/// The scenario's recordings at mock-twilio (the cached ones pre-downloaded through the real
/// path: a signed status webhook through nginx), then its faults armed. Gives what it met and
/// mended ([`ProfileRun::set_up`]).
async fn prepare(
    stack: &Stack,
    session: &Session,
    scenario: &Scenario,
) -> Result<Vec<String>, HarnessError> {
    for (i, spec) in scenario.recordings.iter().enumerate() {
        let rec = Recording::new(spec.sid_at(i), spec.call_sid_at(i), spec.format, spec.size);
        session.add_recording(stack.twilio().add_recording(rec));
    }
    let mut mended = Vec::new();
    for (i, spec) in scenario.recordings.iter().enumerate() {
        if spec.cached {
            mended.extend(pre_download(stack, session, i).await?);
        }
    }
    for rule in &scenario.twilio_faults {
        stack.twilio().arm(rule.clone())?;
    }
    for rule in &scenario.hop_faults {
        stack.hop_faults().arm(rule.clone())?;
    }
    Ok(mended)
}

/// One pre-download at a time: its webhook must be accepted and the download saved. A webhook
/// that met a connection the backend had closed ([`met_a_closed_connection`]) is sent once more,
/// and that is said.
async fn pre_download(
    stack: &Stack,
    session: &Session,
    i: usize,
) -> Result<Option<String>, HarnessError> {
    let webhook = Step::Webhook {
        recording: i,
        signing: Signing::Valid,
        pause_ms: 0,
        expect: Default::default(),
    };
    let send = || async {
        match execute(Target::Stack(stack), session, &webhook, i).await? {
            Executed::Outcome(o) => Ok::<_, HarnessError>(o),
            _ => unreachable!("a webhook step observes an outcome"),
        }
    };
    let what = format!("pre-download of recording {i} (its signed status webhook)");
    let mut o = send().await?;
    let mut first = None;
    if met_a_closed_connection(&o) {
        first = Some(o.summary());
        o = send().await?;
    }
    if o.status != Some(204) {
        let before = first.map(|f| format!(", sent once more after {f}"));
        return Err(HarnessError::step(
            i,
            format!(
                "{what} answered {}{}",
                o.summary(),
                before.unwrap_or_default()
            ),
        ));
    }
    if !o.backend_events.contains(&BackendEvent::Saved) {
        return Err(HarnessError::Timeout {
            what: format!("{what}: a `{}` line", BackendEvent::Saved.log_text()),
            waited: crate::step::SETTLE_DEADLINE,
        });
    }
    Ok(first.map(|f| format!("{what} answered {f}, sent once more")))
}

/// A 502 whose every nginx error says the backend closed or reset the connection: the keep-alive
/// race on a connection nginx pooled from the stack's readiness checks, when a backend runs as
/// deployed and closes idle connections sooner than nginx (nginx does not retry a POST; one
/// diagnose run of the gunicorn example met it in CI). Scenarios show that race in their steps;
/// their set-up is not for it.
fn met_a_closed_connection(o: &Outcome) -> bool {
    use crate::gateway::GatewayCause::{PrematureClose, ResetByPeer, SendFailed};
    o.status == Some(502)
        && !o.gateway_errors.is_empty()
        && o.gateway_errors
            .iter()
            .all(|e| matches!(e.cause, PrematureClose | ResetByPeer | SendFailed))
}

#[cfg(test)]
mod tests {
    use super::Lanes;
    use std::cell::RefCell;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    #[test]
    fn a_set_up_webhook_is_sent_again_only_after_a_closed_connection() {
        let answered = |status: u16, lines: &[&str]| {
            let mut o = crate::outcome::Outcome::blank("webhook".into(), "POST".into());
            o.status = Some(status);
            o.gateway_errors = lines.iter().filter_map(|l| crate::classify(l)).collect();
            o
        };
        let closed = "2026/12/07 14:39:02 [error] 27246#27246: *3 upstream prematurely closed connection while reading response header from upstream, client: 127.0.0.1, server: _, request: \"POST /webhook/recording-status HTTP/1.1\", upstream: \"http://127.0.0.1:38071/webhook/recording-status\", host: \"127.0.0.1:45727\"";
        let refused = "2026/12/07 14:39:02 [error] 27246#27246: *3 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: _, request: \"POST /webhook/recording-status HTTP/1.1\", upstream: \"http://127.0.0.1:38071/webhook/recording-status\", host: \"127.0.0.1:45727\"";
        assert!(super::met_a_closed_connection(&answered(502, &[closed])));
        assert!(
            !super::met_a_closed_connection(&answered(502, &[refused])),
            "a backend down"
        );
        assert!(!super::met_a_closed_connection(&answered(
            502,
            &[closed, refused]
        )));
        assert!(
            !super::met_a_closed_connection(&answered(502, &[])),
            "the backend's own 502"
        );
        assert!(!super::met_a_closed_connection(&answered(403, &[])));
    }

    /// Pending `n` times (waking itself each time), then ready: work that takes `n` turns.
    struct Turns(u32);

    impl Future for Turns {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 == 0 {
                return Poll::Ready(());
            }
            self.0 -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn plays_hold_no_more_jobs_than_browser_slots_while_others_wait() {
        // Two long plays and three short others, two jobs, one browser slot.
        let items = ["p1", "p2", "o1", "o2", "o3"];
        let log = RefCell::new(Vec::new());
        let lanes = Lanes { jobs: 2, slots: 1 };
        let results = futures::executor::block_on(lanes.run(
            &items,
            |i| i.starts_with('p'),
            |i| {
                let (log, i) = (&log, *i);
                async move {
                    log.borrow_mut().push(format!("start {i}"));
                    Turns(if i.starts_with('p') { 20 } else { 2 }).await;
                    i.to_uppercase()
                }
            },
            |i| log.borrow_mut().push(format!("done {i}")),
        ));
        assert_eq!(
            results,
            ["P1", "P2", "O1", "O2", "O3"],
            "in the items' order"
        );
        let log = log.into_inner();
        let starts: Vec<&str> = log
            .iter()
            .filter_map(|l| l.strip_prefix("start "))
            .collect();
        // The second play waits until no other is left to run beside the first; queued in
        // order (as `buffered` would), both plays would have taken both jobs at once.
        assert_eq!(starts, ["p1", "o1", "o2", "o3", "p2"], "{log:?}");
        assert_eq!(log.iter().filter(|l| l.starts_with("done")).count(), 5);
    }

    #[test]
    fn with_a_slot_per_job_plays_run_side_by_side_first() {
        let items = ["o1", "p1", "p2"];
        let log = RefCell::new(Vec::new());
        let lanes = Lanes { jobs: 2, slots: 2 };
        futures::executor::block_on(lanes.run(
            &items,
            |i| i.starts_with('p'),
            |i| {
                let (log, i) = (&log, *i);
                async move {
                    log.borrow_mut().push(i);
                    Turns(2).await;
                }
            },
            |_| {},
        ));
        assert_eq!(log.into_inner(), ["p1", "p2", "o1"]);
    }
}
