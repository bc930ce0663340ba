//! Range / If-Range handling: never panics, and a 206 decision is always inside the file.
#![no_main]
use libfuzzer_sys::fuzz_target;

// The check itself is in src/checks.rs, which cargo test also replays the corpus through.
fuzz_target!(|data: &[u8]| recordings_fuzz::range_header(data));
