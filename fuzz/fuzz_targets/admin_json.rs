//! mock-twilio's admin API JSON (a fault rule, as POSTed to /__admin/faults): parsed or refused,
//! never a panic; a parsed rule validates and plans without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;

// The check itself is in src/checks.rs, which cargo test also replays the corpus through.
fuzz_target!(|data: &[u8]| recordings_fuzz::admin_json(data));
