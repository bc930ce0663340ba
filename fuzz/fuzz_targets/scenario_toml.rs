//! Scenario files: any text is parsed or refused with a located error, never a panic; a parsed
//! scenario validates without panicking and survives a round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;

// The check itself is in src/checks.rs, which cargo test also replays the corpus through.
fuzz_target!(|data: &[u8]| recordings_fuzz::scenario_toml(data));
