//! Range / If-Range handling: never panics, and a 206 decision is always inside the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use recordings_backend::range::{decide, if_range_holds, Decision};

fuzz_target!(|input: (u32, &str, &str)| {
    let (size, range, if_range) = input;
    let size = u64::from(size);
    match decide(Some(range), size) {
        Decision::Partial { start, end } => {
            assert!(start <= end, "{range:?} on {size}: {start}-{end}");
            assert!(end < size, "{range:?} on {size}: {start}-{end}");
        }
        Decision::Full | Decision::Unsatisfiable => {}
    }
    let _ = if_range_holds(Some(if_range), "\"abc\"", std::time::UNIX_EPOCH);
});
