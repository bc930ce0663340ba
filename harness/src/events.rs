//! [`BackendEvent`]: the backend log lines the harness reads, and what each says. A backend
//! writes them as plain text or as JSON with the text in `message`; any backend that keeps this
//! contract (the reference one, the uvicorn example, a team's own) is observed the same way.

use serde::{Deserialize, Serialize};

/// A backend log line the harness recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendEvent {
    /// A download from Twilio begins.
    CacheMiss,
    /// A download ended and the file is cached.
    Saved,
    /// A download took longer than the backend's slow-download threshold.
    SlowDownload,
    /// A download failed for good (the client got an error).
    FetchFailed,
    /// Twilio answered 404 for the recording.
    NotFoundAtTwilio,
    /// A Twilio request failed and is tried again.
    TwilioRetry,
    /// A status webhook's signature was refused.
    WebhookRejected,
}

impl BackendEvent {
    /// Every event, in the order a download meets them.
    pub const ALL: [BackendEvent; 7] = [
        BackendEvent::CacheMiss,
        BackendEvent::TwilioRetry,
        BackendEvent::SlowDownload,
        BackendEvent::Saved,
        BackendEvent::FetchFailed,
        BackendEvent::NotFoundAtTwilio,
        BackendEvent::WebhookRejected,
    ];

    /// The text a log line starts with (its `message`, for JSON lines).
    pub fn log_text(self) -> &'static str {
        match self {
            BackendEvent::CacheMiss => "Cache miss - downloading from Twilio",
            BackendEvent::Saved => "Recording saved - took",
            BackendEvent::SlowDownload => "Slow download detected",
            BackendEvent::FetchFailed => "Failed to fetch recording",
            BackendEvent::NotFoundAtTwilio => "Recording file not found at Twilio",
            BackendEvent::TwilioRetry => "Twilio request failed, retrying",
            BackendEvent::WebhookRejected => "webhook rejected",
        }
    }

    /// Its name in Outcomes and snapshots (`cache_miss`).
    pub fn name(self) -> &'static str {
        match self {
            BackendEvent::CacheMiss => "cache_miss",
            BackendEvent::Saved => "saved",
            BackendEvent::SlowDownload => "slow_download",
            BackendEvent::FetchFailed => "fetch_failed",
            BackendEvent::NotFoundAtTwilio => "not_found_at_twilio",
            BackendEvent::TwilioRetry => "twilio_retry",
            BackendEvent::WebhookRejected => "webhook_rejected",
        }
    }

    /// The event a log line reports, if any: a JSON line's `message` starts with the text, or
    /// a plain line contains it.
    pub fn parse(line: &str) -> Option<BackendEvent> {
        let message = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_string));
        Self::ALL.into_iter().find(|e| match &message {
            Some(m) => m.starts_with(e.log_text()),
            None => line.contains(e.log_text()),
        })
    }

    /// A download from Twilio begins here.
    pub fn starts_download(self) -> bool {
        self == BackendEvent::CacheMiss
    }

    /// A download from Twilio ends here (cached, failed, or not at Twilio).
    pub fn ends_download(self) -> bool {
        matches!(
            self,
            BackendEvent::Saved | BackendEvent::FetchFailed | BackendEvent::NotFoundAtTwilio
        )
    }
}

impl std::fmt::Display for BackendEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Counts the downloads `events` began and ended: `(started, ended)`.
pub fn downloads(events: &[BackendEvent]) -> (usize, usize) {
    let started = events.iter().filter(|e| e.starts_download()).count();
    let ended = events.iter().filter(|e| e.ends_download()).count();
    (started, ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_plain_lines_are_recognised() {
        let json = r#"{"level":"INFO","message":"Cache miss - downloading from Twilio for CA1"}"#;
        assert_eq!(BackendEvent::parse(json), Some(BackendEvent::CacheMiss));
        let plain = "2026-11-30 INFO app: Recording saved - took 0.01s";
        assert_eq!(BackendEvent::parse(plain), Some(BackendEvent::Saved));
        let quoted = r#"{"message":"GET /x","detail":"Recording saved - took"}"#;
        assert_eq!(BackendEvent::parse(quoted), None, "only the message counts");
        for e in BackendEvent::ALL {
            let name = serde_json::to_value(e).unwrap();
            assert_eq!(name, e.name(), "serde and name() agree");
        }
    }
}
