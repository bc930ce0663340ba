//! The real client: headless Chromium plays recordings through a stack (`Stack::play`), and
//! opens the HTML report. Scenario files with `play` steps (scenarios/browser/) run in files.rs.

use crate::support::{browser_present, engine_present, rt, tools_present};
use harness::browser::{Browser, Engine, PlayOptions};
use harness::runner::run;
use harness::scenario::{PlayStep, RecordingSpec, RequestStep, Scenario, Step};
use harness::{Profile, Stack, StackSpec};
use mock_twilio::{MediaFormat, Recording};
use std::time::Duration;

fn ready() -> bool {
    tools_present() && browser_present()
}

/// Live processes whose command line or environment mentions `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let mentions = |pid: u32, what: &str| {
        std::fs::read(format!("/proc/{pid}/{what}"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            (mentions(*pid, "cmdline") || mentions(*pid, "environ"))
                && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| !s.contains(") Z "))
        })
        .collect()
}

#[test]
fn stack_play_reports_the_page_and_chromiums_own_requests() {
    if !ready() {
        return;
    }
    rt().block_on(async {
        let stack = Stack::start(StackSpec::new(Profile::Fixed)).await.unwrap();
        let size = 48_000;
        let rec = stack.twilio().add_recording(Recording::new(
            mock_twilio::sid("RE", 1),
            mock_twilio::sid("CA", 1),
            MediaFormat::Mp3,
            size,
        ));
        let got = stack.play(&rec, PlayOptions::default()).await.unwrap();
        assert!(got.page.played(), "{got:#?}");
        assert!(got.page.ended && got.page.canplay, "{got:#?}");
        assert_eq!(got.page.error_code, None);
        // The duration Chromium decoded agrees with the size at the media's 128 kbit/s.
        let nominal_ms = size as f64 * 8.0 / 128.0;
        let decoded = got.page.duration_ms.unwrap() as f64;
        assert!(
            (decoded - nominal_ms).abs() < nominal_ms * 0.1,
            "decoded {decoded} ms, nominal {nominal_ms} ms"
        );
        // Chromium asked with a Range of its own, and nginx logged the whole answer.
        let first = &got.requests[0];
        assert_eq!(first.range.as_deref(), Some("bytes=0-"));
        assert_eq!(first.status, 206);
        assert_eq!(first.bytes_sent, size);
        assert_eq!(first.body, harness::browser::Delivered::Complete);
        assert!(
            got.page.events.starts_with(&["loadstart".to_string()]),
            "{:?}",
            got.page.events
        );
    });
}

/// The client ports of the connections to `port` on 127.0.0.1 that its server has not closed.
fn open_connections_to(port: u16) -> std::collections::BTreeSet<u16> {
    harness::tcp::sockets()
        .iter()
        .filter(|s| {
            s.local.port() == port
                && matches!(
                    s.state,
                    harness::tcp::TcpState::Established | harness::tcp::TcpState::CloseWait
                )
        })
        .map(|s| s.remote.port())
        .collect()
}

/// A browser that plays again (the pool keeps it between plays) begins each play afresh: the
/// same recording played twice makes the same requests to nginx, none answered from the
/// browser's cache, and no connection of a play outlives it.
#[rstest::rstest]
fn a_browser_that_plays_again_begins_each_play_afresh(
    #[values(Engine::Chromium, Engine::Firefox)] engine: Engine,
) {
    if !tools_present() || !engine_present(engine) {
        return;
    }
    rt().block_on(async {
        let stack = Stack::start(StackSpec::new(Profile::Fixed)).await.unwrap();
        let rec = stack.twilio().add_recording(Recording::new(
            mock_twilio::sid("RE", 1),
            mock_twilio::sid("CA", 1),
            MediaFormat::Mp3,
            48_000,
        ));
        let options = PlayOptions {
            engine,
            ..PlayOptions::default()
        };
        let mut browser = Browser::launch(engine, stack.sandbox()).await.unwrap();
        let mut plays = Vec::new();
        let port = stack.nginx_addr().port();
        for _ in 0..2 {
            // The stack's readiness checks may have left a connection of the harness's own.
            let before = open_connections_to(port);
            let got = browser.play_on(&stack, &rec, options).await.unwrap();
            assert!(got.page.played(), "{got:#?}");
            let left: Vec<_> = open_connections_to(port)
                .difference(&before)
                .copied()
                .collect();
            assert_eq!(left, Vec::<u16>::new(), "connections of the play left open");
            assert!(browser.plays_again());
            let asked: Vec<_> = got
                .requests
                .iter()
                .map(|r| (r.range.clone(), r.status, r.bytes_sent))
                .collect();
            plays.push(asked);
        }
        assert!(!plays[0].is_empty(), "{plays:?}");
        assert_eq!(plays[0], plays[1], "the second play asked nginx the same");
        browser.close().await;
    });
}

#[rstest::rstest]
fn a_dropped_browser_takes_every_process_of_its_engine_with_it(
    #[values(Engine::Chromium, Engine::Firefox, Engine::Webkit)] engine: Engine,
) {
    if !tools_present() || !engine_present(engine) {
        return;
    }
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let browser = Browser::launch(engine, dir.path()).await.unwrap();
        let scratch = browser.scratch_dir().display().to_string();
        assert!(
            processes_with(&scratch).len() >= 2,
            "{engine} and its driver run: {:?}",
            processes_with(&scratch)
        );
        drop(browser); // no close(): as when a test panics
        let gone = harness::ready::poll(Duration::from_secs(10), || async {
            processes_with(&scratch).is_empty().then_some(())
        });
        gone.await;
        assert_eq!(
            processes_with(&scratch),
            Vec::<u32>::new(),
            "{engine} outlived its guard"
        );
        assert!(
            !std::path::Path::new(&scratch).exists(),
            "its folder is removed"
        );
    });
}

#[test]
fn the_html_report_renders_in_chromium() {
    if !ready() {
        return;
    }
    let scenario = Scenario::new("report-demo", RecordingSpec::new(MediaFormat::Mp3, 48_000))
        .describe("A download, a play, then the backend goes away: a 502 in the matrix")
        .request(RequestStep::get().named("download"))
        .step(Step::Play(PlayStep::recording(0)))
        .step(Step::StopBackend)
        .request(RequestStep::get().named("download with the backend down"));
    let rt = rt();
    let mut run = rt
        .block_on(run(&scenario, crate::support::runtime()))
        .unwrap();
    // What a set-up mended (tests/it/stack.rs makes one happen) shows under its profile.
    let mended = "pre-download of recording 0 (its signed status webhook) answered 502 \
                  (premature_close), sent once more";
    run.runs[0].set_up.push(mended.into());
    let mut report = harness::report::Report::new();
    report.context("test", "the_html_report_renders_in_chromium");
    report.add(&scenario, None, Ok(&run), None);
    let out = tempfile::tempdir().unwrap();
    let snapshots = crate::support::checkout().join("snapshots");
    let index = report.write(out.path(), &snapshots).unwrap();
    let html = std::fs::read_to_string(&index).unwrap();
    for remote in ["src=\"http", "href=\"http", "<link ", "@import"] {
        assert!(
            !html.contains(remote),
            "the report loads nothing from elsewhere: {remote}"
        );
    }
    rt.block_on(async {
        let browser = Browser::launch(Engine::Chromium, out.path()).await.unwrap();
        browser.open(&format!("file://{}", index.display())).await.unwrap();
        let facts = browser
            .eval(
                "return {
                   ready: window.reportReady === true,
                   errors: window.reportErrors,
                   rows: document.querySelectorAll('#matrix tbody tr').length,
                   columns: [...document.querySelectorAll('#matrix thead th')].map(t => t.textContent),
                   failures: document.querySelectorAll('#matrix td.verdict-user_failure').length,
                   bars: document.querySelectorAll('.timeline .bar').length,
                   raw: [...document.querySelectorAll('pre.raw')].map(p => p.textContent),
                   engines: [...document.querySelectorAll('code.engine')].map(c => c.textContent),
                   timelines: [...document.querySelectorAll('.timeline-engine')].map(t => t.textContent),
                   browsers: [...document.querySelectorAll('p.browsers')].map(p => p.textContent),
                   setUp: [...document.querySelectorAll('p.set-up')].map(p => p.textContent),
                 };",
            )
            .await
            .unwrap();
        assert_eq!(facts["ready"], true, "{facts}");
        assert_eq!(facts["errors"], serde_json::json!([]), "{facts}");
        assert_eq!(facts["rows"], 1, "{facts}");
        assert_eq!(
            facts["columns"],
            serde_json::json!(["scenario", "fixed", "hardened", "legacy"]),
            "{facts}"
        );
        // Every profile 502s with the backend down (hardened's two instances are both down);
        // the play step draws its requests.
        assert_eq!(facts["failures"], 3, "{facts}");
        assert!(facts["bars"].as_u64().unwrap() >= 3, "{facts}");
        // Each play names the engine that played, and so does its timeline.
        assert_eq!(facts["engines"], serde_json::json!(["chromium", "chromium", "chromium"]), "{facts}");
        assert!(
            facts["timelines"][0]
                .as_str()
                .is_some_and(|t| t.starts_with("chromium's requests")),
            "{facts}"
        );
        // Each profile says which browsers' users it plays for.
        let plays = "plays for users of Chromium browsers such as Chrome and Edge (chromium)";
        assert_eq!(
            facts["browsers"],
            serde_json::json!([plays, plays, plays]),
            "{facts}"
        );
        assert_eq!(
            facts["setUp"],
            serde_json::json!([format!("set-up: {mended}")]),
            "{facts}"
        );
        let raw = facts["raw"].to_string();
        assert!(raw.contains("connect() failed (111: Connection refused)"), "{raw}");
        let png = browser.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let artifacts = std::env::var_os("HARNESS_ARTIFACTS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| crate::support::checkout().join("target/artifacts"));
        std::fs::create_dir_all(&artifacts).unwrap();
        std::fs::write(artifacts.join("report.png"), png).unwrap();
        browser.close().await;
    });
}

#[test]
fn a_browser_slot_is_held_against_every_process_on_the_machine() {
    use harness::browser::BrowserSlot;
    let mut held = vec![rt().block_on(BrowserSlot::acquire()).unwrap()];
    // Every other slot free now, taken without waiting (waiting for one while holding one could
    // wait forever on another process doing the same).
    while let Some(slot) = BrowserSlot::try_acquire().unwrap() {
        held.push(slot);
    }
    // Each a slot of its own, among the machine's.
    let slots: Vec<String> = (0..harness::browser::browser_slots())
        .map(|i| format!("recordings-harness-browser-{i}.lock"))
        .collect();
    let mut paths: Vec<_> = held.iter().map(|s| s.path().to_path_buf()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), held.len(), "{paths:?}");
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(slots.contains(&name), "{name} is none of {slots:?}");
    }
    // Another process (util-linux's flock) cannot take a slot's lock while it is held.
    for path in &paths {
        let other = std::process::Command::new("flock")
            .args(["--nonblock", "--conflict-exit-code", "75"])
            .arg(path)
            .arg("true")
            .status()
            .expect("flock (util-linux)");
        assert_eq!(other.code(), Some(75), "{}", path.display());
    }
}
