//! The mechanisms `harness diagnose` judges. Each builds an ordinary [`Scenario`] whose timing
//! comes from what was measured, runs it on a stack of its own through the runner, and turns
//! the Outcomes into a verdict with its evidence and the fix in the config's own terms.

use super::{BackendFacts, Mechanism, Verdict};
use crate::error::HarnessError;
use crate::gateway::{GatewayCause, Stage};
use crate::nginx_conf::{LocationFacts, NginxFacts};
use crate::outcome::{redact_error_line, AnsweredBy, Outcome};
use crate::range_rfc::{self, Allowed};
use crate::runner::{run_on_stack, run_spec, ProfileRun};
use crate::scenario::{RecordingSpec, RequestStep, Scenario, Step};
use crate::spec::{Profile, StackSpec};
use crate::stack::Stack;
use mock_twilio::{Fault, FaultRule, MediaFormat, Recording, Signing};
use serde_json::json;

/// What every mechanism derives its timing from.
pub struct Context {
    /// The stack every run uses.
    pub spec: StackSpec,
    /// What nginx applies.
    pub nginx: NginxFacts,
    /// What the backend does.
    pub backend: BackendFacts,
}

/// The method of a keep-alive race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Twilio's webhook: never retried by nginx.
    Post,
    /// A download: retried by nginx on a new connection.
    Get,
}

/// The first gateway error's line, as snapshots show lines (no time, pid or port).
fn error_line(o: &Outcome) -> Option<String> {
    o.gateway_errors.first().map(|e| redact_error_line(&e.raw))
}

/// nginx met a connection the backend had closed: closed or reset before the answer.
fn met_a_closed_connection(o: &Outcome) -> bool {
    o.gateway_errors.iter().any(|e| {
        matches!(
            e.cause,
            GatewayCause::PrematureClose | GatewayCause::ResetByPeer | GatewayCause::SendFailed
        ) && matches!(e.stage, Stage::ReadingHeader | Stage::SendingRequest)
    })
}

/// How long the race's run waits, idle, for the backend to close the connection: just inside
/// nginx's keepalive_timeout (past it nginx closes the connection itself, and nothing races).
/// The wait ends as soon as the hop holds the backend's close; it lasts that long where the
/// backend outlives nginx (the run that would show a race, were there one). Where nginx pools
/// nothing for the location (`pooled` false: it closes each connection after its request, so
/// no close can be held), it is the measured close plus 3 s, as long as showing that takes.
pub fn race_wait(keepalive_timeout: f64, pooled: bool, idle: Option<f64>) -> f64 {
    let inside = (keepalive_timeout - 1.0).max(keepalive_timeout * 0.9);
    match idle {
        Some(i) if !pooled => (i + 3.0).min(inside),
        _ => inside,
    }
}

fn outcome(run: &ProfileRun, i: usize) -> Result<&Outcome, HarnessError> {
    run.outcomes
        .get(i)
        .ok_or_else(|| HarnessError::step(i, "the diagnosis scenario observed no outcome here"))
}

/// The keep-alive race for `method`, with the measured timing and the hop's `keepalive_race`.
pub async fn keepalive_race(ctx: &Context, method: Method) -> Result<Mechanism, HarnessError> {
    let (id, location) = match method {
        Method::Post => ("keepalive_race_post", &ctx.nginx.webhook),
        Method::Get => ("keepalive_race_get", &ctx.nginx.download),
    };
    let kat = ctx.nginx.keepalive_timeout_secs;
    let pooled = location.as_ref().is_some_and(|l| l.pooled);
    let wait = race_wait(kat, pooled, ctx.backend.idle_close_secs);
    let until_closed = Step::WaitIdleClose {
        timeout_ms: (wait * 1000.0).round() as u64,
    };
    let cached = method == Method::Get;
    let mut scenario = Scenario::new(
        id,
        RecordingSpec::new(MediaFormat::Mp3, 10_000).cached(cached),
    )
    .hop_fault(FaultRule::new(Fault::KeepaliveRace));
    scenario = match method {
        Method::Post => scenario
            .step(webhook(0))
            .step(until_closed)
            .step(webhook(0)),
        Method::Get => scenario
            .request(RequestStep::get())
            .step(until_closed)
            .request(RequestStep::get()),
    };
    let run = run_spec(&scenario, ctx.spec.clone()).await?;
    let second = outcome(&run, 1)?;
    let raced = met_a_closed_connection(second);
    let evidence = json!({
        "method": if method == Method::Post { "POST" } else { "GET" },
        "location": location.as_ref().map(|l| l.location.clone()),
        "status": second.status,
        "upstream_status": second.access.as_ref().map(|a| a.upstream_status.clone()),
        "error_log": error_line(second),
        "idle_wait_max_secs": wait,
        // Whether the backend's idle close came within that wait (else the second request
        // went on a connection the backend still held open); null where nginx pools nothing
        // for the location, so that no connection was left idle to close.
        "idle_close_held": pooled.then_some(run.notes.is_empty()),
        "backend_idle_close_secs": ctx.backend.idle_close_secs,
        "nginx_keepalive_timeout_secs": kat,
        "upstream_connections_opened": second.upstream_connections_opened,
    });
    let verdict = match (raced, location) {
        (true, _) => Verdict::Exposed,
        (false, Some(_)) => Verdict::Safe,
        (false, None) => Verdict::NotApplicable,
    };
    let fix = if raced {
        race_fix(ctx, method)
    } else {
        String::new()
    };
    let summary = race_summary(ctx, method, second, wait, (verdict, pooled), location);
    Ok(Mechanism {
        id,
        verdict,
        summary,
        evidence,
        fix,
    })
}

fn race_summary(
    ctx: &Context,
    method: Method,
    o: &Outcome,
    wait: f64,
    (verdict, pooled): (Verdict, bool),
    location: &Option<LocationFacts>,
) -> String {
    let m = if method == Method::Post {
        "POST"
    } else {
        "GET"
    };
    let kat = ctx.nginx.keepalive_timeout_secs;
    let idle = ctx
        .backend
        .idle_close_secs
        .map(|i| format!("{i:.1} s"))
        .unwrap_or_else(|| format!("more than {} s", kat + 3.0));
    let upstream = o
        .access
        .as_ref()
        .map(|a| a.upstream_status.clone())
        .unwrap_or_default();
    match verdict {
        Verdict::Exposed => format!(
            "{m} sent once the backend had closed the idle connection: {} (upstream {upstream}), nginx met a connection the backend had closed; the backend closes idle connections after {idle}, nginx keeps them {kat} s",
            o.summary()
        ),
        Verdict::Safe if !pooled => format!(
            "{m} after up to {wait:.1} s idle: {}; nginx opens a connection per request at {} (HTTP/{}, Connection {}): nothing idle to race on",
            o.summary(),
            location_name(location),
            location.as_ref().map(|l| l.proxy_http_version.as_str()).unwrap_or("?"),
            location.as_ref().and_then(|l| l.connection_header.clone()).unwrap_or_else(|| "(none)".into())
        ),
        Verdict::Safe => format!(
            "{m} after waiting up to {wait:.1} s for the backend to close the idle connection: {}, no race; the backend closes idle connections after {idle}, nginx keeps them {kat} s",
            o.summary()
        ),
        Verdict::NotApplicable => format!("no location of the config serves this {m}"),
    }
}

fn webhook(pause_ms: u64) -> Step {
    Step::Webhook {
        recording: 0,
        signing: Signing::Valid,
        pause_ms,
        expect: Default::default(),
    }
}

fn race_fix(ctx: &Context, method: Method) -> String {
    let kat = ctx.nginx.keepalive_timeout_secs;
    let upstream = ctx
        .nginx
        .download
        .as_ref()
        .and_then(|l| l.upstream.clone())
        .unwrap_or_else(|| "…".into());
    let idle = ctx
        .backend
        .idle_close_secs
        .map(|i| format!("{i:.1} s"))
        .unwrap_or_else(|| "its idle timeout".into());
    let above = (kat + 15.0).ceil();
    let who = match method {
        Method::Post => "a POST is never retried, so Twilio's status webhook gets the 502",
        Method::Get => "nginx retries a GET on a new connection, so the client gets its answer and only error.log shows the race",
    };
    format!(
        "The backend closes idle connections after {idle}, before nginx's keepalive_timeout ({kat} s) for upstream {upstream}: nginx reuses connections the backend has closed ({who}). Keep the backend's idle timeout above {kat} s (uvicorn --timeout-keep-alive {above}, gunicorn --keep-alive {above}, Node server.keepAliveTimeout = {above}000), or set `keepalive_timeout` in `upstream {upstream}` below the backend's."
    )
}

/// A download while Twilio never answers: does the backend give up (and answer) before nginx's
/// `proxy_read_timeout`, or does nginx answer 504?
pub async fn upstream_read_timeout(ctx: &Context) -> Result<Mechanism, HarnessError> {
    let scenario = Scenario::new(
        "upstream_read_timeout",
        RecordingSpec::new(MediaFormat::Mp3, 10_000),
    )
    .twilio_fault(
        FaultRule::new(Fault::Hang)
            .path_regex(r"\.(mp3|wav)$")
            .times(1),
    )
    .request(RequestStep::get());
    let run = run_spec(&scenario, ctx.spec.clone()).await?;
    let o = outcome(&run, 0)?;
    let read = ctx
        .nginx
        .download
        .as_ref()
        .map(|l| l.read_timeout_secs)
        .unwrap_or(60.0);
    let timed_out = o.status == Some(504) && o.answered_by == AnsweredBy::Nginx;
    let evidence = json!({
        "status": o.status,
        "answered_by": o.answered_by,
        "answered_after_secs": o.timing.map(|t| t.total_us as f64 / 1e6),
        "proxy_read_timeout_secs": read,
        "location": ctx.nginx.download.as_ref().map(|l| l.location.clone()),
        "error_log": error_line(o),
    });
    let fix = if timed_out {
        format!("While Twilio does not answer, the backend waits longer than proxy_read_timeout ({read} s in location {}): nginx answers 504. Make the backend give up on Twilio well before {read} s and answer 503 with Retry-After (and pre-download recordings from the status webhook), or raise proxy_read_timeout above its Twilio budget.", location_name(&ctx.nginx.download))
    } else {
        String::new()
    };
    let verdict = if timed_out {
        Verdict::Exposed
    } else {
        Verdict::Safe
    };
    let after = o.timing.map(|t| t.total_us as f64 / 1e6).unwrap_or(0.0);
    let summary = if timed_out {
        format!("Twilio silent: nginx answered 504 after {after:.1} s (proxy_read_timeout {read} s) before the backend gave up")
    } else {
        format!("Twilio silent: the backend answered {} after {after:.1} s, within proxy_read_timeout ({read} s)", o.summary())
    };
    Ok(Mechanism {
        id: "upstream_read_timeout",
        verdict,
        summary,
        evidence,
        fix,
    })
}

fn location_name(l: &Option<LocationFacts>) -> String {
    l.as_ref()
        .map(|l| l.location.clone())
        .unwrap_or_else(|| "(none)".into())
}

/// A Twilio download that resets, and one that answers garbage: does the backend answer, or
/// drop the connection (nginx's 502)?
pub async fn backend_drops_connection(ctx: &Context) -> Result<Mechanism, HarnessError> {
    let mut scenario = Scenario::new(
        "backend_drops_connection",
        RecordingSpec::new(MediaFormat::Mp3, 10_000),
    );
    scenario
        .recordings
        .push(RecordingSpec::new(MediaFormat::Mp3, 10_000));
    let faults = [Fault::Reset, Fault::Garbage];
    for (i, fault) in faults.iter().enumerate() {
        let sid = scenario.recordings[i].sid_at(i);
        scenario = scenario.twilio_fault(FaultRule::new(fault.clone()).recording(&sid).times(1));
        scenario = scenario.request(RequestStep::get().recording(i));
    }
    let run = run_spec(&scenario, ctx.spec.clone()).await?;
    let mut seen = Vec::new();
    let mut said = Vec::new();
    let mut dropped = false;
    for (i, fault) in faults.iter().enumerate() {
        let o = outcome(&run, i)?;
        dropped |= o.is_gateway_failure() || o.answered_by == AnsweredBy::None;
        seen.push(json!({"twilio": fault.kind(), "status": o.status, "answered_by": o.answered_by, "error_log": error_line(o)}));
        said.push(
            format!(
                "Twilio {}: {} from the {:?}",
                fault.kind(),
                o.summary(),
                o.answered_by
            )
            .to_lowercase(),
        );
    }
    let fix = if dropped {
        "When Twilio fails, the backend drops the connection and nginx answers 502: catch the failure and answer a JSON error (503 with Retry-After), never let an exception close the connection.".to_string()
    } else {
        String::new()
    };
    let verdict = if dropped {
        Verdict::Exposed
    } else {
        Verdict::Safe
    };
    let summary = said.join("; ");
    Ok(Mechanism {
        id: "backend_drops_connection",
        verdict,
        summary,
        evidence: json!({ "downloads": seen }),
        fix,
    })
}

/// Three downloads in a row: how many upstream connections does the download location open?
pub async fn websocket_headers(ctx: &Context) -> Result<Mechanism, HarnessError> {
    let mut scenario = Scenario::new(
        "websocket_headers",
        RecordingSpec::new(MediaFormat::Mp3, 10_000).cached(true),
    );
    for _ in 0..3 {
        scenario = scenario.request(RequestStep::get());
    }
    let run = run_spec(&scenario, ctx.spec.clone()).await?;
    let opened: Vec<u64> = run
        .outcomes
        .iter()
        .map(|o| o.upstream_connections_opened)
        .collect();
    let ws = ctx
        .nginx
        .download
        .as_ref()
        .is_some_and(|l| l.websocket_headers);
    let evidence = json!({
        "location": location_name(&ctx.nginx.download),
        "connection_header": ctx.nginx.download.as_ref().and_then(|l| l.connection_header.clone()),
        "upstream_connections_opened": opened,
    });
    let fix = if ws {
        format!("Location {} sends the WebSocket headers (Upgrade, Connection $connection_upgrade) on every request, and for a plain request that is `Connection: close`: one upstream connection per download. Remove them from it and keep them in a location of their own (/ws/).", location_name(&ctx.nginx.download))
    } else {
        String::new()
    };
    let verdict = if ws { Verdict::Exposed } else { Verdict::Safe };
    let summary = format!(
        "three downloads opened {opened:?} new upstream connections{}",
        if ws {
            " (Connection: close sent upstream)"
        } else {
            ""
        }
    );
    Ok(Mechanism {
        id: "websocket_headers_on_api",
        verdict,
        summary,
        evidence,
        fix,
    })
}

/// The backend's response heads against the proxy buffer that must hold them.
pub fn headers_too_big(ctx: &Context) -> Mechanism {
    let buffer = [&ctx.nginx.download, &ctx.nginx.webhook]
        .iter()
        .filter_map(|l| l.as_ref().map(|l| l.buffer_size_bytes))
        .min()
        .unwrap_or(4096);
    let largest = ctx.backend.largest_header_bytes;
    let exposed = largest as u64 > buffer;
    let fix = if exposed {
        format!("The backend sends {largest} bytes of headers, more than proxy_buffer_size ({buffer}): nginx answers 502 (upstream sent too big header). Shrink them, or set proxy_buffer_size {}k.", (largest as u64).div_ceil(1024).next_power_of_two())
    } else {
        String::new()
    };
    Mechanism {
        id: "headers_too_big",
        verdict: if exposed {
            Verdict::Exposed
        } else {
            Verdict::Safe
        },
        summary: format!("largest response head {largest} bytes, proxy_buffer_size {buffer}"),
        evidence: json!({ "largest_header_bytes": largest, "proxy_buffer_size_bytes": buffer }),
        fix,
    }
}

/// The largest response head the backend sends (a download, a Range answer, a 404), measured
/// straight from it.
pub async fn header_sizes(stack: &Stack) -> Result<usize, HarnessError> {
    let addr = stack
        .backend_addr()
        .ok_or_else(|| HarnessError::step(0, "the backend is not running"))?;
    let rec = stack.twilio().add_recording(Recording::new(
        mock_twilio::sid("RE", 99),
        mock_twilio::sid("CA", 99),
        MediaFormat::Mp3,
        10_000,
    ));
    let path = crate::app::download_path(&rec.call_sid, None);
    let missing = crate::app::download_path(&mock_twilio::sid("CA", 98), None);
    let requests = [
        super::probe::get(&path),
        format!("GET {path} HTTP/1.1\r\nHost: backend\r\nRange: bytes=0-99\r\n\r\n"),
        super::probe::get(&missing),
    ];
    let mut largest = 0;
    for r in &requests {
        largest = largest.max(super::probe::request(addr, r).await?.head_bytes);
    }
    Ok(largest)
}

/// The Range forms of RFC 9110 through nginx, each answer judged by the harness's own model.
pub async fn range_conformance(stack: &Stack) -> Result<Mechanism, HarnessError> {
    const SIZE: u64 = 20_000;
    let forms: &[(Option<&str>, Option<&str>)] = &[
        (None, None),
        (Some("bytes=0-"), None),
        (Some("bytes=0-999"), None),
        (Some("bytes=-500"), None),
        (Some("bytes=19000-50000"), None),
        (Some("bytes=20000-"), None),
        (Some("bytes=-0"), None),
        (Some("bytes=5-3"), None),
        (Some("bytes=garbage"), None),
        (Some("bytes=0-1,5-9"), None),
        (Some("bytes=0-99"), Some("{etag}")),
        (Some("bytes=0-99"), Some("\"stale\"")),
    ];
    let mut scenario = Scenario::new(
        "range_conformance",
        RecordingSpec::new(MediaFormat::Mp3, SIZE).cached(true),
    );
    scenario.recordings[0].sid = Some(mock_twilio::sid("RE", 97));
    scenario.recordings[0].call_sid = Some(mock_twilio::sid("CA", 97));
    for (range, if_range) in forms {
        let r = RequestStep::get().range(*range);
        scenario = scenario.request(match if_range {
            Some(v) => r.if_range(v),
            None => r,
        });
    }
    let run = run_on_stack(stack, &scenario, None, Profile::Fixed).await?;
    let etag = run.outcomes.first().is_some_and(|o| o.validators.is_some());
    let mut failures = Vec::new();
    for ((range, if_range), o) in forms.iter().zip(&run.outcomes) {
        if if_range.is_some() && !etag {
            continue;
        }
        let holds = if_range.map(|v| v == "{etag}");
        let allowed: Allowed = range_rfc::allowed(*range, holds, SIZE);
        if let Err(why) = range_rfc::check(o, allowed, SIZE, false) {
            failures.push(json!({"range": range, "if_range": if_range, "got": why}));
        }
    }
    let exposed = !failures.is_empty();
    let fix = if exposed {
        "Answer Range as RFC 9110 §14 says: a valid single range → 206 with its exact Content-Range and Content-Length (a suffix bytes=-N is the last N bytes), no satisfiable range → 416 with Content-Range: bytes */size, an invalid one → 200 with everything; If-Range with a stale validator → 200. Safari (WebKit) fails to play when a valid range gets a 200.".to_string()
    } else {
        String::new()
    };
    let summary = match failures.first() {
        None => format!(
            "{} Range forms answered as RFC 9110 says{}",
            forms.len(),
            if etag {
                ""
            } else {
                " (no ETag: If-Range not checked)"
            }
        ),
        Some(f) => format!(
            "{} of {} Range forms answered wrongly; first: {} → {}",
            failures.len(),
            forms.len(),
            f["range"],
            f["got"]
        ),
    };
    Ok(Mechanism {
        id: "range_conformance",
        verdict: if exposed {
            Verdict::Exposed
        } else {
            Verdict::Safe
        },
        summary,
        evidence: json!({ "forms_checked": forms.len(), "if_range_checked": etag, "failures": failures }),
        fix,
    })
}

#[cfg(test)]
mod tests {
    use super::race_wait;

    #[test]
    fn the_race_waits_for_the_close_until_just_inside_nginx_timeout() {
        assert_eq!(race_wait(60.0, true, Some(2.0)), 59.0);
        assert_eq!(race_wait(60.0, true, None), 59.0);
        // A short timeout: nine tenths of it.
        assert_eq!(race_wait(5.0, true, Some(2.0)), 4.5);
        // Nothing pooled: no close to wait for; the measured close and 3 s.
        assert_eq!(race_wait(60.0, false, Some(2.0)), 5.0);
        assert_eq!(race_wait(60.0, false, None), 59.0);
    }
}
