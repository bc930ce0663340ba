//! The snapshot form of an [`Outcome`]: what stays the same run to run. This is the one place
//! where anything is redacted (times, pids, ports, the Twilio account, timing-dependent counts);
//! the Outcome itself keeps every raw line and number.

use super::{AnsweredBy, BodyCheck, DeployOutcome, LoadOutcome, Outcome, TwilioRequest};
use crate::browser::{BrowserOutcome, BrowserRequest};
use crate::events::BackendEvent;
use crate::gateway::GatewayError;
use regex::Regex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("valid regex"))
}

/// Redacts what varies run to run in an nginx error-log line: time, pid, connection number, ports.
pub fn redact_error_line(line: &str) -> String {
    static TIME: OnceLock<Regex> = OnceLock::new();
    static PID: OnceLock<Regex> = OnceLock::new();
    let s = re(&TIME, r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ").replace(line, "");
    let s = re(&PID, r"\d+#\d+: \*\d+ ").replace(&s, "");
    redact_ports(&s)
}

/// Replaces loopback ports with `<port>`.
pub fn redact_ports(s: &str) -> String {
    static PORT: OnceLock<Regex> = OnceLock::new();
    re(&PORT, r"(127\.0\.0\.1|localhost):\d+")
        .replace_all(s, "$1:<port>")
        .into_owned()
}

/// A gateway error as snapshots show it: `cause while stage: nginx's message`. The rest of the
/// line (time, pid, ports, and the "while ..." clause, whose wording depends on what nginx was
/// doing at that instant, e.g. "reading upstream" or "sending to client") stays in the Outcome.
fn snapshot_gateway_error(e: &GatewayError) -> String {
    let message = redact_error_line(&e.raw);
    let message = message.strip_prefix("[error] ").unwrap_or(&message);
    let message = message.split(" while ").next().unwrap_or(message);
    let message = message.split(", client: ").next().unwrap_or(message);
    format!("{} while {}: {message}", e.cause.name(), e.stage.name())
}

/// A Twilio request as snapshots show it: `GET …/Recordings/RE….mp3 → 200 [delay]`, the
/// account's part of the path left out.
fn snapshot_twilio_request(t: &TwilioRequest) -> String {
    static ACCOUNT: OnceLock<Regex> = OnceLock::new();
    let path = re(&ACCOUNT, r"^/2010-04-01/Accounts/[^/]+").replace(&t.path, "…");
    let status = t
        .status
        .map(|s| s.to_string())
        .unwrap_or_else(|| "no response".into());
    let faults = if t.faults.is_empty() {
        String::new()
    } else {
        format!(" [{}]", t.faults.join(", "))
    };
    format!("{} {path} → {status}{faults}", t.method)
}

/// The snapshot form of an [`Outcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotOutcome {
    /// Step name, when it is not the request line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The request line.
    pub request: String,
    /// The status, `none` when no response (left out for a `play` step: see `browser`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Kept headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
    /// Body bytes received (left out for a truncated body: how far a cut body gets is timing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_bytes: Option<u64>,
    /// What the body was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyCheck>,
    /// Who answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<AnsweredBy>,
    /// For a `play` step: what the page showed and the browser's own requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser: Option<SnapshotBrowser>,
    /// `cause while stage` for each gateway error, and the redacted line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateway_errors: Vec<String>,
    /// Backend events.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backend_events: Vec<BackendEvent>,
    /// Twilio requests.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub twilio_requests: Vec<String>,
    /// Upstream statuses from the access log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<String>,
    /// New nginx→backend connections for this step (left out for a load step, where it is timing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_connections_opened: Option<u64>,
    /// Client-side error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_error: Option<String>,
    /// A load step's counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadOutcome>,
    /// A `deploy` step: what its load saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<SnapshotDeploy>,
}

/// The snapshot form of a `deploy` step: how many requests ran and failed is timing; whether any
/// failed, and what the load got while an instance was out, is not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotDeploy {
    /// Instances restarted one after the other.
    pub instances: usize,
    /// `none`, or `some` (the report and the Outcome have the counts by status).
    pub failed: &'static str,
    /// The statuses the load got while an instance was out of service.
    pub statuses_while_out: Vec<String>,
    /// nginx's causes while an instance was out of service (retried attempts included).
    pub nginx_causes_while_out: Vec<String>,
}

impl SnapshotDeploy {
    fn of(d: &DeployOutcome) -> Self {
        SnapshotDeploy {
            instances: d.instances,
            failed: if d.failed == 0 { "none" } else { "some" },
            statuses_while_out: d.statuses_while_out.iter().cloned().collect(),
            nginx_causes_while_out: d.nginx_causes_while_out.iter().cloned().collect(),
        }
    }
}

/// The snapshot form of a `play` step's browser: what the user saw, and the browser's requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotBrowser {
    /// Where the page stopped (`played`, `error before canplay`, ...).
    pub stage: String,
    /// `canplay` fired.
    pub canplay: bool,
    /// `ended` fired.
    pub ended: bool,
    /// The media error the user was shown (`MEDIA_ERR_SRC_NOT_SUPPORTED`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_error: Option<String>,
    /// The duration the browser decoded, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Each request for the recording: `range → status (upstream …) body`.
    pub requests: Vec<String>,
}

fn snapshot_browser_request(r: &BrowserRequest) -> String {
    let range = r.range.as_deref().unwrap_or("no range");
    let upstream = if r.upstream_status.is_empty() {
        "-"
    } else {
        &r.upstream_status
    };
    format!("{range} → {} (upstream {upstream}) {}", r.status, r.body)
}

impl SnapshotBrowser {
    fn of(b: &BrowserOutcome) -> Self {
        let mut requests: Vec<String> = Vec::new();
        // Each distinct request once, in the order they started: how often a browser repeats
        // one (a cancelled read it issues again) is timing; the Outcome keeps every one.
        for r in b.requests.iter().map(snapshot_browser_request) {
            if !requests.contains(&r) {
                requests.push(r);
            }
        }
        // Whether a request that a later one followed was read to its end or cancelled is a
        // race between the browser's cancel and how fast the bytes come (nginx's sendfile can
        // finish 32 MB first): only the last one says how its body ended.
        let last = requests.len().saturating_sub(1);
        for r in &mut requests[..last] {
            for word in [" partial", " complete"] {
                if let Some(kept) = r.strip_suffix(word) {
                    *r = kept.to_string();
                }
            }
        }
        let mut distinct: Vec<String> = Vec::new();
        for r in requests {
            if !distinct.contains(&r) {
                distinct.push(r);
            }
        }
        let requests = distinct;
        SnapshotBrowser {
            stage: b.page.stage.clone(),
            canplay: b.page.canplay,
            ended: b.page.ended,
            media_error: b.page.error_name.clone(),
            duration_ms: b.page.duration_ms,
            requests,
        }
    }
}

impl Outcome {
    /// The redacted, run-stable form for snapshots.
    pub fn snapshot(&self) -> SnapshotOutcome {
        let http = self.browser.is_none() && self.deploy.is_none();
        SnapshotOutcome {
            step: (self.step != self.request).then(|| self.step.clone()),
            request: self.request.clone(),
            status: http.then(|| self.status_text()),
            headers: http.then(|| self.headers.clone()),
            body_bytes: (http && !matches!(self.body.check, BodyCheck::Truncated { .. }))
                .then_some(self.body.bytes),
            body: http.then(|| self.body.check.clone()),
            answered_by: http.then_some(self.answered_by),
            browser: self.browser.as_ref().map(SnapshotBrowser::of),
            gateway_errors: self
                .gateway_errors
                .iter()
                .map(snapshot_gateway_error)
                .collect(),
            backend_events: self.backend_events.clone(),
            twilio_requests: self
                .twilio_requests
                .iter()
                .map(snapshot_twilio_request)
                .collect(),
            upstream_status: self.access.as_ref().map(|a| a.upstream_status.clone()),
            // Timing for load steps and for the browser (how many connections it opens).
            upstream_connections_opened: (http && self.load.is_none())
                .then_some(self.upstream_connections_opened),
            client_error: self.client_error.as_deref().map(redact_ports),
            load: self.load.clone(),
            deploy: self.deploy.as_ref().map(SnapshotDeploy::of),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_are_redacted_to_what_is_stable() {
        let line = "2026/11/25 12:00:01 [error] 4242#4242: *17 upstream prematurely closed connection while reading response header from upstream, client: 127.0.0.1, server: _, request: \"POST /webhook/recording-status HTTP/1.1\", upstream: \"http://127.0.0.1:40123/webhook/recording-status\", host: \"127.0.0.1:39999\"";
        assert_eq!(
            redact_error_line(line),
            "[error] upstream prematurely closed connection while reading response header from upstream, client: 127.0.0.1, server: _, request: \"POST /webhook/recording-status HTTP/1.1\", upstream: \"http://127.0.0.1:<port>/webhook/recording-status\", host: \"127.0.0.1:<port>\""
        );
    }

    #[test]
    fn twilio_requests_lose_the_account() {
        let t = TwilioRequest {
            method: "GET".into(),
            path: "/2010-04-01/Accounts/AC00000000000000000000000000000001/Recordings/RE1.mp3"
                .into(),
            status: None,
            faults: vec!["delay".into(), "throttle".into()],
        };
        assert_eq!(
            snapshot_twilio_request(&t),
            "GET …/Recordings/RE1.mp3 → no response [delay, throttle]"
        );
    }
}
