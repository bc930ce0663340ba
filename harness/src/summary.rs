//! The summary of scenario runs as rows (scenario × profile → statuses, result, gateway errors):
//! one view for the CLI table, the JUnit report and the HTML report's matrix.

use crate::error::HarnessError;
use crate::outcome::Outcome;
use crate::runner::ScenarioRun;
use std::collections::BTreeMap;

/// One scenario under one profile.
#[derive(Debug, Clone)]
pub struct Row {
    /// The scenario.
    pub scenario: String,
    /// The profile (`-` when the scenario did not run).
    pub profile: String,
    /// Each step's cell ([`Outcome::cell`]), space-separated.
    pub statuses: String,
    /// Gateway errors by cause, `premature_close×1`.
    pub causes: String,
    /// Expectations and the snapshot comparison that failed.
    pub failures: Vec<String>,
    /// How long it ran (zero when it did not).
    pub elapsed: std::time::Duration,
}

impl Row {
    /// Passed: no failure.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The cells of a run's steps, space-separated (`200 502`, `played`).
pub fn cells(outcomes: &[Outcome]) -> String {
    outcomes
        .iter()
        .map(Outcome::cell)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Gateway errors of `outcomes` by cause: `premature_close×2, timed_out×1`.
pub fn causes(outcomes: &[Outcome]) -> String {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for e in outcomes.iter().flat_map(|o| &o.gateway_errors) {
        *by.entry(e.cause.name()).or_default() += 1;
    }
    by.iter()
        .map(|(c, n)| format!("{c}×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A run's rows, one per profile; `snapshot_failure` counts against each.
pub fn rows(run: &ScenarioRun, snapshot_failure: Option<&str>) -> Vec<Row> {
    run.runs
        .iter()
        .map(|r| Row {
            scenario: run.name.clone(),
            profile: r.profile.name().into(),
            statuses: cells(&r.outcomes),
            causes: causes(&r.outcomes),
            failures: r
                .failures
                .iter()
                .cloned()
                .chain(snapshot_failure.map(str::to_string))
                .collect(),
            elapsed: r.elapsed,
        })
        .collect()
}

/// The row of a scenario that did not run.
pub fn did_not_run(scenario: &str, why: String) -> Row {
    Row {
        scenario: scenario.into(),
        profile: "-".into(),
        statuses: "did not run".into(),
        causes: String::new(),
        failures: vec![why],
        elapsed: std::time::Duration::ZERO,
    }
}

/// The rows as a table with each failure under its row, and the closing count line.
pub fn table(rows: &[Row]) -> String {
    let w = |f: &dyn Fn(&Row) -> usize, min: usize| rows.iter().map(f).max().unwrap_or(0).max(min);
    let (ws, wp, wt) = (
        w(&|r| r.scenario.len(), 8),
        w(&|r| r.profile.len(), 7),
        w(&|r| r.statuses.len(), 8),
    );
    let mut out = format!(
        "{:ws$}  {:wp$}  {:wt$}  {:6}  gateway errors\n",
        "scenario", "profile", "statuses", "result"
    );
    for r in rows {
        let result = if r.passed() { "PASS" } else { "FAIL" };
        out.push_str(&format!(
            "{:ws$}  {:wp$}  {:wt$}  {:6}  {}\n",
            r.scenario, r.profile, r.statuses, result, r.causes
        ));
        for f in &r.failures {
            out.push_str(&format!("    {f}\n"));
        }
    }
    out
}

/// The rows as JUnit XML, a test case per row.
pub fn junit(rows: &[Row]) -> Result<String, HarnessError> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new("harness scenarios");
    for r in rows {
        let status = if r.passed() {
            TestCaseStatus::success()
        } else {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(r.failures.join("\n"));
            s
        };
        let mut case = TestCase::new(format!("{} [{}]", r.scenario, r.profile), status);
        case.set_classname(r.scenario.clone());
        case.set_time(r.elapsed);
        suite.add_test_case(case);
    }
    let mut report = Report::new("harness");
    report.add_test_suite(suite);
    report.to_string().map_err(|e| HarnessError::Io {
        what: "render JUnit XML".into(),
        source: std::io::Error::other(e.to_string()),
    })
}
