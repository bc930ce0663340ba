//! The nginx error-log classifier: any line is classified or skipped, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &str| {
    if let Some(e) = harness::gateway::classify(line) {
        assert!(!e.cause.name().is_empty());
    }
    let _ = harness::gateway::line_time(line);
});
