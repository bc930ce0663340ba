//! The request journal: every request a fault point saw, in order, with what it did, and when
//! each was open, so that a request asked for again while the first was still being answered
//! shows up ([`Journal::overlaps`]).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// Two requests for the same method and path, the second arriving while the first was still
/// open: for Twilio's media, one recording downloaded twice at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlap {
    /// The request that was still open.
    pub first: u64,
    /// The request that arrived meanwhile.
    pub second: u64,
    /// Their method.
    pub method: String,
    /// Their path and query.
    pub path: String,
}

/// When a request was open.
#[derive(Debug, Clone, Copy)]
struct Span {
    arrived: Instant,
    /// The latest write of its response began here.
    last_write: Option<Instant>,
    /// It ended here: answered, cut, refused, or abandoned by its client.
    ended: Option<Instant>,
}

impl Span {
    /// The last moment the client could not yet have had the whole answer: the start of the
    /// final write (a client only asks again after reading it), else the end. `None`: still open.
    fn closed_at(&self) -> Option<Instant> {
        self.ended.map(|e| self.last_write.unwrap_or(e))
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: Vec<JournalEntry>,
    spans: Vec<Span>,
    /// Idle closes of the upstream held from the client for a keep-alive race, so far. Kept by
    /// `clear`.
    held: usize,
    /// Of those closes, the latest arrival of a request on the connection closed (a connection
    /// that carried none adds nothing).
    held_since: Option<Instant>,
    /// The latest entry whose connection ended with it, and whether its request had asked for
    /// that (`Connection: close`, or HTTP/1.0): a connection that left nothing idle.
    ended: Option<(u64, bool)>,
}

/// What became of the connection that carried the latest request, as far as a proxy saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleClose {
    /// The upstream closed it idle, and the proxy held that close from the client (a keep-alive
    /// race armed): the client's next request on it will race.
    Held,
    /// The request asked for it to be closed after it: nothing was left idle to close.
    AskedToClose,
    /// It ended with the request, unasked (a fault the proxy played, or the upstream's
    /// `Connection: close`): nothing was left idle to close.
    Ended,
    /// None of these, by the deadline: the upstream still holds it open (or it was never
    /// seen).
    StillOpen,
}

/// An append-only list of [`JournalEntry`], with when each request was open, and the upstream's
/// idle closes a proxy held from its client (a keep-alive race).
#[derive(Debug, Default)]
pub struct Journal {
    inner: Mutex<Inner>,
    held_notify: tokio::sync::Notify,
}

impl Journal {
    /// Appends an entry, numbering it and marking it open from now; returns its number.
    pub fn push(&self, mut entry: JournalEntry) -> u64 {
        let mut inner = self.inner.lock().unwrap();
        entry.seq = inner.entries.len() as u64 + 1;
        inner.entries.push(entry);
        inner.spans.push(Span {
            arrived: Instant::now(),
            last_write: None,
            ended: None,
        });
        inner.entries.len() as u64
    }

    /// Changes entry number `seq`, if it is still there.
    pub fn update(&self, seq: u64, change: impl FnOnce(&mut JournalEntry)) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(e) = inner.entries.get_mut(index(seq)) {
            change(e);
        }
    }

    /// Notes that a write of entry `seq`'s response is starting (any write may be the last).
    pub fn writing(&self, seq: u64) {
        if let Some(s) = self.inner.lock().unwrap().spans.get_mut(index(seq)) {
            s.last_write = Some(Instant::now());
        }
    }

    /// Marks entry `seq` as no longer open. Call it before the client can learn of the end
    /// (before a reset or close), or after the final write.
    pub fn end(&self, seq: u64) {
        if let Some(s) = self.inner.lock().unwrap().spans.get_mut(index(seq)) {
            s.ended.get_or_insert_with(Instant::now);
        }
    }

    /// A copy of every entry so far.
    pub fn entries(&self) -> Vec<JournalEntry> {
        self.inner.lock().unwrap().entries.clone()
    }

    /// The entries still open (asked, and neither answered in full nor abandoned).
    pub fn open(&self) -> Vec<JournalEntry> {
        let inner = self.inner.lock().unwrap();
        inner
            .entries
            .iter()
            .zip(&inner.spans)
            .filter(|(_, s)| s.ended.is_none())
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// Every pair of requests for the same method and path where the second arrived while the
    /// first was open, in the order the second ones arrived.
    ///
    /// A request counts as open until the start of its final write, so a client that asks again
    /// after reading a whole answer (a retry after a 503, a second download after a cut) never
    /// counts, whatever the scheduling; a request still open counts until now.
    pub fn overlaps(&self) -> Vec<Overlap> {
        let inner = self.inner.lock().unwrap();
        let mut by_path: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
        for (i, e) in inner.entries.iter().enumerate() {
            by_path
                .entry((e.method.as_str(), e.path.as_str()))
                .or_default()
                .push(i);
        }
        let mut found = Vec::new();
        for ((method, path), seen) in by_path {
            // In order of arrival (which is the order of `seq`).
            for (n, &later) in seen.iter().enumerate() {
                let arrived = inner.spans[later].arrived;
                for &earlier in &seen[..n] {
                    let open = inner.spans[earlier]
                        .closed_at()
                        .is_none_or(|closed| closed > arrived);
                    if open {
                        found.push(Overlap {
                            first: inner.entries[earlier].seq,
                            second: inner.entries[later].seq,
                            method: method.to_string(),
                            path: path.to_string(),
                        });
                    }
                }
            }
        }
        found.sort_by_key(|o| (o.second, o.first));
        found
    }

    /// Notes an idle close of the upstream that the proxy held from its client (a
    /// `keepalive_race` armed): the client's next request on that connection will race.
    /// `last_request`: when the connection's last request arrived, taken after its entry was
    /// pushed.
    pub fn note_held_close(&self, last_request: Option<Instant>) {
        let mut inner = self.inner.lock().unwrap();
        inner.held += 1;
        inner.held_since = inner.held_since.max(last_request);
        drop(inner);
        self.held_notify.notify_waiters();
    }

    /// Notes that entry `seq`'s connection ended with it, `asked` by its request or not.
    pub fn note_connection_end(&self, seq: u64, asked: bool) {
        let mut inner = self.inner.lock().unwrap();
        inner.ended = inner.ended.max(Some((seq, asked)));
    }

    /// How many idle closes have been held so far (never reset, not even by [`Journal::clear`]).
    pub fn held_closes(&self) -> usize {
        self.inner.lock().unwrap().held
    }

    /// Waits, at most `deadline`, until the upstream's idle close of the connection that carried
    /// the latest request (the last entry) is held, or of one that carried a later request. The
    /// close of a connection idle since earlier (another location's pool, a readiness check's)
    /// does not count: nginx reuses the most recent one. Where the latest request's connection
    /// ended with it, the wait still lasts to the deadline (the gap is what a scenario asks for)
    /// and says so.
    pub async fn wait_idle_close_of_latest(&self, deadline: Duration) -> IdleClose {
        let Some(since) = self.inner.lock().unwrap().spans.last().map(|s| s.arrived) else {
            tokio::time::sleep(deadline).await;
            return IdleClose::StillOpen;
        };
        let until = tokio::time::Instant::now() + deadline;
        let seen = || {
            let inner = self.inner.lock().unwrap();
            if inner.held_since.is_some_and(|t| t >= since) {
                IdleClose::Held
            } else if let Some((_, asked)) =
                (inner.ended).filter(|(seq, _)| *seq == inner.entries.len() as u64)
            {
                if asked {
                    IdleClose::AskedToClose
                } else {
                    IdleClose::Ended
                }
            } else {
                IdleClose::StillOpen
            }
        };
        loop {
            // Registered before the check: a close held in between still wakes it.
            let notified = self.held_notify.notified();
            if seen() == IdleClose::Held {
                return IdleClose::Held;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return seen();
            }
        }
    }

    /// Forgets every entry.
    pub fn clear(&self) {
        let mut inner = self.inner.lock().unwrap();
        inner.entries.clear();
        inner.spans.clear();
        inner.ended = None;
    }
}

/// Entry `seq`'s index (`seq` counts from 1; 0 matches nothing).
fn index(seq: u64) -> usize {
    (seq as usize).wrapping_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> JournalEntry {
        JournalEntry {
            seq: 0,
            method: "GET".into(),
            path: path.into(),
            range: None,
            auth: None,
            faults: Vec::new(),
            status: None,
            body_bytes: 0,
        }
    }

    #[test]
    fn a_request_asked_again_while_open_overlaps_and_one_asked_after_does_not() {
        let j = Journal::default();
        let a = j.push(entry("/r.mp3"));
        let b = j.push(entry("/r.mp3")); // a still open
        let other = j.push(entry("/s.mp3"));
        j.writing(a);
        j.end(a);
        j.writing(b);
        j.end(b);
        j.end(other);
        let c = j.push(entry("/r.mp3")); // after both ended
        j.end(c);
        let found = j.overlaps();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].first, found[0].second), (a, b));
        assert!(j.open().is_empty());
    }

    #[test]
    fn the_final_write_closes_a_request_even_when_its_end_is_noted_late() {
        let j = Journal::default();
        let a = j.push(entry("/r.mp3"));
        j.writing(a); // the final write: the client may ask again as soon as it has read it
        let b = j.push(entry("/r.mp3")); // a retry that won the race with end()
        j.end(a);
        j.end(b);
        assert!(j.overlaps().is_empty(), "{:?}", j.overlaps());
    }

    #[test]
    fn a_request_still_open_overlaps_every_later_one() {
        let j = Journal::default();
        let hung = j.push(entry("/r.mp3"));
        let b = j.push(entry("/r.mp3"));
        j.end(b);
        assert_eq!(j.open().len(), 1);
        assert_eq!(j.overlaps()[0].first, hung);
    }
}
