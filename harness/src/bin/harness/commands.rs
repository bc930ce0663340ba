//! The commands other than `run`: each parses nothing itself, calls the library, prints.

use crate::run::backend_spec;
use crate::Placement;
use crate::SoakArgs;
use anyhow::{bail, Context};
use harness::nginx::NginxLine;
use harness::{Profile, Stack, StackSpec};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// SIGINT and SIGTERM, caught from the moment the program starts (so a signal that arrives
/// while a stack is starting still tears it down instead of killing us with it half up).
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
        }
    }

    /// Resolves to the signal's name on Ctrl-C or SIGTERM.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `harness new NAME`: a commented skeleton, never over an existing file.
pub fn new(name: &str, dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if name.is_empty() || !name.chars().all(valid) {
        bail!("NAME must be letters, digits, - and _ (it names the file and the snapshot), got {name:?}");
    }
    let dir = match dir {
        Some(dir) => dir,
        None => harness::project::current()?.scenarios.clone(),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(format!("{name}.toml"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("{} already exists or cannot be created", path.display()))?;
    let text = harness::scenario::skeleton(name).replace(
        "#:schema ../scenario.schema.json",
        &format!("#:schema {}", schema_from(&dir)),
    );
    file.write_all(text.as_bytes())?;
    println!("wrote {}", path.display());
    println!("run it:  harness run {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// The project's scenario schema as a path relative to `dir` (`../scenario.schema.json` from a
/// folder below the scenarios folder).
fn schema_from(dir: &Path) -> String {
    let depth = harness::project::current()
        .ok()
        .and_then(|p| {
            std::path::absolute(dir)
                .ok()?
                .strip_prefix(&p.scenarios)
                .ok()
                .map(|rel| rel.components().count())
        })
        .unwrap_or(1);
    format!("{}scenario.schema.json", "../".repeat(depth))
}

/// `harness init`: makes `dir` (default: here) a project, writing what is missing and keeping
/// what exists.
pub fn init(dir: Option<PathBuf>, backend: &[String]) -> anyhow::Result<ExitCode> {
    let root = std::path::absolute(dir.unwrap_or_else(|| ".".into()))?;
    if let Some(outer) = root
        .parent()
        .and_then(|p| harness::project::Project::find(p).ok())
    {
        println!(
            "note: {} is inside the project at {}; it becomes a project of its own",
            root.display(),
            outer.root.display()
        );
    }
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backend".into());
    let done = harness::init::write(&root, &harness::init::files(backend, &name))?;
    for path in &done.written {
        println!("wrote {}", path.display());
    }
    for path in &done.kept {
        println!("kept  {} (exists)", path.display());
    }
    println!("\nin {}:", root.display());
    println!(
        "  harness run                     the starter scenarios, against the reference backend"
    );
    if root.join("stack.toml").exists() {
        println!("  harness run --stack stack.toml  the same, against your backend");
    } else {
        println!("  harness init -- COMMAND…        adds a stack file that runs your backend");
    }
    Ok(ExitCode::SUCCESS)
}

/// What `harness up` prints: where everything is, and how to poke it.
fn describe_up(stack: &Stack, rec: &mock_twilio::Recording, profile: Profile, size: u64) -> String {
    let url = stack.url(&harness::app::download_path(&rec.call_sid, None));
    let t = stack.twilio();
    let backend = stack
        .backend_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    [
        format!("stack up ({} profile, {})", profile.name(), stack.nginx_version()),
        format!("  nginx:        {}", stack.url("")),
        format!("  backend:      http://{backend}"),
        format!("  mock-twilio:  {}  (admin API: {}/__admin)", t.uri(), t.uri()),
        format!("  call SID:     {}  (recording {}, {size} bytes)", rec.call_sid, rec.sid),
        "\nThe write-up's checks:".into(),
        format!("  curl -I {url}"),
        format!("  curl -s -o /dev/null -w '%{{http_code}} %{{size_download}}\\n' -H 'Range: bytes=0-999' {url}"),
        format!("  curl -s -o /dev/null -w '%{{http_code}} %{{size_download}}\\n' -H 'Range: bytes=-500' {url}"),
        "Arm a fault at Twilio, e.g.:".into(),
        format!("  curl -s -XPOST {}/__admin/faults -d '{{\"fault\":{{\"kind\":\"hang\"}},\"times\":1}}'", t.uri()),
        format!("\nLogs ({}):", stack.sandbox().display()),
        format!("  {}", stack.error_log().path().display()),
        format!("  {}", stack.access_log().path().display()),
        format!("  {}", stack.backend_log().path().display()),
        "\nCtrl-C stops it.".into(),
    ]
    .join("\n")
}

/// `harness up`: a stack with real timeouts until Ctrl-C.
pub async fn up(
    profile: Profile,
    size: u64,
    stack_file: Option<&Path>,
    at: Placement,
    signals: &mut Signals,
) -> anyhow::Result<ExitCode> {
    let spec = StackSpec::new(profile)
        .timeouts(harness::Timeouts {
            scale: 1.0,
            ..Default::default()
        })
        .backend(backend_spec(stack_file)?)
        .runtime(at.runtime)
        .nginx(at.nginx);
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
    println!("{}", describe_up(&stack, &rec, profile, size));
    let signal = signals.recv().await;
    drop(stack);
    eprintln!("harness: {signal}: stack torn down");
    Ok(ExitCode::from(130))
}

/// `harness check URL --call-sid SID`.
pub async fn check(url: &str, call_sid: &str, token: Option<String>) -> anyhow::Result<ExitCode> {
    let results = harness::check::check(url, call_sid, token).await?;
    let failed = results.iter().filter(|r| !r.ok).count();
    for r in &results {
        println!(
            "{} {}\n      {}",
            if r.ok { "PASS" } else { "FAIL" },
            r.name,
            r.detail
        );
    }
    println!("\n{} passed, {failed} failed", results.len() - failed);
    Ok(exit(failed == 0))
}

/// `harness explain [ERROR_LOG] [--access-log FILE]`.
pub fn explain(path: Option<PathBuf>, access: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let text = match &path {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?,
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("read stdin")?;
            text
        }
    };
    let access = match &access {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?)
        }
        None => None,
    };
    let explained = harness::explain::explain(&text, access.as_deref());
    println!("{}", harness::explain::render(&explained));
    Ok(ExitCode::SUCCESS)
}

/// `harness images build`: the backend image and the nginx image of each line, with the
/// version each really runs; with `testcontainers`, also the testcontainers images.
pub async fn images_build(
    print_base: bool,
    lines: Vec<NginxLine>,
    testcontainers: bool,
) -> anyhow::Result<ExitCode> {
    let bin = harness::stack::find_backend()?;
    let say = |line: &str| {
        if !print_base {
            println!("{line}");
        }
    };
    let first = lines.first().copied().unwrap_or(NginxLine::DEFAULT);
    let images = harness::images::build_images(&bin, first, &say)
        .await
        .context("build the containers runtime's images")?;
    if print_base {
        println!("{}", harness::images::base_tag());
        return Ok(ExitCode::SUCCESS);
    }
    println!("backend image: {}", images.backend);
    let nginx = harness::images::build_nginx_images(&lines, &say).await?;
    for (line, (version, image)) in &nginx {
        println!("nginx {line} image: {image} ({version})");
    }
    if testcontainers {
        let built = harness::images::build_testcontainers_images(&lines, &say)
            .await
            .context("build the testcontainers images")?;
        println!("testcontainers images: {}", built.nginx.join(", "));
        println!(
            "testcontainers images: {}, {}",
            built.backend, built.mock_twilio
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `harness soak`.
pub async fn soak(
    args: SoakArgs,
    at: Placement,
    signals: &mut Signals,
) -> anyhow::Result<ExitCode> {
    let spec = StackSpec::new(args.profile)
        .runtime(at.runtime)
        .nginx(at.nginx)
        .backend(backend_spec(args.stack.as_deref())?);
    let config = harness::soak::SoakConfig {
        duration: Duration::from_secs_f64(args.minutes * 60.0),
        seed: args.seed,
        stack: spec,
        clients: args.clients,
        fault_rate: args.fault_rate,
        formats: args.formats,
        restart_every: (args.restart_every > 0).then(|| Duration::from_secs(args.restart_every)),
        only_step: args.only_step,
        rss_budget_kb: args.max_rss_growth_mb * 1024,
        fd_budget: args.max_fd_growth,
    };
    let report = tokio::select! {
        r = harness::soak::soak(config) => r.context("soak")?,
        signal = signals.recv() => {
            eprintln!("harness: {signal}: soak stopped, stack torn down");
            return Ok(ExitCode::from(130));
        }
    };
    println!("{}", report.render());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(exit(report.violations.is_empty()))
}

/// `harness bench`.
pub async fn bench(
    quick: bool,
    json: Option<PathBuf>,
    only: Option<u8>,
    profiles: Vec<Profile>,
    sabotage: Option<String>,
    signals: &mut Signals,
) -> anyhow::Result<ExitCode> {
    use harness::bench::{BenchOptions, BenchSize, Measurement, Sabotage};
    let sabotage = match sabotage.as_deref() {
        None => None,
        Some("download") => Some(Sabotage::Download),
        Some("body") => Some(Sabotage::Body),
        Some(other) => bail!("--sabotage {other:?}: download or body"),
    };
    let only = match only {
        None => None,
        Some(n) => Some(Measurement::number(n).with_context(|| format!("--only {n}: 1 to 6"))?),
    };
    let size = if quick {
        BenchSize::QUICK
    } else {
        BenchSize::FULL
    };
    let progress = |what: &str| eprintln!("bench: {what}");
    let options = BenchOptions {
        size,
        profiles,
        only,
        sabotage,
    };
    let report = tokio::select! {
        r = harness::bench::run(&options, &progress) => r?,
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
    Ok(exit(report.errors.is_empty()))
}

/// `harness diagnose`: exit 0 when nothing is exposed, 1 when something is, 2 (an error) when
/// the stack could not be diagnosed.
pub async fn diagnose(
    stack: &Path,
    nginx: Option<PathBuf>,
    json: Option<PathBuf>,
    natural_race: Option<usize>,
    at: Placement,
    signals: &mut Signals,
) -> anyhow::Result<ExitCode> {
    let opts = harness::diagnose::DiagnoseOptions {
        backend: backend_spec(Some(stack))?,
        nginx_config: nginx,
        runtime: at.runtime,
        nginx: at.nginx,
        natural_race,
    };
    let found = tokio::select! {
        d = harness::diagnose::diagnose(&opts) => d.context("diagnose")?,
        signal = signals.recv() => {
            eprintln!("harness: {signal}: diagnosis stopped, every stack torn down");
            return Ok(ExitCode::from(130));
        }
    };
    println!("{}", found.render());
    if let Some(path) = &json {
        std::fs::write(path, serde_json::to_string_pretty(&found)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(exit(!found.exposed()))
}
