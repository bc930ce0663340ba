//! `harness soak`, short: seeded chaos under load on the fixed profile holds every check.

use crate::support::{rt, tools_present};
use harness::soak::{plan, soak, SoakConfig};
use std::time::Duration;

#[test]
fn a_step_plan_is_a_function_of_seed_and_step_alone() {
    let a: Vec<_> = (0..200).map(|k| plan(1, k, 0.2)).collect();
    let b: Vec<_> = (0..200).map(|k| plan(1, k, 0.2)).collect();
    assert_eq!(a, b, "same seed, same plans");
    let c: Vec<_> = (0..200).map(|k| plan(2, k, 0.2)).collect();
    assert_ne!(a, c, "another seed, other plans");
    // The fault rate is honoured (roughly), and every kind of step appears.
    let faults = a.iter().filter(|p| p.fault.is_some()).count();
    assert!((20..=60).contains(&faults), "{faults} fault steps of 200");
    for method in ["GET", "HEAD", "WEBHOOK"] {
        assert!(a.iter().any(|p| p.method == method), "{method}");
    }
    assert!(a
        .iter()
        .any(|p| p.range.as_deref().is_some_and(|r| r.starts_with("bytes=-"))));
    assert!(a.iter().any(|p| p.if_range.is_some()));
}

#[test]
fn a_short_soak_on_the_fixed_profile_finds_no_violation() {
    if !tools_present() {
        return;
    }
    // About a minute, as CI's short soak; four restarts.
    let mut config = SoakConfig::new(Duration::from_secs(60), 1);
    config.clients = 2;
    config.restart_every = Some(Duration::from_secs(12));
    config.stack.runtime = harness::Runtime::from_env().unwrap();
    let report = rt().block_on(soak(config)).unwrap();
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert!(report.steps > 100, "{report:?}");
    assert!(report.restarts >= 3, "{report:?}");
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
    if report.lives.is_empty() {
        // Containers: no backend process on this host to measure.
        assert_eq!(
            harness::Runtime::from_env().unwrap(),
            harness::Runtime::Containers
        );
    } else {
        // Every restart began a new, measured life.
        assert_eq!(report.lives.len() as u64, report.restarts + 1, "{report:?}");
        assert!(report
            .lives
            .iter()
            .all(|l| l.rss_kb.start > 0 && l.fds.start > 0));
    }
}
