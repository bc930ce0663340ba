//! Every committed fuzz corpus input, replayed through its target's check (the same source file
//! the fuzz targets call): a crash found earlier, or a change that makes a corpus input panic,
//! fails here. `scripts/fuzz-replay` does the same under libFuzzer's instrumentation.

use crate::support::checkout;
use rstest::rstest;

#[path = "../../fuzz/src/checks.rs"]
mod checks;

#[rstest]
#[case::admin_json("admin_json", checks::admin_json)]
#[case::error_log("error_log", checks::error_log)]
#[case::range_header("range_header", checks::range_header)]
#[case::scenario_toml("scenario_toml", checks::scenario_toml)]
fn every_committed_corpus_input_replays_without_a_panic(
    #[case] target: &str,
    #[case] check: fn(&[u8]),
) {
    let dir = checkout().join("fuzz/corpus").join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 100, "{target}: {} inputs", inputs.len());
    for path in inputs {
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{target}: {} makes the check panic", path.display());
        }
    }
}
