//! HTTP Range (RFC 9110 §14) resolved against a representation of known size.
//!
//! Parsing is `http-range-header`'s; the decisions are ours and documented:
//! - one satisfiable range → 206 with that range (end clamped to size-1; a suffix longer
//!   than the representation selects all of it);
//! - no satisfiable range (start beyond EOF, `bytes=-0`) → 416 with `Content-Range: bytes */size`;
//! - a syntactically invalid header, another unit, or a reversed range (`5-3`) → ignored: 200 full;
//! - several satisfiable ranges → ignored: 200 full (RFC 9110 lets a server ignore Range;
//!   browsers never ask media for several ranges, and `multipart/byteranges` would only add
//!   cost); when only one of several ranges is satisfiable, 206 with that one (a single part);
//!   more than 100 ranges are not even parsed, so an abusive header costs nothing.

use std::time::SystemTime;

/// What to send for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// 200 with the whole representation.
    Full,
    /// 206 with bytes `start..=end`.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// 416.
    Unsatisfiable,
}

/// Resolves a `Range` header value against `size` bytes.
pub fn decide(range: Option<&str>, size: u64) -> Decision {
    let Some(value) = range else {
        return Decision::Full;
    };
    let Ok(parsed) = http_range_header::parse_range_header(value) else {
        return Decision::Full;
    };
    match parsed.validate(size) {
        Ok(ranges) if ranges.len() == 1 => Decision::Partial {
            start: *ranges[0].start(),
            end: *ranges[0].end(),
        },
        Ok(_) => Decision::Full,
        Err(http_range_header::RangeUnsatisfiableError::Unsatisfiable) => Decision::Unsatisfiable,
        Err(_) => Decision::Full,
    }
}

/// Evaluates `If-Range`: true when the Range may be honoured (no `If-Range`, or it names the
/// current representation by its strong ETag or its exact Last-Modified date).
pub fn if_range_holds(if_range: Option<&str>, etag: &str, last_modified: SystemTime) -> bool {
    let Some(v) = if_range.map(str::trim) else {
        return true;
    };
    if v.starts_with('"') || v.starts_with("W/") {
        // Weak validators never match for If-Range (RFC 9110 §13.1.5).
        return v == etag;
    }
    match httpdate::parse_http_date(v) {
        Ok(date) => httpdate::fmt_http_date(date) == httpdate::fmt_http_date(last_modified),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;

    #[test]
    fn forms_of_range() {
        let size = 10_000;
        let cases = [
            (None, Full),
            (Some("bytes=0-999"), Partial { start: 0, end: 999 }),
            (
                Some("bytes=0-"),
                Partial {
                    start: 0,
                    end: 9999,
                },
            ),
            (
                Some("bytes=-500"),
                Partial {
                    start: 9500,
                    end: 9999,
                },
            ),
            (
                Some("bytes=-20000"),
                Partial {
                    start: 0,
                    end: 9999,
                },
            ),
            (
                Some("bytes=9000-20000"),
                Partial {
                    start: 9000,
                    end: 9999,
                },
            ),
            (Some("bytes=10000-"), Unsatisfiable),
            (Some("bytes=-0"), Unsatisfiable),
            (Some("bytes=5-3"), Full),
            (Some("bytes=abc"), Full),
            (Some("items=0-5"), Full),
            (Some("bytes=0-1,5-9"), Full),
        ];
        for (header, want) in cases {
            assert_eq!(decide(header, size), want, "{header:?}");
        }
        let abusive = format!("bytes={}", vec!["1-2"; 5000].join(","));
        assert_eq!(decide(Some(&abusive), size), Full);
    }

    #[test]
    fn if_range_by_etag_and_date() {
        let t = httpdate::parse_http_date("Tue, 24 Nov 2026 10:00:00 GMT").unwrap();
        assert!(if_range_holds(None, "\"a\"", t));
        assert!(if_range_holds(Some("\"a\""), "\"a\"", t));
        assert!(!if_range_holds(Some("\"b\""), "\"a\"", t));
        assert!(!if_range_holds(Some("W/\"a\""), "\"a\"", t));
        assert!(if_range_holds(
            Some("Tue, 24 Nov 2026 10:00:00 GMT"),
            "\"a\"",
            t
        ));
        assert!(!if_range_holds(
            Some("Tue, 24 Nov 2026 09:00:00 GMT"),
            "\"a\"",
            t
        ));
        assert!(!if_range_holds(Some("yesterday"), "\"a\"", t));
    }
}
