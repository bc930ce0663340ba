//! The harness's scenario tables: real stacks (nginx + backend + mock-twilio), every case under
//! every profile side by side, compared against `snapshots/`.

mod bench;
mod browser;
mod cli;
mod containers;
mod diagnose;
mod docs;
pub mod files;
mod fuzz_corpora;
mod gateway;
mod project;
mod range;
mod soak;
mod stack;
mod support;
mod twilio_faults;
