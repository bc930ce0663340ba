//! Twilio's REST API, as this service uses it: a call's newest recording, and recording media,
//! with retries (429 and 5xx, honouring `Retry-After`, and broken connections) within a budget.

use std::time::{Duration, Instant};

/// Why Twilio did not deliver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Twilio answered 404.
    #[error("Twilio has no such resource (404)")]
    NotFound,
    /// Anything else: the cause, for the log.
    #[error("{0}")]
    Failed(String),
}

/// A client of Twilio's REST API for one account.
pub struct Twilio {
    http: reqwest::Client,
    base: String,
    account_sid: String,
    auth_token: String,
    budget: Duration,
}

/// The media formats Twilio serves a recording in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `.mp3`, `audio/mpeg`.
    Mp3,
    /// `.wav`, `audio/x-wav`.
    Wav,
}

impl Format {
    /// Parses `mp3` or `wav`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mp3" => Some(Format::Mp3),
            "wav" => Some(Format::Wav),
            _ => None,
        }
    }

    /// The file extension.
    pub fn ext(self) -> &'static str {
        match self {
            Format::Mp3 => "mp3",
            Format::Wav => "wav",
        }
    }

    /// The `Content-Type` served.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Mp3 => "audio/mpeg",
            Format::Wav => "audio/x-wav",
        }
    }
}

impl Twilio {
    /// A client for `account_sid` at `base` (e.g. `https://api.twilio.com`).
    pub fn new(base: &str, account_sid: &str, auth_token: &str, budget: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(budget.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("TLS-free reqwest client builds");
        Twilio {
            http,
            base: base.trim_end_matches('/').to_string(),
            account_sid: account_sid.to_string(),
            auth_token: auth_token.to_string(),
            budget,
        }
    }

    /// The budget for one download, retries included; also the longest stall allowed in a body.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// The URL of a recording's media. Built from the SID, never from a URL we were sent,
    /// so our credentials only ever go to `TWILIO_API_BASE`.
    pub fn media_url(&self, recording_sid: &str, format: Format) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Recordings/{recording_sid}.{}",
            self.base,
            self.account_sid,
            format.ext()
        )
    }

    /// The newest completed recording of a call: `(recording SID, URL)`.
    pub async fn newest_recording(
        &self,
        call_sid: &str,
    ) -> Result<Option<(String, String)>, FetchError> {
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Calls/{call_sid}/Recordings.json",
            self.base, self.account_sid
        );
        let resp = self.get_with_retry(&url).await?;
        let body: serde_json::Value = resp.json().await.map_err(|e| {
            FetchError::Failed(format!("Twilio list of recordings unreadable: {e}"))
        })?;
        let mut completed: Vec<&serde_json::Value> = body["recordings"]
            .as_array()
            .map(|a| a.iter().filter(|r| r["status"] == "completed").collect())
            .unwrap_or_default();
        // Twilio lists newest first; sort anyway, by date_created (RFC 2822).
        completed.sort_by_key(|r| {
            std::cmp::Reverse(
                r["date_created"]
                    .as_str()
                    .and_then(|d| httpdate::parse_http_date(&d.replace("+0000", "GMT")).ok()),
            )
        });
        Ok(completed.first().and_then(|r| {
            let sid = r["sid"].as_str()?;
            crate::sid::is_sid(sid, "RE").then(|| {
                (
                    sid.to_string(),
                    format!(
                        "{}/2010-04-01/Accounts/{}/Recordings/{sid}",
                        self.base, self.account_sid
                    ),
                )
            })
        }))
    }

    /// Starts downloading a recording's media; returns once the headers are in.
    pub async fn open_media(
        &self,
        recording_sid: &str,
        format: Format,
    ) -> Result<reqwest::Response, FetchError> {
        self.get_with_retry(&self.media_url(recording_sid, format))
            .await
    }

    /// At most this many attempts per download, however large the budget: a Twilio that
    /// failed three times in a row is down, and the client should hear so quickly.
    pub const MAX_ATTEMPTS: u32 = 3;

    async fn get_with_retry(&self, url: &str) -> Result<reqwest::Response, FetchError> {
        let deadline = Instant::now() + self.budget;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let sent = tokio::time::timeout(
                left,
                self.http
                    .get(url)
                    .basic_auth(&self.account_sid, Some(&self.auth_token))
                    .send(),
            )
            .await;
            let (cause, retry_after) = match sent {
                Err(_) => (
                    format!(
                        "Twilio did not answer within {:.1}s",
                        self.budget.as_secs_f64()
                    ),
                    None,
                ),
                Ok(Err(e)) => (format!("Twilio request failed: {}", error_chain(&e)), None),
                Ok(Ok(resp)) => {
                    let status = resp.status().as_u16();
                    match status {
                        200..=299 => return Ok(resp),
                        404 => return Err(FetchError::NotFound),
                        429 | 500 | 502 | 503 | 504 => {
                            let retry_after = resp
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.trim().parse::<u64>().ok())
                                .map(Duration::from_secs);
                            (format!("Twilio answered {status}"), retry_after)
                        }
                        401 | 403 => {
                            return Err(FetchError::Failed(format!(
                                "Twilio rejected the credentials ({status}); check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
                            )))
                        }
                        _ => return Err(FetchError::Failed(format!("Twilio answered {status}"))),
                    }
                }
            };
            let backoff =
                Duration::from_millis(100 * 2u64.pow(attempt.min(5))).min(Duration::from_secs(2));
            let wait = retry_after.unwrap_or(backoff);
            let left = deadline.saturating_duration_since(Instant::now());
            if attempt >= Self::MAX_ATTEMPTS || wait >= left {
                return Err(FetchError::Failed(format!(
                    "{cause} (gave up after {attempt} attempts)"
                )));
            }
            tracing::warn!(attempt, cause = %cause, wait_ms = wait.as_millis() as u64, "Twilio request failed, retrying");
            tokio::time::sleep(wait).await;
        }
    }
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
