//! Why nginx answered 502 or 504 (or cut a 200 short): its error log, classified.
//!
//! The wording of each cause is nginx's own (`src/http/ngx_http_upstream.c`,
//! `src/event/ngx_event_connect.c`); `snapshots/gateway-*.snap` show each line as a real nginx
//! wrote it. The raw line is always kept.

use serde::{Deserialize, Serialize};

/// What nginx says went wrong with the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayCause {
    /// `connect() failed (111: Connection refused)`: nothing listens on the backend's port.
    ConnectRefused,
    /// `recv() failed (104: Connection reset by peer)`: the backend reset the connection.
    ResetByPeer,
    /// `upstream prematurely closed connection`: the backend closed it (crash, idle timeout).
    PrematureClose,
    /// `upstream timed out (110: ...)`: the backend was slower than nginx's timeout (504).
    TimedOut,
    /// `upstream sent too big header`: headers larger than `proxy_buffer_size`.
    TooBigHeader,
    /// `upstream sent invalid header`, `no valid HTTP/1.0 header`, an invalid or duplicate
    /// `Content-Length` (nginx ≥ 1.23 refuses those; 1.22 passed them on): not valid HTTP.
    InvalidHeader,
    /// `writev() failed (32: Broken pipe)` / `send() failed`: the backend went away while
    /// nginx sent the request.
    SendFailed,
    /// `no live upstreams`: every server of the upstream block is marked failed.
    NoLiveUpstreams,
    /// Another error-level line about the upstream.
    Other,
}

/// Where in the exchange the error happened, from nginx's "while ..." clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// "while connecting to upstream"
    Connecting,
    /// "while sending request to upstream"
    SendingRequest,
    /// "while reading response header from upstream": the client gets a 502/504.
    ReadingHeader,
    /// "while reading upstream" or "while sending to client": headers were sent, so the
    /// client gets a cut body.
    ReadingBody,
    /// Anything else.
    Other,
}

impl Stage {
    /// The snake_case name used in snapshots.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connecting => "connecting",
            Stage::SendingRequest => "sending_request",
            Stage::ReadingHeader => "reading_header",
            Stage::ReadingBody => "reading_body",
            Stage::Other => "other",
        }
    }
}

/// One classified error-log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayError {
    /// The cause.
    pub cause: GatewayCause,
    /// When in the exchange.
    pub stage: Stage,
    /// The line as nginx wrote it.
    pub raw: String,
}

impl GatewayCause {
    /// Every cause, in report order.
    pub const ALL: [GatewayCause; 9] = [
        GatewayCause::ConnectRefused,
        GatewayCause::ResetByPeer,
        GatewayCause::PrematureClose,
        GatewayCause::TimedOut,
        GatewayCause::TooBigHeader,
        GatewayCause::InvalidHeader,
        GatewayCause::SendFailed,
        GatewayCause::NoLiveUpstreams,
        GatewayCause::Other,
    ];

    /// The snake_case name used in snapshots and reports.
    pub fn name(self) -> &'static str {
        match self {
            GatewayCause::ConnectRefused => "connect_refused",
            GatewayCause::ResetByPeer => "reset_by_peer",
            GatewayCause::PrematureClose => "premature_close",
            GatewayCause::TimedOut => "timed_out",
            GatewayCause::TooBigHeader => "too_big_header",
            GatewayCause::InvalidHeader => "invalid_header",
            GatewayCause::SendFailed => "send_failed",
            GatewayCause::NoLiveUpstreams => "no_live_upstreams",
            GatewayCause::Other => "other",
        }
    }

    /// What it means, in a sentence.
    pub fn meaning(self) -> &'static str {
        match self {
            GatewayCause::ConnectRefused => "nothing listened on the backend's address: it was down, restarting, or nginx points at the wrong port",
            GatewayCause::ResetByPeer => "the backend reset the connection (a crash, a killed worker, or a keep-alive connection it had already dropped)",
            GatewayCause::PrematureClose => "the backend closed the connection without (finishing) an answer: it crashed mid-response, or its keep-alive timeout closed a connection nginx was reusing",
            GatewayCause::TimedOut => "the backend did not answer within proxy_read_timeout; nginx answers 504, not 502",
            GatewayCause::TooBigHeader => "the backend's response headers were larger than proxy_buffer_size",
            GatewayCause::InvalidHeader => "the backend answered something that is not valid HTTP: not HTTP at all, or a header nginx refuses (an invalid or duplicate Content-Length, which nginx 1.23 and later refuse and 1.22 passed on)",
            GatewayCause::SendFailed => "the backend went away while nginx was sending it the request",
            GatewayCause::NoLiveUpstreams => "every server of the upstream block was marked failed after earlier errors (max_fails)",
            GatewayCause::Other => "another upstream error; read the raw line",
        }
    }

    /// How it is usually fixed.
    pub fn fix(self) -> &'static str {
        match self {
            GatewayCause::ConnectRefused => "check the backend is up and that the upstream address matches its BIND; make deploys wait on /healthz",
            GatewayCause::ResetByPeer | GatewayCause::PrematureClose => "never let an exception drop a connection: answer a JSON error instead, and drain in-flight requests on shutdown (a failure at once, before the response header, on a reused connection is the keep-alive race: see the keep-alive fix)",
            GatewayCause::TimedOut => "make the backend give up on Twilio (TWILIO_TIMEOUT_SECS) well before proxy_read_timeout, and pre-download recordings from the status webhook",
            GatewayCause::TooBigHeader => "shrink the response headers or raise proxy_buffer_size",
            GatewayCause::InvalidHeader => "make sure the upstream address points at an HTTP server, and that it sends one valid Content-Length (or none, with chunked encoding)",
            GatewayCause::SendFailed => "as for a reset: drain on shutdown instead of exiting (on a reused connection: the keep-alive fix)",
            GatewayCause::NoLiveUpstreams => "fix the errors that marked the server failed; consider max_fails=0 for a single backend",
            GatewayCause::Other => "read nginx's error log around this line",
        }
    }
}

/// Classifies one error-log line; `None` for lines that are not upstream errors (such as
/// the routine `[info] ... client closed keepalive connection`).
pub fn classify(line: &str) -> Option<GatewayError> {
    let level = line
        .split('[')
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap_or("");
    if !matches!(level, "error" | "crit" | "alert" | "emerg") || !line.contains("upstream") {
        return None;
    }
    let has = |s: &str| line.contains(s);
    let cause = if has("(111: Connection refused)") {
        GatewayCause::ConnectRefused
    } else if has("(104: Connection reset by peer)") {
        GatewayCause::ResetByPeer
    } else if has("upstream prematurely closed connection") {
        GatewayCause::PrematureClose
    } else if has("upstream timed out") {
        GatewayCause::TimedOut
    } else if has("upstream sent too big header") {
        GatewayCause::TooBigHeader
    } else if has("upstream sent invalid")
        || has("upstream sent no valid HTTP")
        || has("upstream sent duplicate header line")
    {
        GatewayCause::InvalidHeader
    } else if has("(32: Broken pipe)") || has("send() failed") || has("writev() failed") {
        GatewayCause::SendFailed
    } else if has("no live upstreams") {
        GatewayCause::NoLiveUpstreams
    } else {
        GatewayCause::Other
    };
    let stage = if has("while connecting to upstream") {
        Stage::Connecting
    } else if has("while sending request to upstream") {
        Stage::SendingRequest
    } else if has("while reading response header from upstream") {
        Stage::ReadingHeader
    } else if has("while reading upstream") || has("while sending to client") {
        Stage::ReadingBody
    } else {
        Stage::Other
    };
    Some(GatewayError {
        cause,
        stage,
        raw: line.to_string(),
    })
}

/// The timestamp at the start of an error-log line (`2026/11/25 12:00:00`).
pub fn line_time(line: &str) -> Option<&str> {
    let t = line.get(..19)?;
    (t.as_bytes()[4] == b'/' && t.as_bytes()[13] == b':').then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_measured_lines() {
        let cases = [
            ("connect() failed (111: Connection refused) while connecting to upstream", GatewayCause::ConnectRefused, Stage::Connecting),
            ("recv() failed (104: Connection reset by peer) while reading response header from upstream", GatewayCause::ResetByPeer, Stage::ReadingHeader),
            ("upstream prematurely closed connection while reading response header from upstream", GatewayCause::PrematureClose, Stage::ReadingHeader),
            ("upstream timed out (110: Connection timed out) while reading response header from upstream", GatewayCause::TimedOut, Stage::ReadingHeader),
            ("upstream sent too big header while reading response header from upstream", GatewayCause::TooBigHeader, Stage::ReadingHeader),
            ("upstream sent no valid HTTP/1.0 header while reading response header from upstream", GatewayCause::InvalidHeader, Stage::ReadingHeader),
            ("upstream prematurely closed connection while reading upstream", GatewayCause::PrematureClose, Stage::ReadingBody),
            ("upstream sent invalid \"Content-Length\" header: \"content-length: abc\" while reading response header from upstream", GatewayCause::InvalidHeader, Stage::ReadingHeader),
            ("upstream sent duplicate header line: \"content-length: abc\", previous value: \"content-length: 10000\" while reading response header from upstream", GatewayCause::InvalidHeader, Stage::ReadingHeader),
        ];
        for (msg, cause, stage) in cases {
            let line = format!(
                "2026/11/25 10:00:00 [error] 12#12: *3 {msg}, client: 127.0.0.1, server: _"
            );
            let e = classify(&line).unwrap_or_else(|| panic!("{msg}"));
            assert_eq!((e.cause, e.stage), (cause, stage), "{msg}");
            assert_eq!(line_time(&line), Some("2026/11/25 10:00:00"));
        }
        assert!(classify(
            "2026/11/25 10:00:00 [info] 12#12: *3 client closed keepalive connection"
        )
        .is_none());
    }
}
