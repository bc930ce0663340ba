//! `harness`: run scenarios against real stacks, explain nginx error logs.

use anyhow::Context;
use clap::{Parser, Subcommand};
use harness::{GatewayCause, Runtime};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "Reproduce and guard against 502s: nginx + backend + mock-twilio stacks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify the gateway errors in an nginx error log (a file, or stdin).
    Explain {
        /// The error log; stdin when omitted.
        error_log: Option<PathBuf>,
    },
    /// Run scenario files and print each step's outcome.
    Run {
        /// Scenario files.
        paths: Vec<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    match Cli::parse().command {
        Command::Explain { error_log } => explain(error_log),
        Command::Run { paths } => {
            let mut failed = false;
            for path in paths {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("read {}", path.display()))?;
                let scenario = harness::Scenario::from_toml(&path.display().to_string(), &text)?;
                let run = harness::run(&scenario, Runtime::from_env()?).await?;
                for r in &run.runs {
                    for o in &r.outcomes {
                        println!(
                            "{} [{}] {} → {}",
                            scenario.name,
                            r.profile.name(),
                            o.step,
                            o.summary()
                        );
                    }
                }
                for f in run.failures() {
                    failed = true;
                    println!("FAILED {f}");
                }
            }
            Ok(if failed {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            })
        }
    }
}

fn explain(path: Option<PathBuf>) -> anyhow::Result<std::process::ExitCode> {
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
        return Ok(std::process::ExitCode::SUCCESS);
    }
    for (cause, (count, first, last, example)) in &by_cause {
        println!("{} × {count}  (first {first}, last {last})", cause.name());
        println!("  means: {}", cause.meaning());
        println!("  fix:   {}", cause.fix());
        println!("  e.g.:  {example}");
    }
    Ok(std::process::ExitCode::SUCCESS)
}
