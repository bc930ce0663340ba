//! SQLite: which recording belongs to which call (from webhooks and Twilio look-ups).

use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A call's recording, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecording {
    /// `CA…`
    pub call_sid: String,
    /// `RE…`
    pub recording_sid: String,
    /// Twilio's `RecordingUrl`, as received (kept for reference; downloads use the SID).
    pub recording_url: String,
}

/// The database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS call_recordings (
                call_sid TEXT PRIMARY KEY,
                recording_sid TEXT NOT NULL,
                recording_url TEXT NOT NULL,
                updated_at INTEGER NOT NULL
            );",
        )?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The recording stored for a call.
    pub async fn get(&self, call_sid: &str) -> rusqlite::Result<Option<CallRecording>> {
        let conn = self.conn.clone();
        let call_sid = call_sid.to_string();
        tokio::task::spawn_blocking(move || {
            conn.lock()
                .unwrap()
                .query_row(
                    "SELECT call_sid, recording_sid, recording_url FROM call_recordings WHERE call_sid = ?1",
                    params![call_sid],
                    |row| {
                        Ok(CallRecording {
                            call_sid: row.get(0)?,
                            recording_sid: row.get(1)?,
                            recording_url: row.get(2)?,
                        })
                    },
                )
                .optional()
        })
        .await
        .expect("database task panicked")
    }

    /// Stores (or replaces) a call's recording.
    pub async fn put(&self, rec: CallRecording) -> rusqlite::Result<()> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            conn.lock().unwrap().execute(
                "INSERT INTO call_recordings (call_sid, recording_sid, recording_url, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(call_sid) DO UPDATE SET recording_sid = ?2, recording_url = ?3, updated_at = ?4",
                params![rec.call_sid, rec.recording_sid, rec.recording_url, now],
            )?;
            Ok(())
        })
        .await
        .expect("database task panicked")
    }
}
