//! The web app's URLs, as its front end and Twilio use them: assembled here and nowhere else.

use mock_twilio::MediaFormat;

/// Where Twilio posts its recording-status callback.
pub const WEBHOOK_PATH: &str = "/webhook/recording-status";

/// The path of a call's recording download; `?format=` only when one is named.
pub fn download_path(call_sid: &str, format: Option<MediaFormat>) -> String {
    match format {
        Some(f) => format!("/api/calls/{call_sid}/download?format={}", f.extension()),
        None => format!("/api/calls/{call_sid}/download"),
    }
}

/// The player page's path for a call (its `<audio>` element plays [`download_path`]).
pub fn player_path(call_sid: &str, format: Option<MediaFormat>) -> String {
    match format {
        Some(f) => format!("/player.html?call={call_sid}&format={}", f.extension()),
        None => format!("/player.html?call={call_sid}"),
    }
}
