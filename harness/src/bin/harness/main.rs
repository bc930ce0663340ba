//! `harness`: run scenario files against real stacks, bring a stack up by hand, check a deployed
//! stack, explain an nginx error log, soak, bench. A thin layer over the `harness` library:
//! arguments in, library calls, text out.

mod commands;
mod run;

use clap::{Parser, Subcommand};
use harness::nginx::NginxLine;
use harness::{MediaFormat, Profile, Runtime};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "Reproduce and guard against 502s: real nginx + backend + mock-twilio stacks"
)]
struct Cli {
    /// Where stacks run: processes (default) or containers (Docker).
    #[arg(long, global = true, env = "HARNESS_RUNTIME")]
    runtime: Option<Runtime>,
    /// Which nginx: 1.22, 1.26, 1.30 (or `all`, for run). A line the host's nginx is not runs
    /// under the containers runtime. Default: the host's nginx (processes), 1.22 (containers).
    #[arg(long, global = true, env = "HARNESS_NGINX_VERSION")]
    nginx_version: Option<NginxChoice>,
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
        /// The nginx lines to build images of: 1.22, 1.26, 1.30, or all (default 1.22).
        #[arg(long, value_delimiter = ',', default_value = "1.22")]
        nginx: Vec<NginxChoice>,
        /// Also the images `harness::testcontainers_images` names: nginx of the lines
        /// (recordings-harness/nginx:1.22, …), the backend and mock-twilio (tagged with the
        /// harness's version; mock-twilio is found like the backend).
        #[arg(long)]
        testcontainers: bool,
    },
}

/// `harness soak`'s options.
#[derive(clap::Args)]
struct SoakArgs {
    /// How long clients keep starting steps.
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// The seed every step's plan derives from.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// fixed (default), legacy, stock or hardened. Under fixed and legacy, requests a deploy
    /// fails are counted apart by deploy and cause; under hardened each is a violation (and
    /// legacy reports its other 502s by cause).
    #[arg(long, default_value = "fixed")]
    profile: Profile,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Share of steps that download through an armed Twilio fault.
    #[arg(long, default_value_t = 0.2)]
    fault_rate: f64,
    /// Deploy this often (seconds; 0: never): every backend instance in turn stops listening,
    /// drains on SIGTERM and starts again.
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
    formats: Vec<MediaFormat>,
    /// How far (MiB) the backend's memory may rise within one process life (a backend that
    /// holds one of the soak's 50 MB recordings in memory goes over the default).
    #[arg(long, default_value_t = 32)]
    max_rss_growth_mb: u64,
    /// How many more open fds than at its start a backend process may hold when its life
    /// ends, beyond 4 per client for requests in flight.
    #[arg(long, default_value_t = 64)]
    max_fd_growth: u64,
    /// Also write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenario files (default: scenarios/) and compare them with snapshots/.
    Run(run::RunArgs),
    /// Make a folder a harness project: harness.toml, starter scenarios, an empty snapshots/,
    /// the nginx configs to edit, and (given `-- COMMAND…`) a stack file for your backend.
    Init {
        /// The folder (default: the working directory).
        dir: Option<PathBuf>,
        /// Your backend's command line, after `--` (e.g. `-- uvicorn app:app --fd {fd}`).
        #[arg(last = true)]
        backend: Vec<String>,
    },
    /// Write a commented scenario skeleton to the project's scenarios/NAME.toml.
    New {
        /// The scenario's name (also its file name).
        name: String,
        /// Folder to write into (default: the project's scenarios folder).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Bring a stack up and keep it up until Ctrl-C, printing how to poke it.
    Up {
        /// fixed (default), legacy, stock or hardened.
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
        /// nginx's access log (in the harness's format): says which failed upstream attempts
        /// nginx retried and which the client got.
        #[arg(long)]
        access_log: Option<PathBuf>,
    },
    /// Diagnose your own nginx config and backend: each 502/504 mechanism measured and run
    /// with your values (in real time), one verdict each. Exit 0: nothing exposed; 1: something
    /// is; 2: the stack could not be diagnosed.
    Diagnose {
        /// The stack file that runs your backend (its command is run as is: no timing values).
        #[arg(long)]
        stack: PathBuf,
        /// Your nginx config (default: the stack file's `nginx`, else the project's nginx.conf,
        /// else the one the harness carries).
        #[arg(long)]
        nginx: Option<PathBuf>,
        /// Also write the diagnosis as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also try the keep-alive race for POST by its natural timing, N times (no fault).
        #[arg(long)]
        natural_race: Option<usize>,
    },
    /// Print the JSON Schema of scenario files.
    Schema,
    /// Seeded chaos under load on one stack: Twilio faults, Range forms, webhooks, deploys;
    /// every answer (Range by RFC 9110), the cache, memory and fds checked. Exit 1 on any
    /// violation.
    Soak(Box<SoakArgs>),
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
        /// The profiles measurements 3, 4 and 5 run under, reported side by side.
        #[arg(long, value_delimiter = ',', default_value = "fixed,hardened")]
        profile: Vec<Profile>,
        /// Break something on purpose (download | body), to see the bench fail.
        #[arg(long, hide = true)]
        sabotage: Option<String>,
    },
}

/// An nginx line, or every line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NginxChoice {
    /// One line.
    Line(NginxLine),
    /// Every line.
    All,
}

impl std::str::FromStr for NginxChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(NginxChoice::All),
            s => s.parse().map(NginxChoice::Line),
        }
    }
}

impl NginxChoice {
    /// The lines it names.
    pub fn lines(self) -> Vec<NginxLine> {
        match self {
            NginxChoice::Line(l) => vec![l],
            NginxChoice::All => NginxLine::ALL.to_vec(),
        }
    }
}

/// Where one stack runs: the runtime asked for, else the one its nginx line needs.
#[derive(Debug, Clone, Copy)]
pub struct Placement {
    pub runtime: Runtime,
    pub nginx: Option<NginxLine>,
}

impl Placement {
    fn of(runtime: Option<Runtime>, line: Option<NginxLine>) -> Placement {
        let runtime = match (runtime, line) {
            (Some(r), _) => r,
            (None, Some(l)) => harness::runtime::runtime_for(l),
            (None, None) => Runtime::Processes,
        };
        Placement {
            runtime,
            nginx: line,
        }
    }
}

/// One placement per nginx line asked for (one, with the default nginx, when none was).
fn placements(cli_runtime: Option<Runtime>, choice: Option<NginxChoice>) -> Vec<Placement> {
    match choice {
        None => vec![Placement::of(cli_runtime, None)],
        Some(c) => c
            .lines()
            .into_iter()
            .map(|l| Placement::of(cli_runtime, Some(l)))
            .collect(),
    }
}

/// The one placement of a command that runs one stack.
fn one_placement(
    cli_runtime: Option<Runtime>,
    choice: Option<NginxChoice>,
) -> anyhow::Result<Placement> {
    match choice {
        Some(NginxChoice::All) => {
            anyhow::bail!("--nginx-version all: name one line (1.22, 1.26, 1.30) for this command")
        }
        Some(NginxChoice::Line(l)) => Ok(Placement::of(cli_runtime, Some(l))),
        None => Ok(Placement::of(cli_runtime, None)),
    }
}

fn parse_format(s: &str) -> Result<MediaFormat, String> {
    MediaFormat::from_extension(s).ok_or_else(|| format!("{s:?}: mp3 or wav"))
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
    if let Command::Run(args) = &cli.command {
        // insta reads its mode from the environment: set it before any thread starts.
        run::insta_mode(args.update);
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = rt.block_on(dispatch(cli));
    // Dropping the runtime ends every task and waits for its blocking pool, where a stack's
    // teardown may still run (`Stack::stop`): every stack has been removed after it.
    drop(rt);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("harness: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut signals = commands::Signals::install();
    let (runtime, nginx) = (cli.runtime, cli.nginx_version);
    match cli.command {
        Command::Run(args) => run::run(args, placements(runtime, nginx), &mut signals).await,
        Command::Init { dir, backend } => commands::init(dir, &backend),
        Command::New { name, dir } => commands::new(&name, dir),
        Command::Up {
            profile,
            size,
            stack,
        } => {
            let at = one_placement(runtime, nginx)?;
            commands::up(profile, size, stack.as_deref(), at, &mut signals).await
        }
        Command::Check {
            url,
            call_sid,
            token,
        } => commands::check(&url, &call_sid, token).await,
        Command::Explain {
            error_log,
            access_log,
        } => commands::explain(error_log, access_log),
        Command::Diagnose {
            stack,
            nginx: config,
            json,
            natural_race,
        } => {
            let at = one_placement(runtime, nginx)?;
            commands::diagnose(&stack, config, json, natural_race, at, &mut signals).await
        }
        Command::Schema => {
            print!("{}", harness::scenario::json_schema());
            Ok(ExitCode::SUCCESS)
        }
        Command::Soak(args) => {
            let at = one_placement(runtime, nginx)?;
            commands::soak(*args, at, &mut signals).await
        }
        Command::Images {
            command:
                ImagesCommand::Build {
                    print_base,
                    nginx,
                    testcontainers,
                },
        } => {
            let lines = nginx.iter().flat_map(|c| c.lines()).collect();
            commands::images_build(print_base, lines, testcontainers).await
        }
        Command::Bench {
            quick,
            json,
            only,
            profile,
            sabotage,
        } => commands::bench(quick, json, only, profile, sabotage, &mut signals).await,
    }
}
