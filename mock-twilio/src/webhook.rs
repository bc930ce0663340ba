//! The recording-status callback Twilio posts when a recording is ready, signed or not.

use crate::recording::Recording;
use crate::signature::sign;

/// How to sign a callback.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Signing {
    /// A valid `X-Twilio-Signature`.
    Valid,
    /// No `X-Twilio-Signature` header.
    Unsigned,
    /// A well-formed signature made with the wrong key.
    Forged,
}

/// A `RecordingStatusCallback`: Twilio's form fields, ready to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCallback {
    /// The form fields, in Twilio's order.
    pub params: Vec<(String, String)>,
}

impl StatusCallback {
    /// The callback for a completed recording whose URL is `recording_url`.
    pub fn completed(account_sid: &str, recording: &Recording, recording_url: &str) -> Self {
        let media = recording.media(recording.format);
        let params = [
            ("AccountSid", account_sid.to_string()),
            ("CallSid", recording.call_sid.clone()),
            ("RecordingSid", recording.sid.clone()),
            ("RecordingUrl", recording_url.to_string()),
            ("RecordingStatus", recording.status.clone()),
            ("RecordingDuration", media.duration_secs().to_string()),
            ("RecordingChannels", "1".to_string()),
            ("RecordingSource", "OutboundAPI".to_string()),
            (
                "RecordingStartTime",
                "Tue, 24 Nov 2026 10:00:00 +0000".to_string(),
            ),
        ];
        StatusCallback {
            params: params
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }

    /// The `X-Twilio-Signature` for posting this to `url`, or `None` when unsigned.
    pub fn signature(&self, url: &str, auth_token: &str, signing: Signing) -> Option<String> {
        match signing {
            Signing::Valid => Some(sign(auth_token, url, &self.params)),
            Signing::Unsigned => None,
            Signing::Forged => Some(sign(&format!("forged-{auth_token}"), url, &self.params)),
        }
    }

    /// The form-encoded body.
    pub fn body(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&self.params)
            .finish()
    }

    /// Posts it to `url` as Twilio would.
    pub async fn send(
        &self,
        url: &str,
        auth_token: &str,
        signing: Signing,
    ) -> reqwest::Result<reqwest::Response> {
        let mut request = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("user-agent", "TwilioProxy/1.1")
            .body(self.body());
        if let Some(sig) = self.signature(url, auth_token, signing) {
            request = request.header("x-twilio-signature", sig);
        }
        request.send().await
    }
}
