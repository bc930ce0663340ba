//! What RFC 9110 §14 lets a server answer to a Range request, written from the RFC, not from any
//! backend: the harness judges a backend's Range handling by it (`harness diagnose`, the soak).
//! Two choices the RFC leaves open are made for audio players: a valid, satisfiable single range
//! must be honoured (a 200 breaks seeking in Safari), and several ranges may be ignored (200) or
//! answered as multipart.

use crate::outcome::{BodyCheck, Outcome};

/// The answers a request allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowed {
    /// 200 with the whole representation: no Range, another unit, invalid syntax, a stale
    /// If-Range.
    Whole,
    /// 206 with exactly bytes `start..=end`.
    Slice {
        /// First byte.
        start: u64,
        /// Last byte.
        end: u64,
    },
    /// 416 with `Content-Range: bytes */size`: no range is satisfiable.
    Unsatisfiable,
    /// Several satisfiable ranges: 200 whole, or 206 multipart.
    WholeOrMultipart,
}

/// One range-spec against `size`: `None` invalid, `Some(None)` unsatisfiable, else the slice.
fn spec(spec: &str, size: u64) -> Option<Option<(u64, u64)>> {
    let (first, last) = spec.trim().split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    Some(match (first, last) {
        ("", n) if digits(n) => match n.parse::<u64>().ok()? {
            0 => None,
            n => Some((size.saturating_sub(n), size.checked_sub(1)?)),
        },
        (a, "") if digits(a) => {
            let a: u64 = a.parse().ok()?;
            (a < size).then_some((a, size - 1))
        }
        (a, b) if digits(a) && digits(b) => {
            let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
            if a > b {
                return None;
            }
            (a < size).then_some((a, b.min(size - 1)))
        }
        _ => return None,
    })
}

/// What a GET with `range` allows on a representation of `size` bytes; `if_range_holds` is
/// whether an If-Range sent with it matches the current validator (`None`: none sent).
pub fn allowed(range: Option<&str>, if_range_holds: Option<bool>, size: u64) -> Allowed {
    let Some(specs) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Allowed::Whole;
    };
    if if_range_holds == Some(false) {
        return Allowed::Whole;
    }
    let mut satisfiable = Vec::new();
    for part in specs.split(',') {
        match spec(part, size) {
            None => return Allowed::Whole,
            Some(Some(r)) => satisfiable.push(r),
            Some(None) => {}
        }
    }
    match satisfiable[..] {
        [] => Allowed::Unsatisfiable,
        [(start, end)] => Allowed::Slice { start, end },
        _ => Allowed::WholeOrMultipart,
    }
}

/// Whether `o` (an answer to a GET, or a HEAD when `head`) is one `allowed` permits for a
/// representation of `size` bytes; `Err` says how it is not.
pub fn check(o: &Outcome, allowed: Allowed, size: u64, head: bool) -> Result<(), String> {
    let header = |n: &str| o.headers.get(n).map(String::as_str).unwrap_or("(none)");
    let status = o.status.unwrap_or(0);
    let body_ok = |want: BodyCheck| head || o.body.check == want;
    let ok = match allowed {
        Allowed::Whole => {
            status == 200
                && header("content-length") == size.to_string()
                && body_ok(BodyCheck::Whole)
        }
        Allowed::Slice { start, end } => {
            status == 206
                && header("content-range") == format!("bytes {start}-{end}/{size}")
                && header("content-length") == (end - start + 1).to_string()
                && body_ok(BodyCheck::Slice { start, end })
        }
        Allowed::Unsatisfiable => {
            status == 416 && header("content-range") == format!("bytes */{size}")
        }
        Allowed::WholeOrMultipart => {
            (status == 200 && body_ok(BodyCheck::Whole))
                || (status == 206 && header("content-type").starts_with("multipart/byteranges"))
        }
    };
    if ok {
        return Ok(());
    }
    let want = match allowed {
        Allowed::Whole => format!("200 with all {size} bytes"),
        Allowed::Slice { start, end } => {
            format!("206 with Content-Range: bytes {start}-{end}/{size}")
        }
        Allowed::Unsatisfiable => format!("416 with Content-Range: bytes */{size}"),
        Allowed::WholeOrMultipart => "200 with everything, or 206 multipart/byteranges".into(),
    };
    Err(format!(
        "{}, Content-Range {}, Content-Length {}, body {}: RFC 9110 wants {want}",
        o.status_text(),
        header("content-range"),
        header("content-length"),
        o.body.check.words()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forms_of_rfc_9110() {
        let a = |r: &str| allowed(Some(r), None, 1000);
        assert_eq!(a("bytes=0-999"), Allowed::Slice { start: 0, end: 999 });
        assert_eq!(
            a("bytes=-500"),
            Allowed::Slice {
                start: 500,
                end: 999
            }
        );
        assert_eq!(a("bytes=-5000"), Allowed::Slice { start: 0, end: 999 });
        assert_eq!(
            a("bytes=990-5000"),
            Allowed::Slice {
                start: 990,
                end: 999
            }
        );
        assert_eq!(a("bytes=1000-"), Allowed::Unsatisfiable);
        assert_eq!(a("bytes=-0"), Allowed::Unsatisfiable);
        assert_eq!(a("bytes=5-3"), Allowed::Whole);
        assert_eq!(a("bytes=garbage"), Allowed::Whole);
        assert_eq!(a("items=0-5"), Allowed::Whole);
        assert_eq!(a("bytes=0-1,5-9"), Allowed::WholeOrMultipart);
        assert_eq!(a("bytes=0-1,2000-"), Allowed::Slice { start: 0, end: 1 });
        assert_eq!(
            allowed(Some("bytes=0-9"), Some(false), 1000),
            Allowed::Whole
        );
        assert_eq!(
            allowed(Some("bytes=0-9"), Some(true), 1000),
            Allowed::Slice { start: 0, end: 9 }
        );
        assert_eq!(allowed(None, None, 1000), Allowed::Whole);
    }
}
