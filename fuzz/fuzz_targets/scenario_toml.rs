//! Scenario files: any text is parsed or refused with a located error, never a panic; a parsed
//! scenario validates without panicking and survives a round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match harness::scenario::Scenario::from_toml("fuzz.toml", text) {
        Ok(s) => {
            let _ = s.validate();
            let _ = s.needs_browser();
        }
        Err(e) => {
            assert!(e.to_string().starts_with("fuzz.toml"), "{e}");
        }
    }
});
