//! Gateway failures between nginx and the backend, under every profile: the legacy 502s,
//! named by nginx's own error log, beside the fixed profile's answers.

use crate::support::check;
use harness::{RecordingSpec, RequestStep, Scenario, Step, Timeouts};
use mock_twilio::{Fault, FaultRule, MediaFormat, Signing};

fn cached(size: u64) -> RecordingSpec {
    RecordingSpec::new(MediaFormat::Mp3, size).cached(true)
}

#[test]
fn backend_down_is_connect_refused() {
    check(
        Scenario::new("gateway-backend-down", cached(10_000))
            .describe("The backend is down: nginx cannot connect (502, connect() failed (111)); once it is back, Play works")
            .step(Step::StopBackend)
            .request(RequestStep::get().named("play while the backend is down").expect_status(502))
            .step(Step::StartBackend)
            .request(RequestStep::get().named("play after it is back").expect_status(200)),
    );
}

#[test]
fn an_exception_that_drops_the_connection() {
    check(
        Scenario::new("gateway-backend-drops-connection", cached(10_000))
            .describe("The backend resets the connection before answering (an unhandled exception), on every attempt: 502, reset by peer")
            .hop_fault(FaultRule::new(Fault::Reset).path_regex("/api/"))
            .request(RequestStep::get().expect_status(502)),
    );
}

#[test]
fn a_crash_mid_response_cuts_the_body() {
    check(
        Scenario::new("gateway-backend-crash-mid-body", cached(200_000))
            .describe("The backend dies after 10 kB of a 200 kB answer: the status (200) is already sent, so the client gets a truncated 200, and nginx logs upstream prematurely closed while reading upstream. Under hardened the backend answers a cached recording with a short X-Accel-Redirect and nginx sends the file, so nothing is cut")
            .hop_fault(FaultRule::new(Fault::CloseAfter { bytes: 10_000 }).times(1))
            .request(RequestStep::get()),
    );
}

#[test]
fn a_backend_slower_than_the_read_timeout() {
    check(
        Scenario::new("gateway-backend-slower-than-read-timeout", cached(10_000))
            .describe("The backend takes 7 s to answer: beyond the legacy read timeout (60 s scaled to 6 s) nginx answers 504, within the fixed one (300 s scaled to 30 s) it plays")
            .hop_fault(FaultRule::new(Fault::Delay { ms: 7_000, max_ms: None, seed: None }).path_regex("/api/").times(1))
            .request(RequestStep::get()),
    );
}

#[test]
fn a_backend_that_answers_garbage() {
    check(
        Scenario::new("gateway-backend-garbage", cached(10_000))
            .describe("The backend answers bytes that are not HTTP: nginx 1.22 passes them on as HTTP/0.9 and logs an invalid header")
            .hop_fault(FaultRule::new(Fault::Garbage).path_regex("/api/").times(1))
            .request(RequestStep::get()),
    );
}

fn race() -> Timeouts {
    // Keep-alive times × 0.4: backend 30 s (fixed) or 2 s (legacy), nginx's upstream 24 s.
    Timeouts {
        keepalive_scale: 0.4,
        ..Timeouts::default()
    }
}

/// Nothing is sent until the backend closes, idle, the connection the step before used (the hop
/// holds that close from nginx), or 4 s pass: legacy's close (2 s) is waited for, not guessed.
fn until_idle_closed() -> Step {
    Step::WaitIdleClose { timeout_ms: 4_000 }
}

#[test]
fn keepalive_race_on_post() {
    check(
        Scenario::new("keepalive-race-post", cached(10_000))
            .describe("Two recording-status webhooks (POST), the second once the backend has closed the first one's idle connection (or after 4 s), with the keep-alive race made certain at the hop: the legacy backend (keep-alive 2 s, scaled) closed the idle connection nginx reuses, and a POST is not retried: 502. The fixed backend (30 s) still holds it")
            .timeouts(race())
            .hop_fault(FaultRule::new(Fault::KeepaliveRace))
            .step(Step::Webhook { recording: 0, signing: Signing::Valid, pause_ms: 0, expect: Default::default() })
            .step(until_idle_closed())
            .step(Step::Webhook { recording: 0, signing: Signing::Valid, pause_ms: 0, expect: Default::default() }),
    );
}

#[test]
fn keepalive_race_on_get() {
    check(
        Scenario::new("keepalive-race-get", cached(10_000))
            .describe("Two downloads (GET), the second once the backend has closed the first one's idle connection (or after 4 s), with the keep-alive race made certain at the hop. Legacy: the first reuses the connection the readiness check left on /healthz (the pool belongs to the upstream block, not to a location), and its Connection: close (the WebSocket headers) closes it after the answer, so the second finds nothing idle to race on; fixed: the backend outlives nginx's idle timeout, so the race does not happen either")
            .timeouts(race())
            .hop_fault(FaultRule::new(Fault::KeepaliveRace))
            .request(RequestStep::get().named("first play"))
            .step(until_idle_closed())
            .request(RequestStep::get().named("second play, once idle")),
    );
}

#[test]
fn keepalive_race_on_a_keepalive_get_is_retried() {
    check(
        Scenario::new("keepalive-race-get-retried", cached(10_000))
            .describe("A GET on a location that keeps upstream connections alive (/healthz in every profile), once the backend has closed the last one's connection (or after 4 s): under legacy the backend had closed it and nginx met the race, but a GET is retried on a new connection, so the client sees 200 and only the error log shows it")
            .timeouts(race())
            .hop_fault(FaultRule::new(Fault::KeepaliveRace))
            .request(RequestStep::get().named("health").with_path("/healthz"))
            .step(until_idle_closed())
            .request(RequestStep::get().named("health, once idle").with_path("/healthz").expect_status(200)),
    );
}

#[test]
fn websocket_headers_switch_upstream_keepalive_off() {
    let mut scenario = Scenario::new("websocket-headers-on-api", cached(10_000))
        .describe("Three plays in a row. The fixed /api/ reuses one upstream connection; the legacy one reuses the connection the readiness check left, then its Connection: close (from the WebSocket map) closes each connection after its answer, so every later play opens a new one. A cost, not a 502");
    for i in 0..3 {
        scenario = scenario.request(
            RequestStep::get()
                .named(&format!("play {}", i + 1))
                .expect_status(200),
        );
    }
    check(scenario);
}

#[test]
fn a_wait_for_an_idle_close_that_never_comes_is_noted() {
    if !crate::support::tools_present() {
        return;
    }
    // Keep-alive times × 0.4: legacy's backend closes the webhook's idle connection after 2 s,
    // within the 4 s wait; fixed's keeps it 30 s, so its wait runs out. (A webhook: legacy's
    // /api/ keeps no upstream connection idle.)
    let mut scenario = Scenario::new("wait-idle-close-note", cached(10_000))
        .timeouts(race())
        .hop_fault(FaultRule::new(Fault::KeepaliveRace))
        .step(Step::Webhook {
            recording: 0,
            signing: Signing::Valid,
            pause_ms: 0,
            expect: Default::default(),
        })
        .step(Step::WaitIdleClose { timeout_ms: 4000 });
    scenario.profiles = vec![harness::Profile::Fixed, harness::Profile::Legacy];
    let rt = crate::support::rt();
    let run = rt
        .block_on(harness::run(&scenario, crate::support::runtime()))
        .unwrap();
    let notes = |p: harness::Profile| {
        let r = run.runs.iter().find(|r| r.profile == p).unwrap();
        r.notes.clone()
    };
    assert_eq!(
        notes(harness::Profile::Fixed),
        ["step 1: wait_idle_close: the backend did not close the last request's connection within 4000 ms; the next step went on it"]
    );
    assert_eq!(notes(harness::Profile::Legacy), Vec::<String>::new());
}
