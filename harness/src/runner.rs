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
use std::collections::BTreeMap;

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
    /// How long it took, its stack's start and end included (not in snapshots: it varies).
    #[serde(skip)]
    pub elapsed: std::time::Duration,
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

/// Runs `scenario` on a fresh stack of `spec` (its profile is the run's).
pub async fn run_spec(scenario: &Scenario, spec: StackSpec) -> Result<ProfileRun, HarnessError> {
    let profile = spec.profile;
    // A scenario that plays holds a browser slot from before its stack starts to its end, so
    // that no step waits for a slot in the middle of the scenario's timing.
    let slot = if scenario.needs_browser() {
        for engine in scenario.engines() {
            crate::browser::find(engine)?;
        }
        Some(BrowserSlot::acquire().await?)
    } else {
        None
    };
    let started = std::time::Instant::now();
    let stack = Stack::start(spec).await?;
    let mut run = run_on_stack(&stack, scenario, slot, profile).await?;
    drop(stack);
    run.elapsed = started.elapsed();
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
    prepare(stack, session, scenario).await?;
    let mut run = ProfileRun {
        profile,
        nginx_version: stack.nginx_version().to_string(),
        outcomes: Vec::new(),
        failures: Vec::new(),
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
                Executed::Done => {}
            }
        }
    }
    Ok(run)
}

/// The scenario's recordings at mock-twilio (the cached ones pre-downloaded through the real
/// path: a signed status webhook through nginx), then its faults armed.
async fn prepare(
    stack: &Stack,
    session: &Session,
    scenario: &Scenario,
) -> Result<(), HarnessError> {
    for (i, spec) in scenario.recordings.iter().enumerate() {
        let rec = Recording::new(spec.sid_at(i), spec.call_sid_at(i), spec.format, spec.size);
        session.add_recording(stack.twilio().add_recording(rec));
    }
    for (i, spec) in scenario.recordings.iter().enumerate() {
        if spec.cached {
            pre_download(stack, session, i).await?;
        }
    }
    for rule in &scenario.twilio_faults {
        stack.twilio().arm(rule.clone())?;
    }
    for rule in &scenario.hop_faults {
        stack.hop_faults().arm(rule.clone())?;
    }
    Ok(())
}

/// One pre-download at a time: its webhook must be accepted and the download saved.
async fn pre_download(stack: &Stack, session: &Session, i: usize) -> Result<(), HarnessError> {
    let webhook = Step::Webhook {
        recording: i,
        signing: Signing::Valid,
        pause_ms: 0,
        expect: Default::default(),
    };
    let Executed::Outcome(o) = execute(Target::Stack(stack), session, &webhook, i).await? else {
        unreachable!("a webhook step observes an outcome");
    };
    let what = format!("pre-download of recording {i} (its signed status webhook)");
    if o.status != Some(204) {
        return Err(HarnessError::step(
            i,
            format!("{what} answered {}", o.summary()),
        ));
    }
    if !o.backend_events.contains(&BackendEvent::Saved) {
        return Err(HarnessError::Timeout {
            what: format!("{what}: a `{}` line", BackendEvent::Saved.log_text()),
            waited: crate::step::SETTLE_DEADLINE,
        });
    }
    Ok(())
}
