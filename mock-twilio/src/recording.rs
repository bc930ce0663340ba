//! [`Recording`]: a recording the fake knows about, and Twilio's SID shape.

use crate::error::InvalidField;
use crate::media::{Media, MediaFormat};
use serde::{Deserialize, Serialize};

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
    pub fn validate(&self) -> Result<(), InvalidField> {
        for (field, value, prefix) in [("sid", &self.sid, "RE"), ("call_sid", &self.call_sid, "CA")]
        {
            if !is_sid(value, prefix) {
                return Err(InvalidField::new(
                    field,
                    format!("{field} must be {prefix} followed by 32 hex digits, got {value:?}"),
                ));
            }
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
