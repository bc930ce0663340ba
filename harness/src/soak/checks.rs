//! The checks at the end of a soak, once the load has stopped and the downloads under way have
//! settled: what Twilio saw, nginx's gateway errors, memory and fds per backend process life,
//! and every cache file byte for byte.

use super::report::{SoakReport, Violation};
use super::SoakConfig;
use crate::gateway::classify;
use crate::stack::Stack;
use mock_twilio::{MediaFormat, Recording};
use std::collections::HashMap;

/// A recording's path as a report names it (`…/Recordings/RE….mp3`).
fn twilio_path(path: &str) -> String {
    match path.find("/Recordings/").or_else(|| path.find("/Calls/")) {
        Some(i) => format!("…{}", &path[i..]),
        None => path.to_string(),
    }
}

/// Runs every end-of-soak check into `report`. `clients` is how many ran; `recordings` every
/// recording the soak made; `error_log_from` where the soak's part of nginx's error log begins.
pub(crate) fn run(
    stack: &Stack,
    config: &SoakConfig,
    clients: usize,
    recordings: &[Recording],
    error_log_from: u64,
    report: &mut SoakReport,
) {
    let mut violations = Vec::new();
    // A backend must give up on a Twilio that never finishes; the load has long stopped.
    for e in stack.twilio().open_requests() {
        violations.push(format!(
            "Twilio request #{} ({} {}) still open {}s after the load stopped",
            e.seq,
            e.method,
            twilio_path(&e.path),
            super::SETTLE_DEADLINE.as_secs()
        ));
    }
    // nginx's account of its gateway errors.
    let (lines, _) = stack.error_log().lines_since(error_log_from);
    for e in lines.iter().filter_map(|l| classify(l)) {
        *report
            .gateway_causes
            .entry(e.cause.name().to_string())
            .or_default() += 1;
    }
    // Twilio was never asked for one recording twice at once: what mock-twilio saw, so it holds
    // for any backend. A request counts as open until its final write began.
    for o in stack
        .twilio()
        .overlaps()
        .iter()
        .filter(|o| o.method == "GET")
    {
        report.twilio_overlaps += 1;
        violations.push(format!(
            "Twilio was asked for {} (request #{}) while still answering request #{} for it",
            twilio_path(&o.path),
            o.second,
            o.first
        ));
    }
    violations.extend(lives(config, clients, report));
    violations.extend(cache_files(stack, recordings, report));
    let reproduce = config.command();
    report
        .violations
        .extend(violations.into_iter().map(|what| Violation {
            step: None,
            what,
            reproduce: reproduce.clone(),
        }));
}

/// Memory and fds stay flat within each backend process's life.
fn lives(config: &SoakConfig, clients: usize, report: &SoakReport) -> Vec<String> {
    let fd_allowance = config.fd_budget + super::FDS_PER_CLIENT * clients as u64;
    let mut out = Vec::new();
    for life in &report.lives {
        let grew = life.rss_kb.peak.saturating_sub(life.rss_kb.start);
        if grew > config.rss_budget_kb {
            out.push(format!(
                "backend pid {}: resident memory rose {grew} kB ({} → peak {} kB), over the budget of {} kB",
                life.pid, life.rss_kb.start, life.rss_kb.peak, config.rss_budget_kb
            ));
        }
        let held = life.fds.end.saturating_sub(life.fds.start);
        if held > fd_allowance {
            out.push(format!(
                "backend pid {}: {held} more open fds at the end of its life than at its start ({} → {}), over the allowance of {fd_allowance}",
                life.pid, life.fds.start, life.fds.end
            ));
        }
    }
    out
}

/// Every cache file is its recording, byte for byte.
fn cache_files(stack: &Stack, recordings: &[Recording], report: &mut SoakReport) -> Vec<String> {
    let by_sid: HashMap<&str, &Recording> =
        recordings.iter().map(|r| (r.sid.as_str(), r)).collect();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(stack.sandbox().join("recordings")) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some((sid, ext)) = name.split_once('.') else {
            continue;
        };
        let (Some(rec), Some(format)) = (by_sid.get(sid), MediaFormat::from_extension(ext)) else {
            continue; // temp files of aborted downloads are the backend's business
        };
        report.cache_files_checked += 1;
        let bytes = std::fs::read(e.path()).unwrap_or_default();
        if bytes != rec.media(format).to_vec() {
            out.push(format!("cache file {name} differs from the recording"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::{Gauge, Life};
    use std::time::Duration;

    /// The default budget serves its stated purpose: a backend that holds the soak's largest
    /// recording (50 MB) in memory is a violation; the reference backend's rise (about 8 MiB
    /// in a 10-minute soak) is not.
    #[test]
    fn holding_the_50_mb_recording_in_memory_is_over_the_default_budget() {
        let config = SoakConfig::new(Duration::from_secs(1), 1);
        let life = |grew_kb: u64| Life {
            pid: 1,
            rss_kb: Gauge {
                start: 14_000,
                peak: 14_000 + grew_kb,
                end: 14_000,
            },
            fds: Gauge {
                start: 17,
                peak: 17,
                end: 17,
            },
        };
        let report = |grew_kb| SoakReport {
            lives: vec![life(grew_kb)],
            ..Default::default()
        };
        let whole = 50_000_000 / 1024;
        assert_eq!(lives(&config, 4, &report(whole)).len(), 1);
        assert!(lives(&config, 4, &report(8 * 1024)).is_empty());
    }
}
