//! Scenario files: every `scenarios/**/*.toml` runs under its profiles and is snapshotted,
//! so adding a file adds a guarded test with no Rust; bad files are refused before anything runs.

use crate::support::checkout;
use crate::support::{engine_present, tools_present};
use harness::browser::Engine;
use harness::scenario::{files, json_schema, load, Scenario};

/// Every file that plays, with its `play` steps in `engine`, under `fixed` only
/// (`Scenario::on_engine`), against its `@engine` snapshot.
#[rstest::rstest]
fn every_browser_scenario_on(#[values(Engine::Firefox, Engine::Webkit)] engine: Engine) {
    if engine_present(engine) {
        run_files(
            &harness::stack::BackendSpec::Reference,
            runtime(),
            None,
            Engines::Only(engine),
        );
    }
}

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
    let file =
        harness::backend::StackFile::load(&checkout().join("examples/uvicorn-backend/stack.toml"))
            .unwrap();
    run_every_file(
        &harness::stack::BackendSpec::File(Box::new(file)),
        runtime(),
        None,
    );
}

/// Runs every scenario file against `backend` under `runtime` with nginx of `line` (`None`: the
/// runtime's default), and checks every snapshot (on another line: its own where it differs).
/// Off the reference stack (another runtime, line or backend) the files about the browser
/// engines themselves are left to the reference run: what an engine asks for is the client's.
pub fn run_every_file(
    backend: &harness::stack::BackendSpec,
    runtime: harness::Runtime,
    line: Option<harness::nginx::NginxLine>,
) {
    let reference = line.is_none()
        && runtime == harness::Runtime::Processes
        && matches!(backend, harness::stack::BackendSpec::Reference);
    let engines = if reference {
        Engines::AsWritten
    } else {
        Engines::ChromiumOnly
    };
    run_files(backend, runtime, line, engines);
}

/// Which browser engines a run of the files plays in.
#[derive(Clone, Copy, PartialEq)]
pub enum Engines {
    /// The engines each file names.
    AsWritten,
    /// Only the files that play in Chromium alone (or not at all).
    ChromiumOnly,
    /// Only the files that play in the default engine, under `fixed`, with every `play` step in
    /// this engine and checked against that engine's own snapshot (`{name}@{engine}`).
    Only(harness::browser::Engine),
}

/// Like [`run_every_file`], with the engines chosen.
pub fn run_files(
    backend: &harness::stack::BackendSpec,
    runtime: harness::Runtime,
    line: Option<harness::nginx::NginxLine>,
    engines: Engines,
) {
    let dir = checkout().join("scenarios");
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
    let (scenarios, paths): (Vec<Scenario>, Vec<_>) = scenarios
        .into_iter()
        .zip(paths)
        .filter_map(|(s, p)| match engines {
            Engines::Only(e) => s.on_engine(e).map(|s| (s, p)),
            Engines::ChromiumOnly if s.engines().iter().any(|e| *e != Engine::Chromium) => None,
            _ => Some((s, p)),
        })
        .filter(|(s, _)| s.engines().into_iter().all(engine_present))
        .unzip();
    let rt = crate::support::rt();
    let runs = rt.block_on(harness::browser::BrowserPool::scope(
        harness::runner::run_many(&scenarios, (runtime, line), backend, 4, |_| {}),
    ));
    let snapshots = checkout().join("snapshots");
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
                    let name = harness::snapshot::compared_name(&snapshots, &run);
                    let differing = harness::snapshot::differing_steps(&snapshots, &name, &run);
                    for f in run.deploy_failures(&differing) {
                        failures.push(format!("{}: {f}", path.display()));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_committed_json_schema_is_current() {
    let path = checkout().join("scenarios/scenario.schema.json");
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
    let play = |extra: &str| {
        format!("name = \"x\"\n[[recordings]]\nsize = 10\n[[steps]]\ndo = \"play\"\n{extra}\n")
    };
    // A value inside a step is reported at the step's line, with the field in the message.
    let safari = refused(&play("browser = \"safari\""));
    assert!(safari.starts_with("scenarios/bad.toml:4:"), "{safari}");
    assert!(
        safari
            .contains("steps[0]: browser: unknown browser \"safari\": chromium, firefox or webkit"),
        "{safari}"
    );
    let in_a_list = refused(&play("browser = [\"firefox\", \"opera\"]"));
    assert!(
        in_a_list.contains("browser: unknown browser \"opera\""),
        "{in_a_list}"
    );
    let seek = refused(&play("seek_to = \"half\""));
    assert!(
        seek.contains("steps[0]: seek_to: \"half\" is not a point") && seek.contains("\"50%\""),
        "{seek}"
    );
}

#[test]
fn a_play_step_names_one_engine_or_several_and_a_point_to_seek_to() {
    use harness::browser::SeekTo;
    let text = "name = \"x\"\n[[recordings]]\nsize = 10\n\
                [[steps]]\ndo = \"play\"\nbrowser = \"webkit\"\nseek_to = \"12.5s\"\n\
                [[steps]]\ndo = \"play\"\nbrowser = [\"chromium\", \"firefox\", \"webkit\"]\nseek_to = \"99%\"\n\
                [[steps]]\ndo = \"play\"\n";
    let s = Scenario::from_toml("scenarios/ok.toml", text).unwrap();
    let plays: Vec<&harness::scenario::PlayStep> = s
        .steps
        .iter()
        .filter_map(|st| match st {
            harness::Step::Play(p) => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(plays[0].browser.list(), [Engine::Webkit]);
    assert_eq!(plays[0].seek_to, Some(SeekTo::Secs(12.5)));
    assert_eq!(plays[1].browser.list(), Engine::ALL);
    assert_eq!(plays[1].seek_to, Some(SeekTo::Fraction(0.99)));
    assert_eq!(plays[2].browser.list(), [Engine::Chromium], "the default");
    // A step in three engines runs as three steps, one per engine, in the order written.
    let runs: Vec<Engine> = s.steps[1]
        .per_engine()
        .iter()
        .map(|st| match st.as_ref() {
            harness::Step::Play(p) => p.browser.list()[0],
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(runs, Engine::ALL);
    // A file that names its engines is about them: it is not run again in another engine.
    assert!(s.on_engine(Engine::Firefox).is_none());
    let plain = Scenario::from_toml(
        "scenarios/ok.toml",
        "name = \"y\"\n[[recordings]]\nsize = 10\n[[steps]]\ndo = \"play\"\n",
    )
    .unwrap();
    let on_firefox = plain.on_engine(Engine::Firefox).unwrap();
    assert_eq!(on_firefox.name, "y@firefox");
    assert_eq!(
        on_firefox.engines().into_iter().collect::<Vec<_>>(),
        [Engine::Firefox]
    );
    assert_eq!(
        on_firefox.profiles,
        [harness::Profile::Fixed],
        "the server's side: one"
    );
    let on_chromium = plain.on_engine(Engine::Chromium).unwrap();
    assert_eq!(on_chromium.name, "y");
    assert_eq!(on_chromium.profiles, plain.profiles, "the file's own");
    assert_eq!(plain.profiles.len(), 3);
}

#[test]
fn the_slow_download_threshold_scales_only_where_a_twilio_fault_is_armed() {
    use harness::spec::Timeouts;
    let parse = |extra: &str| {
        let text = format!(
            "name = \"x\"\n[[recordings]]\nsize = 10\n{extra}[[steps]]\ndo = \"request\"\n"
        );
        Scenario::from_toml("scenarios/ok.toml", &text).unwrap()
    };
    let before = parse("[[twilio_faults]]\nfault = { kind = \"delay\", ms = 1000 }\n");
    let in_a_step = parse(
        "[[steps]]\ndo = \"arm\"\nat = \"twilio\"\nrule = { fault = { kind = \"reset\" } }\n",
    );
    let at_the_hop = parse("[[hop_faults]]\nfault = { kind = \"reset\" }\n");
    let none = parse("");
    assert!(before.arms_twilio_faults());
    assert!(in_a_step.arms_twilio_faults());
    assert!(!at_the_hop.arms_twilio_faults());
    assert!(!none.arms_twilio_faults());
    // Where none is armed, the backend's real 10 s, unless the file sets one.
    assert_eq!(Timeouts::default().slow_download_secs, None, "10 s × scale");
    assert_eq!(
        Timeouts::default().unfaulted().slow_download_secs,
        Some(10.0)
    );
    let set = Timeouts {
        slow_download_secs: Some(0.5),
        ..Timeouts::default()
    };
    assert_eq!(set.unfaulted().slow_download_secs, Some(0.5));
}
