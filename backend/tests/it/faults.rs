//! Twilio misbehaving on a cache miss: every fault becomes the documented status and JSON,
//! or a cut response the client can recognise, and nothing half-downloaded is ever cached.

use crate::support::{client, get_body, media_requests, stack, wait_media_requests, Backend};
use mock_twilio::{sid, Fault, FaultRule, MediaFormat, MockTwilio, Recording};
use serde_json::Value;

const SIZE: u64 = 50_000;

async fn setup() -> (MockTwilio, Recording, Backend) {
    let twilio = MockTwilio::start().await.unwrap();
    let rec = twilio.add_recording(Recording::new(
        sid("RE", 1),
        sid("CA", 1),
        MediaFormat::Mp3,
        SIZE,
    ));
    let backend = Backend::start_with(&twilio, &[("TWILIO_TIMEOUT_SECS", "1.5")]);
    (twilio, rec, backend)
}

fn on_media(fault: Fault) -> FaultRule {
    FaultRule::new(fault).path_regex(r"\.mp3$")
}

enum Want {
    /// Status and JSON error.
    Error(u16, &'static str),
    /// 200 with the whole body.
    Whole,
    /// 200 whose body is cut short (the client sees an error).
    Cut,
}

async fn check(fault: FaultRule, want: Want) {
    let (twilio, rec, backend) = setup().await;
    twilio.arm(fault.clone()).unwrap();
    let resp = client()
        .get(backend.download_url(&rec.call_sid))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    match want {
        Want::Error(code, message) => {
            assert_eq!(status, code, "{fault:?}");
            assert_eq!(resp.headers()["content-type"], "application/json");
            if code == 503 {
                assert!(resp.headers().get("retry-after").is_some());
            }
            let json: Value = resp.json().await.unwrap();
            assert_eq!(json["error"], message, "{fault:?}");
        }
        Want::Whole => {
            assert_eq!(status, 200, "{fault:?}");
            assert_eq!(
                resp.bytes().await.unwrap(),
                rec.media(MediaFormat::Mp3).to_vec()
            );
        }
        Want::Cut => {
            assert_eq!(status, 200, "{fault:?}");
            assert_eq!(resp.content_length(), Some(SIZE));
            assert!(
                resp.bytes().await.is_err(),
                "a cut download must not look complete"
            );
        }
    }
    if !matches!(want, Want::Whole) {
        let cause = if matches!(want, Want::Error(404, _)) {
            "Recording file not found"
        } else {
            "Failed to fetch recording"
        };
        backend.wait_log(cause).await;
        // Nothing half-cached...
        assert_eq!(backend.cached_files(), Vec::<String>::new(), "{fault:?}");
        // ...and once Twilio recovers, the next request downloads afresh and succeeds.
        if !matches!(want, Want::Error(404, _)) {
            twilio.clear_faults();
            let ok = client()
                .get(backend.download_url(&rec.call_sid))
                .send()
                .await
                .unwrap();
            assert_eq!(ok.status(), 200);
            assert_eq!(
                ok.bytes().await.unwrap(),
                rec.media(MediaFormat::Mp3).to_vec()
            );
            backend.wait_log("Recording saved - took").await;
            assert_eq!(backend.cached_files(), [format!("{}.mp3", rec.sid)]);
        }
    }
}

fn status(s: u16) -> Fault {
    Fault::Status {
        status: s,
        retry_after: None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twilio_404_is_recording_file_not_found() {
    check(
        on_media(status(404)),
        Want::Error(404, "Recording file not found"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twilio_500_for_good_is_a_503_with_json() {
    check(
        on_media(status(500)),
        Want::Error(503, "Failed to fetch recording"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twilio_503_for_good_is_a_503_with_json() {
    check(
        on_media(status(503)),
        Want::Error(503, "Failed to fetch recording"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twilio_reset_is_a_503_with_json() {
    check(
        on_media(Fault::Reset),
        Want::Error(503, "Failed to fetch recording"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twilio_hang_is_a_503_within_the_budget() {
    check(
        on_media(Fault::Hang),
        Want::Error(503, "Failed to fetch recording"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twilio_garbage_is_a_503_with_json() {
    check(
        on_media(Fault::Garbage),
        Want::Error(503, "Failed to fetch recording"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twilio_cut_part_way_cuts_the_response() {
    check(on_media(Fault::CloseAfter { bytes: 20_000 }), Want::Cut).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twilio_stalling_mid_body_cuts_the_response() {
    check(
        on_media(Fault::Dribble {
            chunk_bytes: 10_000,
            pause_ms: 4_000,
        }),
        Want::Cut,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twilio_429_once_is_retried_after_retry_after() {
    check(on_media(status(429)).times(1), Want::Whole).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twilio_500_twice_is_retried() {
    check(on_media(status(500)).times(2), Want::Whole).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_headers_and_slow_body_still_succeed() {
    check(
        on_media(Fault::Delay {
            ms: 300,
            max_ms: None,
            seed: None,
        }),
        Want::Whole,
    )
    .await;
    check(
        on_media(Fault::Throttle {
            bytes_per_sec: 100_000,
        }),
        Want::Whole,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_without_a_recording_is_404() {
    let (_twilio, _rec, backend) = setup().await;
    let resp = client()
        .get(backend.download_url(&sid("CA", 99)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let json: Value = resp.json().await.unwrap();
    assert_eq!(json["error"], "Recording URL not available");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_misses_cause_one_download() {
    let (twilio, rec, backend) = setup().await;
    // Slow enough that every request arrives while the download runs.
    twilio
        .arm(on_media(Fault::Throttle {
            bytes_per_sec: 100_000,
        }))
        .unwrap();
    // The call → recording look-up first, so that only the media download is concurrent.
    let head = client()
        .head(backend.download_url(&rec.call_sid))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    // The HEAD started a download; once it is stored, remove it so the next ones miss.
    backend.wait_log("Recording saved - took").await;
    for f in backend.cached_files() {
        std::fs::remove_file(backend.dir.join(f)).unwrap();
    }
    let before = media_requests(&twilio);
    let bodies = futures::future::join_all((0..10).map(|i| {
        let url = backend.download_url(&rec.call_sid);
        async move {
            let mut req = client().get(url);
            if i % 2 == 1 {
                req = req.header("range", "bytes=-500");
            }
            req.send().await.unwrap().bytes().await.unwrap()
        }
    }))
    .await;
    let media = rec.media(MediaFormat::Mp3);
    for (i, body) in bodies.iter().enumerate() {
        let want = if i % 2 == 1 {
            media.slice(SIZE - 500..SIZE)
        } else {
            media.to_vec()
        };
        assert!(body[..] == want[..], "request {i}");
    }
    assert_eq!(
        media_requests(&twilio) - before,
        1,
        "one download for ten requests"
    );
}

/// Two instances sharing one cache directory (the first's), in front of one Twilio.
async fn two_instances() -> (MockTwilio, Recording, Backend, Backend) {
    let (twilio, rec, first) = stack(SIZE).await;
    let dir = first.dir.display().to_string();
    let second = Backend::start_with(&twilio, &[("RECORDINGS_DIR", &dir)]);
    (twilio, rec, first, second)
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_sharing_a_cache_download_once_and_only_the_downloader_logs_a_miss() {
    let (twilio, rec, first, second) = two_instances().await;
    // 50 kB at 25 kB/s: 2 s of download, against a local request that comes once it is under way.
    twilio
        .arm(on_media(Fault::Throttle {
            bytes_per_sec: 25_000,
        }))
        .unwrap();
    let mut resp = client()
        .get(first.download_url(&rec.call_sid))
        .send()
        .await
        .unwrap();
    let mut body = resp.chunk().await.unwrap().expect("a first chunk").to_vec();
    let joined = get_body(second.download_url(&rec.call_sid)).await;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let media = rec.media(MediaFormat::Mp3).to_vec();
    assert!(body == media && joined[..] == media[..], "both whole");
    assert_eq!(media_requests(&twilio), 1, "one download");
    second.wait_log("Another process saved").await;
    let logs = second.logs.lock().unwrap().join("\n");
    assert!(
        logs.contains("Waiting for another process's download"),
        "{logs}"
    );
    for event in ["Cache miss", "Recording saved - took"] {
        assert!(
            !logs.contains(event),
            "no `{event}` from the waiting one:\n{logs}"
        );
    }
    first.wait_log("Recording saved - took").await;
    assert_eq!(
        first
            .logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("Cache miss"))
            .count(),
        1
    );
}

/// With `first` downloading `rec`: asks `second` for it, kills `first` once `second` waits for
/// its download, and checks `second` serves the recording whole.
async fn kill_while_the_other_waits(first: &mut Backend, second: &Backend, rec: &Recording) {
    let joined = tokio::spawn(get_body(second.download_url(&rec.call_sid)));
    second
        .wait_log("Waiting for another process's download")
        .await;
    first.kill();
    let body = joined.await.unwrap();
    assert!(
        body[..] == rec.media(MediaFormat::Mp3).to_vec()[..],
        "whole"
    );
}

/// The recording's lock goes with the process that holds it: when the instance downloading a
/// recording is killed (a deploy's SIGKILL, a crash), the one waiting for its download downloads
/// the recording itself and serves it whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_instance_downloads_itself_when_the_downloader_is_killed() {
    let (twilio, rec, mut first, second) = two_instances().await;
    // Twilio never answers the first instance's download ...
    twilio.arm(on_media(Fault::Hang).times(1)).unwrap();
    let hung = tokio::spawn(client().get(first.download_url(&rec.call_sid)).send());
    first.wait_log("Cache miss").await;
    // (its request has reached Twilio, which holds it)
    wait_media_requests(&twilio, 1).await;
    // ... while the second waits for it, until the first is killed.
    kill_while_the_other_waits(&mut first, &second, &rec).await;
    assert!(
        hung.await.unwrap().is_err(),
        "the killed one's request fails"
    );
    assert_eq!(
        media_requests(&twilio),
        2,
        "the hung one, then the second's own"
    );
    second.wait_log("Recording saved - took").await;
    let logs = second.logs.lock().unwrap().join("\n");
    assert_eq!(logs.matches("Cache miss").count(), 1, "{logs}");
    assert!(!logs.contains("Another process saved"), "{logs}");
}

/// The temp file of a download whose process was killed is removed by the instance that
/// downloads the recording next (the survivor, without a restart): it holds the lock, so no
/// process writes into that file any more. Fails if the file stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_downloads_temp_file_goes_when_another_instance_downloads() {
    let (twilio, rec, mut first, second) = two_instances().await;
    // The first instance's download trickles into its temp file ...
    twilio
        .arm(
            on_media(Fault::Throttle {
                bytes_per_sec: 2_000,
            })
            .times(1),
        )
        .unwrap();
    let url = first.download_url(&rec.call_sid);
    let trickling = tokio::spawn(async move { client().get(url).send().await?.bytes().await });
    let part = first.wait_part_file().await;
    // ... and it is killed while the second waits for it.
    kill_while_the_other_waits(&mut first, &second, &rec).await;
    assert!(
        trickling.await.unwrap().is_err(),
        "the killed one's answer is cut"
    );
    let removed = second
        .wait_log("Removed a killed download's temp file")
        .await;
    assert!(removed.contains(&part), "{removed}");
    second.wait_log("Recording saved - took").await;
    assert_eq!(
        first.cached_files(),
        ["RE00000000000000000000000000000001.mp3"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn time_to_first_byte_does_not_wait_for_the_whole_download() {
    let twilio = MockTwilio::start().await.unwrap();
    let rec = twilio.add_recording(Recording::new(
        sid("RE", 1),
        sid("CA", 1),
        MediaFormat::Mp3,
        1_000_000,
    ));
    let backend = Backend::start(&twilio);
    // 1 MB at 250 kB/s takes 4 s; the first bytes must arrive long before the last.
    twilio
        .arm(on_media(Fault::Throttle {
            bytes_per_sec: 250_000,
        }))
        .unwrap();
    let began = std::time::Instant::now();
    let mut resp = client()
        .get(backend.download_url(&rec.call_sid))
        .send()
        .await
        .unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    let ttfb = began.elapsed();
    let mut total = first.len();
    while let Some(c) = resp.chunk().await.unwrap() {
        total += c.len();
    }
    let all = began.elapsed();
    assert_eq!(total, 1_000_000);
    assert!(
        ttfb * 4 < all,
        "first byte after {ttfb:?}, last after {all:?}"
    );
    backend.wait_log("Recording saved - took").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_plays_look_the_call_up_once() {
    let (twilio, rec, backend) = setup().await;
    // A slow look-up, so that every request arrives while it runs.
    twilio
        .arm(
            FaultRule::new(Fault::Delay {
                ms: 300,
                max_ms: None,
                seed: None,
            })
            .path_regex(r"Recordings\.json$"),
        )
        .unwrap();
    let bodies = futures::future::join_all((0..10).map(|_| {
        let url = backend.download_url(&rec.call_sid);
        async move { get_body(url).await }
    }))
    .await;
    for body in bodies {
        assert!(body == rec.media(MediaFormat::Mp3).to_vec());
    }
    let lookups = twilio
        .journal()
        .iter()
        .filter(|e| e.path.ends_with("Recordings.json"))
        .count();
    assert_eq!(lookups, 1, "one look-up for ten first plays");
    assert_eq!(media_requests(&twilio), 1, "one download");
}
