//! The integration harness: real nginx + a backend + mock-twilio as one [`Stack`], driven by
//! [`Scenario`]s whose every step becomes an [`Outcome`] (status, headers, body checked byte
//! for byte, nginx's own account of any 502/504, backend events, Twilio traffic).
//!
//! ```no_run
//! # async fn demo() -> Result<(), harness::HarnessError> {
//! use harness::{run, Profile, RecordingSpec, RequestStep, Runtime, Scenario};
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

pub mod backend;
pub mod bench;
pub mod browser;
pub mod containers;
pub mod error;
pub mod gateway;
pub mod nginx;
pub mod outcome;
pub mod process;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod snapshot;
pub mod soak;
pub mod stack;

pub use error::HarnessError;
pub use gateway::{classify, GatewayCause, GatewayError};
pub use mock_twilio::MediaFormat;
pub use outcome::{AnsweredBy, BodyCheck, Outcome};
pub use runner::{run, run_profile, ProfileRun, ScenarioRun};
pub use scenario::{Expect, FaultPoint, RecordingSpec, RequestStep, Scenario, Step};
pub use stack::{Profile, Runtime, Stack, StackSpec, Timeouts};
