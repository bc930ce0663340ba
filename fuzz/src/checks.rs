//! What each fuzz target checks, one function per target over libFuzzer's raw input. The
//! targets in `fuzz_targets/` call these, and `cargo test` replays every committed corpus input
//! through them (`tests/it/fuzz_corpora.rs` includes this file), so a corpus input that makes
//! one panic fails the tests without an instrumented build.

use arbitrary::{Arbitrary, Unstructured};

/// `data` decoded as libfuzzer-sys decodes a typed target's input; `None` where it skips it.
fn decode<'a, T: Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
    if data.len() < T::size_hint(0).0 {
        return None;
    }
    T::arbitrary_take_rest(Unstructured::new(data)).ok()
}

/// mock-twilio's admin API JSON (a fault rule, as POSTed to /__admin/faults): parsed or refused,
/// never a panic; a parsed rule validates and plans without panicking.
pub fn admin_json(data: &[u8]) {
    use mock_twilio::{FaultRule, FaultSet};
    if let Ok(rule) = serde_json::from_slice::<FaultRule>(data) {
        if rule.validate().is_ok() {
            let set = FaultSet::default();
            if set.arm(rule).is_ok() {
                let _ = set.plan("GET", "/2010-04-01/Accounts/AC1/Recordings/RE1.mp3", false);
            }
        }
    }
}

/// The nginx error-log classifier: any line is classified or skipped, never a panic.
pub fn error_log(data: &[u8]) {
    let Some(line) = decode::<&str>(data) else {
        return;
    };
    if let Some(e) = harness::gateway::classify(line) {
        assert!(!e.cause.name().is_empty());
    }
    let _ = harness::gateway::line_time(line);
}

/// Range / If-Range handling: never panics, and a 206 decision is always inside the file.
pub fn range_header(data: &[u8]) {
    use recordings_backend::range::{decide, if_range_holds, Decision};
    let Some((size, range, if_range)) = decode::<(u32, &str, &str)>(data) else {
        return;
    };
    let size = u64::from(size);
    match decide(Some(range), size) {
        Decision::Partial { start, end } => {
            assert!(start <= end, "{range:?} on {size}: {start}-{end}");
            assert!(end < size, "{range:?} on {size}: {start}-{end}");
        }
        Decision::Full | Decision::Unsatisfiable => {}
    }
    let _ = if_range_holds(Some(if_range), "\"abc\"", std::time::UNIX_EPOCH);
}

/// Scenario files: any text is parsed or refused with a located error, never a panic; a parsed
/// scenario validates without panicking.
pub fn scenario_toml(data: &[u8]) {
    let Some(text) = decode::<&str>(data) else {
        return;
    };
    match harness::scenario::Scenario::from_toml("fuzz.toml", text) {
        Ok(s) => {
            let _ = s.validate();
            let _ = s.needs_browser();
        }
        Err(e) => {
            assert!(e.to_string().starts_with("fuzz.toml"), "{e}");
        }
    }
}
