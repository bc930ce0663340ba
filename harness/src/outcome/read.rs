//! Reading a response into an [`Outcome`]: status, the headers that matter, validators, and the
//! body checked against the recording it should be, byte for byte as it streams (or by CRC-32,
//! where checking must not slow the download being measured).

use super::{AnsweredBy, BodyCheck, Outcome, Timing, Validators, KEPT_HEADERS};
use mock_twilio::Media;
use std::time::Instant;

/// How a body is checked against the recording it should be.
#[derive(Debug, Clone, Copy)]
pub enum Verify<'a> {
    /// Not an audio download (or nothing known to check against).
    Nothing,
    /// Every byte against the generated media, as it streams.
    Bytes(&'a Media),
    /// A whole body by its CRC-32 (`crc`, computed once for `media`): cheap enough not to slow
    /// a download at GB/s. A slice is checked byte for byte.
    Crc32 {
        /// The recording.
        media: &'a Media,
        /// Its CRC-32.
        crc: u32,
    },
}

impl Verify<'_> {
    fn media(&self) -> Option<&Media> {
        match self {
            Verify::Nothing => None,
            Verify::Bytes(m) | Verify::Crc32 { media: m, .. } => Some(m),
        }
    }
}

/// The CRC-32 of a recording's media.
pub fn media_crc(media: &Media) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < media.len() {
        let n = (media.len() - pos).min(buf.len() as u64) as usize;
        media.fill(pos, &mut buf[..n]);
        h.update(&buf[..n]);
        pos += n as u64;
    }
    h.finalize()
}

/// `bytes a-b/total` → `(a, b, total)`.
pub fn parse_content_range(v: Option<&str>) -> Option<(u64, u64, u64)> {
    let rest = v?.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

/// Which bytes of the recording a body should be, per the response's own headers:
/// `(start, end exclusive)`. A HEAD has no body to check: it must simply be empty.
fn expected_bytes(o: &Outcome, media: Option<&Media>, head: bool) -> Option<(u64, u64)> {
    let m = media.filter(|_| !head)?;
    let ctype = o
        .headers
        .get("content-type")
        .map(String::as_str)
        .unwrap_or("");
    match o.status {
        Some(200) if ctype.starts_with("audio/") => Some((0, m.len())),
        Some(206) => parse_content_range(o.headers.get("content-range").map(String::as_str))
            .filter(|(_, end, total)| *total == m.len() && *end < m.len())
            .map(|(s, e, _)| (s, e + 1)),
        _ => None,
    }
}

/// The body as it streamed in.
struct Streamed {
    bytes: u64,
    /// First byte that differed from the recording.
    differs: Option<u64>,
    /// The CRC-32 of the whole body (CRC mode).
    crc: Option<u32>,
    /// The first 64 KiB of a body that is not audio (for JSON and error pages).
    head: Vec<u8>,
    first_byte: Option<Instant>,
}

/// Reads the body, checking each chunk against the expected bytes as it arrives.
async fn stream(
    resp: &mut reqwest::Response,
    expected: Option<(u64, u64)>,
    verify: Verify<'_>,
    outcome: &mut Outcome,
) -> Streamed {
    let whole_crc =
        matches!(verify, Verify::Crc32 { media, .. } if expected == Some((0, media.len())));
    let mut s = Streamed {
        bytes: 0,
        differs: None,
        crc: None,
        head: Vec::new(),
        first_byte: None,
    };
    let mut hasher = crc32fast::Hasher::new();
    let mut scratch = Vec::new();
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                outcome.client_error = Some(format!("body cut short ({})", client_error_kind(&e)));
                break;
            }
        };
        s.first_byte.get_or_insert_with(Instant::now);
        match (expected, verify.media()) {
            (Some(_), Some(_)) if whole_crc => hasher.update(&chunk),
            (Some((start, _)), Some(m)) if s.differs.is_none() => {
                let at = start + s.bytes;
                let n = (chunk.len() as u64).min(m.len().saturating_sub(at)) as usize;
                scratch.resize(n, 0);
                m.fill(at, &mut scratch);
                s.differs = match chunk.iter().zip(&scratch).position(|(a, b)| a != b) {
                    Some(p) => Some(s.bytes + p as u64),
                    None if n < chunk.len() => Some(s.bytes + n as u64),
                    None => None,
                };
            }
            (Some(_), Some(_)) => {}
            _ if s.head.len() < 64 * 1024 => s.head.extend_from_slice(&chunk),
            _ => {}
        }
        s.bytes += chunk.len() as u64;
    }
    if whole_crc {
        s.crc = Some(hasher.finalize());
    }
    s
}

/// What the body was, from what streamed in.
fn judge(o: &Outcome, s: &Streamed, expected: Option<(u64, u64)>, verify: Verify<'_>) -> BodyCheck {
    let ctype = o.headers.get("content-type").cloned().unwrap_or_default();
    let announced: Option<u64> = o.headers.get("content-length").and_then(|v| v.parse().ok());
    let crc_differs = match (verify, s.crc) {
        (Verify::Crc32 { crc, .. }, Some(got)) => got != crc,
        _ => false,
    };
    if let Some(at) = s.differs {
        return BodyCheck::Differs { at };
    }
    if let Some((start, end)) = expected {
        return if o.client_error.is_some() {
            BodyCheck::Truncated {
                announced: announced.unwrap_or(0),
            }
        } else if s.bytes != end - start {
            BodyCheck::Truncated {
                announced: end - start,
            }
        } else if crc_differs {
            BodyCheck::Differs { at: 0 }
        } else if start == 0
            && end == verify.media().map(|m| m.len()).unwrap_or(0)
            && o.status == Some(200)
        {
            BodyCheck::Whole
        } else {
            BodyCheck::Slice {
                start,
                end: end - 1,
            }
        };
    }
    if s.bytes == 0 {
        BodyCheck::Empty
    } else if ctype.contains("json") {
        let error = serde_json::from_slice::<serde_json::Value>(&s.head)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_string));
        BodyCheck::Json { error }
    } else if String::from_utf8_lossy(&s.head).contains("<center>nginx") {
        BodyCheck::NginxErrorPage
    } else if ctype.is_empty() {
        BodyCheck::Other {
            kind: "no content-type".into(),
        }
    } else {
        BodyCheck::Other { kind: ctype }
    }
}

/// Copies the headers that matter, and the validators, into the Outcome.
fn keep_headers(resp: &reqwest::Response, o: &mut Outcome) {
    let h = resp.headers();
    let text = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    for name in KEPT_HEADERS {
        if let Some(v) = text(name) {
            o.headers.insert(name.to_string(), v);
        }
    }
    let (etag, modified) = (text("etag"), text("last-modified"));
    for (name, v) in [("etag", &etag), ("last-modified", &modified)] {
        if v.is_some() {
            o.headers.insert(name.to_string(), "present".into());
        }
    }
    if let Some(etag) = etag {
        o.validators = Some(Validators {
            etag,
            last_modified: modified.unwrap_or_default(),
        });
    }
}

/// Sends `req` and reads its response into an Outcome (step and request left blank). `head`:
/// it is a HEAD, so no body is checked.
pub async fn send(req: reqwest::RequestBuilder, head: bool, verify: Verify<'_>) -> Outcome {
    let mut o = Outcome::blank(String::new(), String::new());
    let sent = Instant::now();
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            o.client_error = Some(client_error_kind(&e));
            return o;
        }
    };
    let headed = Instant::now();
    o.status = Some(resp.status().as_u16());
    keep_headers(&resp, &mut o);
    let expected = expected_bytes(&o, verify.media(), head);
    let streamed = stream(&mut resp, expected, verify, &mut o).await;
    o.body.bytes = streamed.bytes;
    o.body.check = judge(&o, &streamed, expected, verify);
    o.timing = Some(Timing {
        first_byte_us: streamed
            .first_byte
            .unwrap_or(headed)
            .duration_since(sent)
            .as_micros() as u64,
        total_us: sent.elapsed().as_micros() as u64,
    });
    let html = o
        .headers
        .get("content-type")
        .is_some_and(|c| c.starts_with("text/html"));
    o.answered_by = match (&o.body.check, o.status) {
        (_, None) => AnsweredBy::None,
        (BodyCheck::NginxErrorPage, _) => AnsweredBy::Nginx,
        // A HEAD or bodiless nginx error: nginx error pages are text/html, the backend's never.
        (BodyCheck::Empty, Some(s)) if s >= 500 && html => AnsweredBy::Nginx,
        _ => AnsweredBy::Backend,
    };
    o
}

/// A client-side failure in a few stable words.
fn client_error_kind(e: &reqwest::Error) -> String {
    let text = error_chain(e);
    const KINDS: &[(&str, &str)] = &[
        (
            "Parse(Version)",
            "the response is not HTTP/1.x (nginx passed the upstream's bytes on as HTTP/0.9)",
        ),
        ("reset by peer", "connection reset"),
        (
            "IncompleteMessage",
            "connection closed before a complete message",
        ),
        (
            "connection closed before message completed",
            "connection closed before a complete message",
        ),
        (
            "end of file before message length reached",
            "connection closed before the announced length",
        ),
        ("error decoding response body", "body cut short"),
        ("timed out", "timed out"),
        ("Connection refused", "connection refused"),
    ];
    KINDS
        .iter()
        .find(|(needle, _)| text.contains(needle))
        .map(|(_, kind)| kind.to_string())
        .unwrap_or(text)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = format!("{e} / {e:?}");
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
