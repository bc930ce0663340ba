//! What a soak found ([`SoakReport`]), and the report as a person reads it.

use serde::Serialize;
use std::collections::BTreeMap;

/// A check that failed, with how to replay it.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// The step (none for end-of-run checks).
    pub step: Option<u64>,
    /// What went wrong.
    pub what: String,
    /// One line that replays it.
    pub reproduce: String,
}

/// Start, peak and end of a measurement.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Gauge {
    /// At the start.
    pub start: u64,
    /// Highest seen.
    pub peak: u64,
    /// At the end.
    pub end: u64,
}

impl Gauge {
    fn see(&mut self, v: u64) {
        if self.start == 0 {
            self.start = v;
        }
        self.peak = self.peak.max(v);
        self.end = v;
    }
}

/// One backend process's life, from its first sample to its last (its restart, or the end of
/// the soak once every download has settled).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Life {
    /// Its process id.
    pub pid: u32,
    /// Its resident memory (kB).
    pub rss_kb: Gauge,
    /// Its open file descriptors.
    pub fds: Gauge,
}

/// What a soak found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakReport {
    /// The seed.
    pub seed: u64,
    /// `fixed` or `legacy`.
    pub profile: String,
    /// Steps run.
    pub steps: u64,
    /// Steps by kind (`GET`, `HEAD`, `WEBHOOK`, `fault:<kind>`).
    pub kinds: BTreeMap<String, u64>,
    /// Answers by status (`none` when the connection failed).
    pub statuses: BTreeMap<String, u64>,
    /// Backend restarts done.
    pub restarts: u64,
    /// Requests that overlapped a backend restart and failed because of it: an nginx 502/504,
    /// a failed connection, or a body cut when the draining backend's grace time ran out.
    pub failed_during_restart: u64,
    /// Gateway errors in nginx's error log, by cause.
    pub gateway_causes: BTreeMap<String, u64>,
    /// Cache files compared byte for byte with their recordings at the end.
    pub cache_files_checked: u64,
    /// The backend's resident memory (kB) over the whole soak, across its restarts.
    pub backend_rss_kb: Gauge,
    /// The backend's open file descriptors over the whole soak, across its restarts.
    pub backend_fds: Gauge,
    /// Each backend process's own memory and fds, in order (none under containers).
    pub lives: Vec<Life>,
    /// Twilio's requests for a path it was still answering (the same recording downloaded
    /// twice at once), as mock-twilio saw them.
    pub twilio_overlaps: u64,
    /// How long the downloads under way took to end once the load stopped (seconds).
    pub settle_secs: f64,
    /// Every violation.
    pub violations: Vec<Violation>,
}

/// Samples the backend process's memory and fds into the life it belongs to (a new one when the
/// process is new) and into the whole-soak gauges.
#[derive(Default)]
pub(crate) struct Sampler {
    pub(crate) rss: Gauge,
    pub(crate) fds: Gauge,
    pub(crate) lives: Vec<Life>,
}

impl Sampler {
    pub(crate) fn sample(&mut self, pid: Option<u32>) {
        let Some((pid, (rss, fds))) = pid.and_then(|p| Some((p, crate::process::gauges(p)?)))
        else {
            return;
        };
        if self.lives.last().is_none_or(|l| l.pid != pid) {
            self.lives.push(Life {
                pid,
                ..Default::default()
            });
        }
        let life = self.lives.last_mut().expect("pushed");
        life.rss_kb.see(rss);
        life.fds.see(fds);
        self.rss.see(rss);
        self.fds.see(fds);
    }
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl SoakReport {
    /// The report as printed by `harness soak`: what ran, what was seen, every violation with
    /// the command that replays it.
    pub fn render(&self) -> String {
        let mut out = vec![
            format!(
                "soak: seed {}, profile {}, {} steps, {} backend restarts",
                self.seed, self.profile, self.steps, self.restarts
            ),
            format!("  steps:    {}", counts(&self.kinds)),
            format!("  statuses: {}", counts(&self.statuses)),
            format!(
                "  gateway errors in nginx's log, by cause: {}",
                if self.gateway_causes.is_empty() {
                    "none".to_string()
                } else {
                    counts(&self.gateway_causes)
                }
            ),
            format!(
                "  requests failed by a backend restart (502/504, refused, cut by the drain; not violations): {}",
                self.failed_during_restart
            ),
        ];
        out.extend(self.render_lives());
        out.push(format!(
            "  downloads under way ended {:.1} s after the load stopped; cache files checked byte for byte: {}; Twilio asked again for a recording it was still sending: {}",
            self.settle_secs, self.cache_files_checked, self.twilio_overlaps
        ));
        if self.violations.is_empty() {
            out.push("no violation".into());
        } else {
            out.push(format!("{} violations:", self.violations.len()));
            for v in &self.violations {
                out.push(format!("  {}\n    reproduce: {}", v.what, v.reproduce));
            }
        }
        out.join("\n")
    }

    fn render_lives(&self) -> Vec<String> {
        if self.lives.is_empty() {
            return vec![
                "  backend RSS and fds: not measured (no backend process on this host)".into(),
            ];
        }
        let (r, f, n) = (&self.backend_rss_kb, &self.backend_fds, self.lives.len());
        let rss = self
            .lives
            .iter()
            .map(|l| l.rss_kb.peak.saturating_sub(l.rss_kb.start));
        let fds = self
            .lives
            .iter()
            .map(|l| l.fds.end as i64 - l.fds.start as i64);
        vec![
            format!(
                "  backend RSS kB start/peak/end: {}/{}/{}; open fds: {}/{}/{} (across {n} backend process{})",
                r.start, r.peak, r.end, f.start, f.peak, f.end,
                if n == 1 { "" } else { "es" }
            ),
            format!(
                "  within one life, at most: RSS +{} kB (peak over start), fds {:+} (end over start)",
                rss.max().unwrap_or(0),
                fds.max().unwrap_or(0)
            ),
        ]
    }
}
