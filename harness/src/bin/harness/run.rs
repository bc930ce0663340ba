//! `harness run`: scenario files against real stacks, compared with their snapshots, as a
//! table (and JUnit, and an HTML report).

use crate::commands::Signals;
use anyhow::{bail, Context};
use futures::StreamExt;
use harness::runner::ScenarioRun;
use harness::scenario::{self, Scenario};
use harness::stack::workspace_dir;
use harness::{BackendSpec, HarnessError, Profile, Runtime};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// `harness run`'s options.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Scenario files or folders.
    paths: Vec<PathBuf>,
    /// Only this profile (snapshots, which hold both, are then not compared).
    #[arg(long)]
    profile: Option<Profile>,
    /// Only scenarios whose name or path contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Write a JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Write a self-contained HTML report (index.html and the snapshots) into this folder.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Scenarios run at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Write changed or new snapshots as .snap.new files to review (`cargo insta review`).
    #[arg(long)]
    pub update: bool,
    /// The snapshots folder.
    #[arg(long)]
    snapshots: Option<PathBuf>,
    /// A stack file: run against another backend (snapshots named `{scenario}@{name}`).
    #[arg(long)]
    stack: Option<PathBuf>,
}

/// insta's mode for this run: write `.snap.new` files to review when updating, nothing
/// otherwise; never accept silently. Called before any thread starts.
pub fn insta_mode(update: bool) {
    // SAFETY: single-threaded still: the runtime has not started.
    unsafe {
        std::env::set_var("INSTA_UPDATE", if update { "new" } else { "no" });
        std::env::set_var("INSTA_FORCE_PASS", "0");
        if update && std::env::var_os("INSTA_OUTPUT").is_none() {
            // New snapshots are reviewed with `cargo insta review`; no need to print them all.
            std::env::set_var("INSTA_OUTPUT", "none");
        }
    }
}

/// A stack file's backend, or the reference one.
pub fn backend_spec(stack: Option<&Path>) -> anyhow::Result<BackendSpec> {
    Ok(match stack {
        None => BackendSpec::Reference,
        Some(p) => BackendSpec::File(Box::new(harness::backend::StackFile::load(p)?)),
    })
}

/// Every scenario file under `paths` (default `scenarios/`), parsed before anything starts:
/// one bad file stops the run with its position.
fn load_all(paths: &[PathBuf], filter: Option<&str>) -> anyhow::Result<Vec<(PathBuf, Scenario)>> {
    let roots = if paths.is_empty() {
        vec![workspace_dir().join("scenarios")]
    } else {
        paths.to_vec()
    };
    let mut files = Vec::new();
    for root in roots {
        if root.is_dir() {
            files.extend(scenario::files(&root)?);
        } else if root.is_file() {
            files.push(root);
        } else {
            bail!("{}: no such file or folder", root.display());
        }
    }
    let (mut scenarios, mut errors) = (Vec::new(), Vec::new());
    for path in files {
        match scenario::load(&path) {
            Ok(s) => scenarios.push((path, s)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !errors.is_empty() {
        bail!("invalid scenario files:\n{}", errors.join("\n"));
    }
    if let Some(f) = filter {
        scenarios.retain(|(p, s)| s.name.contains(f) || p.display().to_string().contains(f));
    }
    Ok(scenarios)
}

/// Runs every scenario, `jobs` at a time, with a progress bar; `None` when a signal stopped it
/// (every stack is torn down by then).
async fn run_all(
    scenarios: &[(PathBuf, Scenario)],
    runtime: Runtime,
    backend: &BackendSpec,
    jobs: usize,
    signals: &mut Signals,
) -> Option<Vec<Result<ScenarioRun, HarnessError>>> {
    let bar = indicatif::ProgressBar::new(scenarios.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {bar:30} {pos}/{len} {msg}")
            .expect("progress template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let work = futures::stream::iter(scenarios.iter().map(|(_, s)| {
        let bar = bar.clone();
        async move {
            let r = harness::run_with(s, runtime, backend).await;
            bar.inc(1);
            bar.set_message(s.name.clone());
            r
        }
    }))
    .buffered(jobs.max(1))
    .collect::<Vec<_>>();
    tokio::select! {
        runs = work => {
            bar.finish_and_clear();
            Some(runs)
        }
        signal = signals.recv() => {
            bar.abandon_with_message(format!("{signal}: stopping every stack"));
            // Returning drops the unfinished runs, and with them every stack and its processes.
            eprintln!("harness: interrupted by {signal}; every stack was torn down");
            None
        }
    }
}

/// Compares a run with its snapshot; what to tell the user when it differs.
fn compare(snapshots: &Path, run: &ScenarioRun, update: bool) -> Option<String> {
    let name = run.snapshot_name();
    let existed = snapshots.join(format!("{name}.snap")).exists();
    // insta reports a mismatch by panicking, after printing its diff; the panic is expected.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = harness::snapshot::check(snapshots, run);
    std::panic::set_hook(previous);
    let dir = snapshots.display();
    r.err().map(|_| {
        if !existed && !update {
            format!("no snapshot yet: run with --update to write {dir}/{name}.snap.new, review it, and commit it as .snap")
        } else if update {
            format!("snapshot differs: review {dir}/{name}.snap.new")
        } else {
            format!("snapshot differs from {dir}/{name}.snap (run with --update to write a .snap.new)")
        }
    })
}

/// `harness run`.
pub async fn run(
    args: RunArgs,
    runtime: Runtime,
    signals: &mut Signals,
) -> anyhow::Result<ExitCode> {
    let backend = backend_spec(args.stack.as_deref())?;
    let mut scenarios = load_all(&args.paths, args.filter.as_deref())?;
    if let Some(p) = args.profile {
        scenarios.retain(|(_, s)| s.profiles.contains(&p));
        for (_, s) in &mut scenarios {
            s.profiles = vec![p];
        }
    }
    if scenarios.is_empty() {
        bail!("no scenario to run");
    }
    let snapshots = args
        .snapshots
        .clone()
        .unwrap_or_else(|| workspace_dir().join("snapshots"));
    let Some(runs) = run_all(&scenarios, runtime, &backend, args.jobs, signals).await else {
        return Ok(ExitCode::from(130));
    };
    let mut rows = Vec::new();
    let mut report = harness::report::Report::new();
    report.context("runtime", runtime.name());
    report.context("backend", backend.name());
    if let Ok(nginx) = harness::nginx::find_nginx() {
        report.context(
            "nginx",
            &harness::nginx::version(&nginx).unwrap_or_else(|| "?".into()),
        );
    }
    report.context("scenarios", &scenarios.len().to_string());
    for ((path, scenario), run) in scenarios.iter().zip(runs) {
        match run {
            Ok(run) => {
                let failure = args
                    .profile
                    .is_none()
                    .then(|| compare(&snapshots, &run, args.update))
                    .flatten();
                report.add(scenario, Some(path), Ok(&run), failure.clone());
                rows.extend(harness::summary::rows(&run, failure.as_deref()));
            }
            Err(e) => {
                report.add(scenario, Some(path), Err(e.to_string()), None);
                rows.push(harness::summary::did_not_run(
                    &scenario.name,
                    format!("{}: {e}", path.display()),
                ));
            }
        }
    }
    print!("{}", harness::summary::table(&rows));
    if let Some(path) = &args.junit {
        std::fs::write(path, harness::summary::junit(&rows)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(dir) = &args.html {
        let index = report
            .write(dir, &snapshots)
            .with_context(|| format!("write the HTML report into {}", dir.display()))?;
        println!("HTML report: {}", index.display());
    }
    let failed = rows.iter().filter(|r| !r.passed()).count();
    println!("\n{} passed, {} failed", rows.len() - failed, failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
