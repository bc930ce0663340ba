//! A fake of Twilio's recordings REST API (version 2010-04-01) that misbehaves on command.
//!
//! [`MockTwilio`] serves recording media (generated, deterministic MP3 and WAV of any size),
//! recording metadata and a call's recording list, all behind HTTP basic auth, on
//! [wiremock](https://docs.rs/wiremock). In front of wiremock sits a connection-level
//! [`FaultProxy`] that can do what an HTTP server library cannot: delay or throttle a
//! response, cut its body part-way, reset or hang a connection, answer garbage. The same
//! proxy and the same [`Fault`] type serve the harness's nginx→backend hop.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use mock_twilio::{sid, Fault, FaultRule, MediaFormat, MockTwilio, Recording};
//!
//! let twilio = MockTwilio::start().await?;
//! let rec = twilio.add_recording(Recording::new(sid("RE", 7), sid("CA", 7), MediaFormat::Wav, 4_000));
//! // Cut the first download after 100 bytes.
//! twilio.arm(FaultRule::new(Fault::CloseAfter { bytes: 100 }).recording(&rec.sid).times(1)).unwrap();
//!
//! let client = reqwest::Client::new();
//! let url = twilio.media_url(&rec.sid, MediaFormat::Wav);
//! let cut = client.get(&url).basic_auth(twilio.account_sid(), Some(twilio.auth_token()))
//!     .send().await.unwrap().bytes().await;
//! assert!(cut.is_err(), "the body ended before its Content-Length");
//! let whole = client.get(&url).basic_auth(twilio.account_sid(), Some(twilio.auth_token()))
//!     .send().await.unwrap().bytes().await.unwrap();
//! assert_eq!(whole, rec.media(MediaFormat::Wav).to_vec());
//! # Ok::<_, std::io::Error>(()) }).unwrap();
//! ```
#![warn(missing_docs)]

mod admin;
mod error;
pub mod fault;
pub mod journal;
pub mod media;
pub mod proxy;
mod recording;
mod routes;
pub mod signature;
mod state;
mod twilio;
pub mod webhook;

pub use admin::parse_json;
pub use error::InvalidField;
pub use fault::{Fault, FaultMatch, FaultRule, FaultSet, Plan};
pub use journal::{IdleClose, Journal, JournalEntry, Overlap};
pub use media::{Media, MediaFormat};
pub use proxy::{BodySource, FaultProxy, GeneratedBody, ProxyConfig};
pub use recording::{is_sid, sid, Recording};
pub use routes::twilio_error;
pub use twilio::{MockTwilio, MockTwilioBuilder, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN};

/// Twilio's REST API version, the first segment of every path.
pub const API_VERSION: &str = "2010-04-01";
pub use webhook::{Signing, StatusCallback};
