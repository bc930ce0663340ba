//! [`MockTwilio`]: the Twilio recordings API on wiremock, behind the fault proxy.

use crate::admin;
use crate::fault::{FaultRule, FaultSet};
use crate::journal::{Journal, JournalEntry, Overlap};
use crate::media::{Media, MediaFormat};
use crate::proxy::{FaultProxy, ProxyConfig, MEDIA_HEADER};
use crate::webhook::{Signing, StatusCallback};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Twilio's REST API version, the first segment of every path.
pub const API_VERSION: &str = "2010-04-01";

/// A recording the fake knows about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recording {
    /// `RE` + 32 hex digits.
    pub sid: String,
    /// The call it belongs to, `CA` + 32 hex digits.
    pub call_sid: String,
    /// The format its metadata names as `media_url`'s; both `.mp3` and `.wav` are served.
    #[serde(default = "default_format")]
    pub format: MediaFormat,
    /// Size of the media in bytes, whichever format is asked for.
    pub size_bytes: u64,
    /// `completed` (default), `processing`, `absent`, ...
    #[serde(default = "default_status")]
    pub status: String,
}

fn default_format() -> MediaFormat {
    MediaFormat::Mp3
}

fn default_status() -> String {
    "completed".into()
}

impl Recording {
    /// A completed recording of `size_bytes` in `format`.
    pub fn new(
        sid: impl Into<String>,
        call_sid: impl Into<String>,
        format: MediaFormat,
        size_bytes: u64,
    ) -> Self {
        Recording {
            sid: sid.into(),
            call_sid: call_sid.into(),
            format,
            size_bytes,
            status: default_status(),
        }
    }

    /// The generated media of this recording in `format`.
    pub fn media(&self, format: MediaFormat) -> Media {
        Media::new(&self.sid, format, self.size_bytes)
    }

    /// Checks the SIDs have Twilio's shape; names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if !is_sid(&self.sid, "RE") {
            return Err(format!(
                "sid must be RE followed by 32 hex digits, got {:?}",
                self.sid
            ));
        }
        if !is_sid(&self.call_sid, "CA") {
            return Err(format!(
                "call_sid must be CA followed by 32 hex digits, got {:?}",
                self.call_sid
            ));
        }
        Ok(())
    }
}

/// True when `s` is `prefix` followed by 32 hex digits, Twilio's SID shape.
pub fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// A SID with `prefix`, deterministic from `n` (for tests and examples).
pub fn sid(prefix: &str, n: u64) -> String {
    format!("{prefix}{n:032x}")
}

struct Stored {
    recording: Recording,
    created: SystemTime,
}

pub(crate) struct State {
    pub(crate) account_sid: String,
    pub(crate) auth_token: String,
    pub(crate) base_url: OnceLock<String>,
    recordings: Mutex<Vec<Stored>>,
    pub(crate) faults: Arc<FaultSet>,
    pub(crate) journal: Arc<Journal>,
}

impl State {
    pub(crate) fn add(&self, recording: Recording) -> Result<(), String> {
        recording.validate()?;
        let mut all = self.recordings.lock().unwrap();
        all.retain(|s| s.recording.sid != recording.sid);
        all.push(Stored {
            recording,
            created: SystemTime::now(),
        });
        Ok(())
    }

    pub(crate) fn recordings(&self) -> Vec<Recording> {
        let all = self.recordings.lock().unwrap();
        all.iter().map(|s| s.recording.clone()).collect()
    }

    pub(crate) fn reset(&self) {
        self.recordings.lock().unwrap().clear();
        self.faults.clear();
        self.journal.clear();
    }

    fn base(&self) -> &str {
        self.base_url.get().map(String::as_str).unwrap_or("")
    }

    pub(crate) fn auth(&self, header: Option<&str>) -> &'static str {
        let Some(header) = header else {
            return "missing";
        };
        let expected = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.account_sid, self.auth_token));
        match header.strip_prefix("Basic ") {
            Some(given) if given.trim() == expected => "valid",
            _ => "invalid",
        }
    }

    fn recording_json(&self, stored: &Stored) -> Value {
        let r = &stored.recording;
        let date = httpdate::fmt_http_date(stored.created).replace("GMT", "+0000");
        let path = format!(
            "/{API_VERSION}/Accounts/{}/Recordings/{}",
            self.account_sid, r.sid
        );
        json!({
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "call_sid": r.call_sid,
            "conference_sid": null,
            "channels": 1,
            "date_created": date,
            "date_updated": date,
            "start_time": date,
            "duration": r.media(r.format).duration_secs().to_string(),
            "sid": r.sid,
            "price": null,
            "price_unit": "USD",
            "status": r.status,
            "source": "OutboundAPI",
            "error_code": null,
            "encryption_details": null,
            "track": "both",
            "uri": format!("{path}.json"),
            "media_url": format!("{}{path}.{}", self.base(), r.format.extension()),
            "subresource_uris": {
                "add_on_results": format!("{path}/AddOnResults.json"),
                "transcriptions": format!("{path}/Transcriptions.json"),
            },
        })
    }
}

/// Twilio's error body: `{"code", "message", "more_info", "status"}`.
pub fn twilio_error(status: u16, message: &str) -> Value {
    let code = match status {
        401 => 20003,
        _ => 20000 + u32::from(status),
    };
    json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    })
}

pub(crate) fn twilio_error_body(status: u16) -> (&'static str, Vec<u8>) {
    let message = match status {
        404 => "The requested resource was not found",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    (
        "application/json",
        twilio_error(status, message).to_string().into_bytes(),
    )
}

fn error_response(status: u16, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(twilio_error(status, message))
}

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
        let state = Arc::new(State {
            account_sid: self.account_sid,
            auth_token: self.auth_token,
            base_url: OnceLock::new(),
            recordings: Mutex::new(Vec::new()),
            faults: Arc::default(),
            journal: Arc::default(),
        });
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
            expand_media: true,
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

    /// Arms a fault rule; returns its id, or a message naming the bad field.
    pub fn arm(&self, rule: FaultRule) -> Result<u64, String> {
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

async fn mount_routes(server: &MockServer, state: &Arc<State>) {
    let acct = r"/2010-04-01/Accounts/(?P<ac>[^/]+)";
    Mock::given(path_regex(r"^/2010-04-01/"))
        .and(BadAuth(state.clone()))
        .respond_with(
            error_response(401, "Authenticate")
                .insert_header("WWW-Authenticate", "Basic realm=\"Twilio API\""),
        )
        .with_priority(2)
        .named("401 without valid basic auth")
        .mount(server)
        .await;
    for m in ["GET", "HEAD"] {
        Mock::given(method(m))
            .and(path_regex(format!(
                r"^{acct}/Recordings/[^/.]+\.(mp3|wav)$"
            )))
            .respond_with(Routes(state.clone(), Route::Media))
            .named("recording media")
            .mount(server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path_regex(format!(r"^{acct}/Recordings/[^/.]+(\.json)?$")))
        .respond_with(Routes(state.clone(), Route::Metadata))
        .named("recording metadata")
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(format!(
            r"^{acct}/Calls/[^/.]+/Recordings\.json$"
        )))
        .respond_with(Routes(state.clone(), Route::CallRecordings))
        .named("a call's recordings")
        .mount(server)
        .await;
    admin::mount(server, state).await;
    Mock::given(path_regex(".*"))
        .respond_with(Routes(state.clone(), Route::NotFound))
        .with_priority(u8::MAX)
        .named("404 for anything else")
        .mount(server)
        .await;
}

struct BadAuth(Arc<State>);

impl wiremock::Match for BadAuth {
    fn matches(&self, request: &Request) -> bool {
        let header = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        self.0.auth(header) != "valid"
    }
}

#[derive(Clone, Copy)]
enum Route {
    Media,
    Metadata,
    CallRecordings,
    NotFound,
}

struct Routes(Arc<State>, Route);

impl Respond for Routes {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let state = &self.0;
        let path = request.url.path();
        let not_found =
            || error_response(404, &format!("The requested resource {path} was not found"));
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        if segments.get(2) != Some(&state.account_sid.as_str()) {
            return not_found();
        }
        let last = segments.last().copied().unwrap_or("");
        let (stem, ext) = last.split_once('.').unwrap_or((last, ""));
        let recordings = state.recordings.lock().unwrap();
        match self.1 {
            Route::Media => {
                let (Some(stored), Some(format)) = (
                    recordings.iter().find(|s| s.recording.sid == stem),
                    MediaFormat::from_extension(ext),
                ) else {
                    return not_found();
                };
                let r = &stored.recording;
                ResponseTemplate::new(200)
                    .insert_header("content-type", format.content_type())
                    .insert_header(
                        MEDIA_HEADER,
                        format!("{};{};{}", format.extension(), r.size_bytes, r.sid).as_str(),
                    )
                    .insert_header(
                        "last-modified",
                        httpdate::fmt_http_date(stored.created).as_str(),
                    )
            }
            Route::Metadata => match recordings.iter().find(|s| s.recording.sid == stem) {
                Some(stored) => {
                    ResponseTemplate::new(200).set_body_json(state.recording_json(stored))
                }
                None => not_found(),
            },
            Route::CallRecordings => {
                let call = segments.get(4).copied().unwrap_or("");
                let list: Vec<Value> = recordings
                    .iter()
                    .rev()
                    .filter(|s| s.recording.call_sid == call)
                    .map(|s| state.recording_json(s))
                    .collect();
                let uri = format!(
                    "/{API_VERSION}/Accounts/{}/Calls/{call}/Recordings.json",
                    state.account_sid
                );
                ResponseTemplate::new(200).set_body_json(json!({
                    "end": list.len().saturating_sub(1),
                    "first_page_uri": format!("{uri}?PageSize=50&Page=0"),
                    "next_page_uri": null,
                    "page": 0,
                    "page_size": 50,
                    "previous_page_uri": null,
                    "recordings": list,
                    "start": 0,
                    "uri": format!("{uri}?PageSize=50&Page=0"),
                }))
            }
            Route::NotFound => not_found(),
        }
    }
}
