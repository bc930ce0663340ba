//! Reading the harness's TOML files (scenarios, stack files, `harness.toml`) so that a mistake
//! names the file, line, column and field, with a hint where one helps.

use crate::error::HarnessError;
use serde::de::DeserializeOwned;

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|p| p + 1).unwrap_or(0) + 1;
    (line, column)
}

/// Best-effort position of a field named by path (its last key) in the text.
pub fn locate(text: &str, field: &str) -> (usize, usize) {
    let key = field.rsplit('.').next().unwrap_or(field);
    let key = key.split('[').next().unwrap_or(key);
    text.lines()
        .enumerate()
        .find(|(_, l)| l.trim_start().starts_with(key))
        .map(|(i, l)| (i + 1, l.len() - l.trim_start().len() + 1))
        .unwrap_or((1, 1))
}

/// Parses `text` (the contents of `file`). On error: the field's path, its place, serde's
/// message, and `hint(field, message)` if it has one.
pub fn parse<T: DeserializeOwned>(
    file: &str,
    text: &str,
    hint: impl Fn(&str, &str) -> Option<String>,
) -> Result<T, HarnessError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let (line, column) = inner
            .span()
            .map(|s| line_col(text, s.start))
            .unwrap_or((0, 0));
        let message = inner.message().to_string();
        HarnessError::Scenario {
            file: file.into(),
            line,
            column,
            hint: hint(&field, &message),
            field,
            message,
        }
    })
}

/// The error for a field that parsed but is refused (by a validation after parsing).
pub fn refused(file: &str, text: &str, field: String, message: String) -> HarnessError {
    let (line, column) = locate(text, &field);
    HarnessError::Scenario {
        file: file.into(),
        line,
        column,
        field,
        message,
        hint: None,
    }
}
