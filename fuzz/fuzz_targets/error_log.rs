//! The nginx error-log classifier: any line is classified or skipped, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

// The check itself is in src/checks.rs, which cargo test also replays the corpus through.
fuzz_target!(|data: &[u8]| recordings_fuzz::error_log(data));
