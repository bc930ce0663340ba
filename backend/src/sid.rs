//! Twilio SIDs: two letters and 32 hex digits. Only such strings ever become file names.

/// True when `s` is `prefix` followed by 32 hex digits.
pub fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}
