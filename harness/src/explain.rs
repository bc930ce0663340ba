//! `harness explain`: an nginx error log's gateway errors by cause, and, given the access log
//! too, what became of each failed upstream attempt: retried by nginx (the client got its
//! answer) or passed on to the client. The keep-alive fix is given only where the failure looks
//! like the keep-alive race: a connection that failed at once, before the response header.

use crate::access::AccessLine;
use crate::gateway::{classify, line_time, GatewayCause, GatewayError, Stage};
use std::collections::BTreeMap;

/// What became of a failed upstream attempt, from the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// nginx tried again and the client got this status.
    Retried(u16),
    /// The client got this status (the failure was the last attempt).
    ReachedClient(u16),
    /// No access log, or no line matched.
    Unknown,
}

/// One gateway error, explained.
#[derive(Debug, Clone)]
pub struct Explained {
    /// The classified line.
    pub error: GatewayError,
    /// `METHOD path` of the request, from the line.
    pub request: Option<String>,
    /// What became of it.
    pub fate: Fate,
    /// It looks like the keep-alive race: closed or reset before the response header, on an
    /// attempt that failed at once (at most 20 ms, where the access log says).
    pub keepalive_race: bool,
}

/// The keep-alive fix, given only where the race is the likely cause.
pub const KEEPALIVE_FIX: &str = "keep the backend's keep-alive timeout above nginx's upstream keepalive_timeout (e.g. 75 s vs 60 s), or lower nginx's below the backend's";

/// `METHOD /path` from an error line's `request: "GET /path HTTP/1.1"`.
fn request_of(line: &str) -> Option<String> {
    let rest = line.split("request: \"").nth(1)?;
    let req = rest.split('"').next()?;
    let mut parts = req.split_whitespace();
    Some(format!("{} {}", parts.next()?, parts.next()?))
}

/// Each failed upstream attempt of the access log, in order: (request, its attempt's response
/// time in ms, the fate).
fn failed_attempts(access: &str) -> Vec<(String, Option<u64>, Fate)> {
    let mut out = Vec::new();
    for a in access.lines().filter_map(AccessLine::parse) {
        let attempts = a.upstream_attempts();
        let times: Vec<Option<u64>> = a
            .upstream_response_time
            .split([',', ':'])
            .map(|t| {
                t.trim()
                    .parse::<f64>()
                    .ok()
                    .map(|s| (s * 1000.0).round() as u64)
            })
            .collect();
        for (i, status) in attempts.iter().enumerate() {
            let last = i + 1 == attempts.len();
            if status.is_none_or(|s| s < 500) || (last && status != &Some(a.status)) {
                continue;
            }
            let fate = if last {
                Fate::ReachedClient(a.status)
            } else {
                Fate::Retried(a.status)
            };
            out.push((
                format!("{} {}", a.method, a.path),
                times.get(i).copied().flatten(),
                fate,
            ));
        }
    }
    out
}

/// How long (`$upstream_response_time`, ms) a failed attempt may take and still count as failed
/// at once: nginx met a connection the backend had already closed, with no backend work in
/// between. 2 ms was too tight on a loaded 2-core CI machine (one run counted 1 of 2 races:
/// docs/records/ci-2026-12-01.txt).
const AT_ONCE_MS: u64 = 20;

/// Explains every gateway error of `error_log`, with the access log's account where given.
pub fn explain(error_log: &str, access_log: Option<&str>) -> Vec<Explained> {
    let mut attempts = access_log.map(failed_attempts).unwrap_or_default();
    let mut out = Vec::new();
    for e in error_log.lines().filter_map(classify) {
        let request = request_of(&e.raw);
        let found = request
            .as_ref()
            .and_then(|r| attempts.iter().position(|(req, _, _)| req == r))
            .map(|i| attempts.remove(i));
        let before_header = matches!(e.stage, Stage::ReadingHeader | Stage::SendingRequest);
        let closed = matches!(
            e.cause,
            GatewayCause::PrematureClose | GatewayCause::ResetByPeer | GatewayCause::SendFailed
        );
        let at_once = found
            .as_ref()
            .is_none_or(|(_, ms, _)| ms.is_none_or(|ms| ms <= AT_ONCE_MS));
        out.push(Explained {
            keepalive_race: before_header && closed && at_once,
            fate: found.map(|(_, _, f)| f).unwrap_or(Fate::Unknown),
            request,
            error: e,
        });
    }
    out
}

/// The explanation as `harness explain` prints it: per cause, count and times, what it means,
/// what became of the requests, and the fix that fits them.
pub fn render(explained: &[Explained]) -> String {
    if explained.is_empty() {
        return "no gateway errors found".into();
    }
    let mut by: BTreeMap<GatewayCause, Vec<&Explained>> = BTreeMap::new();
    for e in explained {
        by.entry(e.error.cause).or_default().push(e);
    }
    let mut out = Vec::new();
    for (cause, lines) in by {
        let time = |e: &&Explained| line_time(&e.error.raw).unwrap_or("").to_string();
        let (first, last) = (
            lines.first().map(time).unwrap_or_default(),
            lines.last().map(time).unwrap_or_default(),
        );
        out.push(format!(
            "{} × {}  (first {first}, last {last})",
            cause.name(),
            lines.len()
        ));
        out.push(format!("  means: {}", cause.meaning()));
        let retried: Vec<&&Explained> = lines
            .iter()
            .filter(|e| matches!(e.fate, Fate::Retried(_)))
            .collect();
        let reached: Vec<&&Explained> = lines
            .iter()
            .filter(|e| matches!(e.fate, Fate::ReachedClient(_)))
            .collect();
        for (n, what, fate) in [
            (retried.len(), "retried by nginx", retried.first()),
            (reached.len(), "reached the client", reached.first()),
        ] {
            if let Some(e) = fate {
                let status = match e.fate {
                    Fate::Retried(s) | Fate::ReachedClient(s) => s,
                    Fate::Unknown => 0,
                };
                out.push(format!(
                    "  {n} {what} (the client got {status}), e.g. {}",
                    e.request.as_deref().unwrap_or("?")
                ));
            }
        }
        let races = lines.iter().filter(|e| e.keepalive_race).count();
        if races > 0 {
            out.push(format!("  {races} closed at once before the response header: a reused keep-alive connection the backend had already closed"));
            out.push(format!("  fix:   {KEEPALIVE_FIX}"));
        }
        if races < lines.len() {
            out.push(format!("  fix:   {}", cause.fix()));
        }
        out.push(format!("  e.g.:  {}", lines[0].error.raw));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(time: &str) -> String {
        format!(
            r#"127.0.0.1 [01/Dec/2026:23:47:07 +0000] "POST /webhook/recording-status HTTP/1.1" status=502 bytes=150 range="-" upstream_status="502" upstream_response_time="{time}" upstream_connect_time="0.000" request_time={time} request_id="-" msec=1764632827.000"#
        )
    }

    const ERROR: &str = r#"2026/12/01 23:47:07 [error] 1#1: *3 upstream prematurely closed connection while reading response header from upstream, client: 127.0.0.1, server: _, request: "POST /webhook/recording-status HTTP/1.1", upstream: "http://127.0.0.1:1/webhook/recording-status", host: "127.0.0.1:2""#;

    #[test]
    fn a_failure_before_the_header_within_20_ms_is_the_race_and_a_slower_one_is_not() {
        for (time, race) in [
            ("0.000", true),
            ("0.014", true),
            ("0.020", true),
            ("0.021", false),
            ("0.300", false),
        ] {
            let e = explain(ERROR, Some(&access(time)));
            assert_eq!(e.len(), 1);
            assert_eq!(e[0].keepalive_race, race, "{time}");
            assert_eq!(e[0].fate, Fate::ReachedClient(502));
        }
    }
}
