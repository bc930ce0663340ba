//! [`Outcome`]: everything one step observed, in one serde struct. Snapshots, summaries and
//! reports are views of it; redaction happens once, in [`Outcome::snapshot`].

use crate::browser::BrowserOutcome;
use crate::gateway::GatewayError;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Who produced the response the client got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnsweredBy {
    /// The backend (through nginx).
    Backend,
    /// nginx itself: one of its error pages (502, 504, ...).
    Nginx,
    /// Nobody: the connection failed before a status line.
    None,
}

/// What the body was, checked against the generated recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyCheck {
    /// No body (HEAD, 204, 416).
    Empty,
    /// The whole recording, byte for byte.
    Whole,
    /// Exactly bytes `start..=end` of the recording, as Content-Range said.
    Slice {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// The bytes that arrived match the recording, but fewer than announced arrived (how many
    /// is in [`BodyOutcome::bytes`]; it depends on timing, so snapshots leave it out).
    Truncated {
        /// Bytes announced by Content-Length.
        announced: u64,
    },
    /// Audio that is not the expected bytes.
    Differs {
        /// First differing byte offset.
        at: u64,
    },
    /// A JSON body, with its `error` field if any.
    Json {
        /// The `error` message.
        error: Option<String>,
    },
    /// nginx's own HTML error page.
    NginxErrorPage,
    /// Anything else (a short text for the snapshot).
    Other {
        /// What it looked like.
        kind: String,
    },
}

impl BodyCheck {
    /// The check's kind, as `expect.body` names it (`whole`, `slice`, `truncated`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            BodyCheck::Empty => "empty",
            BodyCheck::Whole => "whole",
            BodyCheck::Slice { .. } => "slice",
            BodyCheck::Truncated { .. } => "truncated",
            BodyCheck::Differs { .. } => "differs",
            BodyCheck::Json { .. } => "json",
            BodyCheck::NginxErrorPage => "nginx_error_page",
            BodyCheck::Other { .. } => "other",
        }
    }
}

/// What a load step's responses were, counted.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoadOutcome {
    /// Requests sent.
    pub count: u32,
    /// Status (or `none`) → how many.
    pub statuses: BTreeMap<String, u32>,
    /// Body check kind → how many.
    pub bodies: BTreeMap<String, u32>,
    /// Gateway error cause → how many.
    pub gateway_errors: BTreeMap<String, u32>,
}

/// Body facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyOutcome {
    /// Bytes received.
    pub bytes: u64,
    /// What they were.
    pub check: BodyCheck,
}

/// nginx's access-log line for the request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AccessLine {
    /// `$status`.
    pub status: String,
    /// `$body_bytes_sent`.
    pub bytes_sent: String,
    /// `$upstream_status`: one status per upstream attempt (`502, 200` after a retry), `-` when none.
    pub upstream_status: String,
    /// `$upstream_response_time` (seconds, per attempt).
    pub upstream_response_time: String,
    /// `$upstream_connect_time`.
    pub upstream_connect_time: String,
    /// `$request_time`.
    pub request_time: String,
}

/// Everything one request step observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The step's name.
    pub step: String,
    /// Method, path and the headers that matter, e.g. `GET /api/calls/CA…/download range=bytes=0-999`.
    pub request: String,
    /// The status, or `None` when no response arrived.
    pub status: Option<u16>,
    /// Headers that matter (Content-Type, -Length, -Range, Accept-Ranges, ETag, Connection, Retry-After).
    pub headers: BTreeMap<String, String>,
    /// Body facts.
    pub body: BodyOutcome,
    /// Who answered.
    pub answered_by: AnsweredBy,
    /// The nginx error-log lines it caused, classified.
    pub gateway_errors: Vec<GatewayError>,
    /// The backend's log events (cache_miss, saved, slow_download, fetch_failed, not_found).
    pub backend_events: Vec<String>,
    /// Requests that reached Twilio: `METHOD path → status [faults]`.
    pub twilio_requests: Vec<String>,
    /// nginx's access-log line.
    pub access: Option<AccessLine>,
    /// New connections nginx opened to the backend for this step (0: it reused one).
    pub upstream_connections_opened: u64,
    /// A client-side error (connection reset, body cut short).
    pub client_error: Option<String>,
    /// For a load step (`count` > 1): every response, counted (the rest describes the first).
    pub load: Option<LoadOutcome>,
    /// For a `play` step: what the browser's page saw and the requests it made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<BrowserOutcome>,
}

/// Headers an Outcome keeps. ETag and Last-Modified vary by run: kept as `present`.
pub const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-range",
    "accept-ranges",
    "connection",
    "retry-after",
];

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

/// A gateway error as snapshots show it: `cause while stage: nginx's message`. The rest of the
/// line (time, pid, ports, and the "while ..." clause, whose wording depends on what nginx was
/// doing at that instant, e.g. "reading upstream" or "sending to client") stays in the Outcome.
fn snapshot_gateway_error(e: &GatewayError) -> String {
    let message = redact_error_line(&e.raw);
    let message = message.strip_prefix("[error] ").unwrap_or(&message);
    let message = message.split(" while ").next().unwrap_or(message);
    let message = message.split(", client: ").next().unwrap_or(message);
    let stage = serde_json::to_value(e.stage)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    format!("{} while {stage}: {message}", e.cause.name())
}

/// Replaces loopback ports with `<port>`.
pub fn redact_ports(s: &str) -> String {
    static PORT: OnceLock<Regex> = OnceLock::new();
    re(&PORT, r"(127\.0\.0\.1|localhost):\d+")
        .replace_all(s, "$1:<port>")
        .into_owned()
}

/// The snapshot form of an [`Outcome`]: what stays the same run to run.
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
    pub backend_events: Vec<String>,
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
}

/// The snapshot form of a `play` step's browser: what the user saw, and Chromium's requests.
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

impl SnapshotBrowser {
    fn of(b: &BrowserOutcome) -> Self {
        SnapshotBrowser {
            stage: b.page.stage.clone(),
            canplay: b.page.canplay,
            ended: b.page.ended,
            media_error: b.page.error_name.clone(),
            duration_ms: b.page.duration_ms,
            // Each distinct request once, in the order they started: how often Chromium repeats
            // one (a cancelled read it issues again) is timing; the Outcome keeps every one.
            requests: b
                .requests
                .iter()
                .map(|r| {
                    let range = if r.range.is_empty() {
                        "no range"
                    } else {
                        &r.range
                    };
                    format!(
                        "{range} → {} (upstream {}) {}",
                        r.status,
                        if r.upstream_status.is_empty() {
                            "-"
                        } else {
                            &r.upstream_status
                        },
                        r.body
                    )
                })
                .fold(Vec::new(), |mut seen, r| {
                    if !seen.contains(&r) {
                        seen.push(r);
                    }
                    seen
                }),
        }
    }
}

impl Outcome {
    /// An Outcome that observed nothing yet (no response, empty body).
    pub fn blank(step: String, request: String) -> Self {
        Outcome {
            step,
            request,
            status: None,
            headers: BTreeMap::new(),
            body: BodyOutcome {
                bytes: 0,
                check: BodyCheck::Empty,
            },
            answered_by: AnsweredBy::None,
            gateway_errors: Vec::new(),
            backend_events: Vec::new(),
            twilio_requests: Vec::new(),
            access: None,
            upstream_connections_opened: 0,
            client_error: None,
            load: None,
            browser: None,
        }
    }

    /// The redacted, run-stable form for snapshots.
    pub fn snapshot(&self) -> SnapshotOutcome {
        let http = self.browser.is_none();
        SnapshotOutcome {
            step: (self.step != self.request).then(|| self.step.clone()),
            request: self.request.clone(),
            status: http.then(|| {
                self.status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "none".into())
            }),
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
            twilio_requests: self.twilio_requests.clone(),
            upstream_status: self.access.as_ref().map(|a| a.upstream_status.clone()),
            // Timing for load steps and for the browser (how many connections it opens).
            upstream_connections_opened: (http && self.load.is_none())
                .then_some(self.upstream_connections_opened),
            client_error: self.client_error.as_deref().map(redact_ports),
            load: self.load.clone(),
        }
    }

    /// A word for tables: the status (`-` when none), or for a `play` step `played` / `no-play`.
    pub fn cell(&self) -> String {
        match &self.browser {
            Some(b) if b.page.played() => "played".to_string(),
            Some(_) => "no-play".to_string(),
            None => self
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
        }
    }

    /// True when nginx answered with a 502 or 504 of its own.
    pub fn is_gateway_failure(&self) -> bool {
        self.answered_by == AnsweredBy::Nginx && matches!(self.status, Some(502..=504))
    }

    /// One line for summaries: `206 slice 0-999` or `502 (premature_close)`; for a `play`
    /// step, `played` or the media error the page showed.
    pub fn summary(&self) -> String {
        if let Some(b) = &self.browser {
            return match &b.page.error_name {
                Some(e) => format!("page: {e}"),
                None => format!("page: {}", b.page.stage),
            };
        }
        let status = self
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "no response".into());
        let causes: Vec<&str> = self.gateway_errors.iter().map(|e| e.cause.name()).collect();
        if causes.is_empty() {
            status
        } else {
            format!("{status} ({})", causes.join(", "))
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
}
