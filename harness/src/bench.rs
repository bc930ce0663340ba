//! `harness bench`: the stack's speed and cost, measured beside nginx itself in the same run, so
//! the figures that matter are ratios that hold on a noisy machine. Every download is checked
//! (CRC-32 of the whole body against the generated recording's), and any error or wrong byte
//! fails the bench: a fast wrong answer is not a result.

use crate::error::HarnessError;
use crate::nginx;
use crate::stack::{Profile, Stack, StackSpec};
use futures::StreamExt;
use mock_twilio::{sid, Fault, FaultRule, Media, MediaFormat, MockTwilio, Recording};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
    fn of(name: &str, unit: &str, mut samples: Vec<f64>) -> Figure {
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

fn crc_of(media: &Media) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < media.len() {
        let n = (media.len() - pos).min(buf.len() as u64) as usize;
        media.fill(pos, &mut buf[..n]);
        h.update(&buf[..n]);
        pos += n as u64;
    }
    h.finalize()
}

/// Downloads `url`, returning (seconds, time to first byte, bytes, CRC-32).
async fn fetch(client: &reqwest::Client, url: &str) -> Result<(f64, f64, u64, u32), String> {
    let start = Instant::now();
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: {}", resp.status()));
    }
    let mut h = crc32fast::Hasher::new();
    let (mut n, mut first) = (0u64, None);
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                first.get_or_insert(start.elapsed().as_secs_f64());
                n += c.len() as u64;
                h.update(&c);
            }
            Ok(None) => break,
            Err(e) => return Err(format!("GET {url}: body broke off after {n} bytes: {e}")),
        }
    }
    Ok((
        start.elapsed().as_secs_f64(),
        first.unwrap_or(0.0),
        n,
        h.finalize(),
    ))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Runs the bench. `progress` is told what is being measured.
pub async fn run(
    size: BenchSize,
    only: Option<u8>,
    sabotage: Option<Sabotage>,
    progress: &dyn Fn(&str),
) -> Result<BenchReport, HarnessError> {
    let wanted = |n: u8| only.is_none_or(|o| o == n);
    let mut r = BenchReport {
        machine: BTreeMap::new(),
        figures: Vec::new(),
        values: BTreeMap::new(),
        targets: Vec::new(),
        errors: Vec::new(),
    };
    let nginx_bin = nginx::find_nginx()?;
    r.machine.insert(
        "cores".into(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
            .to_string(),
    );
    r.machine.insert(
        "nginx".into(),
        nginx::version(&nginx_bin).unwrap_or_default(),
    );
    r.machine.insert(
        "build".into(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .into(),
    );
    r.machine.insert(
        "backend".into(),
        crate::stack::find_backend()?.display().to_string(),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .expect("client");

    // 1. Cold start: the whole stack, and nginx alone started the same way (the floor).
    if wanted(1) {
        progress("1/6 stack cold start");
        let mut stack_starts = Vec::new();
        for _ in 0..size.starts {
            let t = Instant::now();
            let stack = Stack::start(StackSpec::new(Profile::Fixed)).await?;
            stack_starts.push(t.elapsed().as_secs_f64() * 1000.0);
            drop(stack);
        }
        let mut nginx_starts = Vec::new();
        for _ in 0..size.starts {
            nginx_starts.push(nginx_alone(&nginx_bin).await? * 1000.0);
        }
        let cold = Figure::of("stack cold start, processes", "ms", stack_starts);
        r.targets.push(Target {
            name: "stack cold start median".into(),
            target: "≤ 150 ms".into(),
            value: cold.median,
            met: cold.median <= 150.0,
        });
        r.figures.push(cold);
        r.figures
            .push(Figure::of("nginx alone cold start", "ms", nginx_starts));
    }

    // 2. Suite rate: scenario files under the fixed profile, 1 and 2 at a time.
    if wanted(2) {
        progress("2/6 suite rate");
        let mut files = crate::scenario::files(&crate::stack::workspace_dir().join("scenarios"))?;
        if let Some(n) = size.suite_files {
            files.truncate(n);
        }
        let scenarios: Vec<_> = files
            .iter()
            .map(|f| {
                crate::scenario::load(f).map(|mut s| {
                    s.profiles = vec![Profile::Fixed];
                    s
                })
            })
            .collect::<Result<_, _>>()?;
        for jobs in [1usize, 2] {
            let t = Instant::now();
            let runs: Vec<_> = futures::stream::iter(
                scenarios
                    .iter()
                    .map(|s| crate::run(s, crate::Runtime::Processes)),
            )
            .buffered(jobs)
            .collect()
            .await;
            for (s, run) in scenarios.iter().zip(runs) {
                if let Err(e) = run {
                    r.errors.push(format!("scenario {}: {e}", s.name));
                }
            }
            r.values.insert(
                format!(
                    "suite rate, --jobs {jobs} (scenarios/s, {} files)",
                    scenarios.len()
                ),
                scenarios.len() as f64 / t.elapsed().as_secs_f64(),
            );
        }
    }

    if !(3..=5).any(wanted) && !wanted(6) {
        return Ok(r);
    }
    // 3. Cached download through nginx → backend, against nginx serving the same bytes itself.
    progress("3/6 cached download vs nginx static");
    let stack = Stack::start(StackSpec::new(Profile::Fixed)).await?;
    let rec = stack.twilio().add_recording(Recording::new(
        sid("RE", 1),
        sid("CA", 1),
        MediaFormat::Mp3,
        size.big,
    ));
    let media = rec.media(MediaFormat::Mp3);
    let want = crc_of(&media);
    let api = stack.url(&format!("/api/calls/{}/download", rec.call_sid));
    fetch(&client, &api).await.map_err(HarnessError::Other)?; // warm the cache
    let cached = stack
        .sandbox()
        .join("recordings")
        .join(format!("{}.mp3", rec.sid));
    // The client has every byte a moment before the backend has fsynced and renamed the file.
    let t = Instant::now();
    while !cached.exists() {
        if t.elapsed() > crate::stack::READY_DEADLINE {
            return Err(HarnessError::Other(format!(
                "{} never appeared in the cache",
                cached.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let static_copy = stack.sandbox().join("www").join("bench.mp3");
    std::fs::copy(&cached, &static_copy).map_err(HarnessError::io(
        "copy the recording to nginx's static root",
    ))?;
    if sabotage == Some(Sabotage::Body) {
        let mut bytes =
            std::fs::read(&static_copy).map_err(HarnessError::io("read static copy"))?;
        bytes[size.big as usize / 2] ^= 0xFF;
        std::fs::write(&static_copy, bytes).map_err(HarnessError::io("write static copy"))?;
    }
    if sabotage == Some(Sabotage::Download) {
        stack
            .hop_faults()
            .arm(FaultRule::new(Fault::CloseAfter {
                bytes: size.big / 2,
            }))
            .map_err(HarnessError::Other)?;
    }
    let (mut via_backend, mut via_static) = (Vec::new(), Vec::new());
    for _ in 0..if wanted(3) { size.rounds } else { 0 } {
        for (url, samples) in [
            (api.clone(), &mut via_backend),
            (stack.url("/bench.mp3"), &mut via_static),
        ] {
            match fetch(&client, &url).await {
                Ok((secs, _, n, crc)) if n == size.big && crc == want => {
                    samples.push(n as f64 / secs / 1e9)
                }
                Ok((_, _, n, _)) => r.errors.push(format!(
                    "{url}: {n} bytes, not byte-exact against the recording"
                )),
                Err(e) => r.errors.push(e),
            }
        }
    }
    let mb = size.big / 1_000_000;
    let backend_fig = Figure::of(
        &format!("cached {mb} MB via nginx → backend"),
        "GB/s",
        via_backend,
    );
    let static_fig = Figure::of("same bytes, nginx static (sendfile)", "GB/s", via_static);
    let ratio = backend_fig.median / static_fig.median;
    if wanted(3) {
        r.values.insert(
            "cached download / nginx static (ratio of medians)".into(),
            ratio,
        );
        r.targets.push(Target {
            name: "cached download vs nginx static".into(),
            target: "≥ 0.8".into(),
            value: ratio,
            met: ratio >= 0.8,
        });
        r.figures.push(backend_fig);
        r.figures.push(static_fig);
    }

    // 4. Cache-miss time to first byte, small and large, Twilio fast and throttled.
    progress("4/6 cache-miss time to first byte");
    let (small, large, rounds) = size.ttfb;
    let mut n = 100;
    for throttle in [None, Some(10_000_000u64)]
        .into_iter()
        .filter(|_| wanted(4))
    {
        let mut medians = Vec::new();
        for bytes in [small, large] {
            let mut samples = Vec::new();
            for _ in 0..rounds {
                n += 1;
                let rec = stack.twilio().add_recording(Recording::new(
                    sid("RE", n),
                    sid("CA", n),
                    MediaFormat::Mp3,
                    bytes,
                ));
                if let Some(rate) = throttle {
                    stack
                        .twilio()
                        .arm(
                            FaultRule::new(Fault::Throttle {
                                bytes_per_sec: rate,
                            })
                            .recording(&rec.sid),
                        )
                        .map_err(HarnessError::Other)?;
                }
                match fetch(
                    &client,
                    &stack.url(&format!("/api/calls/{}/download", rec.call_sid)),
                )
                .await
                {
                    Ok((_, ttfb, got, crc))
                        if got == bytes && crc == crc_of(&rec.media(MediaFormat::Mp3)) =>
                    {
                        samples.push(ttfb * 1000.0)
                    }
                    Ok(_) => r
                        .errors
                        .push(format!("cache miss of {bytes} bytes: not byte-exact")),
                    Err(e) => r.errors.push(e),
                }
            }
            let label = throttle
                .map(|t| format!(", Twilio throttled to {} MB/s", t / 1_000_000))
                .unwrap_or_default();
            let f = Figure::of(
                &format!("cache-miss TTFB, {} kB{label}", bytes / 1000),
                "ms",
                samples,
            );
            medians.push(f.median);
            r.figures.push(f);
        }
        let ratio = medians[1] / medians[0];
        let label = if throttle.is_some() {
            "throttled"
        } else {
            "unthrottled"
        };
        r.values
            .insert(format!("TTFB ratio large/small, {label}"), ratio);
        r.targets.push(Target {
            name: format!("cache-miss TTFB ratio, {label}"),
            target: "≤ 2".into(),
            value: ratio,
            met: ratio <= 2.0,
        });
    }

    // 5. Concurrency and memory: many clients of the cached recording, then concurrent misses.
    if wanted(5) {
        progress("5/6 concurrency and memory");
        stack.hop_faults().clear();
        let pid = stack
            .backend_pid()
            .ok_or_else(|| HarnessError::Other("backend not running".into()))?;
        let fds_before = fds(pid);
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_kib(pid)));
        let sampling = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        let t = Instant::now();
        let results: Vec<_> =
            futures::future::join_all((0..size.clients).map(|_| fetch(&client, &api))).await;
        let secs = t.elapsed().as_secs_f64();
        let mut errors = 0;
        for res in results {
            match res {
                Ok((_, _, n, crc)) if n == size.big && crc == want => {}
                Ok(_) => errors += 1,
                Err(e) => {
                    errors += 1;
                    r.errors.push(e);
                }
            }
        }
        r.values.insert(
            format!("{} clients × cached {mb} MB: total GB/s", size.clients),
            (size.clients as u64 * size.big) as f64 / secs / 1e9,
        );
        let (count, bytes) = size.misses;
        let recs: Vec<Recording> = (0..count)
            .map(|i| {
                stack.twilio().add_recording(Recording::new(
                    sid("RE", 1000 + i as u64),
                    sid("CA", 1000 + i as u64),
                    MediaFormat::Mp3,
                    bytes,
                ))
            })
            .collect();
        let t = Instant::now();
        let results: Vec<_> = futures::future::join_all(recs.iter().map(|rec| {
            let url = stack.url(&format!("/api/calls/{}/download", rec.call_sid));
            let client = &client;
            async move { fetch(client, &url).await }
        }))
        .await;
        let secs = t.elapsed().as_secs_f64();
        for (rec, res) in recs.iter().zip(results) {
            match res {
                Ok((_, _, n, crc)) if n == bytes && crc == crc_of(&rec.media(MediaFormat::Mp3)) => {
                }
                Ok(_) => errors += 1,
                Err(e) => {
                    errors += 1;
                    r.errors.push(e);
                }
            }
        }
        sampling.abort();
        r.values.insert(
            format!(
                "{count} concurrent misses × {} MB: total GB/s",
                bytes / 1_000_000
            ),
            (count as u64 * bytes) as f64 / secs / 1e9,
        );
        let peak_mb = peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0;
        let fds_after = fds(pid);
        r.values.insert("backend peak RSS (MB)".into(), peak_mb);
        r.values
            .insert("backend open fds before".into(), fds_before as f64);
        r.values
            .insert("backend open fds after".into(), fds_after as f64);
        r.values
            .insert("download errors under load".into(), errors as f64);
        r.targets.push(Target {
            name: "backend peak RSS under load (MB)".into(),
            target: "≤ 64".into(),
            value: peak_mb,
            met: peak_mb <= 64.0,
        });
        // Expected after the load: nginx's pool of up to 16 idle upstream connections, and the
        // backend's pool of idle connections to Twilio (one per concurrent miss, kept 30 s). More
        // than that is a leak.
        let allowed = fds_before + 16 + count;
        r.targets.push(Target {
            name: "backend fds after load".into(),
            target: format!(
                "≤ {allowed} (before + nginx's pool of 16 + {count} idle Twilio connections)"
            ),
            value: fds_after as f64,
            met: fds_after <= allowed,
        });
        if errors > 0 {
            r.errors.push(format!(
                "{errors} downloads under load failed or were not byte-exact"
            ));
        }
    }
    drop(stack);
    if !wanted(6) {
        return Ok(r);
    }

    // 6. mock-twilio's media rate, and how exact its throttle is.
    progress("6/6 mock-twilio media rate and throttle accuracy");
    let twilio = MockTwilio::start()
        .await
        .map_err(HarnessError::io("start mock-twilio"))?;
    let rec = twilio.add_recording(Recording::new(
        sid("RE", 9),
        sid("CA", 9),
        MediaFormat::Mp3,
        size.media,
    ));
    let url = twilio.media_url(&rec.sid, MediaFormat::Mp3);
    // (seconds, bytes) of one download straight from mock-twilio.
    let drain = |u: String| {
        let req = client
            .get(u)
            .basic_auth(twilio.account_sid(), Some(twilio.auth_token()));
        async move {
            let t = Instant::now();
            let mut resp = req
                .send()
                .await
                .map_err(|e| HarnessError::Other(e.to_string()))?;
            let mut n = 0u64;
            while let Some(c) = resp
                .chunk()
                .await
                .map_err(|e| HarnessError::Other(e.to_string()))?
            {
                n += c.len() as u64;
            }
            Ok::<_, HarnessError>((t.elapsed().as_secs_f64(), n))
        }
    };
    let mut rates = Vec::new();
    for _ in 0..3 {
        let (secs, n) = drain(url.clone()).await?;
        rates.push(n as f64 / secs / 1e9);
    }
    r.figures.push(Figure::of(
        &format!("mock-twilio media, {} MB", size.media / 1_000_000),
        "GB/s",
        rates,
    ));
    let asked = (size.media / 10).clamp(1_000_000, 10_000_000);
    let small = twilio.add_recording(Recording::new(
        sid("RE", 10),
        sid("CA", 10),
        MediaFormat::Mp3,
        asked * 2,
    ));
    twilio
        .arm(
            FaultRule::new(Fault::Throttle {
                bytes_per_sec: asked,
            })
            .recording(&small.sid),
        )
        .map_err(HarnessError::Other)?;
    let (secs, n) = drain(twilio.media_url(&small.sid, MediaFormat::Mp3)).await?;
    r.values.insert(
        format!(
            "throttle accuracy at {} MB/s (measured / asked)",
            asked / 1_000_000
        ),
        n as f64 / secs / asked as f64,
    );
    Ok(r)
}

/// Starts nginx alone the same way a stack does (rendered docker/nginx.conf, inherited socket)
/// and returns the seconds until it serves a static file.
async fn nginx_alone(nginx_bin: &std::path::Path) -> Result<f64, HarnessError> {
    let t = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("harness-nginx-")
        .tempdir()
        .map_err(HarnessError::io("sandbox"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(HarnessError::io("chmod"))?;
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).map_err(HarnessError::io("www"))?;
    std::fs::write(www.join("index.html"), "ok\n").map_err(HarnessError::io("index"))?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(HarnessError::io("bind"))?;
    let addr = listener.local_addr().map_err(HarnessError::io("addr"))?;
    let source = crate::stack::workspace_dir().join("docker/nginx.conf");
    let text = std::fs::read_to_string(&source).map_err(HarnessError::io("read nginx.conf"))?;
    let rendered = nginx::render(
        "nginx.conf",
        &text,
        &nginx::Render {
            listen: addr,
            upstream: "127.0.0.1:9".parse().expect("addr"),
            sandbox: dir.path().to_path_buf(),
            static_root: www,
            timeout_scale: 1.0,
            keepalive_scale: 1.0,
        },
    )?;
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, rendered).map_err(HarnessError::io("write nginx.conf"))?;
    let _nginx = nginx::start(nginx_bin, &conf, dir.path(), listener)?;
    let url = format!("http://{addr}/index.html");
    loop {
        if reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(t.elapsed().as_secs_f64());
        }
        if t.elapsed() > crate::stack::READY_DEADLINE {
            return Err(HarnessError::Other("nginx alone did not start".into()));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
