//! mock-twilio's one error: a value refused, naming the field at fault.

/// A recording, fault rule or admin request that was refused. `field` is its path in the JSON
/// or TOML form (`fault.bytes_per_sec`, `match.path_regex`, `sid`; empty for the whole value),
/// and the message says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidField {
    /// Where the value is, e.g. `fault.kind`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl InvalidField {
    /// A refusal of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }
}
