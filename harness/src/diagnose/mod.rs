//! `harness diagnose`: the truth about a team's own nginx config and backend, measured, not
//! imposed. The backend runs exactly as its stack file says (no keep-alive or timeout templated
//! in), behind the team's nginx config on the nginx that runs it, against mock-twilio.
//!
//! Measure, derive, run, judge: the backend's idle-close time and header sizes are measured on
//! connections of its own ([`probe`]); nginx's effective settings are read from the config with
//! its version's defaults ([`crate::nginx_conf`]); each mechanism's scenario takes its timing
//! from those values (the race's idle gap lasts until the backend closes the connection, held
//! at the hop, or until just inside nginx's `keepalive_timeout`); the scenarios run through the
//! ordinary runner, concurrently, in real time; and their Outcomes become one verdict per
//! mechanism ([`mechanisms`]).

pub mod mechanisms;
pub mod natural;
pub mod probe;

use crate::error::HarnessError;
use crate::nginx_conf::{self, NginxFacts};
use crate::spec::{BackendSpec, Profile, StackSpec, Timeouts};
use crate::stack::Stack;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// A mechanism's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// It happens with this config and backend.
    Exposed,
    /// It does not: the run that would have shown it did not.
    Safe,
    /// It cannot happen here (nothing for it to act on).
    NotApplicable,
}

/// One mechanism's verdict, with what shows it and the fix in the config's own terms.
#[derive(Debug, Clone, Serialize)]
pub struct Mechanism {
    /// `keepalive_race_post`, `keepalive_race_get`, `upstream_read_timeout`, ...
    pub id: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// What was seen, in a sentence.
    pub summary: String,
    /// What was measured and seen.
    pub evidence: serde_json::Value,
    /// What to change (empty when safe).
    pub fix: String,
}

/// What was measured of the backend.
#[derive(Debug, Clone, Serialize)]
pub struct BackendFacts {
    /// The stack file's name.
    pub name: String,
    /// Seconds it keeps an idle keep-alive connection (`None`: longer than nginx's
    /// `keepalive_timeout` plus 3 s, where measuring stopped).
    pub idle_close_secs: Option<f64>,
    /// The largest response head it sent (a download, a Range answer, a 404), bytes.
    pub largest_header_bytes: usize,
}

/// Everything `harness diagnose` found.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    /// What nginx applies.
    pub nginx: NginxFacts,
    /// What the backend does.
    pub backend: BackendFacts,
    /// One verdict per mechanism.
    pub mechanisms: Vec<Mechanism>,
}

impl Diagnosis {
    /// True when any mechanism is exposed.
    pub fn exposed(&self) -> bool {
        self.mechanisms
            .iter()
            .any(|m| m.verdict == Verdict::Exposed)
    }
}

/// What to diagnose.
#[derive(Debug, Clone)]
pub struct DiagnoseOptions {
    /// The backend (a stack file's).
    pub backend: BackendSpec,
    /// The nginx config (default: the stack file's, else the profile's, see
    /// [`StackSpec::nginx_config`]).
    pub nginx_config: Option<PathBuf>,
    /// Where it runs.
    pub runtime: crate::Runtime,
    /// Which nginx.
    pub nginx: Option<crate::nginx::NginxLine>,
    /// Also try the keep-alive race by its natural timing, this many times.
    pub natural_race: Option<usize>,
}

impl DiagnoseOptions {
    /// The stack every run of the diagnosis uses: the backend as deployed, nginx's values as
    /// written, nothing scaled.
    pub fn spec(&self) -> StackSpec {
        let mut spec = StackSpec::new(Profile::Fixed)
            .timeouts(Timeouts {
                scale: 1.0,
                keepalive_scale: 1.0,
                ..Timeouts::default()
            })
            .runtime(self.runtime)
            .nginx(self.nginx)
            .backend(self.backend.clone());
        spec.nginx_config = self.nginx_config.clone();
        spec.as_deployed = true;
        spec
    }
}

/// The config's text, and what nginx applies of it on `version`.
fn read_facts(spec: &StackSpec, version: &str) -> Result<NginxFacts, HarnessError> {
    let text = spec.nginx_config()?.read()?;
    Ok(nginx_conf::facts(&text, version))
}

/// Measures the backend on the probe stack: its idle-close time (capped a few seconds past
/// nginx's `keepalive_timeout`) and its largest response head.
async fn measure(
    stack: &Stack,
    facts: &NginxFacts,
    name: &str,
) -> Result<BackendFacts, HarnessError> {
    let addr = stack
        .backend_addr()
        .ok_or_else(|| HarnessError::step(0, "the backend is not running"))?;
    let cap = Duration::from_secs_f64(facts.keepalive_timeout_secs + 3.0);
    let idle = probe::idle_close(addr, "/healthz", cap);
    let heads = mechanisms::header_sizes(stack);
    let (idle, heads) = tokio::join!(idle, heads);
    Ok(BackendFacts {
        name: name.to_string(),
        idle_close_secs: idle?,
        largest_header_bytes: heads?,
    })
}

/// Diagnoses a config and backend: every mechanism, concurrently.
pub async fn diagnose(opts: &DiagnoseOptions) -> Result<Diagnosis, HarnessError> {
    let spec = opts.spec();
    let probe_stack = Stack::start(spec.clone()).await?;
    let facts = read_facts(&spec, probe_stack.nginx_version())?;
    let backend = measure(&probe_stack, &facts, opts.backend.name()).await?;
    let ctx = mechanisms::Context {
        spec: spec.clone(),
        nginx: facts.clone(),
        backend: backend.clone(),
    };
    let range = mechanisms::range_conformance(&probe_stack);
    let (post, get, read, drops, ws, range) = tokio::join!(
        mechanisms::keepalive_race(&ctx, mechanisms::Method::Post),
        mechanisms::keepalive_race(&ctx, mechanisms::Method::Get),
        mechanisms::upstream_read_timeout(&ctx),
        mechanisms::backend_drops_connection(&ctx),
        mechanisms::websocket_headers(&ctx),
        range,
    );
    drop(probe_stack);
    let mut found = vec![
        post?,
        get?,
        read?,
        drops?,
        mechanisms::headers_too_big(&ctx),
        ws?,
        range?,
    ];
    if let Some(trials) = opts.natural_race {
        let natural = natural::sweep(&spec, trials).await?;
        if let Some(m) = found.iter_mut().find(|m| m.id == "keepalive_race_post") {
            m.evidence["natural"] = serde_json::to_value(&natural).unwrap_or_default();
        }
    }
    Ok(Diagnosis {
        nginx: facts,
        backend,
        mechanisms: found,
    })
}

impl Diagnosis {
    /// The diagnosis as `harness diagnose` prints it: what was measured, then one line per
    /// mechanism with its evidence and, where exposed, its fix.
    pub fn render(&self) -> String {
        let n = &self.nginx;
        let idle = self
            .backend
            .idle_close_secs
            .map(|i| format!("{i:.2} s"))
            .unwrap_or_else(|| format!("more than {} s", n.keepalive_timeout_secs + 3.0));
        let pool = match (
            n.upstream_keepalive,
            n.keepalive_explicit,
            n.keepalive_per_location,
        ) {
            (false, _, _) => "no upstream keep-alive".to_string(),
            (true, true, false) => {
                "upstream keep-alive (keepalive set), shared by every location".into()
            }
            (true, explicit, _) => format!(
                "upstream keep-alive ({}), per location",
                if explicit {
                    "keepalive … local"
                } else {
                    "the version's default"
                }
            ),
        };
        let mut out = vec![format!(
            "nginx {}: {pool}, keepalive_timeout {} s",
            n.version, n.keepalive_timeout_secs
        )];
        for (what, l) in [("download", &n.download), ("webhook", &n.webhook)] {
            if let Some(l) = l {
                out.push(format!(
                    "  {what} location {}: HTTP/{}, Connection {}, proxy_read_timeout {} s, proxy_buffer_size {}{}",
                    l.location,
                    l.proxy_http_version,
                    l.connection_header.as_deref().map(|c| format!("{c:?}")).unwrap_or_else(|| "(none)".into()),
                    l.read_timeout_secs,
                    l.buffer_size_bytes,
                    if l.pooled { ", connections reused" } else { ", a connection per request" }
                ));
            }
        }
        out.push(format!(
            "backend {}: closes idle connections after {idle}; largest response head {} bytes",
            self.backend.name, self.backend.largest_header_bytes
        ));
        for m in &self.mechanisms {
            let verdict = serde_json::to_value(m.verdict)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            out.push(format!("{verdict:<15} {:<26} {}", m.id, m.summary));
            if !m.fix.is_empty() {
                out.push(format!("    fix: {}", m.fix));
            }
        }
        out.join("\n")
    }
}
