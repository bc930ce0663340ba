//! `harness`: run scenario files against real stacks, bring a stack up by hand, check a deployed
//! stack, explain an nginx error log. A thin layer over the `harness` library.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use harness::runner::ScenarioRun;
use harness::scenario::{self, Scenario};
use harness::snapshot::{self, Update};
use harness::stack::workspace_dir;
use harness::stack::BackendSpec;
use harness::{GatewayCause, Outcome, Profile, Runtime, Stack, StackSpec};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "Reproduce and guard against 502s: real nginx + backend + mock-twilio stacks"
)]
struct Cli {
    /// Where stacks run: processes (default) or containers (Docker). Same as HARNESS_RUNTIME.
    #[arg(long, global = true, value_parser = ["processes", "containers"])]
    runtime: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// `harness images …`.
#[derive(Subcommand)]
enum ImagesCommand {
    /// Build the containers runtime's images offline (debootstrap + docker import, then
    /// docker/Dockerfile.backend); reuses them when nothing changed.
    Build {
        /// Print only the base image's name (for docker/compose.yaml's BASE_IMAGE).
        #[arg(long)]
        print_base: bool,
    },
}

/// `harness run`'s options.
#[derive(clap::Args)]
struct RunArgs {
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
    update: bool,
    /// The snapshots folder.
    #[arg(long)]
    snapshots: Option<PathBuf>,
    /// A stack file: run against another backend (snapshots named `{scenario}@{name}`).
    #[arg(long)]
    stack: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenario files (default: scenarios/) and compare them with snapshots/.
    Run(RunArgs),
    /// Write a commented scenario skeleton to scenarios/NAME.toml.
    New {
        /// The scenario's name (also its file name).
        name: String,
        /// Folder to write into.
        #[arg(long, default_value = "scenarios")]
        dir: PathBuf,
    },
    /// Bring a stack up and keep it up until Ctrl-C, printing how to poke it.
    Up {
        /// fixed (default) or legacy.
        #[arg(long, default_value = "fixed")]
        profile: Profile,
        /// Size in bytes of the recording it creates.
        #[arg(long, default_value_t = 1_000_000)]
        size: u64,
        /// A stack file: bring up another backend.
        #[arg(long)]
        stack: Option<PathBuf>,
    },
    /// Run the Range/HEAD checks against an already deployed stack (nothing is started).
    Check {
        /// The stack's base URL, e.g. https://calls.example.com
        url: String,
        /// A call that has a recording.
        #[arg(long)]
        call_sid: String,
        /// Bearer token for /api/ (the backend's API_TOKEN).
        #[arg(long, env = "HARNESS_API_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Classify the gateway errors in an nginx error log (a file, or stdin).
    Explain {
        /// The error log; stdin when omitted.
        error_log: Option<PathBuf>,
    },
    /// Print the JSON Schema of scenario files.
    Schema,
    /// Seeded chaos under load on one stack: Twilio faults, Range forms, webhooks, backend
    /// restarts; every answer, the cache, memory and fds checked. Exit 1 on any violation.
    Soak {
        /// How long clients keep starting steps.
        #[arg(long, default_value_t = 1.0)]
        minutes: f64,
        /// The seed every step's plan derives from.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// fixed (default) or legacy (which reports its 502s by cause).
        #[arg(long, default_value = "fixed")]
        profile: Profile,
        /// Concurrent clients.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Share of steps that download through an armed Twilio fault.
        #[arg(long, default_value_t = 0.2)]
        fault_rate: f64,
        /// Restart the backend this often (seconds; 0: never).
        #[arg(long, default_value_t = 15)]
        restart_every: u64,
        /// Replay one step alone on a fresh stack.
        #[arg(long)]
        only_step: Option<u64>,
        /// A stack file: soak another backend.
        #[arg(long)]
        stack: Option<PathBuf>,
        /// The formats recordings are made in (mp3 only, for a backend without ?format=wav).
        #[arg(long, value_delimiter = ',', default_value = "mp3,wav", value_parser = parse_format)]
        formats: Vec<harness::MediaFormat>,
        /// How far (MiB) the backend's memory may rise within one process life.
        #[arg(long, default_value_t = 64)]
        max_rss_growth_mb: u64,
        /// How many more open fds than at its start a backend process may hold when its life
        /// ends, beyond 4 per client for requests in flight.
        #[arg(long, default_value_t = 64)]
        max_fd_growth: u64,
        /// Also write the report as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The containers runtime's images.
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
    /// Measure the stack's speed and cost beside nginx itself (see bench/RESULTS.md).
    Bench {
        /// A small run that only checks nothing errors (CI).
        #[arg(long)]
        quick: bool,
        /// Also write the figures, with machine facts, as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Only measurement N (1 cold start, 2 suite rate, 3 cached download, 4 TTFB, 5 concurrency, 6 mock-twilio).
        #[arg(long)]
        only: Option<u8>,
        /// Break something on purpose (download | body), to see the bench fail.
        #[arg(long, hide = true)]
        sabotage: Option<String>,
    },
}

fn main() -> ExitCode {
    // `harness … | head` (or `| grep -q`) closes our stdout early, and the next print panics.
    // Unwinding tears every stack down; then exit quietly, with the status a shell gives a
    // program that SIGPIPE ended.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_broken_pipe(info.payload()) {
            default_hook(info)
        }
    }));
    match std::panic::catch_unwind(harness) {
        Ok(code) => code,
        Err(payload) if is_broken_pipe(&*payload) => ExitCode::from(141),
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// The panic of a print to a closed stdout.
fn is_broken_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    message.starts_with("failed printing to stdout") && message.contains("Broken pipe")
}

fn harness() -> ExitCode {
    let cli = Cli::parse();
    if let Some(r) = &cli.runtime {
        // Before any thread starts: the library reads HARNESS_RUNTIME.
        std::env::set_var("HARNESS_RUNTIME", r);
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = rt.block_on(async {
        let mut signals = Signals::install();
        match cli.command {
            Command::Run(args) => {
                let backend = backend_spec(args.stack.as_deref())?;
                run(args, &backend, &mut signals).await
            }
            Command::New { name, dir } => new(&name, &dir),
            Command::Soak {
                minutes,
                seed,
                profile,
                clients,
                fault_rate,
                restart_every,
                only_step,
                stack,
                formats,
                max_rss_growth_mb,
                max_fd_growth,
                json,
            } => {
                let mut spec = StackSpec::new(profile);
                spec.runtime = Runtime::from_env()?;
                spec.backend = backend_spec(stack.as_deref())?;
                let config = harness::soak::SoakConfig {
                    duration: Duration::from_secs_f64(minutes * 60.0),
                    seed,
                    stack: spec,
                    clients,
                    fault_rate,
                    formats,
                    restart_every: (restart_every > 0).then(|| Duration::from_secs(restart_every)),
                    only_step,
                    rss_budget_kb: max_rss_growth_mb * 1024,
                    fd_budget: max_fd_growth,
                };
                tokio::select! {
                    r = soak(config, json) => r,
                    signal = signals.recv() => {
                        eprintln!("harness: {signal}: soak stopped, stack torn down");
                        Ok(ExitCode::from(130))
                    }
                }
            }
            Command::Images {
                command: ImagesCommand::Build { print_base },
            } => images_build(print_base).await,
            Command::Up {
                profile,
                size,
                stack,
            } => {
                let backend = backend_spec(stack.as_deref())?;
                up(profile, size, backend, &mut signals).await
            }
            Command::Check {
                url,
                call_sid,
                token,
            } => check(&url, &call_sid, token.as_deref()).await,
            Command::Explain { error_log } => explain(error_log),
            Command::Bench {
                quick,
                json,
                only,
                sabotage,
            } => bench(quick, json, only, sabotage, &mut signals).await,
            Command::Schema => {
                print!("{}", scenario::json_schema());
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    // Dropping the runtime ends every task; every stack has been dropped by now.
    drop(rt);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("harness: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// SIGINT and SIGTERM, caught from the moment the program starts (so a signal that arrives
/// while a stack is starting still tears it down instead of killing us with it half up).
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
        }
    }

    /// Resolves to the signal's name on Ctrl-C or SIGTERM.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

fn parse_format(s: &str) -> Result<harness::MediaFormat, String> {
    harness::MediaFormat::from_extension(s).ok_or_else(|| format!("{s:?}: mp3 or wav"))
}

fn backend_spec(stack: Option<&Path>) -> anyhow::Result<BackendSpec> {
    Ok(match stack {
        None => BackendSpec::Reference,
        Some(p) => BackendSpec::File(Box::new(harness::backend::StackFile::load(p)?)),
    })
}

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
    // Every file is parsed before anything starts: one bad file stops the run with its position.
    let mut errors = Vec::new();
    let mut scenarios = Vec::new();
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

/// One row of the summary.
struct Row {
    scenario: String,
    profile: String,
    statuses: String,
    causes: String,
    failures: Vec<String>,
}

async fn run(
    args: RunArgs,
    backend: &BackendSpec,
    signals: &mut Signals,
) -> anyhow::Result<ExitCode> {
    let RunArgs {
        paths,
        profile,
        filter,
        junit,
        html,
        jobs,
        update,
        snapshots,
        stack: _,
    } = args;
    let mut scenarios = load_all(&paths, filter.as_deref())?;
    if let Some(p) = profile {
        scenarios.retain(|(_, s)| s.profiles.contains(&p));
        for (_, s) in &mut scenarios {
            s.profiles = vec![p];
        }
    }
    if scenarios.is_empty() {
        bail!("no scenario to run");
    }
    let runtime = Runtime::from_env()?;
    if update && std::env::var_os("INSTA_OUTPUT").is_none() {
        // New snapshots are reviewed with `cargo insta review`; no need to print them all here.
        std::env::set_var("INSTA_OUTPUT", "none");
    }
    let snapshots = snapshots.unwrap_or_else(|| workspace_dir().join("snapshots"));
    let bar = indicatif::ProgressBar::new(scenarios.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {bar:30} {pos}/{len} {msg}")
            .expect("progress template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let work = futures::stream::iter(scenarios.iter().map(|(_, s)| {
        let bar = bar.clone();
        async move {
            let r = harness::runner::run_with(s, runtime, backend).await;
            bar.inc(1);
            bar.set_message(s.name.clone());
            r
        }
    }))
    .buffered(jobs.max(1))
    .collect::<Vec<_>>();
    let runs: Vec<Result<ScenarioRun, harness::HarnessError>> = tokio::select! {
        runs = work => runs,
        signal = signals.recv() => {
            bar.abandon_with_message(format!("{signal}: stopping every stack"));
            // Returning drops the unfinished runs, and with them every stack and its processes.
            eprintln!("harness: interrupted by {signal}; every stack was torn down");
            return Ok(ExitCode::from(130));
        }
    };
    bar.finish_and_clear();

    let mut rows = Vec::new();
    let mut report = harness::report::Report::new();
    report.context("runtime", &format!("{runtime:?}").to_lowercase());
    report.context("backend", backend.name());
    if let Ok(nginx) = harness::nginx::find_nginx() {
        report.context(
            "nginx",
            &harness::nginx::version(&nginx).unwrap_or_else(|| "?".into()),
        );
    }
    report.context("scenarios", &scenarios.len().to_string());
    for ((path, scenario), run) in scenarios.iter().zip(runs) {
        let run = match run {
            Ok(run) => run,
            Err(e) => {
                report.add(scenario, Some(path), Err(e.to_string()), None);
                rows.push(Row {
                    scenario: scenario.name.clone(),
                    profile: "-".into(),
                    statuses: "did not run".into(),
                    causes: String::new(),
                    failures: vec![format!("{}: {e}", path.display())],
                });
                continue;
            }
        };
        let snapshot_failure = if profile.is_some() {
            None
        } else {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(|_| {}));
            let r = snapshot::check(
                &snapshots,
                &run,
                Some(if update { Update::New } else { Update::No }),
            );
            std::panic::set_hook(previous);
            let name = run.snapshot_name();
            let existed = snapshots.join(format!("{name}.snap")).exists();
            r.err().map(|_| {
                if !existed && !update {
                    format!("no snapshot yet: run with --update to write {}/{}.snap.new, review it, and commit it as .snap", snapshots.display(), name)
                } else if update {
                    format!("snapshot differs: review {}/{}.snap.new", snapshots.display(), name)
                } else {
                    format!("snapshot differs from {}/{}.snap (run with --update to write a .snap.new)", snapshots.display(), name)
                }
            })
        };
        report.add(scenario, Some(path), Ok(&run), snapshot_failure.clone());
        for r in &run.runs {
            let mut failures = r.failures.clone();
            failures.extend(snapshot_failure.clone());
            let mut causes: BTreeMap<&str, usize> = BTreeMap::new();
            for o in &r.outcomes {
                for e in &o.gateway_errors {
                    *causes.entry(e.cause.name()).or_default() += 1;
                }
            }
            rows.push(Row {
                scenario: run.name.clone(),
                profile: r.profile.name().into(),
                statuses: r
                    .outcomes
                    .iter()
                    .map(Outcome::cell)
                    .collect::<Vec<_>>()
                    .join(" "),
                causes: causes
                    .iter()
                    .map(|(c, n)| format!("{c}×{n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                failures,
            });
        }
    }
    print_summary(&rows);
    if let Some(path) = junit {
        write_junit(&path, &rows)?;
    }
    if let Some(dir) = html {
        let index = report
            .write(&dir, &snapshots)
            .with_context(|| format!("write the HTML report into {}", dir.display()))?;
        println!("HTML report: {}", index.display());
    }
    let failed = rows.iter().filter(|r| !r.failures.is_empty()).count();
    println!("\n{} passed, {} failed", rows.len() - failed, failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_summary(rows: &[Row]) {
    let w = |f: &dyn Fn(&Row) -> usize, min: usize| rows.iter().map(f).max().unwrap_or(0).max(min);
    let (ws, wp, wt) = (
        w(&|r| r.scenario.len(), 8),
        w(&|r| r.profile.len(), 7),
        w(&|r| r.statuses.len(), 8),
    );
    println!(
        "{:ws$}  {:wp$}  {:wt$}  {:6}  gateway errors",
        "scenario", "profile", "statuses", "result"
    );
    for r in rows {
        let result = if r.failures.is_empty() {
            "PASS"
        } else {
            "FAIL"
        };
        println!(
            "{:ws$}  {:wp$}  {:wt$}  {:6}  {}",
            r.scenario, r.profile, r.statuses, result, r.causes
        );
        for f in &r.failures {
            println!("    {f}");
        }
    }
}

fn write_junit(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new("harness scenarios");
    for r in rows {
        let status = if r.failures.is_empty() {
            TestCaseStatus::success()
        } else {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(r.failures.join("\n"));
            s
        };
        let mut case = TestCase::new(format!("{} [{}]", r.scenario, r.profile), status);
        case.set_classname(r.scenario.clone());
        suite.add_test_case(case);
    }
    let mut report = Report::new("harness");
    report.add_test_suite(suite);
    let xml = report.to_string().context("render JUnit XML")?;
    std::fs::write(path, xml).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

const SKELETON: &str = r#"#:schema ../scenario.schema.json
# A chaos scenario. Run it with `harness run scenarios/NAME.toml`; `cargo test` runs every file
# in scenarios/ and compares it with snapshots/NAME.snap.
name = "NAME"
description = "What this scenario shows"
# profiles = ["fixed", "legacy"]          # default: both, side by side in one snapshot

# Recordings at the fake Twilio; steps refer to them by index (0, 1, ...).
[[recordings]]
size = 100000                              # bytes
format = "mp3"                             # or "wav"
cached = false                             # true: pre-downloaded through a signed webhook first

# Faults armed before the steps, at Twilio (what the backend downloads from) ...
[[twilio_faults]]
match = { path_regex = '\.mp3$' }          # also: method = "GET", recording_sid = "RE..."
fault = { kind = "delay", ms = 500 }       # kinds: delay, throttle, dribble, status, reset, close_after, hang, garbage, keepalive_race
times = 1                                  # only the first N matching requests (default: all)

# ... and between nginx and the backend:
# [[hop_faults]]
# fault = { kind = "reset" }

# Timeouts are scaled by 0.1 by default (nginx 300 s -> 30 s, backend's Twilio budget 30 s -> 3 s).
# [timeouts]
# scale = 0.1
# keepalive_scale = 1.0
# slow_download_secs = 10.0                 # unscaled; for recordings of tens of MB

[[steps]]
do = "request"                             # also: webhook, arm, clear_faults, stop_backend, start_backend, restart_backend, wait_log
range = "bytes=0-999"
expect = { status = 206 }                  # checked even while snapshots are updated
"#;

fn new(name: &str, dir: &Path) -> anyhow::Result<ExitCode> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("NAME must be letters, digits, - and _ (it names the file and the snapshot), got {name:?}");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(format!("{name}.toml"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("{} already exists or cannot be created", path.display()))?;
    file.write_all(SKELETON.replace("NAME", name).as_bytes())?;
    println!("wrote {}", path.display());
    println!("run it:  harness run {}", path.display());
    Ok(ExitCode::SUCCESS)
}

async fn up(
    profile: Profile,
    size: u64,
    backend: BackendSpec,
    signals: &mut Signals,
) -> anyhow::Result<ExitCode> {
    let mut spec = StackSpec::new(profile).timeouts(harness::Timeouts {
        scale: 1.0,
        ..Default::default()
    });
    spec.backend = backend;
    spec.runtime = Runtime::from_env()?;
    let stack = tokio::select! {
        stack = Stack::start(spec) => stack?,
        signal = signals.recv() => {
            eprintln!("harness: {signal} while starting: torn down");
            return Ok(ExitCode::from(130));
        }
    };
    let rec = stack.twilio().add_recording(mock_twilio::Recording::new(
        mock_twilio::sid("RE", 1),
        mock_twilio::sid("CA", 1),
        mock_twilio::MediaFormat::Mp3,
        size,
    ));
    let url = stack.url(&format!("/api/calls/{}/download", rec.call_sid));
    let t = stack.twilio();
    println!(
        "stack up ({} profile, {})",
        profile.name(),
        stack.nginx_version()
    );
    println!("  nginx:        {}", stack.url(""));
    println!(
        "  backend:      http://{}",
        stack
            .backend_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    println!(
        "  mock-twilio:  {}  (admin API: {}/__admin)",
        t.uri(),
        t.uri()
    );
    println!(
        "  call SID:     {}  (recording {}, {size} bytes)",
        rec.call_sid, rec.sid
    );
    println!("\nThe write-up's checks:");
    println!("  curl -I {url}");
    println!("  curl -s -o /dev/null -w '%{{http_code}} %{{size_download}}\\n' -H 'Range: bytes=0-999' {url}");
    println!("  curl -s -o /dev/null -w '%{{http_code}} %{{size_download}}\\n' -H 'Range: bytes=-500' {url}");
    println!("Arm a fault at Twilio, e.g.:");
    println!(
        "  curl -s -XPOST {}/__admin/faults -d '{{\"fault\":{{\"kind\":\"hang\"}},\"times\":1}}'",
        t.uri()
    );
    println!("\nLogs ({}):", stack.sandbox().display());
    println!("  {}", stack.error_log().path().display());
    println!("  {}", stack.access_log().path().display());
    println!("  {}", stack.backend_log().path().display());
    println!("\nCtrl-C stops it.");
    let signal = signals.recv().await;
    drop(stack);
    eprintln!("harness: {signal}: stack torn down");
    Ok(ExitCode::from(130))
}

struct CheckResult {
    name: &'static str,
    ok: bool,
    detail: String,
}

async fn check(base: &str, call_sid: &str, token: Option<&str>) -> anyhow::Result<ExitCode> {
    let url = format!(
        "{}/api/calls/{call_sid}/download",
        base.trim_end_matches('/')
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let send = |method: reqwest::Method, headers: &[(&str, String)]| {
        let mut r = client.request(method, &url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        r.send()
    };
    let header = |r: &reqwest::Response, n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut results = Vec::new();
    let head = send(reqwest::Method::HEAD, &[])
        .await
        .with_context(|| format!("HEAD {url}"))?;
    let size: u64 = header(&head, "content-length").parse().unwrap_or(0);
    let etag = header(&head, "etag");
    results.push(CheckResult {
        name: "curl -I: 200, Accept-Ranges: bytes, a Content-Length",
        ok: head.status() == 200 && header(&head, "accept-ranges") == "bytes" && size > 0,
        detail: format!(
            "{} accept-ranges={:?} content-length={size}",
            head.status(),
            header(&head, "accept-ranges")
        ),
    });
    let range_check = |name, range: String, want_status: u16, want_range: String, want_len: u64| {
        let send = &send;
        async move {
            let r = send(reqwest::Method::GET, &[("range", range.clone())]).await;
            match r {
                Err(e) => CheckResult {
                    name,
                    ok: false,
                    detail: format!("{range}: {e}"),
                },
                Ok(r) => {
                    let status = r.status().as_u16();
                    let cr = header(&r, "content-range");
                    let cl = header(&r, "content-length");
                    let body = r.bytes().await.map(|b| b.len() as u64);
                    let ok = status == want_status
                        && cr == want_range
                        && body.as_ref().is_ok_and(|n| *n == want_len)
                        && cl == want_len.to_string();
                    CheckResult {
                        name,
                        ok,
                        detail: format!("{range}: {status} content-range={cr:?} content-length={cl} body={body:?} (want {want_status} {want_range:?} {want_len})"),
                    }
                }
            }
        }
    };
    if size > 0 {
        let last = size - 1;
        let first = 999.min(last);
        results.push(
            range_check(
                "Range: bytes=0-999 → 206",
                "bytes=0-999".into(),
                206,
                format!("bytes 0-{first}/{size}"),
                first + 1,
            )
            .await,
        );
        let from = size.saturating_sub(500);
        results.push(
            range_check(
                "Range: bytes=-500 → 206 (iOS Safari)",
                "bytes=-500".into(),
                206,
                format!("bytes {from}-{last}/{size}"),
                size - from,
            )
            .await,
        );
        results.push(
            range_check(
                "Range: bytes=0- → 206",
                "bytes=0-".into(),
                206,
                format!("bytes 0-{last}/{size}"),
                size,
            )
            .await,
        );
        results.push(
            range_check(
                "Range past the end → 416",
                format!("bytes={size}-"),
                416,
                format!("bytes */{size}"),
                0,
            )
            .await,
        );
        if !etag.is_empty() {
            let r = send(
                reqwest::Method::GET,
                &[("range", "bytes=0-99".into()), ("if-range", etag.clone())],
            )
            .await;
            let status = r.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
            results.push(CheckResult {
                name: "If-Range with the current ETag → 206",
                ok: status == 206,
                detail: format!("{status}"),
            });
        }
    }
    let mut failed = 0;
    for r in &results {
        println!(
            "{} {}\n      {}",
            if r.ok { "PASS" } else { "FAIL" },
            r.name,
            r.detail
        );
        failed += usize::from(!r.ok);
    }
    println!("\n{} passed, {failed} failed", results.len() - failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn bench(
    quick: bool,
    json: Option<PathBuf>,
    only: Option<u8>,
    sabotage: Option<String>,
    signals: &mut Signals,
) -> anyhow::Result<ExitCode> {
    use harness::bench::{BenchSize, Sabotage};
    let sabotage = match sabotage.as_deref() {
        None => None,
        Some("download") => Some(Sabotage::Download),
        Some("body") => Some(Sabotage::Body),
        Some(other) => bail!("--sabotage {other:?}: download or body"),
    };
    let size = if quick {
        BenchSize::QUICK
    } else {
        BenchSize::FULL
    };
    let progress = |what: &str| eprintln!("bench: {what}");
    let report = tokio::select! {
        r = harness::bench::run(size, only, sabotage, &progress) => r?,
        signal = signals.recv() => {
            eprintln!("harness: {signal}: bench stopped, every stack torn down");
            return Ok(ExitCode::from(130));
        }
    };
    println!("{}", report.table());
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn explain(path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut text = String::new();
    match &path {
        Some(p) => {
            text = std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?
        }
        None => {
            std::io::stdin()
                .read_to_string(&mut text)
                .context("read stdin")?;
        }
    }
    let mut by_cause: BTreeMap<GatewayCause, (usize, String, String, String)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(e) = harness::classify(line) {
            let time = harness::gateway::line_time(line).unwrap_or("").to_string();
            let entry =
                by_cause
                    .entry(e.cause)
                    .or_insert((0, time.clone(), time.clone(), e.raw.clone()));
            entry.0 += 1;
            entry.2 = time;
        }
    }
    if by_cause.is_empty() {
        println!("no gateway errors found");
        return Ok(ExitCode::SUCCESS);
    }
    for (cause, (count, first, last, example)) in &by_cause {
        println!("{} × {count}  (first {first}, last {last})", cause.name());
        println!("  means: {}", cause.meaning());
        println!("  fix:   {}", cause.fix());
        println!("  e.g.:  {example}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn images_build(print_base: bool) -> anyhow::Result<ExitCode> {
    let bin = harness::stack::find_backend()?;
    let say = |line: &str| {
        if !print_base {
            println!("{line}");
        }
    };
    let images = harness::containers::build_images(&bin, &say)
        .await
        .context("build the containers runtime's images")?;
    if print_base {
        println!("{}", harness::containers::base_tag());
    } else {
        println!(
            "nginx image: {}\nbackend image: {}",
            images.nginx, images.backend
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn soak(
    config: harness::soak::SoakConfig,
    json: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let seed = config.seed;
    let r = harness::soak::soak(config).await.context("soak")?;
    println!(
        "soak: seed {seed}, profile {}, {} steps, {} backend restarts",
        r.profile, r.steps, r.restarts
    );
    let line = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("  steps:    {}", line(&r.kinds));
    println!("  statuses: {}", line(&r.statuses));
    println!(
        "  gateway errors in nginx's log, by cause: {}",
        if r.gateway_causes.is_empty() {
            "none".to_string()
        } else {
            line(&r.gateway_causes)
        }
    );
    println!(
        "  requests failed by a backend restart (502/504, refused, cut by the drain; not violations): {}",
        r.failed_during_restart
    );
    if r.lives.is_empty() {
        println!("  backend RSS and fds: not measured (no backend process on this host)");
    } else {
        println!(
            "  backend RSS kB start/peak/end: {}/{}/{}; open fds: {}/{}/{} (across {} backend process{})",
            r.backend_rss_kb.start,
            r.backend_rss_kb.peak,
            r.backend_rss_kb.end,
            r.backend_fds.start,
            r.backend_fds.peak,
            r.backend_fds.end,
            r.lives.len(),
            if r.lives.len() == 1 { "" } else { "es" }
        );
        let rss = r
            .lives
            .iter()
            .map(|l| l.rss_kb.peak.saturating_sub(l.rss_kb.start));
        let fds = r
            .lives
            .iter()
            .map(|l| l.fds.end as i64 - l.fds.start as i64);
        println!(
            "  within one life, at most: RSS +{} kB (peak over start), fds {:+} (end over start)",
            rss.max().unwrap_or(0),
            fds.max().unwrap_or(0)
        );
    }
    println!(
        "  downloads under way ended {:.1} s after the load stopped; cache files checked byte for byte: {}; Twilio asked again for a recording it was still sending: {}",
        r.settle_secs, r.cache_files_checked, r.twilio_overlaps
    );
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&r)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    if r.violations.is_empty() {
        println!("no violation");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} violations:", r.violations.len());
        for v in &r.violations {
            println!("  {}\n    reproduce: {}", v.what, v.reproduce);
        }
        Ok(ExitCode::FAILURE)
    }
}
