//! Scenario files: every `scenarios/**/*.toml` runs under its profiles and is snapshotted,
//! so adding a file adds a guarded test with no Rust; bad files are refused before anything runs.

use crate::support::{browser_present, tools_present};
use futures::StreamExt;
use harness::scenario::{files, json_schema, load, Scenario};
use harness::stack::workspace_dir;

#[test]
fn every_scenario_file_runs_and_matches_its_snapshot() {
    run_every_file(&harness::stack::BackendSpec::Reference, runtime(), None);
}

fn runtime() -> harness::Runtime {
    crate::support::runtime()
}

#[test]
fn every_scenario_file_runs_against_the_uvicorn_example() {
    if !crate::support::uvicorn_present() {
        return;
    }
    let file = harness::backend::StackFile::load(
        &workspace_dir().join("examples/uvicorn-backend/stack.toml"),
    )
    .unwrap();
    run_every_file(
        &harness::stack::BackendSpec::File(Box::new(file)),
        runtime(),
        None,
    );
}

/// Runs every scenario file against `backend` under `runtime` with nginx of `line` (`None`: the
/// runtime's default), and checks every snapshot (on another line: its own where it differs).
pub fn run_every_file(
    backend: &harness::stack::BackendSpec,
    runtime: harness::Runtime,
    line: Option<harness::nginx::NginxLine>,
) {
    let dir = workspace_dir().join("scenarios");
    let paths = files(&dir).unwrap();
    assert!(paths.len() >= 10, "scenario files: {paths:?}");
    let scenarios: Vec<Scenario> = paths
        .iter()
        .map(|p| load(p).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let mut names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(
        before,
        names.len(),
        "scenario names are unique (they name the snapshots)"
    );
    if !tools_present() {
        return;
    }
    let (scenarios, paths): (Vec<Scenario>, Vec<_>) = if browser_present() {
        (scenarios, paths)
    } else {
        scenarios
            .into_iter()
            .zip(paths)
            .filter(|(s, _)| !s.needs_browser())
            .unzip()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let runs = rt.block_on(
        futures::stream::iter(
            scenarios
                .iter()
                .map(|s| harness::runner::run_on(s, runtime, line, backend)),
        )
        .buffered(4)
        .collect::<Vec<_>>(),
    );
    let snapshots = workspace_dir().join("snapshots");
    let mut failures = Vec::new();
    for (path, run) in paths.iter().zip(runs) {
        match run {
            Err(e) => failures.push(format!("{}: did not run: {e}", path.display())),
            Ok(run) => {
                for f in run.failures() {
                    failures.push(format!("{}: {f}", path.display()));
                }
                if let Err(report) = harness::snapshot::check_line(&snapshots, &run) {
                    failures.push(format!("{}: {report}", path.display()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_committed_json_schema_is_current() {
    let path = workspace_dir().join("scenarios/scenario.schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == json_schema(),
        "{} is out of date: run `cargo build --workspace && target/debug/harness schema > scenarios/scenario.schema.json`",
        path.display()
    );
}

#[track_caller]
fn refused(text: &str) -> String {
    Scenario::from_toml("scenarios/bad.toml", text)
        .expect_err("a bad file is refused")
        .to_string()
}

#[test]
fn a_bad_file_names_file_line_column_and_field() {
    let unknown_kind = refused("name = \"x\"\n[[recordings]]\nsize = 10\n\n[[twilio_faults]]\nfault = { kind = \"explode\" }\n\n[[steps]]\ndo = \"request\"\n");
    assert!(
        unknown_kind.starts_with("scenarios/bad.toml:6:"),
        "{unknown_kind}"
    );
    assert!(
        unknown_kind.contains("twilio_faults[0].fault"),
        "{unknown_kind}"
    );
    assert!(
        unknown_kind.contains("hint: fault kinds: delay, throttle"),
        "{unknown_kind}"
    );

    let unknown_field = refused("name = \"x\"\nstepz = []\n");
    assert!(
        unknown_field.starts_with("scenarios/bad.toml:2:"),
        "{unknown_field}"
    );
    assert!(unknown_field.contains("stepz"), "{unknown_field}");

    let wrong_type =
        refused("name = \"x\"\n[[recordings]]\nsize = \"big\"\n[[steps]]\ndo = \"request\"\n");
    assert!(
        wrong_type.starts_with("scenarios/bad.toml:3:"),
        "{wrong_type}"
    );
    assert!(wrong_type.contains("recordings[0].size"), "{wrong_type}");

    let unknown_step = refused("name = \"x\"\n[[steps]]\ndo = \"dance\"\n");
    assert!(unknown_step.contains("steps[0]"), "{unknown_step}");
    assert!(
        unknown_step.contains("hint: steps: request, webhook"),
        "{unknown_step}"
    );

    let bad_index = refused(
        "name = \"x\"\n[[recordings]]\nsize = 10\n[[steps]]\ndo = \"request\"\nrecording = 3\n",
    );
    assert!(bad_index.contains("steps[0].recording"), "{bad_index}");
    assert!(bad_index.contains(":6:"), "{bad_index}");

    let bad_rate = refused("name = \"x\"\n[[hop_faults]]\nfault = { kind = \"throttle\", bytes_per_sec = 0 }\n[[steps]]\ndo = \"stop_backend\"\n");
    assert!(
        bad_rate.contains("hop_faults[0]") && bad_rate.contains("above 0"),
        "{bad_rate}"
    );
}
