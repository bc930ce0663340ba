//! [`Expect`]: what a step must show, checked against its [`Outcome`] (scenario files, rstest
//! rows, the soak's plans and `harness check` all say it this way). A failed expectation is a
//! line naming the step, what it got and what was expected.

use crate::outcome::{AnsweredBy, BodyCheck, BodyKind, Outcome};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A status, or a class of them (`5xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    /// Exactly this status.
    Exactly(u16),
    /// Any status of this hundred (`5` for `5xx`).
    Class(u16),
}

impl StatusMatch {
    /// Whether `status` matches.
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Exactly(s) => s == status,
            StatusMatch::Class(c) => status / 100 == c,
        }
    }
}

impl std::fmt::Display for StatusMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatusMatch::Exactly(s) => write!(f, "{s}"),
            StatusMatch::Class(c) => write!(f, "{c}xx"),
        }
    }
}

impl Serialize for StatusMatch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StatusMatch::Exactly(n) => s.serialize_u16(*n),
            StatusMatch::Class(_) => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for StatusMatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Code(u16),
            Class(String),
        }
        match Form::deserialize(d)? {
            Form::Code(n) => Ok(StatusMatch::Exactly(n)),
            Form::Class(c) => match c.as_bytes() {
                [d @ b'1'..=b'5', b'x', b'x'] => Ok(StatusMatch::Class(u16::from(d - b'0'))),
                _ => Err(serde::de::Error::custom(format!(
                    "{c:?} is not a status class: write 2xx, 4xx, 5xx (or a number)"
                ))),
            },
        }
    }
}

impl schemars::JsonSchema for StatusMatch {
    fn schema_name() -> String {
        "StatusMatch".into()
    }

    fn json_schema(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        serde_json::from_value(serde_json::json!({
            "description": "A status (206) or a class of them (\"5xx\")",
            "anyOf": [
                { "type": "integer", "minimum": 100, "maximum": 599 },
                { "type": "string", "pattern": "^[1-5]xx$" }
            ]
        }))
        .expect("a valid schema")
    }
}

/// Checks a step makes on top of its snapshot; checked even while snapshots are updated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The status the client must get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Any of these statuses (`[200, 206, 416]`, `[200, "5xx"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_in: Option<Vec<StatusMatch>>,
    /// No gateway error may appear in nginx's error log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_gateway_errors: Option<bool>,
    /// What the body must be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyKind>,
    /// Any of these bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_in: Option<Vec<BodyKind>>,
    /// The body must arrive whole: a body cut short fails (`truncated` alone says nothing of
    /// that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
    /// Exactly this many body bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_bytes: Option<u64>,
    /// Response headers with exactly these values (`content-range = "bytes 0-999/5000"`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Who must have answered (`backend`: not one of nginx's error pages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<AnsweredBy>,
    /// For a `play` step: the page played (`true`) or showed the user a media error (`false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plays: Option<bool>,
    /// For a `deploy` step: at most this many of the load's requests may fail (no 2xx, no
    /// answer, or a body cut short).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<u64>,
}

/// `a`, `a or b`, `a, b or c`.
fn any_of<T: std::fmt::Display>(items: &[T]) -> String {
    let words: Vec<String> = items.iter().map(T::to_string).collect();
    match words.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

impl Expect {
    /// Every way `o` falls short of this, one line each (empty when it holds).
    pub fn failures(&self, o: &Outcome) -> Vec<String> {
        if o.load.is_some() {
            return self.load_failures(o);
        }
        if let Some(d) = &o.deploy {
            return match self.failed {
                Some(most) if d.failed > most => vec![format!(
                    "{}: {} of {} requests failed (at most {most} may): {}{}",
                    o.step,
                    d.failed,
                    d.requests,
                    d.failures_by_cause(),
                    d.failed_requests
                        .iter()
                        .map(|r| format!("\n    {r}"))
                        .collect::<String>()
                )],
                _ => Vec::new(),
            };
        }
        let mut f = Vec::new();
        let step = &o.step;
        if let (Some(want), Some(b)) = (self.plays, &o.browser) {
            if b.page.played() != want {
                let error = b.page.error_name.as_deref().map(|e| format!(" ({e})"));
                f.push(format!(
                    "{step}: expected the page {}, it stopped at {:?}{}",
                    if want { "to play" } else { "to fail to play" },
                    b.page.stage,
                    error.unwrap_or_default()
                ));
            }
        }
        if let Some(status) = self.status {
            if o.status != Some(status) {
                f.push(format!(
                    "{step}: expected status {status}, got {}",
                    o.summary()
                ));
            }
        }
        if let Some(any) = &self.status_in {
            if !o.status.is_some_and(|s| any.iter().any(|m| m.matches(s))) {
                f.push(format!("{step}: {}, expected {}", o.summary(), any_of(any)));
            }
        }
        if self.no_gateway_errors == Some(true) && !o.gateway_errors.is_empty() {
            let causes: Vec<&str> = o.gateway_errors.iter().map(|e| e.cause.name()).collect();
            f.push(format!(
                "{step}: expected no gateway errors, got {}",
                causes.join(", ")
            ));
        }
        f.extend(self.body_failures(o));
        f.extend(self.header_failures(o));
        if let Some(who) = self.answered_by {
            if o.answered_by != who {
                f.push(format!(
                    "{step}: expected an answer by {who:?}, got {:?}",
                    o.answered_by
                ));
            }
        }
        f
    }

    fn body_failures(&self, o: &Outcome) -> Vec<String> {
        let (step, got) = (&o.step, o.body.check.kind());
        let mut f = Vec::new();
        if let BodyCheck::Differs { at } = o.body.check {
            f.push(format!(
                "{step}: body differs from the recording at byte {at}"
            ));
        }
        if let Some(want) = self.body {
            if want != got {
                f.push(format!("{step}: expected body {want}, got {got}"));
            }
        }
        if let Some(any) = &self.body_in {
            if !any.contains(&got) {
                f.push(format!("{step}: expected body {}, got {got}", any_of(any)));
            }
        }
        if self.complete == Some(true) && got == BodyKind::Truncated {
            f.push(format!("{step}: body cut short"));
        }
        if let Some(n) = self.body_bytes {
            if o.body.bytes != n {
                f.push(format!(
                    "{step}: expected {n} body bytes, got {}",
                    o.body.bytes
                ));
            }
        }
        f
    }

    fn header_failures(&self, o: &Outcome) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(name, want)| o.headers.get(*name) != Some(*want))
            .map(|(name, want)| {
                let got = o.headers.get(name).map(String::as_str).unwrap_or("(none)");
                format!("{}: expected {name}: {want}, got {got}", o.step)
            })
            .collect()
    }

    /// A load step: every response must pass.
    fn load_failures(&self, o: &Outcome) -> Vec<String> {
        let Some(load) = &o.load else {
            return Vec::new();
        };
        let mut f = Vec::new();
        if let Some(status) = self.status {
            if load.statuses.keys().ne([&status.to_string()]) {
                f.push(format!(
                    "{}: expected status {status} for all, got {:?}",
                    o.step, load.statuses
                ));
            }
        }
        if let Some(body) = self.body {
            if load.bodies.keys().ne([&body.to_string()]) {
                f.push(format!(
                    "{}: expected body {body} for all, got {:?}",
                    o.step, load.bodies
                ));
            }
        }
        if self.no_gateway_errors == Some(true) && !load.gateway_errors.is_empty() {
            f.push(format!(
                "{}: expected no gateway errors, got {:?}",
                o.step, load.gateway_errors
            ));
        }
        f
    }
}
