//! nginx's access log in the `timing` format both deployable configs define, parsed once for
//! every reader (a step's settle, the browser's requests, diagnose):
//!
//! ```text
//! $remote_addr [$time_local] "$request" status=$status bytes=$body_bytes_sent range="$http_range"
//! upstream_status="$upstream_status" upstream_response_time="$upstream_response_time"
//! upstream_connect_time="$upstream_connect_time" request_time=$request_time
//! request_id="$http_x_request_id" msec=$msec
//! ```

use regex::Regex;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// One access-log line.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AccessLine {
    /// The request's method.
    pub method: String,
    /// Its path and query.
    pub path: String,
    /// `$status`.
    pub status: u16,
    /// `$body_bytes_sent`.
    pub bytes_sent: u64,
    /// `$http_range`, `None` when the request had none.
    pub range: Option<String>,
    /// `$upstream_status` as nginx wrote it: one status per upstream attempt (`502, 200` after
    /// a retry), `-` when no upstream was asked.
    pub upstream_status: String,
    /// `$upstream_response_time`, per attempt, as nginx wrote it.
    pub upstream_response_time: String,
    /// `$upstream_connect_time`, per attempt, as nginx wrote it.
    pub upstream_connect_time: String,
    /// `$request_time` in ms.
    pub request_time_ms: u64,
    /// `$http_x_request_id`, when the client sent one.
    pub request_id: Option<String>,
    /// `$msec` in ms since the epoch: when nginx logged it (the request's end).
    pub logged_at_ms: Option<u64>,
}

fn secs_to_ms(s: &str) -> u64 {
    (s.parse::<f64>().unwrap_or(0.0) * 1000.0).round() as u64
}

fn dash_is_none(s: &str) -> Option<String> {
    (!s.is_empty() && s != "-").then(|| s.to_string())
}

impl AccessLine {
    /// Parses a `timing` line; `None` for any other line.
    pub fn parse(line: &str) -> Option<AccessLine> {
        static RE: OnceLock<Regex> = OnceLock::new();
        let re = RE.get_or_init(|| {
            Regex::new(
                r#""(\S+) (\S+) [^"]*" status=(\d+) bytes=(\d+) range="([^"]*)" upstream_status="([^"]*)" upstream_response_time="([^"]*)" upstream_connect_time="([^"]*)" request_time=([\d.]+) request_id="([^"]*)"(?: msec=([\d.]+))?"#,
            )
            .expect("valid regex")
        });
        let c = re.captures(line)?;
        Some(AccessLine {
            method: c[1].to_string(),
            path: c[2].to_string(),
            status: c[3].parse().ok()?,
            bytes_sent: c[4].parse().ok()?,
            range: dash_is_none(&c[5]),
            upstream_status: c[6].to_string(),
            upstream_response_time: c[7].to_string(),
            upstream_connect_time: c[8].to_string(),
            request_time_ms: secs_to_ms(&c[9]),
            request_id: dash_is_none(&c[10]),
            logged_at_ms: c.get(11).map(|m| secs_to_ms(m.as_str())),
        })
    }

    /// Each upstream attempt's status (`None` where nginx got no answer, `-`... none at all
    /// when no upstream was asked).
    pub fn upstream_attempts(&self) -> Vec<Option<u16>> {
        if self.upstream_status.trim() == "-" || self.upstream_status.is_empty() {
            return Vec::new();
        }
        self.upstream_status
            .split([',', ':'])
            .map(|s| s.trim().parse().ok())
            .collect()
    }

    /// When the request started, in ms since the epoch (`$msec` − `$request_time`).
    pub fn started_at_ms(&self) -> Option<u64> {
        self.logged_at_ms
            .map(|t| t.saturating_sub(self.request_time_ms))
    }
}

/// Every `timing` line of `lines`.
pub fn parse_all(lines: &[String]) -> Vec<AccessLine> {
    lines.iter().filter_map(|l| AccessLine::parse(l)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timing_line_is_read_typed() {
        let line = r#"127.0.0.1 [25/Nov/2026:14:00:00 +0000] "GET /api/calls/CA1/download HTTP/1.1" status=206 bytes=600 range="bytes=400-" upstream_status="502, 206" upstream_response_time="0.001, 0.004" upstream_connect_time="0.000, 0.000" request_time=0.005 request_id="-" msec=1764079200.123"#;
        let a = AccessLine::parse(line).unwrap();
        assert_eq!(
            (a.method.as_str(), a.path.as_str()),
            ("GET", "/api/calls/CA1/download")
        );
        assert_eq!((a.status, a.bytes_sent), (206, 600));
        assert_eq!(a.range.as_deref(), Some("bytes=400-"));
        assert_eq!(a.upstream_attempts(), vec![Some(502), Some(206)]);
        assert_eq!(a.request_time_ms, 5);
        assert_eq!(a.request_id, None);
        assert_eq!(a.started_at_ms(), Some(1_764_079_200_118));
        assert!(AccessLine::parse("2026/11/25 [error] something").is_none());
    }
}
