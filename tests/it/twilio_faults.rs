//! Twilio misbehaving on a cache miss, under every profile: what the client sees, and why.

use crate::support::check;
use harness::{RecordingSpec, RequestStep, Scenario, Timeouts};
use mock_twilio::{Fault, FaultRule, MediaFormat};
use rstest::rstest;

fn on_media(fault: Fault) -> FaultRule {
    FaultRule::new(fault).path_regex(r"\.(mp3|wav)$")
}

#[rstest]
#[case::slow_headers("twilio-slow-headers", on_media(Fault::Delay { ms: 2_000, max_ms: None, seed: None }), 200)]
#[case::slow_body("twilio-slow-body", on_media(Fault::Throttle { bytes_per_sec: 25_000 }), 200)]
#[case::not_found("twilio-404", on_media(Fault::Status { status: 404, retry_after: None }), 404)]
#[case::rate_limited_once("twilio-429-then-success", on_media(Fault::Status { status: 429, retry_after: Some(2) }).times(1), 200)]
#[case::server_error("twilio-500", on_media(Fault::Status { status: 500, retry_after: None }), 503)]
#[case::reset("twilio-reset", on_media(Fault::Reset), 503)]
#[case::close_part_way("twilio-close-part-way", on_media(Fault::CloseAfter { bytes: 20_000 }), 200)]
#[case::hang("twilio-hang", on_media(Fault::Hang), 503)]
#[case::garbage("twilio-garbage", on_media(Fault::Garbage), 503)]
fn twilio_fault_on_a_cache_miss(#[case] name: &str, #[case] fault: FaultRule, #[case] status: u16) {
    let scenario = Scenario::new(name, RecordingSpec::new(MediaFormat::Mp3, 50_000))
        .describe(&format!(
            "Twilio fault {:?} on the first download of a 50 kB recording; then Twilio recovers",
            fault.fault
        ))
        .twilio_fault(fault)
        .request(
            RequestStep::get()
                .named("play (cache miss)")
                .expect_status(status),
        )
        .step(harness::Step::ClearFaults { at: None })
        .request(
            RequestStep::get()
                .named("play again after Twilio recovers")
                .expect_status(200),
        );
    check(scenario);
}

#[test]
fn twilio_slower_than_the_backend_budget_is_a_clean_json_error() {
    // The backend gives up on Twilio (3 s, scaled) well before nginx gives up on it.
    let scenario = Scenario::new("timeout-twilio-hangs", RecordingSpec::new(MediaFormat::Mp3, 10_000))
        .describe("Twilio never answers: the backend's budget (30 s scaled to 3 s) ends before nginx's read timeout (300 s / 60 s scaled to 30 s / 6 s), so the client gets the backend's 503 JSON, never a gateway error")
        .twilio_fault(on_media(Fault::Hang))
        .request(RequestStep::get().expect_status(503));
    check(scenario);
}

#[test]
fn a_backend_budget_above_nginx_read_timeout_gives_504() {
    // A backend that waits on Twilio longer than nginx waits on it: nginx gives up first.
    let scenario = Scenario::new("timeout-budget-above-read-timeout", RecordingSpec::new(MediaFormat::Mp3, 10_000))
        .describe("Twilio answers after 7 s and the backend waits up to 10 s for it: the legacy read timeout (60 s scaled to 6 s) fires first, a 504 (upstream timed out), not a 502; the fixed one (300 s scaled to 30 s) waits and plays")
        .timeouts(Timeouts { twilio_timeout_secs: Some(10.0), ..Timeouts::default() })
        .twilio_fault(on_media(Fault::Delay { ms: 7_000, max_ms: None, seed: None }).times(1))
        .request(RequestStep::get());
    check(scenario);
}
