//! [`Scenario`]: the one model of a test scenario. rstest rows build it in Rust; scenario
//! files (`scenarios/**/*.toml`) are its serialised form.

use crate::browser::{Engine, SeekTo};
use crate::error::HarnessError;
pub use crate::expect::Expect;
use crate::spec::{Profile, Timeouts};
use mock_twilio::{sid, FaultRule, InvalidField, MediaFormat, Signing};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A recording the scenario creates at mock-twilio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordingSpec {
    /// Recording SID (default `RE` + the recording's number, zero-padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Call SID (default `CA` + the recording's number, zero-padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_sid: Option<String>,
    /// Media format (default mp3).
    #[serde(default = "mp3")]
    pub format: MediaFormat,
    /// Size in bytes.
    pub size: u64,
    /// Pre-downloaded (through a signed status webhook) before the steps run.
    #[serde(default)]
    pub cached: bool,
}

fn mp3() -> MediaFormat {
    MediaFormat::Mp3
}

impl RecordingSpec {
    /// A recording of `size` bytes in `format`.
    pub fn new(format: MediaFormat, size: u64) -> Self {
        RecordingSpec {
            sid: None,
            call_sid: None,
            format,
            size,
            cached: false,
        }
    }

    /// Pre-downloaded before the steps.
    #[must_use]
    pub fn cached(mut self, cached: bool) -> Self {
        self.cached = cached;
        self
    }

    /// The recording SID of the `index`-th recording.
    pub fn sid_at(&self, index: usize) -> String {
        self.sid
            .clone()
            .unwrap_or_else(|| sid("RE", index as u64 + 1))
    }

    /// The call SID of the `index`-th recording.
    pub fn call_sid_at(&self, index: usize) -> String {
        self.call_sid
            .clone()
            .unwrap_or_else(|| sid("CA", index as u64 + 1))
    }
}

/// Where a fault is armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FaultPoint {
    /// In front of mock-twilio (what the backend downloads from).
    Twilio,
    /// Between nginx and the backend.
    Hop,
}

/// An HTTP method a request step can use.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// `GET` (the default).
    #[default]
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
    /// `OPTIONS`.
    Options,
}

impl Method {
    /// As written on the request line.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Method> for reqwest::Method {
    fn from(m: Method) -> Self {
        reqwest::Method::from_bytes(m.as_str().as_bytes()).expect("a standard method")
    }
}

/// Plays a recording in a browser, through the player page nginx serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlayStep {
    /// A name for reports (default: `play` and the recording).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Which browser plays: `"chromium"` (the default), `"firefox"` or `"webkit"`, or a list of
    /// them to play the same step in each, one after the other (one Outcome each).
    #[serde(default, skip_serializing_if = "Engines::is_default")]
    pub browser: Engines,
    /// Which recording (index into `recordings`, default 0).
    #[serde(default)]
    pub recording: usize,
    /// `?format=` of the download (default: the recording's format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<MediaFormat>,
    /// Seek near the end, let it end, then seek back to the start (default true): the browser
    /// chooses its own Range requests for the seeks.
    #[serde(default = "yes")]
    pub seek: bool,
    /// Instead: seek to this point once it can play (`"99%"` of the duration, `"12s"`), and let
    /// it play from there to the end. WebKit asks for a Range only when it seeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seek_to: Option<SeekTo>,
    /// Deadline for each of the page's waits (`canplay`, `ended`, the seek back), default 10 s.
    #[serde(default = "ten_secs")]
    pub timeout_ms: u64,
    /// Idle time before it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pause_ms: u64,
    /// Explicit checks (`plays`, `no_gateway_errors`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub expect: Expect,
}

fn yes() -> bool {
    true
}

/// The engines a `play` step plays in: one name or a list of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engines(Vec<Engine>);

impl Engines {
    /// These engines, in this order.
    pub fn new(engines: Vec<Engine>) -> Engines {
        Engines(engines)
    }

    /// The engines, in the order the step plays in them.
    pub fn list(&self) -> &[Engine] {
        &self.0
    }

    fn is_default(&self) -> bool {
        *self == Engines::default()
    }
}

impl Default for Engines {
    fn default() -> Self {
        Engines(vec![Engine::Chromium])
    }
}

impl Serialize for Engines {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Engines {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        let names = match Form::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "browser must be an engine name or a list of them (chromium, firefox, webkit)",
            )
        })? {
            Form::One(n) => vec![n],
            Form::Many(v) => v,
        };
        let engines = names
            .iter()
            .map(|n| n.parse::<Engine>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| serde::de::Error::custom(format!("browser: {e}")))?;
        if engines.is_empty() {
            return Err(serde::de::Error::custom("browser: the list is empty"));
        }
        Ok(Engines(engines))
    }
}

impl schemars::JsonSchema for Engines {
    fn schema_name() -> String {
        "Engines".into()
    }

    fn json_schema(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        let names = serde_json::json!(["chromium", "firefox", "webkit"]);
        serde_json::from_value(serde_json::json!({
            "description": "A browser engine, or a list of them",
            "anyOf": [
                { "type": "string", "enum": names },
                { "type": "array", "items": { "type": "string", "enum": names }, "minItems": 1 }
            ]
        }))
        .expect("a valid schema")
    }
}

/// A deploy: every backend instance restarted in turn (its listener closes, it drains on
/// SIGTERM, it starts again) while clients keep downloading recordings and posting webhooks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployStep {
    /// A name for reports (default: `deploy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Clients sending requests throughout (default 4), each alternating a whole download of
    /// one of the scenario's recordings and a signed status webhook.
    #[serde(default = "four")]
    pub clients: u32,
    /// Downloads, and webhooks, that must be answered while each instance is out of service
    /// (stopped, before it starts again), default 2: the instance stays out until they are.
    #[serde(default = "two")]
    pub during: u32,
    /// Explicit checks (`failed`: how many of the load's requests may fail).
    #[serde(default, skip_serializing_if = "is_default")]
    pub expect: Expect,
}

fn four() -> u32 {
    4
}

fn two() -> u32 {
    2
}

impl Default for DeployStep {
    fn default() -> Self {
        DeployStep {
            name: None,
            clients: four(),
            during: two(),
            expect: Expect::default(),
        }
    }
}

impl PlayStep {
    /// Plays recording `index`, seeking, with the default deadline.
    pub fn recording(index: usize) -> Self {
        PlayStep {
            name: None,
            browser: Engines::default(),
            recording: index,
            format: None,
            seek: true,
            seek_to: None,
            timeout_ms: ten_secs(),
            pause_ms: 0,
            expect: Expect::default(),
        }
    }

    /// Expect the page to play (or not).
    #[must_use]
    pub fn expect_plays(mut self, plays: bool) -> Self {
        self.expect.plays = Some(plays);
        self
    }
}

/// An HTTP request through nginx.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestStep {
    /// A name for reports (default: the request line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `GET` (default), `HEAD`, `POST`, ...
    #[serde(default)]
    pub method: Method,
    /// Which recording's download URL (index into `recordings`, default 0).
    #[serde(default)]
    pub recording: usize,
    /// Another path instead (`{call_sid}` is replaced by the recording's call SID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `?format=` of the download (default: the recording's format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<MediaFormat>,
    /// The `Range` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// The `If-Range` header; `{etag}` and `{last_modified}` are those of the last response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_range: Option<String>,
    /// Other headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Idle time before the request (part of the scenario, e.g. to let a keep-alive expire).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pause_ms: u64,
    /// Send it this many times: a load step whose Outcome counts statuses and bodies (default 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u32,
    /// With `count`: at most this many at once (default 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub concurrency: u32,
    /// Explicit checks (for a load step: every response must pass them).
    #[serde(default, skip_serializing_if = "is_default")]
    pub expect: Expect,
}

fn one() -> u32 {
    1
}

fn is_one(v: &u32) -> bool {
    *v == 1
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_default(e: &Expect) -> bool {
    *e == Expect::default()
}

impl RequestStep {
    /// `GET` of recording 0's download.
    pub fn get() -> Self {
        RequestStep {
            name: None,
            method: Method::Get,
            recording: 0,
            path: None,
            format: None,
            range: None,
            if_range: None,
            headers: BTreeMap::new(),
            body: None,
            pause_ms: 0,
            count: 1,
            concurrency: 1,
            expect: Expect::default(),
        }
    }

    /// With this method.
    #[must_use]
    pub fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }

    /// With this Range header.
    #[must_use]
    pub fn range(mut self, r: Option<&str>) -> Self {
        self.range = r.map(str::to_string);
        self
    }

    /// With this If-Range header.
    #[must_use]
    pub fn if_range(mut self, v: &str) -> Self {
        self.if_range = Some(v.into());
        self
    }

    /// For this recording.
    #[must_use]
    pub fn recording(mut self, index: usize) -> Self {
        self.recording = index;
        self
    }

    /// For another path (`{call_sid}` is replaced).
    #[must_use]
    pub fn with_path(mut self, path: &str) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Named.
    #[must_use]
    pub fn named(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    /// After an idle pause.
    #[must_use]
    pub fn pause_ms(mut self, ms: u64) -> Self {
        self.pause_ms = ms;
        self
    }

    /// Expecting this status.
    #[must_use]
    pub fn expect_status(mut self, status: u16) -> Self {
        self.expect.status = Some(status);
        self
    }
}

/// One thing a scenario does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Step {
    /// An HTTP request through nginx.
    Request(RequestStep),
    /// Plays a recording in a browser through the player page nginx serves.
    Play(PlayStep),
    /// Twilio's recording-status callback, posted through nginx.
    Webhook {
        /// Which recording (index into `recordings`).
        #[serde(default)]
        recording: usize,
        /// Signed (default), unsigned or forged.
        #[serde(default = "valid")]
        signing: Signing,
        /// Idle time before it.
        #[serde(default)]
        pause_ms: u64,
        /// Explicit checks.
        #[serde(default)]
        expect: Expect,
    },
    /// Arms a fault.
    Arm {
        /// Where.
        at: FaultPoint,
        /// What.
        rule: FaultRule,
    },
    /// Disarms every fault at a point (both when omitted).
    ClearFaults {
        /// Where.
        #[serde(default)]
        at: Option<FaultPoint>,
    },
    /// Kills the backend: nginx's connects are refused.
    StopBackend,
    /// Starts it again.
    StartBackend,
    /// SIGTERM (every instance at once: it drains), then start again.
    RestartBackend,
    /// A rolling restart under load (see [`DeployStep`]).
    Deploy(DeployStep),
    /// Waits for a backend log line containing `text`.
    WaitLog {
        /// The text.
        text: String,
        /// Deadline (default 10 s).
        #[serde(default = "ten_secs")]
        timeout_ms: u64,
    },
    /// Sends nothing until the backend closes, idle, the connection that carried the step
    /// before's request, and the hop holds that close from nginx (a `keepalive_race` armed at
    /// the hop), or `timeout_ms` passes; goes on either way (the next step shows whether the
    /// race came). The idle gap of a keep-alive race, as an event rather than a guess at the
    /// backend's timer.
    WaitIdleClose {
        /// Deadline (default 10 s).
        #[serde(default = "ten_secs")]
        timeout_ms: u64,
    },
}

impl Step {
    /// Every step's `do`, as written in scenario files.
    pub const KINDS: &'static [&'static str] = &[
        "request",
        "webhook",
        "play",
        "arm",
        "clear_faults",
        "stop_backend",
        "start_backend",
        "restart_backend",
        "deploy",
        "wait_log",
        "wait_idle_close",
    ];

    /// The step as it runs: a `play` step in several engines is one step per engine, in order;
    /// any other step is itself.
    pub fn per_engine(&self) -> Vec<std::borrow::Cow<'_, Step>> {
        match self {
            Step::Play(p) if p.browser.list().len() > 1 => p
                .browser
                .list()
                .iter()
                .map(|e| {
                    let mut one = p.clone();
                    one.browser = Engines::new(vec![*e]);
                    std::borrow::Cow::Owned(Step::Play(one))
                })
                .collect(),
            _ => vec![std::borrow::Cow::Borrowed(self)],
        }
    }

    /// What the step must show, for the steps that observe something.
    pub fn expect(&self) -> Option<&Expect> {
        match self {
            Step::Request(r) => Some(&r.expect),
            Step::Play(p) => Some(&p.expect),
            Step::Webhook { expect, .. } => Some(expect),
            Step::Deploy(d) => Some(&d.expect),
            _ => None,
        }
    }
}

fn valid() -> Signing {
    Signing::Valid
}

fn ten_secs() -> u64 {
    10_000
}

/// A scenario: a stack, its recordings and faults, and the steps to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Unique name (the snapshot's name).
    pub name: String,
    /// What it shows.
    #[serde(default)]
    pub description: String,
    /// Profiles to run under (default: fixed, legacy and hardened).
    #[serde(default = "default_profiles")]
    pub profiles: Vec<Profile>,
    /// Recordings at mock-twilio.
    #[serde(default)]
    pub recordings: Vec<RecordingSpec>,
    /// Faults armed at Twilio before the steps.
    #[serde(default)]
    pub twilio_faults: Vec<FaultRule>,
    /// Faults armed at the nginx→backend hop before the steps.
    #[serde(default)]
    pub hop_faults: Vec<FaultRule>,
    /// Timeout scaling.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Another nginx config for a profile than the one it deploys (a path from the project
    /// root), to show what one change does: `configs = { legacy = "docker/variants/x.conf" }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<Profile, String>,
    /// The steps.
    pub steps: Vec<Step>,
}

fn default_profiles() -> Vec<Profile> {
    Profile::DEFAULT.to_vec()
}

impl Scenario {
    /// A scenario with one recording and no steps yet.
    pub fn new(name: &str, recording: RecordingSpec) -> Self {
        Scenario {
            name: name.into(),
            description: String::new(),
            profiles: default_profiles(),
            recordings: vec![recording],
            twilio_faults: Vec::new(),
            hop_faults: Vec::new(),
            timeouts: Timeouts::default(),
            configs: BTreeMap::new(),
            steps: Vec::new(),
        }
    }

    /// With a description.
    #[must_use]
    pub fn describe(mut self, d: &str) -> Self {
        self.description = d.into();
        self
    }

    /// Adds a step.
    #[must_use]
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// Adds a request step.
    #[must_use]
    pub fn request(self, r: RequestStep) -> Self {
        self.step(Step::Request(r))
    }

    /// Arms a fault at Twilio before the steps.
    #[must_use]
    pub fn twilio_fault(mut self, rule: FaultRule) -> Self {
        self.twilio_faults.push(rule);
        self
    }

    /// Arms a fault at the hop before the steps.
    #[must_use]
    pub fn hop_fault(mut self, rule: FaultRule) -> Self {
        self.hop_faults.push(rule);
        self
    }

    /// With these timeouts.
    #[must_use]
    pub fn timeouts(mut self, t: Timeouts) -> Self {
        self.timeouts = t;
        self
    }

    /// True when it arms a fault at Twilio, before the steps or in an `arm` step.
    pub fn arms_twilio_faults(&self) -> bool {
        !self.twilio_faults.is_empty()
            || self.steps.iter().any(|s| {
                matches!(
                    s,
                    Step::Arm {
                        at: FaultPoint::Twilio,
                        ..
                    }
                )
            })
    }

    /// True when a step plays in a browser.
    pub fn needs_browser(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::Play(_)))
    }

    /// Every engine its `play` steps play in.
    pub fn engines(&self) -> std::collections::BTreeSet<Engine> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Play(p) => Some(p.browser.list()),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }

    /// The scenario with every `play` step in `engine` instead, named `{name}@{engine}` (its
    /// snapshot is the engine's own) and run under `fixed` alone (the profiles are the server's
    /// side, which Chromium covers in every file), or the scenario itself for Chromium, the
    /// default. `None` when it does not play, or already names its engines (it is about them).
    pub fn on_engine(&self, engine: Engine) -> Option<Scenario> {
        let mut plays = self.steps.iter().filter_map(|s| match s {
            Step::Play(p) => Some(p),
            _ => None,
        });
        if !self.needs_browser() || plays.any(|p| !p.browser.is_default()) {
            return None;
        }
        if engine == Engine::Chromium {
            return Some(self.clone());
        }
        let mut s = self.clone();
        s.name = format!("{}@{engine}", self.name);
        if s.profiles.contains(&Profile::Fixed) {
            s.profiles = vec![Profile::Fixed];
        } else {
            s.profiles.truncate(1);
        }
        for step in &mut s.steps {
            if let Step::Play(p) = step {
                p.browser = Engines::new(vec![engine]);
            }
        }
        Some(s)
    }

    /// Checks what serde cannot: indexes, fault values, SIDs. Names the field at fault.
    pub fn validate(&self) -> Result<(), InvalidField> {
        for (i, r) in self.recordings.iter().enumerate() {
            for (field, value, prefix) in [("sid", &r.sid, "RE"), ("call_sid", &r.call_sid, "CA")] {
                if value
                    .as_deref()
                    .is_some_and(|s| !mock_twilio::is_sid(s, prefix))
                {
                    return Err(InvalidField::new(
                        format!("recordings[{i}].{field}"),
                        format!("must be {prefix} followed by 32 hex digits"),
                    ));
                }
            }
        }
        for (list, rules) in [
            ("twilio_faults", &self.twilio_faults),
            ("hop_faults", &self.hop_faults),
        ] {
            for (i, rule) in rules.iter().enumerate() {
                rule.validate()
                    .map_err(|e| InvalidField::new(format!("{list}[{i}]"), e.message))?;
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            self.validate_step(i, step)?;
        }
        for (profile, path) in &self.configs {
            let field = format!("configs.{}", profile.name());
            let root = crate::project::current()
                .map_err(|e| InvalidField::new(field.clone(), e.to_string()))?;
            if !root.root.join(path).is_file() {
                return Err(InvalidField::new(
                    field,
                    format!("{path}: no such file under the project root"),
                ));
            }
        }
        if self.profiles.is_empty() {
            return Err(InvalidField::new(
                "profiles",
                "name at least one profile (fixed, legacy, stock, hardened)",
            ));
        }
        Ok(())
    }

    fn validate_step(&self, i: usize, step: &Step) -> Result<(), InvalidField> {
        let recording = match step {
            Step::Request(r) if r.count == 0 || r.concurrency == 0 => {
                return Err(InvalidField::new(
                    format!("steps[{i}].count"),
                    "count and concurrency must be at least 1",
                ))
            }
            Step::Request(r) if r.path.is_none() => Some(r.recording),
            Step::Webhook { recording, .. } => Some(*recording),
            Step::Play(p) => Some(p.recording),
            Step::Arm { rule, .. } => {
                rule.validate()
                    .map_err(|e| InvalidField::new(format!("steps[{i}].rule"), e.message))?;
                None
            }
            _ => None,
        };
        match recording {
            Some(n) if n >= self.recordings.len() => Err(InvalidField::new(
                format!("steps[{i}].recording"),
                format!(
                    "there are {} recordings; indexes start at 0",
                    self.recordings.len()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Parses a scenario file, reporting file, line, column and field on error.
    pub fn from_toml(file: &str, text: &str) -> Result<Self, HarnessError> {
        let scenario: Scenario = crate::toml_file::parse(file, text, |field, message| {
            if !message.contains("unknown variant") {
                None
            } else if field.ends_with("kind") {
                Some(format!(
                    "fault kinds: {}",
                    mock_twilio::Fault::KINDS.join(", ")
                ))
            } else if field.ends_with(".do") {
                Some(format!("steps: {}", Step::KINDS.join(", ")))
            } else {
                None
            }
        })?;
        scenario
            .validate()
            .map_err(|e| crate::toml_file::refused(file, text, e.field, e.message))?;
        Ok(scenario)
    }
}

/// The commented skeleton `harness new` writes (`NAME` is the scenario's name).
const SKELETON: &str = r#"#:schema ../scenario.schema.json
# A chaos scenario. Run it with `harness run scenarios/NAME.toml`; `cargo test` runs every file
# in scenarios/ and compares it with snapshots/NAME.snap.
name = "NAME"
description = "What this scenario shows"
# profiles = ["fixed", "legacy"]          # default: fixed, legacy and hardened, side by side in one snapshot (also: stock)

# Recordings at the fake Twilio; steps refer to them by index (0, 1, ...).
[[recordings]]
size = 100000                              # bytes
format = "mp3"                             # or "wav"
cached = false                             # true: pre-downloaded through a signed webhook first

# Faults armed before the steps, at Twilio (what the backend downloads from) ...
[[twilio_faults]]
match = { path_regex = '\.mp3$' }          # also: method = "GET", recording_sid = "RE..."
fault = { kind = "delay", ms = 500 }       # kinds: delay, throttle, dribble, status, reset, close_after, hang, garbage, header, keepalive_race, strip_range
times = 1                                  # only the first N matching requests (default: all)

# ... and between nginx and the backend:
# [[hop_faults]]
# fault = { kind = "reset" }

# Timeouts are scaled by 0.1 by default (nginx 300 s -> 30 s, backend's Twilio budget 30 s -> 3 s).
# [timeouts]
# scale = 0.1
# keepalive_scale = 1.0
# slow_download_secs = 0.5                  # unscaled (default: 10 s x scale with a Twilio fault armed, else 10 s)

[[steps]]
do = "request"                             # also: webhook, play, arm, clear_faults, stop_backend, start_backend, restart_backend, deploy, wait_log, wait_idle_close
range = "bytes=0-999"
expect = { status = 206 }                  # checked even while snapshots are updated

# A browser presses Play on the player page nginx serves:
# [[steps]]
# do = "play"
# browser = ["chromium", "firefox", "webkit"]  # default chromium; a list plays the step in each
# seek_to = "99%"                            # or "2.5s"; default: seek near the end and back
"#;

/// A commented skeleton of a scenario file named `name`, which parses as it is.
pub fn skeleton(name: &str) -> String {
    SKELETON.replace("NAME", name)
}

/// The JSON Schema of scenario files, generated from [`Scenario`].
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Scenario);
    serde_json::to_string_pretty(&schema).expect("schema serialises") + "\n"
}

/// Every `*.toml` under `dir` (recursively), sorted.
pub fn files(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>, HarnessError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(HarnessError::io(format!("read {}", d.display())))?;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads and parses a scenario file.
pub fn load(path: &std::path::Path) -> Result<Scenario, HarnessError> {
    let text = std::fs::read_to_string(path)
        .map_err(HarnessError::io(format!("read {}", path.display())))?;
    Scenario::from_toml(&path.display().to_string(), &text)
}
