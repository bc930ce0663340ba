//! `harness run`: scenario files against real stacks, compared with their snapshots, as a
//! table (and JUnit, and an HTML report).

use crate::commands::Signals;
use crate::Placement;
use anyhow::{bail, Context};
use harness::runner::ScenarioRun;
use harness::scenario::{self, Scenario};
use harness::snapshot::Mismatch;
use harness::{BackendSpec, HarnessError, Profile};
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
    /// Scenarios run at once (default: one more than the machine's cores, so that a scenario
    /// that does not play runs beside one playing on each core's browser slot).
    #[arg(long, default_value_t = harness::browser::cores() + 1)]
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
    /// Only the scenarios that play, each `play` step in this browser: chromium, firefox or
    /// webkit (firefox and webkit under the fixed profile, snapshots named `{scenario}@{browser}`;
    /// chromium's are the files' own).
    #[arg(long)]
    browser: Option<harness::browser::Engine>,
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
        vec![harness::project::current()?.scenarios.clone()]
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

/// Runs every scenario, `jobs` at a time ([`harness::runner::run_many`]), with a progress bar;
/// `None` when a signal stopped it (every stack is torn down by then).
async fn run_all(
    scenarios: &[(PathBuf, Scenario)],
    at: Placement,
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
    let work = harness::runner::run_many(
        scenarios.iter().map(|(_, s)| s),
        (at.runtime, at.nginx),
        backend,
        jobs,
        |s| {
            bar.inc(1);
            bar.set_message(s.name.clone());
        },
    );
    // Every scenario's plays share the browsers (one launch per engine).
    let work = harness::browser::BrowserPool::scope(work);
    tokio::select! {
        runs = work => {
            bar.finish_and_clear();
            Some(runs)
        }
        signal = signals.recv() => {
            bar.abandon_with_message(format!("{signal}: stopping every stack"));
            // Returning drops the unfinished runs, and with them every stack and its processes
            // (a teardown already on tokio's blocking pool ends before the runtime does).
            eprintln!("harness: interrupted by {signal}; every stack was torn down");
            None
        }
    }
}

/// Compares a run with its snapshot (its line's, on another nginx line); how it differs, and
/// whether it matched the default line's snapshot.
fn compare(snapshots: &Path, run: &ScenarioRun, update: bool) -> (Option<Mismatch>, bool) {
    let name = harness::snapshot::compared_name(snapshots, run);
    let existed = snapshots.join(format!("{name}.snap")).exists();
    // insta reports a mismatch by panicking, after printing its diff; the panic is expected.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = harness::snapshot::check_line(snapshots, run);
    std::panic::set_hook(previous);
    let dir = snapshots.display();
    let same = matches!(r, Ok(harness::snapshot::VersionVerdict::SameAsDefault));
    let failure = r.err().map(|why| {
        let message = if why.contains("is stale") {
            why
        } else if !existed && !update {
            first_snapshot(snapshots, &name, run)
        } else if update {
            format!("snapshot differs: review {dir}/{name}.snap.new")
        } else {
            format!(
                "snapshot differs from {dir}/{name}.snap (run with --update to write a .snap.new)"
            )
        };
        let steps = harness::snapshot::differing_steps(snapshots, &name, run);
        Mismatch { message, steps }
    });
    (failure, same)
}

/// What to say of a scenario without a snapshot: outside CI its pending `.snap.new` is written
/// (as insta does for a new snapshot), in CI nothing is.
fn first_snapshot(snapshots: &Path, name: &str, run: &ScenarioRun) -> String {
    let dir = snapshots.display();
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if in_ci {
        return format!("no snapshot yet: run with --update to write {dir}/{name}.snap.new, review it, and commit it as .snap");
    }
    match harness::snapshot::write_pending(snapshots, name, run) {
        Ok(path) => format!(
            "no snapshot yet: wrote {}; review it and commit it as {name}.snap",
            path.display()
        ),
        Err(e) => format!("no snapshot yet, and writing {dir}/{name}.snap.new failed: {e}"),
    }
}

/// `harness run`: every scenario under each placement (one per nginx line asked for).
pub async fn run(
    args: RunArgs,
    placements: Vec<Placement>,
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
    if let Some(engine) = args.browser {
        scenarios = scenarios
            .into_iter()
            .filter_map(|(p, s)| s.on_engine(engine).map(|s| (p, s)))
            .collect();
    }
    if scenarios.is_empty() {
        bail!("no scenario to run");
    }
    let snapshots = match &args.snapshots {
        Some(dir) => dir.clone(),
        None => harness::project::current()?.snapshots.clone(),
    };
    let mut rows = Vec::new();
    let mut report = harness::report::Report::new();
    report.context("backend", backend.name());
    report.context("scenarios", &scenarios.len().to_string());
    for at in placements {
        let Some(runs) = run_all(&scenarios, at, &backend, args.jobs, signals).await else {
            return Ok(ExitCode::from(130));
        };
        report.context("runtime", at.runtime.name());
        let version = runs
            .iter()
            .flatten()
            .map(|r| r.nginx_version.clone())
            .next();
        report.context("nginx", version.as_deref().unwrap_or("?"));
        let mut same = Vec::new();
        for ((path, scenario), run) in scenarios.iter().zip(runs) {
            let (failure, default_like) = match &run {
                Ok(run) if args.profile.is_none() => compare(&snapshots, run, args.update),
                _ => (None, false),
            };
            if default_like && run.as_ref().is_ok_and(|r| r.line_snapshot_name().is_some()) {
                same.push(scenario.name.clone());
            }
            record(&mut report, &mut rows, path, scenario, run, failure);
        }
        if let (Some(line), false) = (
            at.nginx
                .filter(|l| *l != harness::nginx::NginxLine::DEFAULT),
            same.is_empty(),
        ) {
            println!(
                "nginx {line}: the same outcome as on 1.22 for {} scenarios: {}",
                same.len(),
                same.join(", ")
            );
        }
    }
    print!("{}", harness::summary::table(&rows));
    finish(&args, &rows, &report, &snapshots)
}

/// Adds a run (or why it did not run) to the report and the rows.
fn record(
    report: &mut harness::report::Report,
    rows: &mut Vec<harness::summary::Row>,
    path: &Path,
    scenario: &Scenario,
    run: Result<ScenarioRun, HarnessError>,
    failure: Option<Mismatch>,
) {
    match run {
        Ok(run) => {
            let message = failure.as_ref().map(|m| m.message.clone());
            report.add(scenario, Some(path), Ok(&run), message);
            let mut these = harness::summary::rows(&run, failure.as_ref());
            if let Some(line) = run
                .nginx_line()
                .filter(|l| *l != harness::nginx::NginxLine::DEFAULT)
            {
                for r in &mut these {
                    r.scenario = format!("{} [nginx {line}]", r.scenario);
                }
            }
            rows.extend(these);
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

/// JUnit, the HTML report, the closing line and the exit status.
fn finish(
    args: &RunArgs,
    rows: &[harness::summary::Row],
    report: &harness::report::Report,
    snapshots: &Path,
) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.junit {
        std::fs::write(path, harness::summary::junit(rows)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(dir) = &args.html {
        let index = report
            .write(dir, snapshots)
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
