//! The snapshot form of an [`Outcome`]: what stays the same run to run. This is the one place
//! where anything is redacted (times, pids, ports, the Twilio account, timing-dependent counts);
//! the Outcome itself keeps every raw line and number.

use super::{AnsweredBy, BodyCheck, DeployOutcome, LoadOutcome, Outcome, TwilioRequest};
use crate::browser::{BrowserOutcome, BrowserRequest, Delivered};
use crate::events::BackendEvent;
use crate::gateway::GatewayError;
use regex::Regex;
use serde::Serialize;
use std::borrow::Cow;
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
    /// The engine that played (`chromium`, `firefox`, `webkit`).
    pub engine: String,
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

/// A request's Range as its two sides (`bytes=N-M` → `("N", "M")`), untrimmed.
fn range_sides(r: &BrowserRequest) -> Option<(&str, &str)> {
    r.range.as_deref()?.strip_prefix("bytes=")?.split_once('-')
}

/// Where a request's Range starts (`bytes=N-` or `bytes=N-M`; a suffix range or none: `None`).
fn range_start(r: &BrowserRequest) -> Option<u64> {
    range_sides(r)?.0.trim().parse().ok()
}

/// Where a closed range (`bytes=N-M`) ends (`M`).
fn range_end(r: &BrowserRequest) -> Option<u64> {
    range_sides(r)?.1.trim().parse().ok()
}

/// A closed range (`bytes=N-M`) from inside the recording that ends right where another request
/// of the play starts (`M + 1`), answered with a 206: the browser filling the gap in its buffer
/// up to what it already asked for. (A 200 to it is the backend ignoring Range: not one.)
fn is_gap_fill(r: &BrowserRequest, all: &[&BrowserRequest]) -> bool {
    let (Some(start), Some(end)) = (range_start(r), range_end(r)) else {
        return false;
    };
    start > 0 && r.status == 206 && all.iter().any(|o| range_start(o) == Some(end + 1))
}

/// A closed range (`bytes=N-M`, as Chromium asks once it knows the length) answered with a 206,
/// or a 304 (the browser's HTTP cache revalidating the bytes it holds), from upstreams that did
/// not fail, starting inside the bytes nginx sent (in all: the access log has no times per byte)
/// for a request of the play that began no later, and below the play's furthest start (so the
/// seek's Range, the furthest, stays): the browser asking again for bytes it was sent (its media
/// cache let them go, or its reader was cut before them), as Chromium at times does under load,
/// `bytes=32768-59999` then `bytes=32768-1999999` before its seek.
fn is_refetch(r: &BrowserRequest, all: &[&BrowserRequest], furthest: u64) -> bool {
    let (Some(start), Some(_)) = (range_start(r), range_end(r)) else {
        return false;
    };
    // Where an earlier request's body began: 0 for a 200 (with or without a Range).
    let sent_before = |o: &BrowserRequest| {
        let from = if o.status == 200 {
            Some(0)
        } else {
            range_start(o)
        };
        o.at_ms <= r.at_ms
            && !std::ptr::eq(o, r)
            && matches!(o.status, 200 | 206)
            && from.is_some_and(|f| f <= start && start < f + o.bytes_sent)
    };
    start > 0
        && start < furthest
        && matches!(r.status, 206 | 304)
        && upstream_succeeded(r)
        && all.iter().any(|o| sent_before(o))
}

/// An open-ended range (`bytes=N-`) from inside the recording, below the play's furthest start,
/// answered 206 by upstreams that did not fail, that starts inside the bytes nginx sent for an
/// earlier 206 of the play from byte 0: the browser reading on from where it cut its first Range
/// read (a cut read resumes below what nginx sent, which includes bytes still in the socket;
/// at or past it, the answer ended early, and the request stays). Whether a browser does so
/// before the play ends is timing (Chromium, under load, after seeking back to the start).
/// WebKit's `bytes=…-` after a first read answered 200 is not one.
fn is_resumed_read(r: &BrowserRequest, all: &[&BrowserRequest], furthest: u64) -> bool {
    let (Some(start), None) = (range_start(r), range_end(r)) else {
        return false;
    };
    let resumes = |o: &BrowserRequest| {
        o.at_ms <= r.at_ms
            && !std::ptr::eq(o, r)
            && o.status == 206
            && range_start(o) == Some(0)
            && start < o.bytes_sent
    };
    start > 0
        && start < furthest
        && r.status == 206
        && upstream_succeeded(r)
        && all.iter().any(|o| resumes(o))
}

/// The read an open-ended range (`bytes=N-`) resumes, if it is a seek read asked again: answered
/// 206 by upstreams that did not fail, after a closed range of the play from the same byte
/// (`bytes=N-M`, Chromium's seek once it knows the length) answered 206, whether nginx sent all
/// of it or not (bytes in the socket are not bytes read). Chromium, under load, at times lets
/// its seek's read go and asks for the rest of the file from the same point; whether it does
/// is timing. The snapshot then shows the seek's line with how the read
/// asked again ended, so a stack that cuts both still shows a cut (and where nginx logged a
/// gateway error during the step, nothing is folded: the cut may be the stack's).
fn resumed_seek<'a>(r: &BrowserRequest, all: &[&'a BrowserRequest]) -> Option<&'a BrowserRequest> {
    let (Some(start), None) = (range_start(r), range_end(r)) else {
        return None;
    };
    let resumed = |o: &&BrowserRequest| {
        o.at_ms <= r.at_ms
            && !std::ptr::eq(*o, r)
            && o.status == 206
            && range_start(o) == Some(start)
            && range_end(o).is_some()
            && upstream_succeeded(o)
    };
    let qualifies = start > 0 && r.status == 206 && upstream_succeeded(r);
    qualifies
        .then(|| all.iter().copied().find(resumed))
        .flatten()
}

/// Whether every upstream attempt nginx logged for a request answered 2xx or 3xx (or nginx sent
/// it itself: `-`): a retried error (`502, 206`) is no re-fetch to leave out.
fn upstream_succeeded(r: &BrowserRequest) -> bool {
    r.upstream_status
        .split([',', ':'])
        .map(str::trim)
        .all(|s| s == "-" || s.starts_with('2') || s.starts_with('3'))
}

/// A request as a snapshot shows it, and where it sorts: no Range or from 0 first, then the
/// others by their start, then the ones from a point the browser reached (`bytes=…-`): an
/// open-ended range from inside the recording, below the furthest start of the play, is where
/// its buffer ended when it asked (WebKit asks that way after its first 200), which is timing;
/// so is whether nginx or the backend answered it (`upstream 2xx`).
/// The request's line without how its body ended (`range → status (upstream …)`), its sort key,
/// and how its body ended.
type RequestLine = ((u8, u64), String, Delivered);

fn snapshot_browser_request(r: &BrowserRequest, furthest: u64) -> RequestLine {
    let upstream = if r.upstream_status.is_empty() {
        "-".to_string()
    } else {
        r.upstream_status.clone()
    };
    let open_ended = r.range.as_deref().is_some_and(|x| x.ends_with('-'));
    let (key, range, upstream) = match range_start(r) {
        Some(n) if open_ended && n > 0 && n < furthest => {
            let two_xx = matches!(upstream.as_str(), "200" | "206");
            let upstream = if two_xx { "2xx".to_string() } else { upstream };
            ((2, 0), "bytes=…-".to_string(), upstream)
        }
        Some(n) => (
            (u8::from(n > 0), n),
            r.range.clone().unwrap_or_default(),
            upstream,
        ),
        None => (
            (0, 0),
            r.range.clone().unwrap_or("no range".into()),
            upstream,
        ),
    };
    (
        key,
        format!("{range} → {} (upstream {upstream})", r.status),
        r.body,
    )
}

/// The requests of a play whose presence is not timing, and the play's furthest Range start.
/// Seek reads asked again are folded only where `fold` (nginx logged no gateway error for the
/// step: the cut was the browser's, not the stack's).
fn timeless_requests(
    requests: &[BrowserRequest],
    fold: bool,
) -> (Vec<Cow<'_, BrowserRequest>>, u64) {
    // A request the browser closed before any answer (nginx's 499) is its own cancel, timed
    // by the browser: left out (the Outcome keeps every request).
    let answered: Vec<&BrowserRequest> = requests.iter().filter(|r| r.status != 499).collect();
    // A gap fill (Chromium: from where its buffer ended up to its seek's Range): whether the
    // browser needs one, and where it starts, is timing: left out (an error answer stays).
    let answered: Vec<&BrowserRequest> = answered
        .iter()
        .copied()
        .filter(|r| !is_gap_fill(r, &answered))
        .collect();
    let furthest = answered
        .iter()
        .filter_map(|r| range_start(r))
        .max()
        .unwrap_or(0);
    // A re-fetch of bytes nginx had already sent, or a Range read resumed where the browser
    // cut its first one: whether the browser needs one is timing too: left out (an error
    // answer stays).
    let answered: Vec<&BrowserRequest> = answered
        .iter()
        .copied()
        .filter(|r| !is_refetch(r, &answered, furthest) && !is_resumed_read(r, &answered, furthest))
        .collect();
    let answered = if fold {
        fold_resumed_seeks(&answered)
    } else {
        answered.into_iter().map(Cow::Borrowed).collect()
    };
    (answered, furthest)
}

/// The requests with each seek read asked again ([`resumed_seek`]) folded into the read it
/// resumes: the seek's line, where the read asked again stands, ended as that read ended.
fn fold_resumed_seeks<'a>(answered: &[&'a BrowserRequest]) -> Vec<Cow<'a, BrowserRequest>> {
    let resumes: Vec<(&BrowserRequest, &BrowserRequest)> = answered
        .iter()
        .filter_map(|r| resumed_seek(r, answered).map(|seek| (*r, seek)))
        .collect();
    let is_resumed_seek =
        |r: &BrowserRequest| resumes.iter().any(|(_, seek)| std::ptr::eq(*seek, r));
    answered
        .iter()
        .filter(|r| !is_resumed_seek(r))
        .map(
            |r| match resumes.iter().find(|(again, _)| std::ptr::eq(*again, *r)) {
                Some((again, seek)) => Cow::Owned(BrowserRequest {
                    body: again.body,
                    ..(*seek).clone()
                }),
                None => Cow::Borrowed(*r),
            },
        )
        .collect()
}

/// The snapshot's lines for a play's distinct requests, in a fixed order; only the last says
/// how its body ended (only if an error, for a page `left_at_canplay`).
fn request_texts(mut lines: Vec<RequestLine>, left_at_canplay: bool) -> Vec<String> {
    // Whether a request that a later one followed was read to its end or cancelled is a
    // race between the browser's cancel and how fast the bytes come (nginx's sendfile can
    // finish 32 MB first): only the last one says how its body ended, and it stands for the
    // requests like it (WebKit fills a gap in several).
    // (An error answer is no race: it keeps its word.)
    let raceless = |(_, text, body): &RequestLine| match body {
        Delivered::Error => format!("{text} {body}"),
        _ => text.clone(),
    };
    let last = lines.pop();
    let like_last = last.as_ref().map(raceless);
    let mut distinct: Vec<((u8, u64), String)> = Vec::new();
    for line in &lines {
        let text = raceless(line);
        if like_last.as_ref() != Some(&text) && !distinct.iter().any(|d| d.1 == text) {
            distinct.push((line.0, text));
        }
    }
    // A page left at `canplay` (`playable`, no seek) ends its loads when the harness ends
    // the page: whether the last one had arrived whole by then is the teardown's timing (a
    // WebKit resume at 1 MB/s had sent 237 kB of 1.9 MB when WebKit's session ended), so
    // it says only an error.
    distinct.extend(last.map(|line| {
        let text = if left_at_canplay {
            raceless(&line)
        } else {
            format!("{} {}", line.1, line.2)
        };
        (line.0, text)
    }));
    // In a fixed order: whether a browser's gap-filling request came before its seek or
    // after it is timing too.
    distinct.sort_by_key(|(key, _)| *key);
    distinct.into_iter().map(|(_, r)| r).collect()
}

impl SnapshotBrowser {
    /// A play's snapshot form; `stack_quiet`: nginx logged no gateway error during the step.
    fn of(b: &BrowserOutcome, stack_quiet: bool) -> Self {
        let (answered, furthest) = timeless_requests(&b.requests, stack_quiet);
        let mut lines: Vec<RequestLine> = Vec::new();
        // Each distinct request once: how often a browser repeats one (a cancelled read it
        // issues again) is timing; the Outcome keeps every one.
        for line in answered
            .iter()
            .map(|r| snapshot_browser_request(r, furthest))
        {
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        SnapshotBrowser {
            engine: b.engine.to_string(),
            stage: b.page.stage.clone(),
            canplay: b.page.canplay,
            ended: b.page.ended,
            media_error: b.page.error_name.clone(),
            duration_ms: b.page.duration_ms,
            requests: request_texts(lines, b.page.stage == "playable"),
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
            browser: self
                .browser
                .as_ref()
                .map(|b| SnapshotBrowser::of(b, self.gateway_errors.is_empty())),
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
    use crate::browser::Engine;

    #[test]
    fn error_lines_are_redacted_to_what_is_stable() {
        let line = "2026/11/25 12:00:01 [error] 4242#4242: *17 upstream prematurely closed connection while reading response header from upstream, client: 127.0.0.1, server: _, request: \"POST /webhook/recording-status HTTP/1.1\", upstream: \"http://127.0.0.1:40123/webhook/recording-status\", host: \"127.0.0.1:39999\"";
        assert_eq!(
            redact_error_line(line),
            "[error] upstream prematurely closed connection while reading response header from upstream, client: 127.0.0.1, server: _, request: \"POST /webhook/recording-status HTTP/1.1\", upstream: \"http://127.0.0.1:<port>/webhook/recording-status\", host: \"127.0.0.1:<port>\""
        );
    }

    fn request(at_ms: u64, range: Option<&str>, status: u16, upstream: &str) -> BrowserRequest {
        BrowserRequest {
            at_ms,
            took_ms: 1,
            range: range.map(str::to_string),
            status,
            bytes_sent: 0,
            upstream_status: upstream.into(),
            body: Delivered::Partial,
        }
    }

    /// Chromium's play of a recording of `duration_ms`, with these requests.
    fn chromium(duration_ms: u64, requests: Vec<BrowserRequest>) -> BrowserOutcome {
        BrowserOutcome {
            engine: Engine::Chromium,
            page: played(duration_ms),
            requests,
        }
    }

    /// A page that played a recording of `duration_ms`.
    fn played(duration_ms: u64) -> crate::browser::PageOutcome {
        crate::browser::PageOutcome {
            stage: "played".into(),
            events: vec![],
            duration_ms: Some(duration_ms),
            canplay: true,
            ended: true,
            error_code: None,
            error_name: None,
            error_message: None,
            ready_state: 4,
        }
    }

    #[test]
    fn a_browsers_gap_filling_ranges_and_cancels_are_redacted_and_ordered() {
        let page = played(3000);
        // WebKit on a large file: no Range, a cancelled gap-filler, its seek, then the gap.
        let webkit = BrowserOutcome {
            engine: Engine::Webkit,
            page: page.clone(),
            requests: vec![
                request(0, None, 200, "200"),
                request(5, Some("bytes=3604480-"), 499, ""),
                request(9, Some("bytes=31999872-"), 206, "206"),
                request(12, Some("bytes=3473408-"), 206, "206"),
                request(15, Some("bytes=18833408-"), 206, "200"),
            ],
        };
        let b = SnapshotBrowser::of(&webkit, true);
        assert_eq!(
            b.requests,
            [
                "no range → 200 (upstream 200)",
                "bytes=31999872- → 206 (upstream 206)",
                "bytes=…- → 206 (upstream 2xx) partial",
            ]
        );
        assert_eq!(b.duration_ms, Some(3000), "WebKit's duration is kept too");
        // Chromium's exact ranges stay as they are, in the order they started.
        let chromium = BrowserOutcome {
            engine: Engine::Chromium,
            page,
            requests: vec![
                request(0, Some("bytes=0-"), 206, "206"),
                request(9, Some("bytes=31981568-31999999"), 206, "502, 206"),
            ],
        };
        let b = SnapshotBrowser::of(&chromium, true);
        assert_eq!(
            b.requests,
            [
                "bytes=0- → 206 (upstream 206)",
                "bytes=31981568-31999999 → 206 (upstream 502, 206) partial",
            ]
        );
        assert_eq!(b.duration_ms, Some(3000));
    }

    #[test]
    fn a_page_left_at_canplay_says_how_its_last_body_ended_only_for_an_error() {
        let left = |body: Delivered, status: u16, upstream: &str| {
            let mut resume = request(9, Some("bytes=57087-"), status, upstream);
            resume.body = body;
            let mut page = played(3000);
            page.stage = "playable".into();
            page.ended = false;
            let webkit = BrowserOutcome {
                engine: Engine::Webkit,
                page,
                requests: vec![
                    request(0, None, 200, "200"),
                    request(5, Some("bytes=1999872-"), 206, "206"),
                    resume,
                ],
            };
            SnapshotBrowser::of(&webkit, true).requests
        };
        let cut = left(Delivered::Partial, 206, "206");
        assert_eq!(
            cut,
            [
                "no range → 200 (upstream 200)",
                "bytes=1999872- → 206 (upstream 206)",
                "bytes=…- → 206 (upstream 2xx)",
            ]
        );
        assert_eq!(
            left(Delivered::Complete, 206, "206"),
            cut,
            "the teardown's timing"
        );
        assert_eq!(
            left(Delivered::Error, 502, "502")
                .last()
                .map(String::as_str),
            Some("bytes=…- → 502 (upstream 502) error")
        );
    }

    #[test]
    fn a_206_gap_fill_up_to_another_request_is_left_out_and_nothing_else() {
        let (first, seek) = (
            "bytes=0- → 206 (upstream 206)",
            "bytes=1966080-1999999 → 206 (upstream 206)",
        );
        // Chromium, as one CI run met it: its seek, then a third request, the gap from where its
        // buffer ended (the last request says how its body ended).
        let cases: [(&str, u16, Delivered, &[&str]); 4] = [
            // The gap fill is left out: the seek is the last request.
            (
                "bytes=106186-1966079",
                206,
                Delivered::Partial,
                &[first, "bytes=1966080-1999999 → 206 (upstream 206) complete"],
            ),
            // A 200 to it is the backend ignoring Range: it stays.
            (
                "bytes=106186-1966079",
                200,
                Delivered::Partial,
                &[
                    first,
                    "bytes=106186-1966079 → 200 (upstream 200) partial",
                    seek,
                ],
            ),
            // So does a closed Range that fills no gap (ends where no request starts).
            (
                "bytes=106186-1000000",
                206,
                Delivered::Partial,
                &[
                    first,
                    "bytes=106186-1000000 → 206 (upstream 206) partial",
                    seek,
                ],
            ),
            // And an error answer.
            (
                "bytes=106186-1966079",
                502,
                Delivered::Error,
                &[
                    first,
                    "bytes=106186-1966079 → 502 (upstream 502) error",
                    seek,
                ],
            ),
        ];
        for (range, status, body, want) in cases {
            let mut seek = request(9, Some("bytes=1966080-1999999"), 206, "206");
            seek.body = Delivered::Complete;
            let mut third = request(12, Some(range), status, &status.to_string());
            third.body = body;
            let chromium = chromium(
                125000,
                vec![request(0, Some("bytes=0-"), 206, "206"), seek, third],
            );
            assert_eq!(
                SnapshotBrowser::of(&chromium, true).requests,
                want,
                "{range} → {status}"
            );
        }
    }

    #[test]
    fn a_206_refetch_of_bytes_already_sent_is_left_out_and_nothing_else() {
        // Chromium under load, as one CI run met it: its first request cut, then the bytes from
        // 32768 asked for again (nginx had sent it 600000), twice, then its seek.
        let mut first = request(0, Some("bytes=0-"), 206, "206");
        first.bytes_sent = 600_000;
        let mut seek = request(40, Some("bytes=1966080-1999999"), 206, "206");
        seek.body = Delivered::Complete;
        let play = |third: &str, fourth: &str, status: u16| {
            let mut again = request(30, Some(fourth), status, &status.to_string());
            again.body = Delivered::Partial;
            chromium(
                125000,
                vec![
                    first.clone(),
                    request(20, Some(third), status, &status.to_string()),
                    again,
                    seek.clone(),
                ],
            )
        };
        // The first request and the seek: what a play whose re-fetches are left out shows.
        let first_and_seek = [
            "bytes=0- → 206 (upstream 206)",
            "bytes=1966080-1999999 → 206 (upstream 206) complete",
        ];
        let refetched = play("bytes=32768-59999", "bytes=32768-1999999", 206);
        assert_eq!(
            SnapshotBrowser::of(&refetched, true).requests,
            first_and_seek
        );
        // Beyond what nginx had sent, a closed Range stays (it is no re-fetch).
        let beyond = play("bytes=700000-759999", "bytes=700000-1999999", 206);
        assert_eq!(SnapshotBrowser::of(&beyond, true).requests.len(), 4);
        // Asked through the browser's cache, answered 304 (its bytes are still good): left out.
        let revalidated = play("bytes=32768-44284", "bytes=32768-1999999", 304);
        assert_eq!(
            SnapshotBrowser::of(&revalidated, true).requests,
            first_and_seek
        );
        // At the first byte nginx had not sent, a Range stays; at the last one it had, not.
        let edge = play("bytes=600000-659999", "bytes=600000-1999999", 206);
        assert_eq!(SnapshotBrowser::of(&edge, true).requests.len(), 4);
        let inside = play("bytes=599999-659999", "bytes=599999-1999999", 206);
        assert_eq!(SnapshotBrowser::of(&inside, true).requests.len(), 2);
        // An error from upstream before the 206 (nginx retried): it stays.
        let mut retried = play("bytes=32768-59999", "bytes=700000-1999999", 206);
        retried.requests[1].upstream_status = "502, 206".into();
        assert_eq!(SnapshotBrowser::of(&retried, true).requests.len(), 4);
        // A 200 to one stays (the backend ignoring Range).
        let ignored = play("bytes=32768-59999", "bytes=32768-1999999", 200);
        assert_eq!(SnapshotBrowser::of(&ignored, true).requests.len(), 4);
        // And the seek, whatever was sent before it: the first request sent the whole file.
        let mut whole = first.clone();
        whole.bytes_sent = 2_000_000;
        let seek_only = chromium(125000, vec![whole, seek.clone()]);
        assert_eq!(
            SnapshotBrowser::of(&seek_only, true).requests,
            first_and_seek
        );
    }

    #[test]
    fn a_range_read_resumed_after_a_cut_206_from_0_is_left_out_and_nothing_else() {
        // Chromium under load, as one run met it in play-uncached's 32 MB mp3 under uvicorn (the
        // byte counts here are illustrative): its first read cut, its seek, then, after seeking
        // back, the bytes from inside what nginx had sent for the first read.
        let mut first = request(0, Some("bytes=0-"), 206, "206");
        first.bytes_sent = 5_000_000;
        let mut seek = request(40, Some("bytes=31981568-"), 206, "206");
        seek.body = Delivered::Complete;
        let play = |first: &BrowserRequest, resumed: &str, status: u16, upstream: &str| {
            let resumed = request(900, Some(resumed), status, upstream);
            chromium(1999968, vec![first.clone(), seek.clone(), resumed])
        };
        let first_and_seek = [
            "bytes=0- → 206 (upstream 206)",
            "bytes=31981568- → 206 (upstream 206) complete",
        ];
        let resumed = play(&first, "bytes=4980000-", 206, "206");
        assert_eq!(SnapshotBrowser::of(&resumed, true).requests, first_and_seek);
        // At the last byte nginx had sent: left out; at the first it had not (the answer ended
        // early), it stays.
        let inside = play(&first, "bytes=4999999-", 206, "206");
        assert_eq!(SnapshotBrowser::of(&inside, true).requests, first_and_seek);
        let at_edge = play(&first, "bytes=5000000-", 206, "206");
        assert_eq!(SnapshotBrowser::of(&at_edge, true).requests.len(), 3);
        // A 200 to it, a failed upstream attempt: it stays.
        let ignored = play(&first, "bytes=4980000-", 200, "200");
        assert_eq!(SnapshotBrowser::of(&ignored, true).requests.len(), 3);
        let retried = play(&first, "bytes=4980000-", 206, "502, 206");
        assert_eq!(SnapshotBrowser::of(&retried, true).requests.len(), 3);
        // The play's furthest start (its seek's) is no resumed read, even inside what was sent.
        let mut whole = first.clone();
        whole.bytes_sent = 32_000_000;
        let seek_only = chromium(1999968, vec![whole, seek.clone()]);
        assert_eq!(
            SnapshotBrowser::of(&seek_only, true).requests,
            first_and_seek
        );
        // After a first read from 0 answered 200 (a backend ignoring Range), with or without a
        // Range: it stays.
        for range in [Some("bytes=0-"), None] {
            let mut whole = request(0, range, 200, "200");
            whole.bytes_sent = 5_000_000;
            let after_200 = play(&whole, "bytes=4980000-", 206, "206");
            assert_eq!(SnapshotBrowser::of(&after_200, true).requests.len(), 3);
        }
        // After a 206 from inside the recording, however much it sent, it is none (its line,
        // `bytes=…-`, would look like the other's: asked of the rule itself).
        let resumes = |o: &BrowserOutcome| {
            let all: Vec<&BrowserRequest> = o.requests.iter().collect();
            is_resumed_read(all[2], &all, 31_981_568)
        };
        assert!(resumes(&resumed));
        let mut from_inside = request(0, Some("bytes=1000-"), 206, "206");
        from_inside.bytes_sent = 30_000_000;
        assert!(!resumes(&play(&from_inside, "bytes=4980000-", 206, "206")));
        // Nor is one that began before the read it would resume.
        let mut early = play(&first, "bytes=4980000-", 206, "206");
        early.requests[2].at_ms = 0;
        early.requests[0].at_ms = 10;
        assert!(!resumes(&early));
    }

    #[test]
    fn a_seek_read_asked_again_from_its_start_shows_as_the_seek() {
        // Chromium under load, as one CI run met it in play-cached's 32 MB mp3 (hardened, nginx
        // sending the saved file): its seek's read cut, then the rest asked from the same byte.
        let mut first = request(0, Some("bytes=0-"), 206, "200");
        first.bytes_sent = 5_000_000;
        let mut seek = request(40, Some("bytes=31981568-31999999"), 206, "200");
        seek.bytes_sent = 1000;
        let play = |seek: &BrowserRequest, again: BrowserRequest| {
            chromium(1999968, vec![first.clone(), seek.clone(), again])
        };
        let again = |range: &str, status: u16, upstream: &str, body: Delivered| {
            let mut r = request(900, Some(range), status, upstream);
            r.body = body;
            r
        };
        let complete = again("bytes=31981568-", 206, "200", Delivered::Complete);
        // What the play shows when the seek's read is not cut (the snapshot's lines).
        let mut whole_seek = seek.clone();
        whole_seek.body = Delivered::Complete;
        let uncut = chromium(1999968, vec![first.clone(), whole_seek.clone()]);
        let seek_lines = [
            "bytes=0- → 206 (upstream 200)",
            "bytes=31981568-31999999 → 206 (upstream 200) complete",
        ];
        assert_eq!(SnapshotBrowser::of(&uncut, true).requests, seek_lines);
        // Asked again and read to its end: the seek's lines.
        let resumed = play(&seek, complete.clone());
        assert_eq!(SnapshotBrowser::of(&resumed, true).requests, seek_lines);
        // Cut again (a stack that cuts bodies): the seek's line says so.
        let cut_twice = play(
            &seek,
            again("bytes=31981568-", 206, "200", Delivered::Partial),
        );
        assert_eq!(
            SnapshotBrowser::of(&cut_twice, true).requests,
            [
                "bytes=0- → 206 (upstream 200)",
                "bytes=31981568-31999999 → 206 (upstream 200) partial",
            ]
        );
        // Asked again after a seek nginx sent whole (a CI run met it: the bytes were still in the
        // socket when Chromium let the read go): the seek's lines as well.
        let after_whole = play(&whole_seek, complete.clone());
        assert_eq!(SnapshotBrowser::of(&after_whole, true).requests, seek_lines);
        // A retried upstream error, a 200, or another start: it stays.
        let stays = [
            play(
                &seek,
                again("bytes=31981568-", 206, "502, 200", Delivered::Complete),
            ),
            play(
                &seek,
                again("bytes=31981568-", 200, "200", Delivered::Complete),
            ),
            play(
                &seek,
                again("bytes=31981000-", 206, "200", Delivered::Complete),
            ),
        ];
        for o in &stays {
            assert_eq!(
                SnapshotBrowser::of(o, true).requests.len(),
                3,
                "{:?}",
                o.requests
            );
        }
        // Nor is one that began before the seek.
        let mut early = play(&seek, complete.clone());
        early.requests[2].at_ms = 10;
        assert_eq!(SnapshotBrowser::of(&early, true).requests.len(), 3);
        // Where nginx logged a gateway error during the step, nothing is folded.
        let resumed = play(&seek, complete);
        assert_eq!(SnapshotBrowser::of(&resumed, false).requests.len(), 3);
        // With a request between the seek and the read asked again (a seek back to the start),
        // the folded line stands where the read asked again did: last, saying how it ended.
        let mut back = request(500, Some("bytes=0-"), 206, "200");
        back.body = Delivered::Complete;
        let cut = again("bytes=31981568-", 206, "200", Delivered::Partial);
        let between = chromium(1999968, vec![first.clone(), seek.clone(), back, cut]);
        assert_eq!(
            SnapshotBrowser::of(&between, true).requests,
            [
                "bytes=0- → 206 (upstream 200)",
                "bytes=31981568-31999999 → 206 (upstream 200) partial",
            ]
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
