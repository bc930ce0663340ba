//! [`MockTwilio`]: the Twilio recordings API on wiremock, behind the fault proxy.

use crate::error::InvalidField;
use crate::fault::{FaultRule, FaultSet};
use crate::journal::{JournalEntry, Overlap};
use crate::media::MediaFormat;
use crate::proxy::{FaultProxy, ProxyConfig};
use crate::recording::Recording;
use crate::routes::{mount_routes, twilio_error_body, MediaSource};
use crate::state::State;
use crate::webhook::{Signing, StatusCallback};
use crate::API_VERSION;
use std::net::SocketAddr;
use std::sync::Arc;
use wiremock::MockServer;

/// Configures a [`MockTwilio`] before it starts.
#[must_use = "call .start() to run the fake"]
pub struct MockTwilioBuilder {
    account_sid: String,
    auth_token: String,
    bind: SocketAddr,
}

impl MockTwilioBuilder {
    /// The account SID the fake accepts (default: a fixed test SID).
    pub fn account_sid(mut self, sid: impl Into<String>) -> Self {
        self.account_sid = sid.into();
        self
    }

    /// The auth token the fake accepts (default: a fixed test token).
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = token.into();
        self
    }

    /// Where the fake listens (default `127.0.0.1:0`: an OS-chosen port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Starts wiremock and the fault proxy in front of it.
    pub async fn start(self) -> std::io::Result<MockTwilio> {
        let state = Arc::new(State::new(self.account_sid, self.auth_token));
        let server = MockServer::builder()
            .disable_request_recording()
            .start()
            .await;
        mount_routes(&server, &state).await;
        let auth_state = state.clone();
        let config = ProxyConfig {
            upstream: *server.address(),
            internal_prefix: Some("/__admin".into()),
            auth: Some(Arc::new(move |h| auth_state.auth(h).to_string())),
            error_body: twilio_error_body,
            generated: Some(Arc::new(MediaSource)),
        };
        let proxy = FaultProxy::start_with(
            self.bind,
            config,
            state.faults.clone(),
            state.journal.clone(),
        )
        .await?;
        let host = match proxy.addr() {
            SocketAddr::V4(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
            a => a.to_string(),
        };
        let _ = state.base_url.set(format!("http://{host}"));
        Ok(MockTwilio {
            proxy,
            server,
            state,
        })
    }
}

/// A running fake of Twilio's recordings API. Dropping it stops the server.
///
/// ```
/// # tokio_test_block_on(async {
/// use mock_twilio::{MockTwilio, Recording, MediaFormat, Fault, FaultRule, sid};
/// let twilio = MockTwilio::start().await.unwrap();
/// let rec = twilio.add_recording(Recording::new(sid("RE", 1), sid("CA", 1), MediaFormat::Mp3, 10_000));
/// // The first download fails with a 503, the next one succeeds.
/// twilio.arm(FaultRule::new(Fault::Status { status: 503, retry_after: None }).times(1)).unwrap();
/// let url = twilio.media_url(&rec.sid, MediaFormat::Mp3);
/// let get = || reqwest::Client::new().get(&url)
///     .basic_auth(twilio.account_sid(), Some(twilio.auth_token())).send();
/// assert_eq!(get().await.unwrap().status(), 503);
/// let body = get().await.unwrap().bytes().await.unwrap();
/// assert_eq!(body, rec.media(MediaFormat::Mp3).to_vec());
/// assert_eq!(twilio.journal().len(), 2);
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Runtime::new().unwrap().block_on(f) }
/// ```
pub struct MockTwilio {
    proxy: FaultProxy,
    server: MockServer,
    state: Arc<State>,
}

/// The account SID a [`MockTwilio`] accepts unless told otherwise.
pub const TEST_ACCOUNT_SID: &str = "AC00000000000000000000000000000001";
/// The auth token a [`MockTwilio`] accepts unless told otherwise.
pub const TEST_AUTH_TOKEN: &str = "test-auth-token-0123456789abcdef";

impl MockTwilio {
    /// Starts a fake with the test credentials on an OS-chosen loopback port.
    pub async fn start() -> std::io::Result<Self> {
        Self::builder().start().await
    }

    /// A builder for other credentials or another address.
    pub fn builder() -> MockTwilioBuilder {
        MockTwilioBuilder {
            account_sid: TEST_ACCOUNT_SID.into(),
            auth_token: TEST_AUTH_TOKEN.into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }

    /// Base URL to use as `TWILIO_API_BASE`, e.g. `http://127.0.0.1:40123`.
    pub fn uri(&self) -> String {
        self.state.base().to_string()
    }

    /// The socket address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr()
    }

    /// The accepted account SID.
    pub fn account_sid(&self) -> &str {
        &self.state.account_sid
    }

    /// The accepted auth token.
    pub fn auth_token(&self) -> &str {
        &self.state.auth_token
    }

    /// Adds (or replaces) a recording. Panics on a malformed SID: use the admin API for untrusted input.
    pub fn add_recording(&self, recording: Recording) -> Recording {
        self.state
            .add(recording.clone())
            .unwrap_or_else(|e| panic!("bad recording: {e}"));
        recording
    }

    /// The recording's URL as Twilio sends it in `RecordingUrl` (no extension).
    pub fn recording_url(&self, sid: &str) -> String {
        format!(
            "{}/{API_VERSION}/Accounts/{}/Recordings/{sid}",
            self.uri(),
            self.state.account_sid
        )
    }

    /// The URL of a recording's media in `format`.
    pub fn media_url(&self, sid: &str, format: MediaFormat) -> String {
        format!("{}.{}", self.recording_url(sid), format.extension())
    }

    /// Arms a fault rule; returns its id, or the bad field.
    pub fn arm(&self, rule: FaultRule) -> Result<u64, InvalidField> {
        self.state.faults.arm(rule)
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.state.faults.clear();
    }

    /// The fault rules of this fake.
    pub fn faults(&self) -> &Arc<FaultSet> {
        &self.state.faults
    }

    /// Every request that reached the fake (admin requests excluded), in order.
    pub fn journal(&self) -> Vec<JournalEntry> {
        self.state.journal.entries()
    }

    /// Requests asked again while the first for the same method and path was still being
    /// answered: one recording downloaded twice at once (see [`Journal::overlaps`]).
    pub fn overlaps(&self) -> Vec<Overlap> {
        self.state.journal.overlaps()
    }

    /// Requests not answered in full yet (a download under way, a hang its client still waits on).
    pub fn open_requests(&self) -> Vec<JournalEntry> {
        self.state.journal.open()
    }

    /// Forgets recordings, faults and the journal.
    pub fn reset(&self) {
        self.state.reset();
    }

    /// The wiremock server behind the fault layer: mount raw mocks on it as an escape hatch
    /// (they win over the built-in routes with `.with_priority(1)`).
    pub fn server(&self) -> &MockServer {
        &self.server
    }

    /// The recording-status callback Twilio would send for `recording`.
    pub fn status_callback(&self, recording: &Recording) -> StatusCallback {
        StatusCallback::completed(
            &self.state.account_sid,
            recording,
            &self.recording_url(&recording.sid),
        )
    }

    /// Posts the recording-status callback for `recording` to `url`, signed as `signing` says.
    pub async fn send_status_callback(
        &self,
        url: &str,
        recording: &Recording,
        signing: Signing,
    ) -> reqwest::Result<reqwest::Response> {
        self.status_callback(recording)
            .send(url, &self.state.auth_token, signing)
            .await
    }
}
