//! `harness bench`: runs all six measurements (small, in CI) and fails loudly when a download
//! errors or a body is not byte-exact.

use crate::support::tools_present;

fn bench(args: &[&str]) -> (Option<i32>, String) {
    let out = crate::support::harness_command()
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn quick_bench_measures_all_six_and_writes_json() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let (code, out) = bench(&["--quick", "--json", json.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}");
    for want in [
        "stack cold start",
        "nginx alone",
        "suite rate",
        "via nginx → backend",
        "nginx static",
        "cache-miss TTFB",
        "clients ×",
        "concurrent misses",
        "peak RSS",
        "mock-twilio media",
        "throttle accuracy",
        "targets:",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["errors"].as_array().unwrap().len(), 0);
    assert!(report["machine"]["nginx"]
        .as_str()
        .unwrap()
        .starts_with("nginx/"));
    assert!(report["figures"].as_array().unwrap().len() >= 8);
}

#[test]
fn the_bench_fails_loudly_when_a_download_breaks() {
    if !tools_present() {
        return;
    }
    let (code, out) = bench(&["--quick", "--only", "3", "--sabotage", "download"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("ERROR") && out.contains("broke off"), "{out}");
}

#[test]
fn the_bench_fails_loudly_when_a_body_is_not_byte_exact() {
    if !tools_present() {
        return;
    }
    let (code, out) = bench(&["--quick", "--only", "3", "--sabotage", "body"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("ERROR") && out.contains("not byte-exact"),
        "{out}"
    );
}
