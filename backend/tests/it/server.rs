//! The service itself: input checks, bearer auth, keep-alive timeout, graceful drain on
//! SIGTERM, restarts that keep their data, and secrets kept out of the logs.

use crate::support::{client, get_body, media_requests, stack, Backend};
use mock_twilio::{sid, Fault, FaultRule, MediaFormat, MockTwilio, Recording};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread")]
async fn malformed_call_sids_are_400_and_never_touch_the_disk() {
    let (twilio, _rec, backend) = stack(1000).await;
    for bad in [
        "CA123",
        "..%2F..%2Fetc%2Fpasswd",
        "CA0000000000000000000000000000000g",
        "RE00000000000000000000000000000001",
        "CA00000000000000000000000000000001%2F..",
    ] {
        let resp = client()
            .get(backend.url(&format!("/api/calls/{bad}/download")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(json["error"], "Invalid call SID");
    }
    assert!(twilio.journal().is_empty());
    // A path that leaves the route is a plain 404, never a file.
    let resp = client()
        .get(backend.url("/api/calls/../../etc/passwd"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_token_guards_the_api_when_set() {
    let twilio = MockTwilio::start().await.unwrap();
    let rec = twilio.add_recording(Recording::new(
        sid("RE", 1),
        sid("CA", 1),
        MediaFormat::Mp3,
        1000,
    ));
    let backend = Backend::start_with(&twilio, &[("API_TOKEN", "let-me-in")]);
    let url = backend.download_url(&rec.call_sid);
    assert_eq!(client().get(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client()
            .get(&url)
            .bearer_auth("let-me-in")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client()
            .get(backend.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Without API_TOKEN, no token is needed.
    let open = Backend::start(&twilio);
    assert_eq!(
        client()
            .get(open.download_url(&rec.call_sid))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(!backend
        .logs
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("let-me-in")));
}

/// Opens a connection, makes one request, then measures how long the idle connection stays open.
async fn idle_lifetime(addr: &str) -> Duration {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let idle_since = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert_eq!(
        n, 0,
        "the server closes the idle connection without a response"
    );
    idle_since.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connections_close_after_keep_alive_timeout() {
    let twilio = MockTwilio::start().await.unwrap();
    let short = Backend::start_with(&twilio, &[("KEEP_ALIVE_TIMEOUT", "1")]);
    let long = Backend::start_with(&twilio, &[("KEEP_ALIVE_TIMEOUT", "3")]);
    let (a, b) = tokio::join!(idle_lifetime(&short.addr), idle_lifetime(&long.addr));
    assert!(a >= Duration::from_millis(900), "{a:?}");
    assert!(b >= Duration::from_millis(2900), "{b:?}");
    assert!(
        b > a,
        "the longer timeout keeps connections longer: {a:?} vs {b:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_an_in_flight_download_then_exits_zero() {
    let (twilio, rec, mut backend) = stack(300_000).await;
    // 300 kB at 200 kB/s: the download is in flight for 1.5 s.
    twilio
        .arm(
            FaultRule::new(Fault::Throttle {
                bytes_per_sec: 200_000,
            })
            .path_regex(r"\.mp3$"),
        )
        .unwrap();
    let mut resp = client()
        .get(backend.download_url(&rec.call_sid))
        .send()
        .await
        .unwrap();
    let mut body = resp.chunk().await.unwrap().unwrap().to_vec();
    let addr = backend.addr.clone();
    let pid = backend.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    backend.wait_log("SIGTERM received").await;
    // New connections are refused while the old one drains.
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
    while let Some(c) = resp.chunk().await.unwrap() {
        body.extend_from_slice(&c);
    }
    assert!(
        body == rec.media(MediaFormat::Mp3).to_vec(),
        "the in-flight response completed"
    );
    let status = backend.terminate_wait();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_the_database_and_the_cache() {
    let (twilio, rec, mut backend) = stack(20_000).await;
    let first = get_body(backend.download_url(&rec.call_sid)).await;
    assert_eq!(first.len(), 20_000);
    let requests = twilio.journal().len();
    assert_eq!(requests, 2, "a look-up and a download");
    backend.restart();
    let again = get_body(backend.download_url(&rec.call_sid)).await;
    assert_eq!(again, first);
    assert_eq!(
        twilio.journal().len(),
        requests,
        "after the restart: no look-up, no download"
    );
    assert_eq!(media_requests(&twilio), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_json_lines_with_the_seed_messages_and_no_secrets() {
    let (twilio, rec, backend) = stack(20_000).await;
    get_body(backend.download_url(&rec.call_sid)).await;
    let miss = backend
        .wait_log("Cache miss - downloading from Twilio for")
        .await;
    let saved = backend.wait_log("Recording saved - took").await;
    for line in [&miss, &saved] {
        let json: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(json["call_sid"], rec.call_sid);
    }
    let logs = backend.logs.lock().unwrap();
    assert!(
        logs.iter()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "one JSON event per line"
    );
    assert!(
        !logs.iter().any(|l| l.contains(twilio.auth_token())),
        "the auth token never appears"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_downloads_are_flagged() {
    let twilio = MockTwilio::start().await.unwrap();
    let rec = twilio.add_recording(Recording::new(
        sid("RE", 1),
        sid("CA", 1),
        MediaFormat::Mp3,
        1000,
    ));
    let backend = Backend::start_with(&twilio, &[("SLOW_DOWNLOAD_SECS", "0.2")]);
    twilio
        .arm(
            FaultRule::new(Fault::Delay {
                ms: 400,
                max_ms: None,
                seed: None,
            })
            .path_regex(r"\.mp3$"),
        )
        .unwrap();
    get_body(backend.download_url(&rec.call_sid)).await;
    let line = backend.wait_log("Slow download detected (").await;
    assert!(line.contains("consider pre-downloading"));
}

#[test]
fn bad_configuration_exits_non_zero_naming_the_variable() {
    let out = std::process::Command::new(crate::support::bin_exe(
        "recordings-backend",
        env!("CARGO_BIN_EXE_recordings-backend"),
    ))
    .env_clear()
    .env("TWILIO_ACCOUNT_SID", "nope")
    .env("TWILIO_AUTH_TOKEN", "x")
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TWILIO_ACCOUNT_SID"));
}

fn peak_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_stays_flat_for_a_100_mb_recording() {
    let (_twilio, rec, backend) = stack(100_000_000).await;
    for pass in ["cache miss", "cache hit"] {
        let mut resp = client()
            .get(backend.download_url(&rec.call_sid))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.content_length(), Some(100_000_000), "{pass}");
        let mut got = 0u64;
        while let Some(chunk) = resp.chunk().await.unwrap() {
            got += chunk.len() as u64;
        }
        assert_eq!(got, 100_000_000, "{pass}");
    }
    let peak = peak_rss_kib(backend.pid());
    assert!(
        peak < 64 * 1024,
        "recordings-backend peaked at {peak} KiB serving 100 MB"
    );
}
