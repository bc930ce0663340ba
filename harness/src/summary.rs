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
    pub browsers: Browsers,
    /// Expectations and the snapshot comparison that failed.
    pub failures: Vec<String>,
    /// What its set-up met and mended ([`crate::ProfileRun::set_up`]).
    pub set_up: Vec<String>,
    /// What its steps met that a snapshot cannot hold ([`crate::ProfileRun::notes`]).
    pub notes: Vec<String>,
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

/// Which browsers' users a run's `play` steps failed for and which they played for, engine by
/// engine. Shown as `fails for users of WebKit browsers such as Safari (webkit: load …:
/// MEDIA_ERR_SRC_NOT_SUPPORTED); plays for users of Chromium browsers … (chromium)`; empty
/// without a `play` step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Browsers {
    /// `{users} ({engine}: {step}: {what its page showed}; …)` for each engine a step failed in.
    pub fails: Vec<String>,
    /// `{users} ({engine})` for each engine every step played in.
    pub plays: Vec<String>,
}

impl std::fmt::Display for Browsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.fails.is_empty() {
            parts.push(format!("fails for users of {}", self.fails.join(", ")));
        }
        if !self.plays.is_empty() {
            parts.push(format!("plays for users of {}", self.plays.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// A run's [`Browsers`]: each engine's `play` steps, each failed step named with what its page
/// showed.
pub fn browsers(outcomes: &[Outcome]) -> Browsers {
    let mut b = Browsers::default();
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
            b.plays.push(format!("{} ({engine})", engine.users()));
        } else {
            b.fails.push(format!(
                "{} ({engine}: {})",
                engine.users(),
                failed.join("; ")
            ));
        }
    }
    b
}

/// A run's rows, one per profile; a snapshot that differs counts against each, and beside it
/// each row lists the failed requests of its deploy steps that differ.
pub fn rows(run: &ScenarioRun, mismatch: Option<&crate::snapshot::Mismatch>) -> Vec<Row> {
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
                .chain(mismatch.map(|m| {
                    let here = m.steps.get(r.profile.name()).is_some_and(|s| !s.is_empty());
                    let elsewhere = if here {
                        ""
                    } else {
                        "; this profile's steps match it"
                    };
                    format!("{}{elsewhere}", m.message)
                }))
                // Beside a snapshot that says only that some failed: which, and how.
                .chain(
                    mismatch
                        .and_then(|m| m.steps.get(r.profile.name()))
                        .map(|steps| r.deploy_failures(steps))
                        .unwrap_or_default(),
                )
                .collect(),
            set_up: r.set_up.clone(),
            notes: r.notes.clone(),
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
        browsers: Browsers::default(),
        failures: vec![why],
        set_up: Vec::new(),
        notes: Vec::new(),
        elapsed: std::time::Duration::ZERO,
    }
}

/// The rows as a table with, under each row, the browsers whose users it fails for, what its
/// set-up mended and each failure.
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
        if !r.browsers.fails.is_empty() {
            out.push_str(&format!("    browsers: {}\n", r.browsers));
        }
        for m in &r.set_up {
            out.push_str(&format!("    set-up: {m}\n"));
        }
        for n in &r.notes {
            out.push_str(&format!("    note: {n}\n"));
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
        let said: Vec<String> = (r.set_up.iter().map(|m| format!("set-up: {m}")))
            .chain(r.notes.iter().map(|n| format!("note: {n}")))
            .collect();
        if !said.is_empty() {
            case.set_system_out(said.join("\n"));
        }
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
            browsers(&outcomes).to_string(),
            "fails for users of WebKit browsers such as Safari (webkit: load: \
             MEDIA_ERR_SRC_NOT_SUPPORTED); plays for users of Chromium browsers such as Chrome \
             and Edge (chromium), Firefox (firefox)"
        );
        assert_eq!(
            browsers(&outcomes[..1]).to_string(),
            "plays for users of Chromium browsers such as Chrome and Edge (chromium)"
        );
        let http = Outcome::blank("get".into(), "GET /".into());
        assert_eq!(browsers(&[http]).to_string(), "");
    }

    #[test]
    fn the_table_names_the_browsers_a_row_fails_for_only() {
        let row = |browsers: Browsers| Row {
            scenario: "s".into(),
            profile: "fixed".into(),
            statuses: "no-play played".into(),
            causes: String::new(),
            browsers,
            failures: vec![],
            set_up: vec![],
            notes: vec![],
            elapsed: std::time::Duration::ZERO,
        };
        let table = table(&[
            row(Browsers {
                fails: vec!["Firefox (firefox: load: MEDIA_ERR_NETWORK)".into()],
                plays: vec![],
            }),
            row(Browsers {
                fails: vec![],
                plays: vec!["Firefox (firefox)".into()],
            }),
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

    #[test]
    fn what_a_set_up_mended_is_said_under_its_row_and_in_junit() {
        let mended = "pre-download of recording 0 (its signed status webhook) answered 502 \
                      (reset_by_peer), sent once more";
        let ran_out = "step 1: wait_idle_close: the backend did not close the last request's \
                       connection within 4000 ms; the next step went on it";
        let row = |set_up: Vec<String>, notes: Vec<String>| Row {
            scenario: "s".into(),
            profile: "fixed".into(),
            statuses: "200".into(),
            causes: String::new(),
            browsers: Browsers::default(),
            failures: vec![],
            set_up,
            notes,
            elapsed: std::time::Duration::ZERO,
        };
        let rows = [
            row(vec![mended.into()], vec![ran_out.into()]),
            row(vec![], vec![]),
        ];
        assert_eq!(
            table(&rows).lines().skip(1).collect::<Vec<_>>(),
            [
                "s         fixed    200       PASS    ",
                "    set-up: pre-download of recording 0 (its signed status webhook) answered 502 \
                 (reset_by_peer), sent once more",
                "    note: step 1: wait_idle_close: the backend did not close the last request's \
                 connection within 4000 ms; the next step went on it",
                "s         fixed    200       PASS    ",
            ]
        );
        let xml = junit(&rows).unwrap();
        assert_eq!(xml.matches("<system-out>").count(), 1, "{xml}");
        assert!(
            xml.contains("<system-out>set-up: pre-download of recording 0"),
            "{xml}"
        );
        assert!(xml.contains("note: step 1: wait_idle_close"), "{xml}");
    }
}
