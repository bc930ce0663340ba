//! The fake's state, shared by its routes, its admin API and [`crate::MockTwilio`]: the
//! credentials it accepts, its recordings, its fault rules and its journal.

use crate::error::InvalidField;
use crate::fault::FaultSet;
use crate::journal::Journal;
use crate::recording::Recording;
use crate::API_VERSION;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

pub(crate) struct Stored {
    pub(crate) recording: Recording,
    pub(crate) created: SystemTime,
}

pub(crate) struct State {
    pub(crate) account_sid: String,
    pub(crate) auth_token: String,
    pub(crate) base_url: OnceLock<String>,
    pub(crate) recordings: Mutex<Vec<Stored>>,
    pub(crate) faults: Arc<FaultSet>,
    pub(crate) journal: Arc<Journal>,
}

impl State {
    pub(crate) fn new(account_sid: String, auth_token: String) -> Self {
        State {
            account_sid,
            auth_token,
            base_url: OnceLock::new(),
            recordings: Mutex::new(Vec::new()),
            faults: Arc::default(),
            journal: Arc::default(),
        }
    }

    pub(crate) fn add(&self, recording: Recording) -> Result<(), InvalidField> {
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

    pub(crate) fn base(&self) -> &str {
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

    pub(crate) fn recording_json(&self, stored: &Stored) -> Value {
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
