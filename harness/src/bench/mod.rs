//! `harness bench`: the stack's speed and cost, measured beside nginx itself in the same run, so
//! the figures that matter are ratios that hold on a noisy machine. Every download is checked
//! (CRC-32 of the whole body against the generated recording's), and any error or wrong byte
//! fails the bench: a fast wrong answer is not a result.

mod measure;

use crate::error::HarnessError;
use serde::Serialize;
use std::collections::BTreeMap;

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct BenchSize {
    /// Stack cold starts.
    pub starts: usize,
    /// Size of the cached download, bytes.
    pub big: u64,
    /// Rounds of the cached download.
    pub rounds: usize,
    /// Concurrent clients of the cached download.
    pub clients: usize,
    /// Concurrent cache misses and their size.
    pub misses: (usize, u64),
    /// TTFB sizes (small, large) and rounds.
    pub ttfb: (u64, u64, usize),
    /// mock-twilio media bytes.
    pub media: u64,
    /// Scenario files for the suite rate (`None`: all).
    pub suite_files: Option<usize>,
}

impl BenchSize {
    /// The full run of the issue: 20 starts, 100 MB × 10 rounds, 200 clients, ...
    pub const FULL: BenchSize = BenchSize {
        starts: 20,
        big: 100_000_000,
        rounds: 10,
        clients: 200,
        misses: (20, 20_000_000),
        ttfb: (50_000, 50_000_000, 3),
        media: 200_000_000,
        suite_files: None,
    };
    /// A small run for CI: checks that nothing errors.
    pub const QUICK: BenchSize = BenchSize {
        starts: 3,
        big: 5_000_000,
        rounds: 2,
        clients: 10,
        misses: (4, 2_000_000),
        ttfb: (50_000, 5_000_000, 1),
        media: 10_000_000,
        suite_files: Some(2),
    };
}

/// Deliberate breakage, to prove the bench fails loudly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// The backend drops the cached download part-way.
    Download,
    /// nginx's static copy is not the recording.
    Body,
}

/// One figure: median, p95 and count of its samples.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What.
    pub name: String,
    /// Unit of the samples.
    pub unit: String,
    /// Median.
    pub median: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Samples.
    pub runs: usize,
}

impl Figure {
    pub(crate) fn of(name: &str, unit: &str, mut samples: Vec<f64>) -> Figure {
        samples.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| {
            samples
                .get(((samples.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        Figure {
            name: name.into(),
            unit: unit.into(),
            median: at(0.5),
            p95: at(0.95),
            runs: samples.len(),
        }
    }
}

/// A target of the issue, and whether this run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What.
    pub name: String,
    /// The target, in words.
    pub target: String,
    /// The measured value.
    pub value: f64,
    /// Met?
    pub met: bool,
}

/// Everything a bench run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Cores, nginx version, build profile.
    pub machine: BTreeMap<String, String>,
    /// The figures, in order.
    pub figures: Vec<Figure>,
    /// Single values (ratios, peaks, counts).
    pub values: BTreeMap<String, f64>,
    /// The targets.
    pub targets: Vec<Target>,
    /// Errors: any makes the run fail.
    pub errors: Vec<String>,
}

impl BenchReport {
    /// The report as a table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<58} {:>12} {:>12} {:>5}\n",
            "measurement", "median", "p95", "runs"
        ));
        for f in &self.figures {
            out.push_str(&format!(
                "{:<58} {:>12} {:>12} {:>5}\n",
                format!("{} ({})", f.name, f.unit),
                fmt(f.median),
                fmt(f.p95),
                f.runs
            ));
        }
        out.push('\n');
        for (k, v) in &self.values {
            out.push_str(&format!("{k:<58} {:>12}\n", fmt(*v)));
        }
        out.push_str("\ntargets:\n");
        for t in &self.targets {
            out.push_str(&format!(
                "  {} {:<40} {:>10} (target {})\n",
                if t.met { "met   " } else { "MISSED" },
                t.name,
                fmt(t.value),
                t.target
            ));
        }
        for e in &self.errors {
            out.push_str(&format!("ERROR {e}\n"));
        }
        out
    }
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// One of the bench's measurements (`--only N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Measurement {
    /// 1: the whole stack's cold start, beside nginx alone started the same way.
    ColdStart = 1,
    /// 2: scenario files per second, one and two at a time.
    SuiteRate = 2,
    /// 3: a cached download through nginx → backend, beside nginx serving the same bytes
    /// (per profile).
    CachedDownload = 3,
    /// 4: cache-miss time to first byte, small and large, Twilio fast and throttled to 10 and
    /// 100 MB/s (per profile).
    Ttfb = 4,
    /// 5: many clients of a cached recording, then concurrent misses; the backend's memory and
    /// fds (per profile).
    Concurrency = 5,
    /// 6: mock-twilio's media rate, and how exact its throttle is.
    MockTwilio = 6,
}

impl Measurement {
    /// Every measurement, in order.
    pub const ALL: [Measurement; 6] = [
        Measurement::ColdStart,
        Measurement::SuiteRate,
        Measurement::CachedDownload,
        Measurement::Ttfb,
        Measurement::Concurrency,
        Measurement::MockTwilio,
    ];

    /// Measurement `n` (1 to 6).
    pub fn number(n: u8) -> Option<Measurement> {
        Self::ALL.into_iter().find(|m| *m as u8 == n)
    }

    fn label(self) -> &'static str {
        match self {
            Measurement::ColdStart => "stack cold start",
            Measurement::SuiteRate => "suite rate",
            Measurement::CachedDownload => "cached download vs nginx static",
            Measurement::Ttfb => "cache-miss time to first byte",
            Measurement::Concurrency => "concurrency and memory",
            Measurement::MockTwilio => "mock-twilio media rate and throttle accuracy",
        }
    }
}

/// What a bench run measures.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// How big.
    pub size: BenchSize,
    /// The profiles the download measurements (3, 4, 5) run under, side by side.
    pub profiles: Vec<crate::spec::Profile>,
    /// Only this measurement.
    pub only: Option<Measurement>,
    /// Break something on purpose.
    pub sabotage: Option<Sabotage>,
}

/// Runs the bench: every measurement, or only `only`. `progress` is told what is measured.
pub async fn run(
    options: &BenchOptions,
    progress: &dyn Fn(&str),
) -> Result<BenchReport, HarnessError> {
    let (size, only, sabotage) = (options.size, options.only, options.sabotage);
    let mut r = BenchReport {
        machine: measure::machine()?,
        figures: Vec::new(),
        values: BTreeMap::new(),
        targets: Vec::new(),
        errors: Vec::new(),
    };
    for m in Measurement::ALL
        .into_iter()
        .filter(|m| only.is_none_or(|o| o == *m))
    {
        progress(&format!("{}/6 {}", m as u8, m.label()));
        match m {
            Measurement::ColdStart => measure::cold_start(size, &mut r).await?,
            Measurement::SuiteRate => measure::suite_rate(size, &mut r).await?,
            Measurement::MockTwilio => measure::mock_twilio(size, &mut r).await?,
            _ => {
                for &profile in &options.profiles {
                    progress(&format!("   under {}", profile.name()));
                    match m {
                        Measurement::CachedDownload => {
                            measure::cached_download(size, profile, sabotage, &mut r).await?
                        }
                        Measurement::Ttfb => measure::ttfb(size, profile, &mut r).await?,
                        _ => measure::concurrency(size, profile, &mut r).await?,
                    }
                }
            }
        }
    }
    Ok(r)
}
