//! The one fault model, shared by mock-twilio and by the harness's nginx→backend hop:
//! what can go wrong ([`Fault`]), where ([`FaultMatch`]), how often ([`FaultRule::times`]).
//! Serialised the same way in the admin API and in scenario files.

use crate::error::InvalidField;
use rand::{rngs::StdRng, Rng, SeedableRng};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;

/// One way a connection or response can misbehave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Wait before sending the response headers: `ms`, or a seeded random time in `ms..=max_ms`.
    Delay {
        /// Milliseconds to wait (the lower bound when `max_ms` is set).
        ms: u64,
        /// Upper bound of a random delay.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_ms: Option<u64>,
        /// Seed of the random delays (default 0), so a run can be replayed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seed: Option<u64>,
    },
    /// Send the body at no more than `bytes_per_sec`.
    Throttle {
        /// The rate limit.
        bytes_per_sec: u64,
    },
    /// Send the body in chunks of `chunk_bytes` with a pause of `pause_ms` between them.
    Dribble {
        /// Bytes per chunk.
        chunk_bytes: u64,
        /// Pause between chunks.
        pause_ms: u64,
    },
    /// Answer with this status and Twilio's error JSON instead of the real response.
    Status {
        /// The HTTP status (404, 429, 500, 503, ...).
        status: u16,
        /// `Retry-After` seconds (429 and 503 default to 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    /// Reset the connection (RST) before any response.
    Reset,
    /// Send the headers announcing the full `Content-Length`, then only `bytes` of the body, then close.
    CloseAfter {
        /// Body bytes sent before the close.
        bytes: u64,
    },
    /// Read the request and never answer, until the peer gives up.
    Hang,
    /// Send bytes that are not HTTP, then close.
    Garbage,
    /// Send the response with this header set to this value (replacing the upstream's),
    /// exactly as written: an invalid `Content-Length`, a header larger than a proxy's buffer
    /// (`value` repeated `repeat` times). A response whose `Content-Length` was replaced ends
    /// with the connection's close.
    Header {
        /// The header's name.
        name: String,
        /// Its value.
        value: String,
        /// How many times `value` is repeated (default 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        repeat: Option<usize>,
    },
    /// The keep-alive race, made certain: when the upstream closes an idle keep-alive
    /// connection, the client is not told until it sends its next request on it, which is then
    /// closed unanswered, exactly as when the upstream's close crosses the client's request on
    /// the wire. It only fires where the upstream's idle timeout is the shorter one: an upstream
    /// that keeps idle connections longer than the client never triggers it.
    KeepaliveRace,
    /// Forward the request without its `Range` and `If-Range` headers: the server behind then
    /// answers as one that ignores Range does (a 200 with the whole body), and the client gets
    /// that answer for the Range it asked.
    StripRange,
}

impl Fault {
    /// Every fault kind's name, as written in JSON and TOML.
    pub const KINDS: &'static [&'static str] = &[
        "delay",
        "throttle",
        "dribble",
        "status",
        "reset",
        "close_after",
        "hang",
        "garbage",
        "keepalive_race",
        "header",
        "strip_range",
    ];

    /// The kind's name (`"close_after"`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Delay { .. } => "delay",
            Fault::Throttle { .. } => "throttle",
            Fault::Dribble { .. } => "dribble",
            Fault::Status { .. } => "status",
            Fault::Reset => "reset",
            Fault::CloseAfter { .. } => "close_after",
            Fault::Hang => "hang",
            Fault::Garbage => "garbage",
            Fault::KeepaliveRace => "keepalive_race",
            Fault::Header { .. } => "header",
            Fault::StripRange => "strip_range",
        }
    }

    /// Checks the values make sense (a rate above zero, a status code, ...).
    pub fn validate(&self) -> Result<(), InvalidField> {
        let refuse = |field: &str, message: String| Err(InvalidField::new(field, message));
        match self {
            Fault::Delay {
                ms,
                max_ms: Some(max),
                ..
            } if max < ms => refuse(
                "fault.max_ms",
                format!("fault.max_ms ({max}) is below fault.ms ({ms})"),
            ),
            Fault::Throttle { bytes_per_sec: 0 } => refuse(
                "fault.bytes_per_sec",
                "fault.bytes_per_sec must be above 0".into(),
            ),
            Fault::Dribble { chunk_bytes: 0, .. } => refuse(
                "fault.chunk_bytes",
                "fault.chunk_bytes must be above 0".into(),
            ),
            Fault::Header { name, .. } if !is_token(name) => refuse(
                "fault.name",
                format!("fault.name must be a header name (letters, digits, -), got {name:?}"),
            ),
            Fault::Header { value, .. } if value.contains(['\r', '\n']) => {
                refuse("fault.value", "fault.value must be one line".into())
            }
            Fault::Status { status, .. } if !(100..=599).contains(status) => refuse(
                "fault.status",
                format!("fault.status must be an HTTP status (100-599), got {status}"),
            ),
            _ => Ok(()),
        }
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Which requests a rule applies to; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultMatch {
    /// A regular expression searched in the request path (with query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// The request method, e.g. `GET` (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// A recording SID that must appear in the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_sid: Option<String>,
}

/// A fault, where it applies, and how many times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Which requests it applies to (default: all).
    #[serde(default, rename = "match")]
    pub matcher: FaultMatch,
    /// What goes wrong.
    pub fault: Fault,
    /// Only the first `times` matching requests (default: every one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

impl FaultRule {
    /// A rule applying `fault` to every request.
    pub fn new(fault: Fault) -> Self {
        FaultRule {
            matcher: FaultMatch::default(),
            fault,
            times: None,
        }
    }

    /// Only requests whose path matches `regex`.
    #[must_use]
    pub fn path_regex(mut self, regex: impl Into<String>) -> Self {
        self.matcher.path_regex = Some(regex.into());
        self
    }

    /// Only requests with this method.
    #[must_use]
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.matcher.method = Some(method.into());
        self
    }

    /// Only requests for this recording.
    #[must_use]
    pub fn recording(mut self, sid: impl Into<String>) -> Self {
        self.matcher.recording_sid = Some(sid.into());
        self
    }

    /// Only the first `n` matching requests.
    #[must_use]
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Checks the regex compiles and the fault's values make sense.
    pub fn validate(&self) -> Result<(), InvalidField> {
        self.regex()?;
        self.fault.validate()
    }

    fn regex(&self) -> Result<Option<Regex>, InvalidField> {
        self.matcher
            .path_regex
            .as_deref()
            .map(Regex::new)
            .transpose()
            .map_err(|e| {
                InvalidField::new(
                    "match.path_regex",
                    format!("match.path_regex is not a valid regex: {e}"),
                )
            })
    }
}

/// What the fault layer does to one request, after all matching rules are combined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Wait this long before the response headers.
    pub delay: Duration,
    /// A fault that replaces the response (status, reset, hang, garbage, keep-alive race).
    pub terminal: Option<Fault>,
    /// Body rate limit in bytes per second.
    pub throttle: Option<u64>,
    /// Body chunking with pauses.
    pub dribble: Option<(u64, Duration)>,
    /// Close after this many body bytes.
    pub close_after: Option<u64>,
    /// Response headers set to these values.
    pub headers: Vec<(String, String)>,
    /// The request is forwarded without `Range` and `If-Range`.
    pub strip_range: bool,
    /// The kinds that fired, for the journal.
    pub fired: Vec<&'static str>,
}

impl Plan {
    /// True when no fault applies.
    pub fn is_clean(&self) -> bool {
        self.fired.is_empty()
    }
}

struct Armed {
    id: u64,
    rule: FaultRule,
    regex: Option<Regex>,
    remaining: Option<u32>,
    rng: StdRng,
}

/// The armed rules of one fault point; rules are consumed as they fire.
#[derive(Default)]
pub struct FaultSet {
    inner: Mutex<(u64, Vec<Armed>)>,
}

impl FaultSet {
    /// Arms a rule and returns its id; an invalid rule is refused with a message naming the field.
    pub fn arm(&self, rule: FaultRule) -> Result<u64, InvalidField> {
        rule.fault.validate()?;
        let regex = rule.regex()?;
        let seed = match &rule.fault {
            Fault::Delay { seed, .. } => seed.unwrap_or(0),
            _ => 0,
        };
        let mut inner = self.inner.lock().unwrap();
        inner.0 += 1;
        let id = inner.0;
        inner.1.push(Armed {
            id,
            remaining: rule.times,
            rule,
            regex,
            rng: StdRng::seed_from_u64(seed),
        });
        Ok(id)
    }

    /// Disarms every rule.
    pub fn clear(&self) {
        self.inner.lock().unwrap().1.clear();
    }

    /// The rules still armed, with their ids and remaining counts.
    pub fn list(&self) -> Vec<(u64, FaultRule, Option<u32>)> {
        let inner = self.inner.lock().unwrap();
        inner
            .1
            .iter()
            .map(|a| (a.id, a.rule.clone(), a.remaining))
            .collect()
    }

    /// True when a rule whose fault passes `is` is armed and has uses left, e.g.
    /// `has_armed(|f| matches!(f, Fault::KeepaliveRace))`.
    pub fn has_armed(&self, is: impl Fn(&Fault) -> bool) -> bool {
        let inner = self.inner.lock().unwrap();
        inner
            .1
            .iter()
            .any(|a| is(&a.rule.fault) && a.remaining != Some(0))
    }

    /// Combines every rule matching this request into a plan, consuming one use of each.
    /// `stale` says the upstream has closed this idle connection (for the keep-alive race).
    pub fn plan(&self, method: &str, path: &str, stale: bool) -> Plan {
        let mut plan = Plan::default();
        let mut inner = self.inner.lock().unwrap();
        for armed in inner.1.iter_mut() {
            if armed.remaining == Some(0) || !armed.matches(method, path) {
                continue;
            }
            if matches!(armed.rule.fault, Fault::KeepaliveRace) && !stale {
                continue;
            }
            let fault = armed.rule.fault.clone();
            match &fault {
                Fault::Delay { ms, max_ms, .. } => {
                    let ms = match max_ms {
                        Some(max) => armed.rng.gen_range(*ms..=*max),
                        None => *ms,
                    };
                    plan.delay += Duration::from_millis(ms);
                }
                Fault::Throttle { bytes_per_sec } => plan.throttle = Some(*bytes_per_sec),
                Fault::Dribble {
                    chunk_bytes,
                    pause_ms,
                } => plan.dribble = Some((*chunk_bytes, Duration::from_millis(*pause_ms))),
                Fault::CloseAfter { bytes } => plan.close_after = Some(*bytes),
                Fault::StripRange => plan.strip_range = true,
                Fault::Header {
                    name,
                    value,
                    repeat,
                } => plan
                    .headers
                    .push((name.to_ascii_lowercase(), value.repeat(repeat.unwrap_or(1)))),
                _ => {
                    if plan.terminal.is_some() {
                        continue;
                    }
                    plan.terminal = Some(fault.clone());
                }
            }
            if let Some(n) = armed.remaining.as_mut() {
                *n -= 1;
            }
            plan.fired.push(fault.kind());
        }
        plan
    }
}

impl Armed {
    fn matches(&self, method: &str, path: &str) -> bool {
        let m = &self.rule.matcher;
        m.method
            .as_deref()
            .is_none_or(|want| want.eq_ignore_ascii_case(method))
            && self.regex.as_ref().is_none_or(|re| re.is_match(path))
            && m.recording_sid
                .as_deref()
                .is_none_or(|sid| path.contains(sid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_limits_how_often_a_rule_fires() {
        let set = FaultSet::default();
        set.arm(
            FaultRule::new(Fault::Status {
                status: 500,
                retry_after: None,
            })
            .times(2),
        )
        .unwrap();
        let fired: Vec<bool> = (0..4)
            .map(|_| set.plan("GET", "/x", false).terminal.is_some())
            .collect();
        assert_eq!(fired, [true, true, false, false]);
    }

    #[test]
    fn faults_compose_and_match_by_method_and_path() {
        let set = FaultSet::default();
        set.arm(
            FaultRule::new(Fault::Delay {
                ms: 50,
                max_ms: None,
                seed: None,
            })
            .method("get"),
        )
        .unwrap();
        set.arm(FaultRule::new(Fault::Throttle { bytes_per_sec: 10 }).path_regex(r"\.mp3$"))
            .unwrap();
        let plan = set.plan("GET", "/a.mp3", false);
        assert_eq!(plan.delay, Duration::from_millis(50));
        assert_eq!(plan.throttle, Some(10));
        assert!(set.plan("POST", "/a.wav", false).is_clean());
    }

    #[test]
    fn seeded_random_delays_replay() {
        let delays = |seed| {
            let set = FaultSet::default();
            set.arm(FaultRule::new(Fault::Delay {
                ms: 0,
                max_ms: Some(1000),
                seed: Some(seed),
            }))
            .unwrap();
            (0..5)
                .map(|_| set.plan("GET", "/", false).delay)
                .collect::<Vec<_>>()
        };
        assert_eq!(delays(7), delays(7));
        assert_ne!(delays(7), delays(8));
    }

    #[test]
    fn keepalive_race_waits_for_a_stale_connection() {
        let set = FaultSet::default();
        set.arm(FaultRule::new(Fault::KeepaliveRace).times(1))
            .unwrap();
        assert!(set.plan("GET", "/", false).is_clean());
        assert_eq!(
            set.plan("GET", "/", true).terminal,
            Some(Fault::KeepaliveRace)
        );
    }

    #[test]
    fn json_form_matches_the_admin_api() {
        let rule: FaultRule = serde_json::from_str(
            r#"{"match":{"path_regex":"RE1","method":"GET"},"fault":{"kind":"close_after","bytes":10},"times":1}"#,
        )
        .unwrap();
        assert_eq!(rule.fault, Fault::CloseAfter { bytes: 10 });
        let err = serde_json::from_str::<FaultRule>(r#"{"fault":{"kind":"explode"}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("explode") && err.contains("close_after"),
            "{err}"
        );
    }
}
