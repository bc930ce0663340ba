//! The `harness` binary, driven as a user would: exit codes, output, files, and teardown on signals.

use crate::support::tools_present;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn harness() -> Command {
    crate::support::harness_command()
}

/// Under the containers runtime, builds the images first (`harness images build` reuses what
/// is there), so that a stack's start, which these tests time, is not a first build.
fn images_built() {
    if crate::support::runtime() == harness::Runtime::Containers {
        let out = harness().args(["images", "build"]).output().unwrap();
        assert!(out.status.success(), "harness images build: {out:?}");
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const PLAY: &str = "name = \"cli-play\"\nprofiles = [\"fixed\"]\n[[recordings]]\nsize = 5000\ncached = true\n[[steps]]\ndo = \"request\"\nrange = \"bytes=-500\"\nexpect = { status = 206 }\n";

#[test]
fn run_passes_writes_junit_and_fails_on_a_broken_expectation() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "play.toml", PLAY);
    let junit = dir.path().join("junit.xml");
    // --profile: snapshots (which hold both profiles) are not compared, expectations are.
    let out = harness()
        .args(["run", "--profile", "fixed", "--junit"])
        .arg(&junit)
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("cli-play")
            && stdout.contains("PASS")
            && stdout.contains("1 passed, 0 failed"),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testcase") && xml.contains("cli-play [fixed]"),
        "{xml}"
    );
    // The case's time is its stack's life: more than nothing.
    let time: f64 = xml
        .split("time=\"")
        .nth(1)
        .and_then(|t| t.split('"').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("a time on the test case: {xml}"));
    assert!(time > 0.0, "{xml}");

    let broken = write(
        dir.path(),
        "broken.toml",
        &PLAY
            .replace("status = 206", "status = 200")
            .replace("cli-play", "cli-broken"),
    );
    let out = harness()
        .args(["run", "--profile", "fixed"])
        .arg(&broken)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL") && stdout.contains("expected status 200, got 206"),
        "{stdout}"
    );
}

#[test]
fn filter_picks_scenarios_by_name() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", PLAY);
    write(dir.path(), "b.toml", &PLAY.replace("cli-play", "cli-other"));
    let out = harness()
        .args(["run", "--profile", "fixed", "--filter", "other"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("cli-other") && !stdout.contains("cli-play"),
        "{stdout}"
    );
    let none = harness()
        .args(["run", "--filter", "nothing-matches"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no scenario to run"));
}

#[test]
fn run_without_a_snapshot_says_how_to_make_one() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "play.toml", PLAY);
    let snaps = dir.path().join("snaps");
    std::fs::create_dir(&snaps).unwrap();
    // In CI nothing is written; elsewhere the pending file is, as insta does.
    let out = harness()
        .arg("run")
        .arg(&file)
        .arg("--snapshots")
        .arg(&snaps)
        .env("CI", "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("no snapshot yet: run with --update"),
        "{stdout}"
    );
    assert!(!snaps.join("cli-play.snap.new").exists());
    let out = harness()
        .arg("run")
        .arg(&file)
        .arg("--snapshots")
        .arg(&snaps)
        .env_remove("CI")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("no snapshot yet: wrote "), "{stdout}");
    std::fs::remove_file(snaps.join("cli-play.snap.new")).unwrap();
    let out = harness()
        .arg("run")
        .arg(&file)
        .arg("--snapshots")
        .arg(&snaps)
        .arg("--update")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a new snapshot is never accepted silently"
    );
    assert!(snaps.join("cli-play.snap.new").exists());
    std::fs::rename(snaps.join("cli-play.snap.new"), snaps.join("cli-play.snap")).unwrap();
    let out = harness()
        .arg("run")
        .arg(&file)
        .arg("--snapshots")
        .arg(&snaps)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_bad_file_stops_the_run_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", PLAY);
    let bad = write(
        dir.path(),
        "bad.toml",
        "name = \"b\"\n[[steps]]\ndo = \"request\"\nrnage = \"bytes=0-1\"\n",
    );
    let out = harness().arg("run").arg(&good).arg(&bad).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{}:", bad.display())), "{stderr}");
    assert!(stderr.contains("rnage"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).is_empty(),
        "nothing ran"
    );
}

#[test]
fn new_writes_a_skeleton_that_parses_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out = harness()
        .args(["new", "my-first", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.path().join("my-first.toml");
    let scenario =
        harness::scenario::load(&path).unwrap_or_else(|e| panic!("the skeleton parses: {e}"));
    assert_eq!(scenario.name, "my-first");
    // Its comments name every step kind and fault kind there is.
    let text = std::fs::read_to_string(&path).unwrap();
    for kind in harness::scenario::Step::KINDS
        .iter()
        .chain(mock_twilio::Fault::KINDS)
    {
        assert!(text.contains(kind), "the skeleton names {kind}");
    }
    let again = harness()
        .args(["new", "my-first", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let bad = harness()
        .args(["new", "../escape", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn explain_classifies_a_log_from_a_file_or_stdin() {
    let log = "2026/11/25 10:00:00 [error] 7#7: *1 connect() failed (111: Connection refused) while connecting to upstream, client: 1.2.3.4\n\
               2026/11/25 10:00:05 [info] 7#7: *2 client closed keepalive connection\n\
               2026/11/25 10:00:09 [error] 7#7: *3 connect() failed (111: Connection refused) while connecting to upstream, client: 1.2.3.4\n\
               2026/11/25 10:01:00 [error] 7#7: *4 upstream timed out (110: Connection timed out) while reading response header from upstream\n";
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "error.log", log);
    let out = harness().arg("explain").arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout
            .contains("connect_refused × 2  (first 2026/11/25 10:00:00, last 2026/11/25 10:00:09)"),
        "{stdout}"
    );
    assert!(stdout.contains("timed_out × 1"), "{stdout}");
    assert!(
        !stdout.contains("keepalive"),
        "routine info lines are not errors: {stdout}"
    );
    let mut child = harness()
        .arg("explain")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(log.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("connect_refused × 2"));
}

#[test]
fn schema_prints_the_committed_schema() {
    let out = harness().arg("schema").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        harness::scenario::json_schema()
    );
}

#[test]
fn check_verifies_a_deployed_stack() {
    if !tools_present() {
        return;
    }
    let rt = crate::support::rt();
    let stack = rt
        .block_on(harness::Stack::start(harness::StackSpec::new(
            harness::Profile::Fixed,
        )))
        .unwrap();
    let rec = stack.twilio().add_recording(mock_twilio::Recording::new(
        mock_twilio::sid("RE", 1),
        mock_twilio::sid("CA", 1),
        mock_twilio::MediaFormat::Mp3,
        20_000,
    ));
    let out = harness()
        .args(["check", &stack.url(""), "--call-sid", &rec.call_sid])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("PASS Range: bytes=-500") && stdout.contains("6 passed, 0 failed"),
        "{stdout}"
    );
    // A call without a recording fails the checks, and says why.
    let out = harness()
        .args([
            "check",
            &stack.url(""),
            "--call-sid",
            &mock_twilio::sid("CA", 9),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL curl -I") && stdout.contains("404"),
        "{stdout}"
    );
    drop(stack);
}

/// Processes whose command line or environment mentions `dir`.
fn processes_mentioning(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            ["cmdline", "environ"].iter().any(|f| {
                std::fs::read(format!("/proc/{pid}/{f}"))
                    .is_ok_and(|b| String::from_utf8_lossy(&b).contains(&needle))
            }) && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
        })
        .collect()
}

/// Under the containers runtime, the containers and networks the harness process `pid` owns
/// (our owner label); under processes, none.
fn containers_owned_by(pid: u32) -> Vec<String> {
    if crate::support::runtime() != harness::Runtime::Containers {
        return Vec::new();
    }
    let filter = format!("label={}={pid}", harness::containers::OWNER_LABEL);
    crate::support::docker_names(Some(&filter))
}

/// A harness process that a failed check before its signal still stops (SIGINT, so it tears
/// its stacks down) and waits for.
struct Interrupted(std::process::Child);

impl Drop for Interrupted {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let _ = self.0.wait();
        }
    }
}

/// Starts `harness args…` with its temp files in a dir of its own, waits until `ready` holds,
/// sends `signal`, and checks it exits 130 leaving no process, file, container or network
/// behind. The harness's output so far, and its temp dir: what `ready` looks at.
fn interrupt(
    args: &[&str],
    signal: nix::sys::signal::Signal,
    ready: impl Fn(&Path, &str) -> bool,
) -> String {
    images_built();
    let tmp = tempfile::tempdir().unwrap();
    let stdout = tempfile::NamedTempFile::new().unwrap();
    let mut child = Interrupted(
        harness()
            .args(args)
            .env("TMPDIR", tmp.path())
            .stdout(std::fs::File::create(stdout.path()).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let printed = || std::fs::read_to_string(stdout.path()).unwrap_or_default();
    let start = Instant::now();
    while !ready(tmp.path(), &printed()) {
        assert!(start.elapsed() < Duration::from_secs(30), "never got ready");
        assert!(child.0.try_wait().unwrap().is_none(), "exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its stacks run: as processes besides the harness itself (whose environment names the
    // dir too), or as its containers.
    let stacks = match crate::support::runtime() {
        harness::Runtime::Processes => processes_mentioning(tmp.path())
            .into_iter()
            .filter(|p| *p != pid)
            .map(|p| p.to_string())
            .collect(),
        harness::Runtime::Containers => containers_owned_by(pid),
    };
    assert!(!stacks.is_empty(), "its stacks run");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(status.code(), Some(130), "exits non-zero");
    assert_eq!(
        processes_mentioning(tmp.path()),
        Vec::<u32>::new(),
        "no process left"
    );
    assert_eq!(
        containers_owned_by(pid),
        Vec::<String>::new(),
        "no container or network left"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "no temp dir left: {left:?}");
    printed()
}

fn nginx_running(tmp: &Path) -> bool {
    std::fs::read_dir(tmp).is_ok_and(|d| d.flatten().any(|e| e.path().join("nginx.pid").exists()))
}

#[test]
fn ctrl_c_during_up_tears_the_stack_down() {
    if !tools_present() {
        return;
    }
    // Ready once it has printed everything (its last line), so the output can be checked too.
    let out = interrupt(&["up"], nix::sys::signal::Signal::SIGINT, |tmp, out| {
        nginx_running(tmp) && out.contains("Ctrl-C stops it.")
    });
    for want in [
        "nginx:",
        "mock-twilio:",
        "call SID:",
        "curl -I http://127.0.0.1:",
        "Range: bytes=-500",
        "__admin/faults",
        "error.log",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
}

#[test]
fn sigint_and_sigterm_during_run_tear_every_stack_down() {
    if !tools_present() {
        return;
    }
    // A scenario that takes a while: the backend hangs, nginx waits 30 s (scaled).
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "slow.toml",
        "name = \"cli-slow\"\n[[recordings]]\nsize = 1000\n[[hop_faults]]\nfault = { kind = \"hang\" }\nmatch = { path_regex = \"^/api/\" }\n[[steps]]\ndo = \"request\"\n",
    );
    let file = file.display().to_string();
    for signal in [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        interrupt(&["run", &file], signal, |tmp, _| {
            std::fs::read_dir(tmp).is_ok_and(|d| {
                d.flatten()
                    .filter(|e| e.path().join("nginx.pid").exists())
                    .count()
                    == 2
            })
        });
    }
}

#[test]
fn a_killed_harness_takes_its_stack_with_it() {
    if !tools_present() {
        return;
    }
    // SIGKILL runs no destructor: the stack's watchdogs must end its processes and containers.
    images_built();
    let tmp = tempfile::tempdir().unwrap();
    let stdout = tempfile::NamedTempFile::new().unwrap();
    let mut child = harness()
        .arg("up")
        .env("TMPDIR", tmp.path())
        .stdout(std::fs::File::create(stdout.path()).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !std::fs::read_to_string(stdout.path())
        .unwrap_or_default()
        .contains("Ctrl-C stops it.")
    {
        assert!(start.elapsed() < Duration::from_secs(30), "never got ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!processes_mentioning(tmp.path()).is_empty());
    let pid = child.id();
    assert!(
        crate::support::runtime() == harness::Runtime::Processes
            || !containers_owned_by(pid).is_empty(),
        "its containers run"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // Its processes end (and under containers, its containers and network go: the watchdog).
    let start = Instant::now();
    while !processes_mentioning(tmp.path()).is_empty() || !containers_owned_by(pid).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "left running: {:?} {:?}",
            processes_mentioning(tmp.path()),
            containers_owned_by(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_missing_browser_says_how_to_install_it() {
    if !tools_present() {
        return;
    }
    let out = harness()
        .args([
            "run",
            "--profile",
            "fixed",
            "scenarios/browser/play-cached.toml",
        ])
        .current_dir(crate::support::checkout())
        .env("HARNESS_CHROMIUM", "/nonexistent/chromium")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("chromium not found")
            && stdout.contains("apt-get install chromium chromium-driver"),
        "{stdout}"
    );
}

/// `--browser E` runs what `files::every_browser_scenario_on` runs (the fixed profile, the
/// `@E` snapshot), so a user's run passes against the committed snapshots. (The name puts it
/// in nextest's browsers group.)
#[test]
fn run_with_browser_plays_what_every_browser_scenario_on_plays() {
    use harness::browser::Engine;
    if !tools_present() || !crate::support::engine_present(Engine::Firefox) {
        return;
    }
    let out = harness()
        .args([
            "run",
            "--browser",
            "firefox",
            "scenarios/browser/play-cached.toml",
        ])
        .current_dir(crate::support::checkout())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("browser-play-cached@firefox "))
        .collect();
    assert_eq!(rows.len(), 1, "one profile, fixed:\n{stdout}");
    assert!(
        rows[0].contains(" fixed ") && rows[0].contains("PASS"),
        "{stdout}"
    );
}

#[test]
fn soak_of_a_broken_backend_exits_1_naming_each_violation_and_its_replay() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The reference backend with a Twilio budget no download fits in: every first play of a
    // recording fails with a 503, which a soak must call out.
    let backend = harness::stack::find_backend().unwrap();
    let stack = write(
        dir.path(),
        "tight-budget.toml",
        &format!(
            "name = \"tight-budget\"\n[backend]\ncommand = [{:?}, \"--twilio-timeout-secs\", \"0.001\"]\n",
            backend.display().to_string()
        ),
    );
    let out = harness()
        .args([
            "soak",
            "--minutes",
            "0.15",
            "--clients",
            "2",
            "--restart-every",
            "0",
        ])
        .args(["--formats", "mp3", "--json"])
        .arg(dir.path().join("report.json"))
        .arg("--stack")
        .arg(&stack)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("soak: seed 1, profile fixed"), "{stdout}");
    assert!(stdout.contains(" violations:"), "{stdout}");
    // Under HARNESS_RUNTIME=containers the replay names the runtime it ran in.
    let runtime = match std::env::var("HARNESS_RUNTIME").as_deref() {
        Ok("containers") => "--runtime containers ",
        _ => "",
    };
    let replay = format!(
        "reproduce: harness {runtime}soak --seed 1 --profile fixed --fault-rate 0.2 --stack {} --formats mp3 --only-step ",
        stack.display()
    );
    assert!(stdout.contains(&replay), "{stdout}");
    assert!(
        stdout.contains(": 503, expected 200, 206 or 416"),
        "the 503s are named: {stdout}"
    );
    // The JSON report holds every violation, each with its step.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    let violations = json["violations"].as_array().unwrap();
    assert!(!violations.is_empty());
    assert!(violations.iter().any(|v| v["step"].is_u64()), "{json}");
}

#[test]
fn a_closed_stdout_ends_the_harness_quietly_as_sigpipe_would() {
    // As `harness schema | head -c0`: the reader is gone before the harness writes.
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let out = harness()
        .arg("schema")
        .stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(141));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "no panic message");
}

#[test]
fn an_nginx_version_the_host_lacks_runs_in_containers_against_its_own_snapshot() {
    if !tools_present() || !crate::support::docker_present() {
        return;
    }
    let out = harness()
        .args(["run", "scenarios/versions/stock-keepalive-race.toml"])
        .current_dir(crate::support::checkout())
        .env("HARNESS_NGINX_VERSION", "1.30")
        .env_remove("HARNESS_RUNTIME")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its own snapshot: on 1.30 the stock config meets the race (the POST gets the 502).
    assert!(
        stdout.contains("stock-keepalive-race [nginx 1.30]  stock    200 200 204 502  PASS"),
        "{stdout}"
    );
}

#[test]
fn explain_with_the_access_log_tells_retried_from_received_and_fits_the_fix() {
    if !tools_present() {
        return;
    }
    use harness::{
        Profile, RecordingSpec, RequestStep, Scenario, Stack, StackSpec, Step, Timeouts,
    };
    use mock_twilio::{Fault, FaultRule, MediaFormat, Signing};
    // The legacy order (backend 2 s, nginx 24 s) with the race made certain: a GET nginx retries,
    // a POST it does not, and a body the backend cuts (no race: it was mid-answer).
    let webhook = |pause_ms| Step::Webhook {
        recording: 0,
        signing: Signing::Valid,
        pause_ms,
        expect: Default::default(),
    };
    let scenario = Scenario::new(
        "explain",
        RecordingSpec::new(MediaFormat::Mp3, 200_000).cached(true),
    )
    .hop_fault(FaultRule::new(Fault::KeepaliveRace))
    .request(RequestStep::get().with_path("/healthz"))
    .request(RequestStep::get().with_path("/healthz").pause_ms(3_000))
    .step(webhook(0))
    .step(webhook(3_000))
    .step(Step::Arm {
        at: harness::FaultPoint::Hop,
        rule: FaultRule::new(Fault::CloseAfter { bytes: 10_000 })
            .path_regex("^/api/")
            .times(1),
    })
    .request(RequestStep::get());
    let spec = StackSpec::new(Profile::Legacy).timeouts(Timeouts {
        keepalive_scale: 0.4,
        ..Timeouts::default()
    });
    let dir = tempfile::tempdir().unwrap();
    crate::support::rt().block_on(async {
        let stack = Stack::start(spec).await.unwrap();
        harness::runner::run_on_stack(&stack, &scenario, None, Profile::Legacy)
            .await
            .unwrap();
        std::fs::copy(stack.error_log().path(), dir.path().join("error.log")).unwrap();
        std::fs::copy(stack.access_log().path(), dir.path().join("access.log")).unwrap();
    });
    let out = harness()
        .arg("explain")
        .arg(dir.path().join("error.log"))
        .arg("--access-log")
        .arg(dir.path().join("access.log"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for want in [
        "premature_close × 3",
        "1 retried by nginx (the client got 200), e.g. GET /healthz",
        "1 reached the client (the client got 502), e.g. POST /webhook/recording-status",
        "2 closed at once before the response header",
        "fix:   keep the backend's keep-alive timeout above",
        "fix:   never let an exception drop a connection",
    ] {
        assert!(stdout.contains(want), "{want:?} missing:\n{stdout}");
    }
    // Without the access log nothing is said of what became of them.
    let out = harness()
        .arg("explain")
        .arg(dir.path().join("error.log"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("retried by nginx"), "{stdout}");
}

#[test]
fn a_soak_holds_every_get_to_rfc_9110_range_a_backend_ignoring_range_fails() {
    if !tools_present() || !crate::support::uvicorn_present() {
        return;
    }
    // The uvicorn example, once as it is and once answering every GET 200 whole (IGNORE_RANGE).
    let example = crate::support::checkout().join("examples/uvicorn-backend");
    let text = std::fs::read_to_string(example.join("stack.toml"))
        .unwrap()
        .replace(
            "cwd = \".\"",
            &format!("cwd = {:?}", example.display().to_string()),
        );
    let soak = |ignore: bool| {
        let dir = tempfile::tempdir().unwrap();
        let mut text = text.clone();
        if ignore {
            text.push_str("IGNORE_RANGE = \"1\"\n");
        }
        let stack = write(dir.path(), "uvicorn.toml", &text);
        // One client: the example writes a download in place, so a second first play of the
        // same recording could read a partial file (a finding of its own, not Range's).
        let out = harness()
            .args(["soak", "--minutes", "0.1", "--clients", "1"])
            .args([
                "--restart-every",
                "0",
                "--fault-rate",
                "0",
                "--formats",
                "mp3",
            ])
            .arg("--stack")
            .arg(&stack)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, stdout) = soak(true);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("200, Content-Range (none)") && stdout.contains("RFC 9110 wants 206"),
        "each ignored Range is named: {stdout}"
    );
    let (_, stdout) = soak(false);
    assert!(
        !stdout.contains("RFC 9110 wants"),
        "the example honours Range: {stdout}"
    );
}
