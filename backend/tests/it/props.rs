//! Properties: for any size and any Range header, the backend's status, Content-Range,
//! Content-Length and body agree with an independent model of RFC 9110 §14 (and the decisions
//! documented in `range.rs`: invalid, reversed or multiple ranges → 200 with everything).

use crate::support::{client, Backend};
use mock_twilio::{sid, MediaFormat, MockTwilio, Recording};
use proptest::prelude::*;

/// What the model expects.
#[derive(Debug, PartialEq)]
enum Want {
    Full,
    Partial(u64, u64),
    Unsatisfiable,
}

/// One range-spec of RFC 9110 §14.1.2 against `size`: `None` when invalid, `Some(None)` when
/// unsatisfiable, `Some(Some((first, last)))` when satisfiable (last clamped to the end).
fn spec(spec: &str, size: u64) -> Option<Option<(u64, u64)>> {
    let (first, last) = spec.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    Some(match (first, last) {
        // suffix-range: the last n bytes; n = 0 selects nothing.
        ("", n) if digits(n) => match n.parse::<u64>().ok()? {
            0 => None,
            n => Some((size.saturating_sub(n), size - 1)),
        },
        (a, "") if digits(a) => {
            let a: u64 = a.parse().ok()?;
            (a < size).then_some((a, size - 1))
        }
        (a, b) if digits(a) && digits(b) => {
            let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
            if a > b {
                return None; // invalid range-spec
            }
            (a < size).then_some((a, b.min(size - 1)))
        }
        _ => return None,
    })
}

/// RFC 9110 §14, written from the RFC and range.rs's documented choices, not from the code:
/// another unit or an invalid spec → the header is ignored (200); no satisfiable range → 416;
/// exactly one satisfiable range → 206 with it; several → ignored (200, no multipart).
fn model(header: &str, size: u64) -> Want {
    let Some(specs) = header.strip_prefix("bytes=") else {
        return Want::Full;
    };
    let mut satisfiable = Vec::new();
    for part in specs.split(',') {
        match spec(part, size) {
            None => return Want::Full,
            Some(Some(r)) => satisfiable.push(r),
            Some(None) => {}
        }
    }
    match satisfiable[..] {
        [] => Want::Unsatisfiable,
        [(a, b)] => Want::Partial(a, b),
        _ => Want::Full,
    }
}

/// Range headers: every form, with positions around the edges of `size`, and some junk.
fn range_header(size: u64) -> impl Strategy<Value = String> {
    let pos = prop_oneof![
        0..=size + 2,
        Just(size.saturating_sub(1)),
        Just(size),
        0..=3u64
    ];
    prop_oneof![
        (pos.clone(), pos.clone()).prop_map(|(a, b)| format!("bytes={a}-{b}")),
        pos.clone().prop_map(|a| format!("bytes={a}-")),
        pos.clone().prop_map(|n| format!("bytes=-{n}")),
        (pos.clone(), pos.clone()).prop_map(|(a, b)| format!("bytes={a}-{b},{b}-")),
        pos.clone().prop_map(|a| format!("items={a}-")),
        "[ -~]{0,12}".prop_map(|s| s),
    ]
}

const SIZES: [u64; 5] = [1, 2, 417, 4096, 10_007];

#[test]
fn any_range_on_any_size_agrees_with_the_rfc_model() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (twilio, recs, backend) = rt.block_on(async {
        let twilio = MockTwilio::start().await.unwrap();
        let recs: Vec<Recording> = SIZES
            .iter()
            .enumerate()
            .map(|(i, size)| {
                twilio.add_recording(Recording::new(
                    sid("RE", i as u64 + 1),
                    sid("CA", i as u64 + 1),
                    MediaFormat::Mp3,
                    *size,
                ))
            })
            .collect();
        let backend = Backend::start(&twilio);
        (twilio, recs, backend)
    });
    let media: Vec<Vec<u8>> = recs
        .iter()
        .map(|r| r.media(MediaFormat::Mp3).to_vec())
        .collect();
    let strategy = (0..SIZES.len()).prop_flat_map(|i| (Just(i), range_header(SIZES[i])));
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 300,
        failure_persistence: None,
        ..Default::default()
    });
    let result = runner.run(&strategy, |(i, header)| {
        let size = SIZES[i];
        let (status, content_range, content_length, body) = rt.block_on(async {
            let r = client()
                .get(backend.download_url(&recs[i].call_sid))
                .header("range", &header)
                .send()
                .await
                .unwrap();
            let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
            let (cr, cl) = (h("content-range"), h("content-length"));
            (r.status().as_u16(), cr, cl, r.bytes().await.unwrap())
        });
        match model(&header, size) {
            Want::Full => {
                prop_assert_eq!(status, 200, "{}", header);
                prop_assert_eq!(content_range, None);
                prop_assert_eq!(content_length, Some(size.to_string()));
                prop_assert!(body[..] == media[i][..], "whole body");
            }
            Want::Partial(a, b) => {
                prop_assert_eq!(status, 206, "{}", header);
                prop_assert_eq!(content_range, Some(format!("bytes {a}-{b}/{size}")));
                prop_assert_eq!(content_length, Some((b - a + 1).to_string()));
                prop_assert!(
                    body[..] == media[i][a as usize..=b as usize],
                    "slice {}-{}",
                    a,
                    b
                );
            }
            Want::Unsatisfiable => {
                prop_assert_eq!(status, 416, "{}", header);
                prop_assert_eq!(content_range, Some(format!("bytes */{size}")));
                prop_assert!(body.is_empty() || status == 416);
            }
        }
        Ok(())
    });
    drop(backend);
    drop(twilio);
    if let Err(e) = result {
        panic!("{e}");
    }
}
