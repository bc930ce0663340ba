//! One `check` for every scenario: run it on real stacks, enforce its explicit expectations,
//! and compare the side-by-side Outcomes with `snapshots/{name}.snap`.

use harness::runner::ScenarioRun;
use harness::{Runtime, Scenario};

/// The harness's checkout (a project: its `harness.toml` is at the root).
pub fn checkout() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the harness crate is in the workspace")
        .to_path_buf()
}

/// The `harness` binary, run from the checkout, as a user runs it.
pub fn harness_command() -> std::process::Command {
    let mut c = std::process::Command::new(bin_exe("harness", env!("CARGO_BIN_EXE_harness")));
    c.current_dir(checkout());
    c
}

/// A message if `binary`, the `recordings-backend` cargo built beside the test binary, is older
/// than its sources (`cargo test -p harness` does not rebuild it; `cargo test --workspace` does).
fn stale_backend(binary: &std::path::Path) -> Option<String> {
    if harness::locate::beside_exe().as_deref() != Some(binary) {
        return None;
    }
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
    let src = checkout().join("backend/src");
    let newest = std::fs::read_dir(&src)
        .ok()?
        .flatten()
        .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
        .max()?;
    (newest > built).then(|| {
        format!(
            "{} is older than {}: run `cargo build -p recordings-backend` (or `cargo test --workspace`)",
            binary.display(),
            src.display()
        )
    })
}

/// True when the tools these tests need are here; otherwise says so, visibly. With
/// `HARNESS_REQUIRE_TOOLS=1` (set in CI) a missing tool fails the test instead.
pub fn tools_present() -> bool {
    let missing = [
        harness::nginx::find_nginx().err(),
        harness::stack::find_backend().err(),
    ];
    let missing: Vec<String> = missing
        .into_iter()
        .flatten()
        .map(|e| e.to_string())
        .collect();
    if missing.is_empty() {
        let backend = harness::stack::find_backend().unwrap();
        if let Some(stale) = stale_backend(&backend) {
            panic!("{stale}");
        }
        return true;
    }
    if std::env::var("HARNESS_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
        panic!("HARNESS_REQUIRE_TOOLS=1 and: {}", missing.join("; "));
    }
    eprintln!("SKIPPED (missing tools): {}", missing.join("; "));
    false
}

/// True when headless Chromium and chromedriver are here (see [`engine_present`]).
pub fn browser_present() -> bool {
    engine_present(harness::browser::Engine::Chromium)
}

/// True when `engine`'s browser and WebDriver server are here; otherwise says so, visibly,
/// with the install command (and fails under `HARNESS_REQUIRE_TOOLS=1`).
pub fn engine_present(engine: harness::browser::Engine) -> bool {
    match harness::browser::available(engine) {
        Ok(()) => true,
        Err(e) if std::env::var("HARNESS_REQUIRE_TOOLS").is_ok_and(|v| v == "1") => {
            panic!("HARNESS_REQUIRE_TOOLS=1 and: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED ({engine} scenarios): {e}");
            false
        }
    }
}

/// The runtime the tests run stacks under: `HARNESS_RUNTIME` (processes by default).
pub fn runtime() -> Runtime {
    std::env::var("HARNESS_RUNTIME")
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|e| panic!("HARNESS_RUNTIME: {e}"))
}

/// A two-thread runtime, as the tests use.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `scenario` and checks it against its snapshot.
#[track_caller]
pub fn check(scenario: Scenario) -> Option<ScenarioRun> {
    if !tools_present() {
        return None;
    }
    let runtime = crate::support::runtime();
    let rt = rt();
    let run = rt
        .block_on(harness::run(&scenario, runtime))
        .unwrap_or_else(|e| panic!("scenario {} failed to run: {e}", scenario.name));
    let dir = crate::support::checkout().join("snapshots");
    if let Err(report) = harness::snapshot::check(&dir, &run) {
        panic!("{report}");
    }
    let failures = run.failures();
    assert!(
        failures.is_empty(),
        "expectations failed:\n{}",
        failures.join("\n")
    );
    Some(run)
}

/// Whether python3 can import uvicorn (the example backend's one dependency).
pub fn uvicorn_present() -> bool {
    present_or_skip(
        command_succeeds("python3", &["-c", "import uvicorn"]),
        "python3 with uvicorn: pip install -r examples/uvicorn-backend/requirements.txt",
    )
}

/// Whether `cmd args` runs and exits 0.
pub fn command_succeeds(cmd: &str, args: &[&str]) -> bool {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `present`, saying visibly when a tool is missing (`hint`: what to install); under
/// `HARNESS_REQUIRE_TOOLS=1` a missing tool fails the test instead of skipping it.
pub fn present_or_skip(present: bool, hint: &str) -> bool {
    if !present {
        if std::env::var("HARNESS_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
            panic!("HARNESS_REQUIRE_TOOLS=1 and missing {hint}");
        }
        eprintln!("SKIPPED (missing tools): {hint}");
    }
    present
}

/// The docker CLI's output for `args`; panics if it fails.
pub fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "docker {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names of the engine's containers (running or not) and networks, from the docker CLI (an
/// independent view of the engine), narrowed by `filter` (a `docker --filter` value) if given.
pub fn docker_names(filter: Option<&str>) -> Vec<String> {
    let mut names = Vec::new();
    for (list, name) in [
        (["ps", "-a"], "{{.Names}}"),
        (["network", "ls"], "{{.Name}}"),
    ] {
        let mut args = list.to_vec();
        args.extend(["--format", name]);
        args.extend(filter.iter().flat_map(|f| ["--filter", f]));
        names.extend(docker(&args).lines().map(str::to_string));
    }
    names
}

/// True when a Docker engine answers; otherwise says so, visibly (and fails under
/// `HARNESS_REQUIRE_TOOLS=1`, which CI sets on machines with an engine).
pub fn docker_present() -> bool {
    match harness::docker::available() {
        Ok(()) => true,
        Err(e) if std::env::var("HARNESS_REQUIRE_TOOLS").is_ok_and(|v| v == "1") => {
            panic!("HARNESS_REQUIRE_TOOLS=1 and: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED (container tests): {e}");
            false
        }
    }
}

/// The path of one of the workspace's binaries: nextest's `NEXTEST_BIN_EXE_<name>` (right also
/// when the tests run from an archive extracted elsewhere), else the path cargo compiled in.
pub fn bin_exe(name: &str, compiled: &str) -> std::path::PathBuf {
    std::env::var_os(format!("NEXTEST_BIN_EXE_{name}"))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(compiled))
}
