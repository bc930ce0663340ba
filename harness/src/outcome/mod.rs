//! [`Outcome`]: everything one step observed, in one serde struct. It is built here (from a
//! response in [`read`], from the stack's logs by the step executor); snapshots, summaries,
//! the CLI table and the report are views of it, and redaction happens once, in
//! [`Outcome::snapshot`] ([`snapshot`]).

pub mod read;
pub mod snapshot;

use crate::access::AccessLine;
use crate::browser::BrowserOutcome;
use crate::events::BackendEvent;
use crate::gateway::GatewayError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub use snapshot::{redact_error_line, redact_ports, SnapshotBrowser, SnapshotOutcome};

/// Who produced the response the client got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnsweredBy {
    /// The backend (through nginx).
    Backend,
    /// nginx itself: one of its error pages (502, 504, ...).
    Nginx,
    /// Nobody: the connection failed before a status line.
    None,
}

/// What a body was, in one word: what `expect.body` names and load steps count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BodyKind {
    /// No body (HEAD, 204, 416).
    Empty,
    /// The whole recording, byte for byte.
    Whole,
    /// Exactly the bytes of the recording that Content-Range names.
    Slice,
    /// Fewer bytes than announced arrived (the ones that did were right).
    Truncated,
    /// Audio that is not the recording's bytes.
    Differs,
    /// A JSON body.
    Json,
    /// nginx's own HTML error page.
    NginxErrorPage,
    /// Anything else.
    Other,
}

impl BodyKind {
    /// Its name, as scenario files write it.
    pub fn name(self) -> &'static str {
        match self {
            BodyKind::Empty => "empty",
            BodyKind::Whole => "whole",
            BodyKind::Slice => "slice",
            BodyKind::Truncated => "truncated",
            BodyKind::Differs => "differs",
            BodyKind::Json => "json",
            BodyKind::NginxErrorPage => "nginx_error_page",
            BodyKind::Other => "other",
        }
    }
}

impl std::fmt::Display for BodyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
    /// The check's kind.
    pub fn kind(&self) -> BodyKind {
        match self {
            BodyCheck::Empty => BodyKind::Empty,
            BodyCheck::Whole => BodyKind::Whole,
            BodyCheck::Slice { .. } => BodyKind::Slice,
            BodyCheck::Truncated { .. } => BodyKind::Truncated,
            BodyCheck::Differs { .. } => BodyKind::Differs,
            BodyCheck::Json { .. } => BodyKind::Json,
            BodyCheck::NginxErrorPage => BodyKind::NginxErrorPage,
            BodyCheck::Other { .. } => BodyKind::Other,
        }
    }

    /// In words, for reports: `slice 0-999`, `truncated (announced 50000)`.
    pub fn words(&self) -> String {
        match self {
            BodyCheck::Slice { start, end } => format!("slice {start}-{end}"),
            BodyCheck::Truncated { announced } => format!("truncated (announced {announced})"),
            BodyCheck::Differs { at } => format!("differs from the recording at byte {at}"),
            BodyCheck::Json { error: Some(e) } => format!("json, error {e:?}"),
            BodyCheck::Other { kind } => format!("other: {kind}"),
            other => other.kind().to_string(),
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
    /// Body kind → how many.
    pub bodies: BTreeMap<String, u32>,
    /// Gateway error cause → how many.
    pub gateway_errors: BTreeMap<String, u32>,
}

/// What a `deploy` step's load saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployOutcome {
    /// Backend instances restarted, one after the other.
    pub instances: usize,
    /// Requests the load sent.
    pub requests: u64,
    /// Of them, those that failed: no 2xx, no answer, or a body cut short.
    pub failed: u64,
    /// Failed requests by what the client got (`502`, `504`, `none`, `cut`, `differs`).
    pub failed_by_status: BTreeMap<String, u64>,
    /// The first few failed requests of each kind, in words: which, when (seconds into the
    /// step and the deploy's phases: odd while an instance is out of service), what came back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_requests: Vec<String>,
    /// Every gateway error nginx logged during the step (draining and restarting included,
    /// attempts nginx retried and the readiness probes' too), counted by cause.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nginx_causes: BTreeMap<String, u64>,
    /// While an instance was out of service: the statuses the load got (`none`: no answer).
    pub statuses_while_out: BTreeSet<String>,
    /// While an instance was out of service: the causes in nginx's error log (including
    /// attempts nginx retried on another instance).
    pub nginx_causes_while_out: BTreeSet<String>,
}

impl DeployOutcome {
    /// `502×3, none×1`, or `none`.
    pub fn failures_by_cause(&self) -> String {
        if self.failed_by_status.is_empty() {
            return "none".into();
        }
        self.failed_by_status
            .iter()
            .map(|(k, v)| format!("{k}×{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Body facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyOutcome {
    /// Bytes received.
    pub bytes: u64,
    /// What they were.
    pub check: BodyCheck,
}

/// A response's validators, for a later `If-Range` (`{etag}`, `{last_modified}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    /// `ETag`.
    pub etag: String,
    /// `Last-Modified`.
    pub last_modified: String,
}

/// How long the response took to arrive (client side).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// From sending to the first body byte (to the head for a bodiless answer), µs.
    pub first_byte_us: u64,
    /// From sending to the end of the body, µs.
    pub total_us: u64,
}

/// A request that reached mock-twilio, from its journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwilioRequest {
    /// Its method.
    pub method: String,
    /// Its path, account and all.
    pub path: String,
    /// The status sent, `None` when no response was sent.
    pub status: Option<u16>,
    /// The faults that fired for it.
    pub faults: Vec<String>,
}

/// Everything one step observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The step's name.
    pub step: String,
    /// Method, path and the headers that matter, e.g. `GET /api/calls/CA…/download range=bytes=0-999`.
    pub request: String,
    /// The status, or `None` when no response arrived.
    pub status: Option<u16>,
    /// Headers that matter ([`KEPT_HEADERS`]; ETag and Last-Modified as `present`).
    pub headers: BTreeMap<String, String>,
    /// Body facts.
    pub body: BodyOutcome,
    /// Who answered.
    pub answered_by: AnsweredBy,
    /// The nginx error-log lines it caused, classified.
    pub gateway_errors: Vec<GatewayError>,
    /// The backend's log events while it ran.
    pub backend_events: Vec<BackendEvent>,
    /// Requests that reached Twilio while it ran.
    pub twilio_requests: Vec<TwilioRequest>,
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
    /// For a `deploy` step: what the load saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployOutcome>,
    /// The response's validators (they vary by run: snapshots keep only `present`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validators: Option<Validators>,
    /// How long it took, client side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
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
            deploy: None,
            validators: None,
            timing: None,
        }
    }

    /// A word for tables: the status (`-` when none), for a `play` step `played` / `no-play`,
    /// for a `deploy` step how many of its requests failed.
    pub fn cell(&self) -> String {
        if let Some(d) = &self.deploy {
            return format!("deploy:{}/{}failed", d.failed, d.requests);
        }
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

    /// True when what the user got failed: an nginx 502/504, no answer at all, or (for a
    /// `play` step) a page that did not play.
    pub fn user_failed(&self) -> bool {
        match &self.browser {
            Some(b) => !b.page.played(),
            None => self.is_gateway_failure() || self.answered_by == AnsweredBy::None,
        }
    }

    /// The status as text, `none` when no response arrived.
    pub fn status_text(&self) -> String {
        self.status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "none".into())
    }

    /// One line for summaries: `206` or `502 (premature_close)`; for a `play` step, `page:
    /// played` or the media error the page showed.
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
