//! Every fault kind, observed by a plain client exactly as described.

use crate::support::{basic, client, raw_get, Raw};
use mock_twilio::{sid, Fault, FaultRule, IdleClose, MediaFormat, MockTwilio, Recording};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

struct Fixture {
    twilio: MockTwilio,
    rec: Recording,
    path: String,
}

async fn fixture(size: u64) -> Fixture {
    let twilio = MockTwilio::start().await.unwrap();
    let rec = twilio.add_recording(Recording::new(
        sid("RE", 1),
        sid("CA", 1),
        MediaFormat::Mp3,
        size,
    ));
    let path = format!(
        "/2010-04-01/Accounts/{}/Recordings/{}.mp3",
        twilio.account_sid(),
        rec.sid
    );
    Fixture { twilio, rec, path }
}

impl Fixture {
    async fn get(&self, deadline: Duration) -> Raw {
        raw_get(
            self.twilio.addr(),
            &self.path,
            Some(&basic(&self.twilio)),
            deadline,
        )
        .await
    }

    fn arm(&self, fault: Fault) {
        self.twilio.arm(FaultRule::new(fault)).unwrap();
    }
}

const LONG: Duration = Duration::from_secs(10);

#[tokio::test]
async fn delay_holds_back_the_headers() {
    let f = fixture(1000).await;
    f.arm(Fault::Delay {
        ms: 400,
        max_ms: None,
        seed: None,
    });
    let raw = f.get(LONG).await;
    assert!(
        raw.first_byte.unwrap() >= Duration::from_millis(400),
        "{:?}",
        raw.first_byte
    );
    assert!(raw.head().starts_with("HTTP/1.1 200"));
    assert_eq!(raw.body().len(), 1000);
    assert_eq!(f.twilio.journal()[0].faults, ["delay"]);
}

#[tokio::test]
async fn random_delay_stays_in_its_range() {
    let f = fixture(10).await;
    f.arm(Fault::Delay {
        ms: 100,
        max_ms: Some(300),
        seed: Some(42),
    });
    for _ in 0..3 {
        let raw = f.get(LONG).await;
        let t = raw.first_byte.unwrap();
        assert!(
            t >= Duration::from_millis(100) && t < Duration::from_millis(1300),
            "{t:?}"
        );
    }
}

#[tokio::test]
async fn throttle_limits_the_body_rate() {
    let f = fixture(60_000).await;
    f.arm(Fault::Throttle {
        bytes_per_sec: 100_000,
    });
    let raw = f.get(LONG).await;
    assert_eq!(raw.body(), f.rec.media(MediaFormat::Mp3).to_vec());
    // 60 kB at 100 kB/s: 0.6 s, give or take scheduling.
    assert!(
        raw.elapsed >= Duration::from_millis(550),
        "{:?}",
        raw.elapsed
    );
    assert!(
        raw.elapsed < Duration::from_millis(3000),
        "{:?}",
        raw.elapsed
    );
    // Headers come at once: the slowness is in the body.
    assert!(raw.first_byte.unwrap() < Duration::from_millis(300));
}

#[tokio::test]
async fn dribble_sends_chunks_with_pauses() {
    let f = fixture(1000).await;
    f.arm(Fault::Dribble {
        chunk_bytes: 250,
        pause_ms: 150,
    });
    let raw = f.get(LONG).await;
    assert_eq!(raw.body(), f.rec.media(MediaFormat::Mp3).to_vec());
    assert!(
        raw.elapsed >= Duration::from_millis(450),
        "{:?}",
        raw.elapsed
    );
}

#[tokio::test]
async fn status_faults_answer_with_twilios_error_json() {
    for (status, retry_after) in [(404, None), (429, Some("1")), (500, None), (503, Some("1"))] {
        let f = fixture(1000).await;
        f.arm(Fault::Status {
            status,
            retry_after: None,
        });
        let resp = client()
            .get(f.twilio.media_url(&f.rec.sid, MediaFormat::Mp3))
            .basic_auth(f.twilio.account_sid(), Some(f.twilio.auth_token()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status);
        assert_eq!(
            resp.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            retry_after,
            "{status}"
        );
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(json["status"], status);
        assert_eq!(json["code"], 20000 + u32::from(status));
    }
}

#[tokio::test]
async fn status_fault_takes_an_explicit_retry_after() {
    let f = fixture(10).await;
    f.arm(Fault::Status {
        status: 429,
        retry_after: Some(7),
    });
    let raw = f.get(LONG).await;
    assert_eq!(raw.header("retry-after").as_deref(), Some("7"));
}

#[tokio::test]
async fn reset_sends_rst_before_any_response() {
    let f = fixture(1000).await;
    f.arm(Fault::Reset);
    let raw = f.get(LONG).await;
    assert!(raw.bytes.is_empty());
    assert_eq!(raw.error, Some(ErrorKind::ConnectionReset));
}

#[tokio::test]
async fn close_after_cuts_the_body_below_its_content_length() {
    let f = fixture(100_000).await;
    f.arm(Fault::CloseAfter { bytes: 1234 });
    let raw = f.get(LONG).await;
    assert_eq!(raw.header("content-length").as_deref(), Some("100000"));
    assert_eq!(
        raw.body(),
        &f.rec.media(MediaFormat::Mp3).slice(0..1234)[..]
    );
    assert_eq!(raw.error, None, "a clean close (FIN), not a reset");
    assert!(!raw.timed_out);
    // reqwest calls it an error.
    let f = fixture(100_000).await;
    f.arm(Fault::CloseAfter { bytes: 10 });
    let body = client()
        .get(f.twilio.media_url(&f.rec.sid, MediaFormat::Mp3))
        .basic_auth(f.twilio.account_sid(), Some(f.twilio.auth_token()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await;
    assert!(body.is_err());
}

#[tokio::test]
async fn hang_never_answers() {
    let f = fixture(1000).await;
    f.arm(Fault::Hang);
    let raw = f.get(Duration::from_millis(700)).await;
    assert!(raw.timed_out);
    assert!(raw.bytes.is_empty());
    assert_eq!(f.twilio.journal()[0].status, None);
}

#[tokio::test]
async fn garbage_is_not_http() {
    let f = fixture(1000).await;
    f.arm(Fault::Garbage);
    let raw = f.get(LONG).await;
    assert!(!raw.bytes.is_empty());
    assert!(!raw.bytes.starts_with(b"HTTP/"));
    assert_eq!(raw.error, None);
    let err = client()
        .get(f.twilio.media_url(&f.rec.sid, MediaFormat::Mp3))
        .basic_auth(f.twilio.account_sid(), Some(f.twilio.auth_token()))
        .send()
        .await;
    assert!(err.is_err());
}

#[tokio::test]
async fn times_lets_a_retry_succeed() {
    let f = fixture(1000).await;
    f.twilio
        .arm(
            FaultRule::new(Fault::Status {
                status: 429,
                retry_after: None,
            })
            .times(2),
        )
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let raw = f.get(LONG).await;
        seen.push(raw.head().lines().next().unwrap().to_string());
    }
    assert_eq!(
        seen,
        [
            "HTTP/1.1 429 Too Many Requests",
            "HTTP/1.1 429 Too Many Requests",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK"
        ]
    );
}

#[tokio::test]
async fn faults_are_scoped_by_recording_and_method() {
    let f = fixture(1000).await;
    let other = f.twilio.add_recording(Recording::new(
        sid("RE", 2),
        sid("CA", 2),
        MediaFormat::Mp3,
        500,
    ));
    f.twilio
        .arm(
            FaultRule::new(Fault::Status {
                status: 500,
                retry_after: None,
            })
            .recording(&f.rec.sid)
            .method("GET"),
        )
        .unwrap();
    let get = |url: String| {
        client()
            .get(url)
            .basic_auth(f.twilio.account_sid(), Some(f.twilio.auth_token()))
            .send()
    };
    let head = |url: String| {
        client()
            .head(url)
            .basic_auth(f.twilio.account_sid(), Some(f.twilio.auth_token()))
            .send()
    };
    assert_eq!(
        get(f.twilio.media_url(&f.rec.sid, MediaFormat::Mp3))
            .await
            .unwrap()
            .status(),
        500
    );
    assert_eq!(
        head(f.twilio.media_url(&f.rec.sid, MediaFormat::Mp3))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        get(f.twilio.media_url(&other.sid, MediaFormat::Mp3))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// An HTTP server that closes idle keep-alive connections after `idle`.
async fn idle_closing_upstream(idle: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"ok"),
                )))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(idle)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// Sends one request on a kept-alive connection; the status line, or None if it was closed unanswered.
async fn exchange(stream: &mut tokio::net::TcpStream, method: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("{method} /x HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        // The test upstream's body is "ok".
        if got.ends_with(b"\r\n\r\nok") {
            return Some(
                String::from_utf8_lossy(&got)
                    .lines()
                    .next()
                    .unwrap()
                    .to_string(),
            );
        }
    }
}

/// A proxy to `upstream`, and a connection to it.
async fn proxy_to(upstream: SocketAddr) -> (mock_twilio::FaultProxy, tokio::net::TcpStream) {
    let proxy = mock_twilio::FaultProxy::start(
        "127.0.0.1:0".parse().unwrap(),
        mock_twilio::ProxyConfig::new(upstream),
    )
    .await
    .unwrap();
    let c = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    (proxy, c)
}

/// [`proxy_to`], with a keep-alive race armed for POSTs.
async fn race_proxy(upstream: SocketAddr) -> (mock_twilio::FaultProxy, tokio::net::TcpStream) {
    let (proxy, c) = proxy_to(upstream).await;
    proxy
        .faults()
        .arm(FaultRule::new(Fault::KeepaliveRace).method("POST"))
        .unwrap();
    (proxy, c)
}

/// The faults each request through `proxy` met, in order.
fn faults(proxy: &mock_twilio::FaultProxy) -> Vec<Vec<String>> {
    proxy
        .journal()
        .entries()
        .into_iter()
        .map(|e| e.faults)
        .collect()
}

/// What the proxy's journal says of the latest request's connection after waiting at most
/// `deadline` for its idle close.
async fn idle_close(proxy: &mock_twilio::FaultProxy, deadline: Duration) -> IdleClose {
    proxy.journal().wait_idle_close_of_latest(deadline).await
}

/// Waits until the proxy has held the upstream's idle close of a connection from the client.
async fn held(proxy: &mock_twilio::FaultProxy) {
    assert_eq!(
        idle_close(proxy, Duration::from_secs(10)).await,
        IdleClose::Held,
        "the upstream's idle close is held from the client"
    );
}

#[tokio::test]
async fn keepalive_race_fires_only_when_the_upstream_closed_the_idle_connection_first() {
    let upstream = idle_closing_upstream(Duration::from_millis(150)).await;
    let ok = Some("HTTP/1.1 200 OK");

    // Reused at once, while the upstream still holds the connection: no race.
    let (proxy, mut c) = race_proxy(upstream).await;
    assert_eq!(exchange(&mut c, "GET").await.as_deref(), ok);
    assert_eq!(exchange(&mut c, "POST").await.as_deref(), ok);
    assert!(faults(&proxy).iter().all(Vec::is_empty));

    // Reused once the upstream has closed it (held from the client): the POST meets the race.
    let (proxy, mut c) = race_proxy(upstream).await;
    assert_eq!(exchange(&mut c, "GET").await.as_deref(), ok);
    held(&proxy).await;
    assert_eq!(exchange(&mut c, "POST").await, None, "closed unanswered");
    assert_eq!(faults(&proxy), [vec![], vec!["keepalive_race".to_string()]]);

    // A request the rule does not match goes on over a fresh upstream connection.
    let (proxy, mut c) = race_proxy(upstream).await;
    assert_eq!(exchange(&mut c, "GET").await.as_deref(), ok);
    held(&proxy).await;
    assert_eq!(exchange(&mut c, "GET").await.as_deref(), ok);
    assert!(faults(&proxy).iter().all(Vec::is_empty));
}

#[tokio::test]
async fn the_wait_is_for_the_close_of_the_connection_that_carried_the_latest_request() {
    let upstream = idle_closing_upstream(Duration::from_millis(1000)).await;
    let ok = Some("HTTP/1.1 200 OK");
    let (proxy, mut earlier) = race_proxy(upstream).await;
    assert_eq!(exchange(&mut earlier, "GET").await.as_deref(), ok);
    held(&proxy).await;
    // A request on another connection: the earlier connection's held close is not its close.
    let mut latest = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(exchange(&mut latest, "GET").await.as_deref(), ok);
    assert_eq!(
        idle_close(&proxy, Duration::ZERO).await,
        IdleClose::StillOpen,
        "only the earlier connection's close is held yet"
    );
    held(&proxy).await;
    assert_eq!(proxy.journal().held_closes(), 2);
    assert_eq!(exchange(&mut latest, "POST").await, None, "the race");
}

#[tokio::test]
async fn a_connection_that_ends_with_its_request_leaves_nothing_idle() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = idle_closing_upstream(Duration::from_millis(100)).await;
    let (proxy, mut c) = race_proxy(upstream).await;
    let req = "POST /x HTTP/1.1\r\nhost: t\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
    c.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert_eq!(
        idle_close(&proxy, Duration::from_millis(300)).await,
        IdleClose::AskedToClose
    );
    // A connection the proxy ends itself (a reset fault) left nothing idle either.
    let (proxy, mut c) = race_proxy(upstream).await;
    proxy
        .faults()
        .arm(FaultRule::new(Fault::Reset).method("GET"))
        .unwrap();
    assert_eq!(exchange(&mut c, "GET").await, None, "reset");
    assert_eq!(
        idle_close(&proxy, Duration::from_millis(300)).await,
        IdleClose::Ended
    );
    // The controls: the same request on a connection kept alive is held when the upstream
    // closes it, and is still open where the upstream keeps it.
    let (proxy, mut c) = race_proxy(upstream).await;
    assert_eq!(
        exchange(&mut c, "POST").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    held(&proxy).await;
    let keeping = idle_closing_upstream(Duration::from_secs(60)).await;
    let (proxy, mut c) = race_proxy(keeping).await;
    assert_eq!(
        exchange(&mut c, "POST").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    assert_eq!(
        idle_close(&proxy, Duration::from_millis(300)).await,
        IdleClose::StillOpen
    );
}

#[tokio::test]
async fn without_a_race_armed_an_idle_close_reaches_the_client_at_once() {
    let upstream = idle_closing_upstream(Duration::from_millis(100)).await;
    let (proxy, mut c) = proxy_to(upstream).await;
    assert_eq!(
        exchange(&mut c, "GET").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    // The close is passed on (the client reads its end), and nothing was held.
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("the close arrives")
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(proxy.journal().held_closes(), 0);
}

#[tokio::test]
async fn large_media_streams_at_once() {
    // 50 MB: the first byte comes long before the last, and the whole is byte-exact.
    let f = fixture(50_000_000).await;
    let resp = client()
        .get(f.twilio.media_url(&f.rec.sid, MediaFormat::Mp3))
        .basic_auth(f.twilio.account_sid(), Some(f.twilio.auth_token()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.content_length(), Some(50_000_000));
    let media = f.rec.media(MediaFormat::Mp3);
    let mut pos = 0u64;
    let mut resp = resp;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        assert!(
            chunk[..] == media.slice(pos..pos + chunk.len() as u64)[..],
            "differs at {pos}"
        );
        pos += chunk.len() as u64;
    }
    assert_eq!(pos, 50_000_000);
}

/// Polls `done` until it holds, failing after `deadline`.
async fn eventually(deadline: Duration, what: &str, done: impl Fn() -> bool) {
    let until = std::time::Instant::now() + deadline;
    while !done() {
        assert!(
            std::time::Instant::now() < until,
            "not within {deadline:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_recording_asked_for_while_its_download_is_under_way_is_an_overlap() {
    let f = fixture(200_000).await;
    // The first download takes about 2 s; the second comes while it is under way.
    f.twilio
        .arm(
            FaultRule::new(Fault::Throttle {
                bytes_per_sec: 100_000,
            })
            .times(1),
        )
        .unwrap();
    let url = format!("{}{}", f.twilio.uri(), f.path);
    let auth = (
        f.twilio.account_sid().to_string(),
        f.twilio.auth_token().to_string(),
    );
    let first = client()
        .get(&url)
        .basic_auth(&auth.0, Some(&auth.1))
        .send()
        .await
        .unwrap();
    assert_eq!(f.twilio.open_requests().len(), 1, "the first is under way");
    let second = f.get(LONG).await;
    assert_eq!(second.body().len(), 200_000);
    assert_eq!(first.bytes().await.unwrap().len(), 200_000);
    eventually(LONG, "both end", || f.twilio.open_requests().is_empty()).await;
    // After both: a third download of it overlaps nothing.
    assert_eq!(f.get(LONG).await.body().len(), 200_000);
    let overlaps = f.twilio.overlaps();
    assert_eq!(overlaps.len(), 1, "{overlaps:?}");
    assert_eq!((overlaps[0].first, overlaps[0].second), (1, 2));
    assert_eq!(overlaps[0].path, f.path);
}

#[tokio::test]
async fn a_retry_after_an_error_answer_is_not_an_overlap_and_a_hang_is_open_until_given_up() {
    let f = fixture(1000).await;
    f.twilio
        .arm(
            FaultRule::new(Fault::Status {
                status: 503,
                retry_after: Some(0),
            })
            .times(5),
        )
        .unwrap();
    // Five 503s, each asked again at once after it.
    for _ in 0..5 {
        assert!(f.get(LONG).await.head().starts_with("HTTP/1.1 503"));
    }
    assert!(f.twilio.open_requests().is_empty());
    f.arm(Fault::Hang);
    let addr = f.twilio.addr();
    let (path, auth) = (f.path.clone(), basic(&f.twilio));
    let waiting =
        tokio::spawn(
            async move { raw_get(addr, &path, Some(&auth), Duration::from_millis(500)).await },
        );
    eventually(LONG, "the hang is open while its client waits", || {
        f.twilio.open_requests().len() == 1
    })
    .await;
    assert!(waiting.await.unwrap().timed_out);
    eventually(LONG, "the hang ends when its client gives up", || {
        f.twilio.open_requests().is_empty()
    })
    .await;
    assert_eq!(f.twilio.journal().len(), 6);
    assert!(f.twilio.overlaps().is_empty(), "{:?}", f.twilio.overlaps());
}
