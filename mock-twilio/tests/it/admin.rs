//! The standalone binary and its admin API, driven exactly as a script would.

use crate::support::client;
use mock_twilio::sid;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `mock-twilio` binary, killed when dropped.
struct Server {
    child: Child,
    base: String,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TOKEN: &str = "s3cret-token";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

fn spawn() -> Server {
    let mut child = Command::new(mock_twilio_exe())
        .args([
            "--bind",
            "127.0.0.1:0",
            "--account-sid",
            ACCOUNT,
            "--auth-token",
            TOKEN,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut first).unwrap();
    let base = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line was {first:?}"))
        .to_string();
    assert!(base.starts_with("http://127.0.0.1:"));
    Server {
        child,
        base,
        _stdout: stdout,
    }
}

impl Server {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let resp = client()
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> Value {
        client()
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn media(&self, re: &str) -> String {
        format!(
            "{}/2010-04-01/Accounts/{ACCOUNT}/Recordings/{re}.mp3",
            self.base
        )
    }
}

#[tokio::test]
async fn admin_api_adds_recordings_arms_faults_and_reports_requests() {
    let server = spawn();
    let re = sid("RE", 3);
    let (status, _) = server
        .post(
            "/__admin/recordings",
            json!({"sid": re, "call_sid": sid("CA", 3), "format": "mp3", "size_bytes": 3000}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, armed) = server
        .post("/__admin/faults", json!({"match": {"path_regex": "\\.mp3$", "method": "GET"}, "fault": {"kind": "status", "status": 503}, "times": 1}))
        .await;
    assert_eq!(status, 201);
    assert!(armed["id"].as_u64().is_some());
    let get = || {
        client()
            .get(server.media(&re))
            .basic_auth(ACCOUNT, Some(TOKEN))
            .send()
    };
    assert_eq!(get().await.unwrap().status(), 503);
    let ok = get().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.bytes().await.unwrap().len(), 3000);

    let journal = server.get("/__admin/requests").await;
    let requests = journal["requests"].as_array().unwrap();
    assert_eq!(
        requests.len(),
        2,
        "admin calls are not journaled: {journal}"
    );
    assert_eq!(requests[0]["faults"], json!(["status"]));
    assert_eq!(requests[0]["status"], 503);
    assert_eq!(requests[1]["auth"], "valid");
    assert_eq!(
        journal["overlaps"],
        json!([]),
        "a retry after a 503 is not the recording asked twice at once"
    );

    server
        .post("/__admin/faults", json!({"fault": {"kind": "reset"}}))
        .await;
    assert_eq!(
        server.get("/__admin/faults").await["faults"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let resp = client()
        .delete(format!("{}/__admin/faults", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        server.get("/__admin/faults").await["faults"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(get().await.unwrap().status(), 200);

    let (status, _) = server.post("/__admin/reset", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        server.get("/__admin/requests").await["requests"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        get().await.unwrap().status(),
        404,
        "reset forgets recordings"
    );
}

#[tokio::test]
async fn bad_admin_input_is_a_400_naming_the_field() {
    let server = spawn();
    let cases = [
        (
            "/__admin/faults",
            json!({"fault": {"kind": "explode"}}),
            "fault.kind",
            "close_after",
        ),
        (
            "/__admin/faults",
            json!({"fault": {"kind": "throttle"}}),
            "fault",
            "bytes_per_sec",
        ),
        (
            "/__admin/faults",
            json!({"fault": {"kind": "throttle", "bytes_per_sec": 0}}),
            "fault.bytes_per_sec",
            "above 0",
        ),
        (
            "/__admin/faults",
            json!({"match": {"path_regex": "("}, "fault": {"kind": "hang"}}),
            "match.path_regex",
            "regex",
        ),
        (
            "/__admin/faults",
            json!({"match": {"paht": "x"}, "fault": {"kind": "hang"}}),
            "match.paht",
            "path_regex",
        ),
        (
            "/__admin/faults",
            json!({"fault": {"kind": "hang"}, "times": -1}),
            "times",
            "invalid value",
        ),
        (
            "/__admin/recordings",
            json!({"sid": sid("RE", 1), "call_sid": sid("CA", 1), "format": "ogg", "size_bytes": 1}),
            "format",
            "ogg",
        ),
        (
            "/__admin/recordings",
            json!({"sid": "RE1", "call_sid": sid("CA", 1), "size_bytes": 1}),
            "sid",
            "32 hex",
        ),
        (
            "/__admin/recordings",
            json!({"sid": sid("RE", 1), "call_sid": sid("CA", 1)}),
            "",
            "size_bytes",
        ),
    ];
    for (path, body, field, hint) in cases {
        let (status, json) = server.post(path, body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(json["field"], field, "{body} -> {json}");
        assert!(
            json["error"].as_str().unwrap().contains(hint),
            "{body} -> {json}"
        );
    }
    let resp = client()
        .post(format!("{}/__admin/faults", server.base))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}

#[test]
fn bad_cli_arguments_exit_non_zero_naming_the_flag() {
    let out = Command::new(mock_twilio_exe())
        .args(["--account-sid", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--account-sid"), "{err}");
    let out = Command::new(mock_twilio_exe())
        .args(["--bind", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bind"));
}

#[test]
fn the_auth_token_is_never_printed() {
    let out = Command::new(mock_twilio_exe())
        .arg("--help")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(mock_twilio::TEST_AUTH_TOKEN));
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_200_mb_recording_streams_with_bounded_memory() {
    let server = spawn();
    let re = sid("RE", 200);
    let size = 200_000_000u64;
    server
        .post(
            "/__admin/recordings",
            json!({"sid": re, "call_sid": sid("CA", 200), "size_bytes": size}),
        )
        .await;
    let mut resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
        .get(server.media(&re))
        .basic_auth(ACCOUNT, Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.content_length(), Some(size));
    let media = mock_twilio::Media::new(&re, mock_twilio::MediaFormat::Mp3, size);
    let (mut got, mut checked) = (0u64, 0);
    while let Some(chunk) = resp.chunk().await.unwrap() {
        // Spot-check a slice in every ~10 MB, byte for byte.
        if got / 10_000_000 >= checked {
            assert!(
                chunk[..] == media.slice(got..got + chunk.len() as u64)[..],
                "differs at {got}"
            );
            checked += 1;
        }
        got += chunk.len() as u64;
    }
    assert_eq!(got, size);
    let peak = peak_rss_kib(server.child.id());
    assert!(
        peak < 64 * 1024,
        "mock-twilio's peak RSS was {peak} KiB for a 200 MB download"
    );
}

/// The path of mock-twilio's binary: nextest's `NEXTEST_BIN_EXE_<name>` (right also
/// when the tests run from an archive extracted elsewhere), else the path cargo compiled in.
fn mock_twilio_exe() -> std::path::PathBuf {
    std::env::var_os("NEXTEST_BIN_EXE_mock-twilio")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_BIN_EXE_mock-twilio")))
}
