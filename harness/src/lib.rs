//! The integration harness: real nginx + a backend + mock-twilio as one [`Stack`], driven by
//! [`Scenario`]s whose every step becomes an [`Outcome`] (status, headers, body checked byte
//! for byte, nginx's own account of any 502/504, backend events, Twilio traffic).
//!
//! ```no_run
//! # async fn demo() -> Result<(), harness::HarnessError> {
//! use harness::{run, RecordingSpec, RequestStep, Runtime, Scenario};
//! use mock_twilio::{Fault, FaultRule, MediaFormat};
//!
//! // A backend that drops the connection before answering: what does each profile show?
//! let scenario = Scenario::new("hop-reset", RecordingSpec::new(MediaFormat::Mp3, 10_000))
//!     .hop_fault(FaultRule::new(Fault::Reset).times(1))
//!     .request(RequestStep::get());
//! let result = run(&scenario, Runtime::Processes).await?;
//! for profile in &result.runs {
//!     let o = &profile.outcomes[0];
//!     println!("{}: {} {:?}", profile.profile.name(), o.summary(), o.gateway_errors.first().map(|e| e.cause));
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod access;
pub mod app;
pub mod assets;
pub mod backend;
pub mod bench;
pub mod browser;
pub mod check;
pub mod containers;
pub mod diagnose;
pub mod docker;
pub mod error;
pub mod events;
pub mod expect;
pub mod explain;
pub mod gateway;
pub mod hop;
pub mod images;
pub mod init;
pub mod locate;
pub mod log;
pub mod machine_lock;
pub mod nginx;
pub mod nginx_conf;
pub mod outcome;
pub mod process;
pub mod project;
pub mod range_rfc;
pub mod ready;
pub mod report;
pub mod runner;
pub mod runtime;
pub mod scenario;
pub mod snapshot;
pub mod soak;
pub mod spec;
pub mod stack;
pub mod step;
pub mod summary;
pub mod tcp;
pub mod testcontainers_images;
pub mod toml_file;

pub use error::HarnessError;
pub use events::BackendEvent;
pub use expect::{Expect, StatusMatch};
pub use gateway::{classify, GatewayCause, GatewayError};
pub use mock_twilio::MediaFormat;
pub use outcome::{AnsweredBy, BodyCheck, BodyKind, Outcome};
pub use runner::{run, run_profile, run_with, ProfileRun, ScenarioRun};
pub use runtime::Runtime;
pub use scenario::{FaultPoint, Method, RecordingSpec, RequestStep, Scenario, Step};
pub use spec::{BackendSpec, Profile, StackSpec, Timeouts};
pub use stack::Stack;
