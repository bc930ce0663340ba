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
    /// Which browsers' users its `play` steps failed for ([`browsers`]; empty without one).
    pub browsers: String,
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

/// Which browsers' users a run's `play` steps failed for, engine by engine, naming each failed
/// step and what its page showed: `fails for users of WebKit browsers such as Safari (webkit:
/// load …: MEDIA_ERR_SRC_NOT_SUPPORTED); plays for users of Chromium browsers … (chromium)`.
/// Empty without a `play` step.
pub fn browsers(outcomes: &[Outcome]) -> String {
    let (mut fails, mut plays) = (Vec::new(), Vec::new());
    for engine in crate::browser::Engine::ALL {
        let steps: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.browser.as_ref().is_some_and(|b| b.engine == engine))
            .collect();
        if steps.is_empty() {
            continue;
        }
        let failed: Vec<String> = steps
            .iter()
            .filter(|o| o.user_failed())
            .filter_map(|o| {
                let page = &o.browser.as_ref()?.page;
                let saw = page.error_name.as_deref().unwrap_or(&page.stage);
                Some(format!("{}: {saw}", o.step))
            })
            .collect();
        if failed.is_empty() {
            plays.push(format!("{} ({engine})", engine.users()));
        } else {
            fails.push(format!(
                "{} ({engine}: {})",
                engine.users(),
                failed.join("; ")
            ));
        }
    }
    let mut parts = Vec::new();
    if !fails.is_empty() {
        parts.push(format!("fails for users of {}", fails.join(", ")));
    }
    if !plays.is_empty() {
        parts.push(format!("plays for users of {}", plays.join(", ")));
    }
    parts.join("; ")
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
            browsers: browsers(&r.outcomes),
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
        browsers: String::new(),
        failures: vec![why],
        elapsed: std::time::Duration::ZERO,
    }
}

/// The rows as a table with, under each row, the browsers whose users it fails for and each
/// failure.
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
        if r.browsers.starts_with("fails for") {
            out.push_str(&format!("    browsers: {}\n", r.browsers));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::browser::{BrowserOutcome, Engine, PageOutcome};

    fn play(step: &str, engine: Engine, error: Option<&str>) -> Outcome {
        let mut o = Outcome::blank(step.into(), "PLAY /player.html".into());
        o.browser = Some(BrowserOutcome {
            engine,
            page: PageOutcome {
                stage: if error.is_some() {
                    "error before canplay"
                } else {
                    "played"
                }
                .into(),
                events: vec![],
                duration_ms: None,
                canplay: error.is_none(),
                ended: error.is_none(),
                error_code: error.map(|_| 4),
                error_name: error.map(str::to_string),
                error_message: None,
                ready_state: 0,
            },
            requests: vec![],
        });
        o
    }

    #[test]
    fn browsers_name_the_users_a_run_fails_for_and_the_step_that_failed() {
        let outcomes = [
            play("seek", Engine::Chromium, None),
            play("seek", Engine::Firefox, None),
            play("load", Engine::Webkit, Some("MEDIA_ERR_SRC_NOT_SUPPORTED")),
            play("control", Engine::Webkit, None),
        ];
        assert_eq!(
            browsers(&outcomes),
            "fails for users of WebKit browsers such as Safari (webkit: load: \
             MEDIA_ERR_SRC_NOT_SUPPORTED); plays for users of Chromium browsers such as Chrome \
             and Edge (chromium), Firefox (firefox)"
        );
        assert_eq!(
            browsers(&outcomes[..1]),
            "plays for users of Chromium browsers such as Chrome and Edge (chromium)"
        );
        let http = Outcome::blank("get".into(), "GET /".into());
        assert_eq!(browsers(&[http]), "");
    }

    #[test]
    fn the_table_names_the_browsers_a_row_fails_for_only() {
        let row = |browsers: &str| Row {
            scenario: "s".into(),
            profile: "fixed".into(),
            statuses: "no-play played".into(),
            causes: String::new(),
            browsers: browsers.into(),
            failures: vec![],
            elapsed: std::time::Duration::ZERO,
        };
        let table = table(&[
            row("fails for users of Firefox (firefox: load: MEDIA_ERR_NETWORK)"),
            row("plays for users of Firefox (firefox)"),
        ]);
        assert_eq!(
            table.lines().skip(1).collect::<Vec<_>>(),
            [
                "s         fixed    no-play played  PASS    ",
                "    browsers: fails for users of Firefox (firefox: load: MEDIA_ERR_NETWORK)",
                "s         fixed    no-play played  PASS    ",
            ]
        );
    }
}
