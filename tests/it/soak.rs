//! `harness soak`, short: seeded chaos under load, with deploys, on the hardened profile holds
//! every check and costs no request.

use crate::support::{rt, tools_present};
use harness::scenario::{Method, Step};
use harness::soak::{soak, SoakConfig};
use std::time::Duration;

/// What a plan's last step is: the request (method, Range, If-Range) or webhook it sends.
fn last(config: &SoakConfig, k: u64) -> (String, Step) {
    let plan = config.plan(k);
    (plan.kind.clone(), plan.steps.last().cloned().unwrap())
}

#[test]
fn a_step_plan_is_a_function_of_seed_and_step_alone() {
    let one = SoakConfig::new(Duration::from_secs(1), 1);
    let two = SoakConfig::new(Duration::from_secs(1), 2);
    let a: Vec<_> = (0..200).map(|k| one.plan(k)).collect();
    let b: Vec<_> = (0..200).map(|k| one.plan(k)).collect();
    assert_eq!(a, b, "same seed, same plans");
    let c: Vec<_> = (0..200).map(|k| two.plan(k)).collect();
    assert_ne!(a, c, "another seed, other plans");
    // The fault rate is honoured (roughly): a fault step arms a fault on a fresh recording.
    let faults = a.iter().filter(|p| p.fresh.is_some()).count();
    assert!((20..=60).contains(&faults), "{faults} fault steps of 200");
    for p in a.iter().filter(|p| p.fresh.is_some()) {
        assert!(matches!(p.steps[0], Step::Arm { .. }), "{p:?}");
    }
    let steps: Vec<(String, Step)> = (0..200).map(|k| last(&one, k)).collect();
    let requests: Vec<&harness::RequestStep> = steps
        .iter()
        .filter_map(|(_, s)| match s {
            Step::Request(r) => Some(r),
            _ => None,
        })
        .collect();
    assert!(requests.iter().any(|r| r.method == Method::Head));
    assert!(steps.iter().any(|(_, s)| matches!(s, Step::Webhook { .. })));
    assert!(requests
        .iter()
        .any(|r| r.range.as_deref().is_some_and(|r| r.starts_with("bytes=-"))));
    assert!(requests.iter().any(|r| r.if_range.is_some()));
    // Every step says what it must show.
    assert!(steps
        .iter()
        .all(|(_, s)| s.expect().is_some_and(|e| *e != Default::default())));
}

#[test]
fn a_short_soak_on_the_hardened_profile_fails_no_request() {
    if !tools_present() {
        return;
    }
    // About a minute, as CI's short soak; four deploys. (The `deploy` scenario is the
    // control: the same deploy under fixed and legacy fails the requests it meets.)
    let mut config = SoakConfig::new(Duration::from_secs(60), 1);
    config.stack.profile = harness::Profile::Hardened;
    config.clients = 2;
    config.restart_every = Some(Duration::from_secs(12));
    config.stack.runtime = crate::support::runtime();
    let report = rt().block_on(soak(config)).unwrap();
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert_eq!(report.failed_during_restart, 0, "{report:?}");
    assert!(report.steps > 100, "{report:?}");
    assert!(report.restarts >= 3, "{report:?}");
    assert_eq!(report.deploys.len() as u64, report.restarts, "{report:?}");
    assert!(
        report.deploys.iter().all(|d| d.failed.is_empty()),
        "{report:?}"
    );
    assert!(report.cache_files_checked > 0, "{report:?}");
    assert_eq!(report.twilio_overlaps, 0);
    for kind in ["GET", "HEAD", "WEBHOOK"] {
        assert!(report.kinds.contains_key(kind), "{kind}: {report:?}");
    }
    assert!(
        report
            .kinds
            .keys()
            .filter(|k| k.starts_with("fault:"))
            .count()
            >= 5,
        "{report:?}"
    );
    // Every deploy began a new, measured life for each of the two instances (under containers:
    // each container's main process, as this host sees it).
    assert_eq!(
        report.lives.len() as u64,
        2 * (report.restarts + 1),
        "{report:?}"
    );
    assert!(report
        .lives
        .iter()
        .all(|l| l.rss_kb.start > 0 && l.fds.start > 0));
}
