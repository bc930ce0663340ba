//! The request journal: every request a fault point saw, in order, with what it did.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// One request as the fault layer saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Order of arrival, from 1.
    pub seq: u64,
    /// `GET`, `HEAD`, `POST`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The `Range` header, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// `valid`, `invalid` or `missing` basic auth (mock-twilio only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// The fault kinds that fired for it.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub faults: Vec<String>,
    /// The status sent, if a response was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Body bytes sent.
    pub body_bytes: u64,
}

/// An append-only list of [`JournalEntry`].
#[derive(Debug, Default)]
pub struct Journal {
    entries: Mutex<Vec<JournalEntry>>,
}

impl Journal {
    /// Appends an entry, numbering it; returns its number.
    pub fn push(&self, mut entry: JournalEntry) -> u64 {
        let mut entries = self.entries.lock().unwrap();
        entry.seq = entries.len() as u64 + 1;
        entries.push(entry);
        entries.len() as u64
    }

    /// Changes entry number `seq`, if it is still there.
    pub fn update(&self, seq: u64, change: impl FnOnce(&mut JournalEntry)) {
        let mut entries = self.entries.lock().unwrap();
        if let Some(e) = entries.iter_mut().find(|e| e.seq == seq) {
            change(e);
        }
    }

    /// A copy of every entry so far.
    pub fn entries(&self) -> Vec<JournalEntry> {
        self.entries.lock().unwrap().clone()
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        self.entries.lock().unwrap().clear();
    }
}
