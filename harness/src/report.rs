//! `harness run --html DIR`: a self-contained HTML report of scenario runs: the legacy-versus-fixed
//! matrix, every gateway error with nginx's cause and raw line, each step's request and response,
//! the browser's Range requests as a timeline, and the snapshots it was compared with. Rendered
//! with minijinja from `harness/templates/report.html`; no network is needed to view it.

use crate::browser::Delivered;
use crate::error::HarnessError;
use crate::outcome::Outcome;
use crate::runner::ScenarioRun;
use crate::scenario::Scenario;
use serde::Serialize;
use std::path::{Path, PathBuf};

const TEMPLATE: &str = include_str!("../templates/report.html");

/// How a profile's run went, for the matrix's colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every step answered by the backend or played, no gateway error logged.
    Clean,
    /// The client was fine, but nginx logged gateway errors (a retried GET, a cut body).
    Logged,
    /// The client got an nginx 502/504, or the page showed a media error.
    UserFailure,
    /// The scenario could not run.
    DidNotRun,
}

/// One bar of a browser timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    /// Left edge, % of the timeline.
    pub x: f64,
    /// Width, % of the timeline (at least a sliver).
    pub w: f64,
    /// `bytes=0- → 206 (complete, 12 ms)`.
    pub label: String,
    /// `ok`, `partial` or `error`: its colour.
    pub class: &'static str,
}

/// A step as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReportStep {
    /// The outcome itself (every field is shown).
    pub outcome: Outcome,
    /// One-line summary (`206`, `502 (premature_close)`, `page: played`).
    pub summary: String,
    /// What the body was, in words (`whole`, `slice 0-999`, `truncated of 50000`).
    pub body: String,
    /// `ok`, `logged`, `error`.
    pub class: &'static str,
    /// The browser's requests as bars (play steps).
    pub timeline: Vec<Bar>,
    /// The timeline's length in ms.
    pub timeline_ms: u64,
}

/// A profile's run as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReportProfile {
    /// `fixed` or `legacy`.
    pub profile: String,
    /// The matrix colour.
    pub verdict: Verdict,
    /// Expectations and snapshot comparisons that failed.
    pub failures: Vec<String>,
    /// Its steps.
    pub steps: Vec<ReportStep>,
    /// Status summary for the matrix cell (`200 502`, `played`).
    pub cell: String,
    /// Which browsers' users it fails for and which it plays for
    /// ([`crate::summary::browsers`]; empty without a `play` step).
    pub browsers: String,
    /// What its set-up met and mended ([`crate::ProfileRun::set_up`]).
    pub set_up: Vec<String>,
    /// What its steps met that a snapshot cannot hold ([`crate::ProfileRun::notes`]).
    pub notes: Vec<String>,
}

/// A scenario as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReportScenario {
    /// Its name (and anchor).
    pub name: String,
    /// What it shows.
    pub description: String,
    /// The scenario file, when it came from one.
    pub file: Option<String>,
    /// Link to its snapshot (copied next to the report), when there is one.
    pub snapshot: Option<String>,
    /// Why it did not run.
    pub error: Option<String>,
    /// Profiles in order (`fixed`, `legacy`).
    pub profiles: Vec<ReportProfile>,
}

/// The whole report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Its scenarios, in run order.
    pub scenarios: Vec<ReportScenario>,
    /// Profile names that appear, for the matrix's columns.
    pub columns: Vec<String>,
    /// What ran: nginx version, runtime, backend.
    pub context: Vec<(String, String)>,
    /// Gateway error causes that appear → what they mean.
    pub causes: std::collections::BTreeMap<String, String>,
}

fn step_class(o: &Outcome) -> &'static str {
    if o.user_failed() {
        "error"
    } else if o.gateway_errors.is_empty() {
        "ok"
    } else {
        "logged"
    }
}

fn timeline(o: &Outcome) -> (Vec<Bar>, u64) {
    let Some(b) = &o.browser else {
        return (Vec::new(), 0);
    };
    let total = b
        .requests
        .iter()
        .map(|r| r.at_ms + r.took_ms)
        .max()
        .unwrap_or(0)
        .max(1);
    let bars = b
        .requests
        .iter()
        .map(|r| {
            let range = r.range.as_deref().unwrap_or("no Range");
            Bar {
                x: r.at_ms as f64 * 100.0 / total as f64,
                w: (r.took_ms as f64 * 100.0 / total as f64).max(0.8),
                label: format!(
                    "{range} → {} ({}, {} bytes, {} ms)",
                    r.status, r.body, r.bytes_sent, r.took_ms
                ),
                class: match r.body {
                    Delivered::Complete => "ok",
                    Delivered::Partial => "partial",
                    Delivered::Error => "error",
                },
            }
        })
        .collect();
    (bars, total)
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Report::default()
    }

    /// Adds a line of context (`nginx`, `1.22.1`).
    pub fn context(&mut self, key: &str, value: &str) {
        self.context.push((key.to_string(), value.to_string()));
    }

    /// Adds a scenario's run (or why it did not run). `snapshot_failure` is the snapshot
    /// comparison's complaint, if any; `file` the scenario file it came from.
    pub fn add(
        &mut self,
        scenario: &Scenario,
        file: Option<&Path>,
        run: Result<&ScenarioRun, String>,
        snapshot_failure: Option<String>,
    ) {
        let mut entry = ReportScenario {
            name: scenario.name.clone(),
            description: scenario.description.clone(),
            file: file.map(|f| match crate::project::current() {
                Ok(project) => project.relative(f).display().to_string(),
                Err(_) => f.display().to_string(),
            }),
            snapshot: None,
            error: None,
            profiles: Vec::new(),
        };
        match run {
            Err(e) => {
                entry.error = Some(e);
                entry.profiles = scenario
                    .profiles
                    .iter()
                    .map(|p| ReportProfile {
                        profile: p.name().to_string(),
                        verdict: Verdict::DidNotRun,
                        failures: Vec::new(),
                        steps: Vec::new(),
                        cell: "did not run".into(),
                        browsers: String::new(),
                        set_up: Vec::new(),
                        notes: Vec::new(),
                    })
                    .collect();
            }
            Ok(run) => {
                entry.snapshot = Some(format!("snapshots/{}.snap", run.snapshot_name()));
                for r in &run.runs {
                    for o in &r.outcomes {
                        for e in &o.gateway_errors {
                            self.causes
                                .insert(e.cause.name().to_string(), e.cause.meaning().to_string());
                        }
                    }
                    let steps: Vec<ReportStep> = r
                        .outcomes
                        .iter()
                        .map(|o| {
                            let (timeline, timeline_ms) = timeline(o);
                            ReportStep {
                                outcome: o.clone(),
                                summary: o.summary(),
                                body: o.body.check.words(),
                                class: step_class(o),
                                timeline,
                                timeline_ms,
                            }
                        })
                        .collect();
                    let verdict = if steps.iter().any(|s| s.class == "error") {
                        Verdict::UserFailure
                    } else if steps.iter().any(|s| s.class == "logged") {
                        Verdict::Logged
                    } else {
                        Verdict::Clean
                    };
                    let mut failures = r.failures.clone();
                    failures.extend(snapshot_failure.clone());
                    let cell = crate::summary::cells(&r.outcomes);
                    entry.profiles.push(ReportProfile {
                        profile: r.profile.name().to_string(),
                        verdict,
                        failures,
                        steps,
                        cell,
                        browsers: crate::summary::browsers(&r.outcomes).to_string(),
                        set_up: r.set_up.clone(),
                        notes: r.notes.clone(),
                    });
                }
            }
        }
        for p in &entry.profiles {
            if !self.columns.contains(&p.profile) {
                self.columns.push(p.profile.clone());
            }
        }
        self.columns.sort();
        self.scenarios.push(entry);
    }

    /// Renders the report to HTML.
    pub fn render(&self) -> Result<String, HarnessError> {
        let mut env = minijinja::Environment::new();
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        env.add_template("report.html", TEMPLATE)
            .map_err(|e| HarnessError::Config {
                file: "harness/templates/report.html".into(),
                line: e.line().unwrap_or(0),
                message: e.to_string(),
            })?;
        env.get_template("report.html")
            .and_then(|t| t.render(minijinja::context! { report => minijinja::value::Serde(self) }))
            .map_err(|e| HarnessError::Config {
                file: "harness/templates/report.html".into(),
                line: e.line().unwrap_or(0),
                message: format!("render the report: {e:#}"),
            })
    }

    /// Writes `dir/index.html` and copies each linked snapshot from `snapshots` into
    /// `dir/snapshots/`, so the folder is viewable on its own. Returns index.html's path.
    pub fn write(&self, dir: &Path, snapshots: &Path) -> Result<PathBuf, HarnessError> {
        std::fs::create_dir_all(dir.join("snapshots"))
            .map_err(HarnessError::io(format!("create {}", dir.display())))?;
        let mut report = self.clone();
        for s in &mut report.scenarios {
            if let Some(link) = &s.snapshot {
                let name = link.trim_start_matches("snapshots/");
                let from = snapshots.join(name);
                if from.is_file() {
                    std::fs::copy(&from, dir.join(link))
                        .map_err(HarnessError::io(format!("copy {}", from.display())))?;
                } else {
                    s.snapshot = None;
                }
            }
        }
        let index = dir.join("index.html");
        std::fs::write(&index, report.render()?)
            .map_err(HarnessError::io(format!("write {}", index.display())))?;
        Ok(index)
    }
}
