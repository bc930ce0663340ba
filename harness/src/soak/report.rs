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

/// One deploy during a soak.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeployRecord {
    /// Seconds into the soak when it began.
    pub at_secs: f64,
    /// How long it took (every instance out, drained and back).
    pub took_secs: f64,
    /// Requests it failed, by what the client got (counted apart, not violations).
    pub failed: BTreeMap<String, u64>,
    /// Gateway errors in nginx's log while it ran, by cause (retried attempts included).
    pub nginx_causes: BTreeMap<String, u64>,
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
    /// Deploys done (each restarts every backend instance in turn).
    pub restarts: u64,
    /// Requests that overlapped a deploy and failed because of it (an nginx 502/504, a failed
    /// connection, or a body cut when the draining backend's grace time ran out), counted
    /// apart under `fixed` and `legacy`; under `hardened` each is a violation instead.
    pub failed_during_restart: u64,
    /// Each deploy: when, and the requests it failed by cause (`502`, `504`, `none`, `cut`)
    /// and nginx's causes in its error log meanwhile.
    pub deploys: Vec<DeployRecord>,
    /// Gateway errors in nginx's error log, by cause.
    pub gateway_causes: BTreeMap<String, u64>,
    /// Cache files compared byte for byte with their recordings at the end.
    pub cache_files_checked: u64,
    /// The backend's resident memory (kB) over the whole soak, across its restarts.
    pub backend_rss_kb: Gauge,
    /// The backend's open file descriptors over the whole soak, across its restarts.
    pub backend_fds: Gauge,
    /// Each backend process's own memory and fds, in order (none when its container's engine
    /// runs on another host).
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
    pub(crate) fn sample_all(&mut self, pids: Vec<Option<u32>>) {
        for pid in pids {
            self.sample(pid);
        }
    }

    pub(crate) fn sample(&mut self, pid: Option<u32>) {
        let Some((pid, (rss, fds))) = pid.and_then(|p| Some((p, crate::process::gauges(p)?)))
        else {
            return;
        };
        // Several instances run at once: each sample goes to its own process's life.
        let life = match self.lives.iter().rposition(|l| l.pid == pid) {
            Some(i) => &mut self.lives[i],
            None => {
                self.lives.push(Life {
                    pid,
                    ..Default::default()
                });
                self.lives.last_mut().expect("pushed")
            }
        };
        life.rss_kb.see(rss);
        life.fds.see(fds);
        self.rss.see(rss);
        self.fds.see(fds);
    }
}

fn or_none(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        "none".into()
    } else {
        counts(m)
    }
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl SoakReport {
    /// Counts a request deploy `n` failed with `cause`.
    pub(crate) fn failed_by_deploy(&mut self, n: usize, cause: String) {
        self.failed_during_restart += 1;
        if let Some(d) = self.deploys.get_mut(n) {
            *d.failed.entry(cause).or_default() += 1;
        }
    }

    /// The report as printed by `harness soak`: what ran, what was seen, every violation with
    /// the command that replays it.
    pub fn render(&self) -> String {
        let mut out = vec![
            format!(
                "soak: seed {}, profile {}, {} steps, {} deploys",
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
        ];
        out.extend(self.render_deploys());
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

    fn render_deploys(&self) -> Vec<String> {
        if self.profile == "hardened" {
            return vec![format!(
                "  requests failed by a deploy: none counted apart under hardened (each would be a violation); nginx met during deploys: {}",
                self.nginx_causes_during_deploys()
            )];
        }
        let mut out = vec![format!(
            "  requests failed by a deploy (502/504, no answer, cut by the drain; counted apart, not violations): {}",
            self.failed_during_restart
        )];
        for (n, d) in self.deploys.iter().enumerate() {
            out.push(format!(
                "    deploy {} at {:.0} s ({:.1} s): failed {}; nginx: {}",
                n + 1,
                d.at_secs,
                d.took_secs,
                or_none(&d.failed),
                or_none(&d.nginx_causes)
            ));
        }
        out
    }

    fn nginx_causes_during_deploys(&self) -> String {
        let mut all = BTreeMap::new();
        for d in &self.deploys {
            for (k, v) in &d.nginx_causes {
                *all.entry(k.clone()).or_default() += v;
            }
        }
        or_none(&all)
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
