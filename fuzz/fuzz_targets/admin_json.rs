//! mock-twilio's admin API JSON (a fault rule, as POSTed to /__admin/faults): parsed or refused,
//! never a panic; a parsed rule validates and plans without panicking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mock_twilio::{FaultRule, FaultSet};

fuzz_target!(|data: &[u8]| {
    if let Ok(rule) = serde_json::from_slice::<FaultRule>(data) {
        if rule.validate().is_ok() {
            let set = FaultSet::default();
            if set.arm(rule).is_ok() {
                let _ = set.plan("GET", "/2010-04-01/Accounts/AC1/Recordings/RE1.mp3", false);
            }
        }
    }
});
