//! The bench's six measurements. Every download goes through the one step executor with its
//! body checked by CRC-32 against the generated recording, so a fast wrong answer is an error,
//! not a result.

use super::{BenchReport, BenchSize, Figure, Sabotage, Target};
use crate::error::HarnessError;
use crate::outcome::{BodyCheck, Outcome};
use crate::ready::{poll, wait_ready, Probe, READY_DEADLINE};
use crate::runtime::{Launcher, Runtime};
use crate::scenario::{RequestStep, Step};
use crate::spec::{Profile, StackSpec};
use crate::stack::Stack;
use crate::step::{self, execute, Executed, Observe, Session, UrlTarget};
use futures::StreamExt;
use mock_twilio::{sid, Fault, FaultRule, MediaFormat, MockTwilio, Recording};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Cores, nginx's version, the build, the backend binary.
pub(super) fn machine() -> Result<BTreeMap<String, String>, HarnessError> {
    let nginx = crate::nginx::find_nginx()?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    Ok(BTreeMap::from([
        ("cores".into(), cores.to_string()),
        (
            "nginx".into(),
            crate::nginx::version(&nginx).unwrap_or_default(),
        ),
        ("build".into(), build.into()),
        (
            "backend".into(),
            crate::stack::find_backend()?.display().to_string(),
        ),
    ]))
}

/// A bench session: the client's view only, whole bodies checked by CRC-32.
fn session() -> Session {
    Session::new(Observe::Client)
        .checking_by_crc()
        .with_timeout(Duration::from_secs(600))
}

/// One download through the executor: its Outcome, or why it is not a result.
async fn fetch(
    target: step::Target<'_>,
    session: &Session,
    r: RequestStep,
) -> Result<Outcome, String> {
    let what = r
        .path
        .clone()
        .unwrap_or_else(|| format!("recording {}", r.recording));
    let Executed::Outcome(o) = execute(target, session, &Step::Request(r), 0)
        .await
        .map_err(|e| format!("GET {what}: {e}"))?
    else {
        unreachable!("a request observes an outcome");
    };
    match (&o.body.check, o.status) {
        (BodyCheck::Whole, Some(200)) => Ok(*o),
        (BodyCheck::Truncated { .. }, _) => Err(format!(
            "GET {what}: body broke off after {} bytes ({})",
            o.body.bytes,
            o.client_error.as_deref().unwrap_or("short")
        )),
        (BodyCheck::Differs { .. }, _) => Err(format!(
            "GET {what}: {} bytes, not byte-exact against the recording",
            o.body.bytes
        )),
        _ => Err(format!(
            "GET {what}: {} ({})",
            o.summary(),
            o.body.check.words()
        )),
    }
}

fn secs(o: &Outcome) -> (f64, f64) {
    let t = o.timing.unwrap_or_default();
    (t.total_us as f64 / 1e6, t.first_byte_us as f64 / 1e6)
}

fn recording(n: u64, size: u64) -> Recording {
    Recording::new(sid("RE", n), sid("CA", n), MediaFormat::Mp3, size)
}

/// Measurement 1: Cold start: the whole stack, and nginx alone started the same way (the floor).
pub(super) async fn cold_start(size: BenchSize, r: &mut BenchReport) -> Result<(), HarnessError> {
    let mut stacks = Vec::new();
    for _ in 0..size.starts {
        let t = Instant::now();
        let stack = Stack::start(StackSpec::new(Profile::Fixed)).await?;
        stacks.push(t.elapsed().as_secs_f64() * 1000.0);
        drop(stack);
    }
    let mut alone = Vec::new();
    for _ in 0..size.starts {
        alone.push(nginx_alone().await? * 1000.0);
    }
    let cold = Figure::of("stack cold start, processes", "ms", stacks);
    r.targets.push(Target {
        name: "stack cold start median".into(),
        target: "≤ 150 ms".into(),
        value: cold.median,
        met: cold.median <= 150.0,
    });
    r.figures.push(cold);
    r.figures
        .push(Figure::of("nginx alone cold start", "ms", alone));
    Ok(())
}

/// nginx alone, started as a stack starts it (rendered docker/nginx.conf, a handed-over
/// socket): seconds until it serves a static file.
async fn nginx_alone() -> Result<f64, HarnessError> {
    let t = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("harness-nginx-")
        .tempdir()
        .map_err(HarnessError::io("sandbox"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(HarnessError::io("chmod"))?;
    let www = dir.path().join("www");
    for d in [www.clone(), dir.path().join("tmp")] {
        std::fs::create_dir_all(d).map_err(HarnessError::io("create nginx's dirs"))?;
    }
    std::fs::write(www.join("index.html"), "ok\n").map_err(HarnessError::io("index"))?;
    let launcher = Launcher::new(Runtime::Processes, None, "bench", None).await?;
    let (listen, listener) = launcher.nginx_listen()?;
    let spec = StackSpec::new(Profile::Fixed);
    let text = spec.nginx_config()?.read()?;
    let render = crate::nginx::Render {
        listen,
        upstreams: vec!["127.0.0.1:9".parse().expect("addr")],
        recordings_dir: dir.path().join("recordings"),
        sandbox: dir.path().to_path_buf(),
        static_root: www,
        timeout_scale: 1.0,
        next_upstream_scale: 1.0,
        keepalive_scale: 1.0,
    };
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, crate::nginx::render("nginx.conf", &text, &render)?)
        .map_err(HarnessError::io("write nginx.conf"))?;
    let nginx = launcher.nginx(dir.path(), &conf, listener).await?;
    let addr = nginx.start(&String::new).await?;
    let probe = Probe::Http {
        url: format!("http://{addr}/index.html"),
    };
    wait_ready("nginx alone", &probe, || nginx.exited(), String::new).await?;
    Ok(t.elapsed().as_secs_f64())
}

/// Measurement 2: Suite rate: scenario files under the fixed profile, 1 and 2 at a time.
pub(super) async fn suite_rate(size: BenchSize, r: &mut BenchReport) -> Result<(), HarnessError> {
    let mut files = crate::scenario::files(&crate::project::current()?.scenarios)?;
    if let Some(n) = size.suite_files {
        files.truncate(n);
    }
    let mut scenarios = Vec::new();
    for f in &files {
        let mut s = crate::scenario::load(f)?;
        s.profiles = vec![Profile::Fixed];
        scenarios.push(s);
    }
    for jobs in [1usize, 2] {
        let t = Instant::now();
        let runs: Vec<_> =
            futures::stream::iter(scenarios.iter().map(|s| crate::run(s, Runtime::Processes)))
                .buffered(jobs)
                .collect()
                .await;
        for (s, run) in scenarios.iter().zip(runs) {
            if let Err(e) = run {
                r.errors.push(format!("scenario {}: {e}", s.name));
            }
        }
        let rate = scenarios.len() as f64 / t.elapsed().as_secs_f64();
        let key = format!(
            "suite rate, --jobs {jobs} (scenarios/s, {} files)",
            scenarios.len()
        );
        r.values.insert(key, rate);
    }
    Ok(())
}

/// A stack of `profile` with its timeouts as deployed (scenarios scale them by 0.1; under the
/// bench's load a 0.5 s connect timeout gives 504s a deployed stack would not).
fn deployed(profile: Profile) -> StackSpec {
    let mut spec = StackSpec::new(profile);
    spec.timeouts.scale = 1.0;
    spec
}

/// A stack of `profile` with a `size`-byte recording cached: the stack, its session, the
/// recording's index and the cached file's path.
async fn cached_stack(
    size: u64,
    profile: Profile,
) -> Result<(Stack, Session, usize, std::path::PathBuf), HarnessError> {
    let stack = Stack::start(deployed(profile)).await?;
    let session = session();
    let rec = stack.twilio().add_recording(recording(1, size));
    let index = session.add_recording(rec.clone());
    fetch(
        step::Target::Stack(&stack),
        &session,
        RequestStep::get().recording(index),
    )
    .await
    .map_err(|e| HarnessError::step(0, e))?;
    let cached = stack
        .sandbox()
        .join("recordings")
        .join(format!("{}.mp3", rec.sid));
    // The client has every byte a moment before the backend has fsynced and renamed the file.
    poll(READY_DEADLINE, || async { cached.exists().then_some(()) })
        .await
        .ok_or_else(|| HarnessError::Timeout {
            what: format!("{} in the cache", cached.display()),
            waited: READY_DEADLINE,
        })?;
    Ok((stack, session, index, cached))
}

/// Measurement 3: A cached download through nginx → backend under `profile`, against nginx serving the
/// same bytes itself. The target (≥ 0.8 of nginx static) is the hardened profile's, whose
/// nginx sends cached files itself; under another profile the ratio is reported beside it.
pub(super) async fn cached_download(
    size: BenchSize,
    profile: Profile,
    sabotage: Option<Sabotage>,
    r: &mut BenchReport,
) -> Result<(), HarnessError> {
    let (stack, session, index, cached) = cached_stack(size.big, profile).await?;
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
        stack.hop_faults().arm(FaultRule::new(Fault::CloseAfter {
            bytes: size.big / 2,
        }))?;
    }
    let (mut via_backend, mut via_static) = (Vec::new(), Vec::new());
    let target = step::Target::Stack(&stack);
    for _ in 0..size.rounds {
        let api = RequestStep::get().recording(index);
        let file = RequestStep::get().recording(index).with_path("/bench.mp3");
        for (req, samples) in [(api, &mut via_backend), (file, &mut via_static)] {
            match fetch(target, &session, req).await {
                Ok(o) => samples.push(size.big as f64 / secs(&o).0 / 1e9),
                Err(e) => r.errors.push(e),
            }
        }
    }
    let (mb, p) = (size.big / 1_000_000, profile.name());
    let backend = Figure::of(
        &format!("cached {mb} MB via nginx → backend [{p}]"),
        "GB/s",
        via_backend,
    );
    let nginx = Figure::of(
        &format!("same bytes, nginx static (sendfile) [{p}]"),
        "GB/s",
        via_static,
    );
    let ratio = backend.median / nginx.median;
    r.values.insert(
        format!("cached download / nginx static (ratio of medians) [{p}]"),
        ratio,
    );
    if profile == Profile::Hardened {
        r.targets.push(Target {
            name: format!("cached download vs nginx static [{p}]"),
            target: "≥ 0.8".into(),
            value: ratio,
            met: ratio >= 0.8,
        });
    }
    r.figures.push(backend);
    r.figures.push(nginx);
    Ok(())
}

/// Measurement 4: cache-miss time to first byte under `profile`, small and large, with Twilio at full speed
/// and throttled to 10 and 100 MB/s. The target (large ≤ 2× small) holds at any Twilio rate up
/// to 100 MB/s; at full speed (mock-twilio on the same cores) the ratio is reported.
pub(super) async fn ttfb(
    size: BenchSize,
    profile: Profile,
    r: &mut BenchReport,
) -> Result<(), HarnessError> {
    let stack = Stack::start(deployed(profile)).await?;
    let session = session();
    let (small, large, rounds) = size.ttfb;
    let mut n = 100;
    let p = profile.name();
    for throttle in [None, Some(10_000_000u64), Some(100_000_000)] {
        let mut medians = Vec::new();
        for bytes in [small, large] {
            let mut samples = Vec::new();
            for _ in 0..rounds {
                n += 1;
                let rec = stack.twilio().add_recording(recording(n, bytes));
                if let Some(rate) = throttle {
                    let rule = FaultRule::new(Fault::Throttle {
                        bytes_per_sec: rate,
                    });
                    stack.twilio().arm(rule.recording(&rec.sid))?;
                }
                let index = session.add_recording(rec);
                match fetch(
                    step::Target::Stack(&stack),
                    &session,
                    RequestStep::get().recording(index),
                )
                .await
                {
                    Ok(o) => samples.push(secs(&o).1 * 1000.0),
                    Err(e) => r.errors.push(e),
                }
            }
            let label = throttle
                .map(|t| format!(", Twilio throttled to {} MB/s", t / 1_000_000))
                .unwrap_or_default();
            let f = Figure::of(
                &format!("cache-miss TTFB, {} kB{label} [{p}]", bytes / 1000),
                "ms",
                samples,
            );
            medians.push(f.median);
            r.figures.push(f);
        }
        let label = match throttle {
            Some(t) => format!("Twilio at {} MB/s", t / 1_000_000),
            None => "Twilio at full speed".into(),
        };
        let ratio = medians[1] / medians[0];
        r.values
            .insert(format!("TTFB ratio large/small, {label} [{p}]"), ratio);
        if throttle.is_some() {
            r.targets.push(Target {
                name: format!("cache-miss TTFB ratio, {label} [{p}]"),
                target: "≤ 2".into(),
                value: ratio,
                met: ratio <= 2.0,
            });
        }
    }
    Ok(())
}

/// The peak of a process's resident memory, sampled every 20 ms until dropped.
struct PeakRss {
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakRss {
    fn watch(pid: u32) -> PeakRss {
        let rss = move || crate::process::gauges(pid).map(|g| g.0).unwrap_or(0);
        let peak = Arc::new(AtomicU64::new(rss()));
        let seen = peak.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                seen.fetch_max(rss(), Ordering::Relaxed);
            }
        });
        PeakRss { peak, task }
    }

    fn mb(&self) -> f64 {
        self.peak.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs `reqs` all at once: how many failed (each error recorded), and the seconds it took.
async fn all_at_once(
    target: step::Target<'_>,
    session: &Session,
    reqs: Vec<RequestStep>,
    r: &mut BenchReport,
) -> (usize, f64) {
    let t = Instant::now();
    let results =
        futures::future::join_all(reqs.into_iter().map(|q| fetch(target, session, q))).await;
    let secs = t.elapsed().as_secs_f64();
    let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    let n = failed.len();
    r.errors.extend(failed);
    (n, secs)
}

/// Each backend instance's process id.
fn backend_pids(stack: &Stack) -> Result<Vec<u32>, HarnessError> {
    stack
        .backend_measured_pids()
        .into_iter()
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| HarnessError::step(5, "the backend's process is not on this host"))
}

/// Measurement 5: concurrency and memory under `profile`: many clients of the cached recording (the
/// backend streams it, or under hardened hands it to nginx), then concurrent misses (streamed
/// through the backend under every profile). Memory and fds are each backend process's.
pub(super) async fn concurrency(
    size: BenchSize,
    profile: Profile,
    r: &mut BenchReport,
) -> Result<(), HarnessError> {
    let (stack, session, index, _) = cached_stack(size.big, profile).await?;
    let target = step::Target::Stack(&stack);
    let pids = backend_pids(&stack)?;
    let fds = |pid: u32| {
        crate::process::gauges(pid)
            .map(|g| g.1 as usize)
            .unwrap_or(0)
    };
    let fds_before: Vec<usize> = pids.iter().map(|p| fds(*p)).collect();
    let rss: Vec<PeakRss> = pids.iter().map(|p| PeakRss::watch(*p)).collect();
    let hits = (0..size.clients)
        .map(|_| RequestStep::get().recording(index))
        .collect();
    let (mut errors, secs) = all_at_once(target, &session, hits, r).await;
    let (mb, p) = (size.big / 1_000_000, profile.name());
    r.values.insert(
        format!(
            "{} clients × cached {mb} MB: total GB/s [{p}]",
            size.clients
        ),
        (size.clients as u64 * size.big) as f64 / secs / 1e9,
    );
    let (count, bytes) = size.misses;
    let misses = (0..count)
        .map(|i| {
            let rec = stack
                .twilio()
                .add_recording(recording(1000 + i as u64, bytes));
            RequestStep::get().recording(session.add_recording(rec))
        })
        .collect();
    let (failed, secs) = all_at_once(target, &session, misses, r).await;
    errors += failed;
    r.values.insert(
        format!(
            "{count} concurrent misses × {} MB: total GB/s [{p}]",
            bytes / 1_000_000
        ),
        (count as u64 * bytes) as f64 / secs / 1e9,
    );
    let peak_mb = rss.iter().map(PeakRss::mb).fold(0.0, f64::max);
    r.values
        .insert(format!("backend peak RSS, per process (MB) [{p}]"), peak_mb);
    r.values
        .insert(format!("download errors under load [{p}]"), errors as f64);
    r.targets.push(Target {
        name: format!("backend peak RSS under load (MB) [{p}]"),
        target: "≤ 64".into(),
        value: peak_mb,
        met: peak_mb <= 64.0,
    });
    for (n, (pid, before)) in pids.iter().zip(fds_before).enumerate() {
        fds_target(
            r,
            &format!("{p}, instance {}", n + 1),
            before,
            fds(*pid),
            count,
        );
    }
    if errors > 0 {
        r.errors.push(format!(
            "{errors} downloads under load failed or were not byte-exact [{p}]"
        ));
    }
    Ok(())
}

/// What a backend process may hold after the load: its fds before, nginx's pool of up to 16
/// idle upstream connections, and one idle Twilio connection per concurrent miss (kept 30 s).
fn fds_target(r: &mut BenchReport, which: &str, before: usize, after: usize, misses: usize) {
    let allowed = before + 16 + misses;
    r.values
        .insert(format!("backend open fds before [{which}]"), before as f64);
    r.values
        .insert(format!("backend open fds after [{which}]"), after as f64);
    r.targets.push(Target {
        name: format!("backend fds after load [{which}]"),
        target: format!(
            "≤ {allowed} (before + nginx's pool of 16 + {misses} idle Twilio connections)"
        ),
        value: after as f64,
        met: after <= allowed,
    });
}

/// Measurement 6: mock-twilio's media rate, and how exact its throttle is.
pub(super) async fn mock_twilio(size: BenchSize, r: &mut BenchReport) -> Result<(), HarnessError> {
    let twilio = MockTwilio::start()
        .await
        .map_err(HarnessError::io("start mock-twilio"))?;
    let target = UrlTarget::new(&twilio.uri(), None)
        .with_basic_auth(twilio.account_sid(), twilio.auth_token());
    let session = session();
    let media_path = |rec: &Recording| {
        let url = twilio.media_url(&rec.sid, MediaFormat::Mp3);
        url.trim_start_matches(&twilio.uri()).to_string()
    };
    let rec = twilio.add_recording(recording(9, size.media));
    let big = RequestStep::get()
        .recording(session.add_recording(rec.clone()))
        .with_path(&media_path(&rec));
    let mut rates = Vec::new();
    for _ in 0..3 {
        let o = fetch(step::Target::Url(&target), &session, big.clone())
            .await
            .map_err(|e| HarnessError::step(6, e))?;
        rates.push(size.media as f64 / secs(&o).0 / 1e9);
    }
    r.figures.push(Figure::of(
        &format!("mock-twilio media, {} MB", size.media / 1_000_000),
        "GB/s",
        rates,
    ));
    let asked = (size.media / 10).clamp(1_000_000, 10_000_000);
    let small = twilio.add_recording(recording(10, asked * 2));
    twilio.arm(
        FaultRule::new(Fault::Throttle {
            bytes_per_sec: asked,
        })
        .recording(&small.sid),
    )?;
    let req = RequestStep::get()
        .recording(session.add_recording(small.clone()))
        .with_path(&media_path(&small));
    let o = fetch(step::Target::Url(&target), &session, req)
        .await
        .map_err(|e| HarnessError::step(6, e))?;
    r.values.insert(
        format!(
            "throttle accuracy at {} MB/s (measured / asked)",
            asked / 1_000_000
        ),
        (asked * 2) as f64 / secs(&o).0 / asked as f64,
    );
    Ok(())
}
