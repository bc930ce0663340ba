//! A recording downloads through nginx, the reference backend and mock-twilio, each a
//! testcontainers container, with a Range request answered as the browser's player needs.
//! Copy this file into your own crate's `tests/` (with the dev-dependencies of this example's
//! Cargo.toml, `harness` and `mock-twilio` pointing at this repository) and swap
//! `RecordingsBackend` for your backend's image.

use harness::testcontainers_images::{self, MockTwilio, Nginx, RecordingsBackend};
use mock_twilio::{MediaFormat, Recording};
use testcontainers::core::Host;
use testcontainers::runners::AsyncRunner;
use testcontainers::ImageExt;

const CALL: &str = "CA00000000000000000000000000000001";
const RECORDING: &str = "RE00000000000000000000000000000001";

#[tokio::test]
async fn a_recording_downloads_through_nginx_with_range() {
    if let Err(why) = harness::docker::engine().await {
        let required = std::env::var("HARNESS_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
        assert!(!required, "HARNESS_REQUIRE_TOOLS=1 and: {why}");
        eprintln!("skipped: {why}");
        return;
    }
    // The images (nginx 1.22, the backend, mock-twilio), built offline where missing: nothing
    // is pulled.
    testcontainers_images::build().await.unwrap();

    // A network of the test's own: testcontainers creates it, and removes it with the last
    // container.
    let network = format!("recordings-example-{}", std::process::id());
    let twilio = MockTwilio::default()
        .with_network(&network)
        .start()
        .await
        .unwrap();
    let admin = format!(
        "http://127.0.0.1:{}/__admin/recordings",
        twilio.get_host_port_ipv4(MockTwilio::PORT).await.unwrap()
    );
    let recording = Recording::new(RECORDING, CALL, MediaFormat::Mp3, 200_000);
    let http = reqwest::Client::new();
    let added = http.post(&admin).json(&recording).send().await.unwrap();
    assert_eq!(added.status(), 201, "{}", added.text().await.unwrap());

    let twilio_ip = twilio.get_bridge_ip_address().await.unwrap();
    let backend = RecordingsBackend::default()
        .with_twilio_api_base(format!("http://{twilio_ip}:{}", MockTwilio::PORT))
        .with_network(&network)
        .start()
        .await
        .unwrap();
    let backend_ip = backend.get_bridge_ip_address().await.unwrap();
    // docker/nginx.conf (the fixed profile) proxies to backend:8000.
    let nginx = Nginx::default()
        .with_host("backend", Host::Addr(backend_ip))
        .with_network(&network)
        .start()
        .await
        .unwrap();
    let port = nginx.get_host_port_ipv4(Nginx::PORT).await.unwrap();
    let url = format!("http://127.0.0.1:{port}/api/calls/{CALL}/download");

    let whole = http.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    let media = recording.media(MediaFormat::Mp3);
    assert_eq!(whole.bytes().await.unwrap(), media.slice(0..200_000));

    let part = http
        .get(&url)
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"].to_str().unwrap(),
        "bytes 1000-1999/200000"
    );
    assert_eq!(part.bytes().await.unwrap(), media.slice(1000..2000));
    // The containers are removed when they drop, here (also on panic).
}
