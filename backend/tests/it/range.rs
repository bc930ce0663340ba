//! HTTP Range, HEAD and If-Range, checked byte for byte against the generated media,
//! on a cache miss (streamed while downloading) and on a cache hit.

use crate::support::{client, media_requests, stack};
use mock_twilio::MediaFormat;

const SIZE: u64 = 100_000;

/// (Range header, expected status, expected Content-Range, expected slice start..end)
/// A row: Range header, status, Content-Range, and the expected slice.
type Row = (
    Option<&'static str>,
    u16,
    Option<String>,
    Option<(u64, u64)>,
);

fn table() -> Vec<Row> {
    let cr = |a: u64, b: u64| Some(format!("bytes {a}-{b}/{SIZE}"));
    vec![
        (None, 200, None, Some((0, SIZE))),
        (Some("bytes=0-999"), 206, cr(0, 999), Some((0, 1000))),
        (Some("bytes=0-"), 206, cr(0, SIZE - 1), Some((0, SIZE))),
        (
            Some("bytes=-500"),
            206,
            cr(SIZE - 500, SIZE - 1),
            Some((SIZE - 500, SIZE)),
        ),
        (Some("bytes=-200000"), 206, cr(0, SIZE - 1), Some((0, SIZE))),
        (
            Some("bytes=99000-200000"),
            206,
            cr(99_000, SIZE - 1),
            Some((99_000, SIZE)),
        ),
        (
            Some("bytes=50000-50000"),
            206,
            cr(50_000, 50_000),
            Some((50_000, 50_001)),
        ),
        (
            Some("bytes=100000-"),
            416,
            Some(format!("bytes */{SIZE}")),
            None,
        ),
        (Some("bytes=-0"), 416, Some(format!("bytes */{SIZE}")), None),
        (Some("bytes=5-3"), 200, None, Some((0, SIZE))),
        (Some("bytes=garbage"), 200, None, Some((0, SIZE))),
        (Some("items=0-10"), 200, None, Some((0, SIZE))),
        (Some("bytes=0-1,10-20"), 200, None, Some((0, SIZE))),
    ]
}

async fn check_table(cached: bool) {
    let (twilio, rec, backend) = stack(SIZE).await;
    let media = rec.media(MediaFormat::Mp3);
    if cached {
        let warm = client()
            .get(backend.download_url(&rec.call_sid))
            .send()
            .await
            .unwrap();
        assert_eq!(warm.bytes().await.unwrap().len() as u64, SIZE);
    }
    for (i, (range, status, content_range, slice)) in table().into_iter().enumerate() {
        if !cached {
            // A fresh cache for each row: every row is a cache miss (once the last download is done).
            if i > 0 {
                backend.wait_logs("Recording saved - took", i).await;
            }
            for f in backend.cached_files() {
                std::fs::remove_file(backend.dir.join(f)).unwrap();
            }
        }
        let mut req = client().get(backend.download_url(&rec.call_sid));
        if let Some(r) = range {
            req = req.header("range", r);
        }
        let resp = req.send().await.unwrap();
        let h = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(resp.status().as_u16(), status, "row {i} {range:?}");
        assert_eq!(h("content-range"), content_range, "row {i} {range:?}");
        assert_eq!(h("accept-ranges").as_deref(), Some("bytes"), "row {i}");
        let expected_len = slice.map(|(a, b)| b - a).unwrap_or(0);
        assert_eq!(
            h("content-length"),
            Some(expected_len.to_string()),
            "row {i} {range:?}"
        );
        if status != 416 {
            assert_eq!(h("content-type").as_deref(), Some("audio/mpeg"));
            assert!(h("etag").is_some() && h("last-modified").is_some());
        }
        let body = resp.bytes().await.unwrap();
        let (a, b) = slice.unwrap_or((0, 0));
        assert!(
            body[..] == media.slice(a..b)[..],
            "row {i} {range:?}: body differs"
        );
    }
    let downloads = media_requests(&twilio);
    if cached {
        assert_eq!(downloads, 1, "cache hits made no Twilio request");
    } else {
        assert_eq!(downloads, table().len(), "every row was a miss");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn range_forms_on_a_cache_hit() {
    check_table(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn range_forms_on_a_cache_miss() {
    check_table(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wav_is_served_as_wav() {
    let (_twilio, rec, backend) = stack(20_044).await;
    let resp = client()
        .get(format!(
            "{}?format=wav",
            backend.download_url(&rec.call_sid)
        ))
        .header("range", "bytes=0-43")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.headers()["content-type"], "audio/x-wav");
    assert_eq!(
        resp.bytes().await.unwrap(),
        rec.media(MediaFormat::Wav).slice(0..44)
    );
    let bad = client()
        .get(format!(
            "{}?format=ogg",
            backend.download_url(&rec.call_sid)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn head_answers_as_get_without_a_body() {
    let (_twilio, rec, backend) = stack(SIZE).await;
    for (range, status, length) in [(None, 200, SIZE), (Some("bytes=-500"), 206, 500)] {
        let mut req = client().head(backend.download_url(&rec.call_sid));
        if let Some(r) = range {
            req = req.header("range", r);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status);
        assert_eq!(
            resp.headers()["content-length"],
            length.to_string().as_str()
        );
        assert_eq!(resp.headers()["accept-ranges"], "bytes");
        assert!(resp.bytes().await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn if_range_honours_only_the_current_validator() {
    let (_twilio, rec, backend) = stack(SIZE).await;
    let first = client()
        .get(backend.download_url(&rec.call_sid))
        .send()
        .await
        .unwrap();
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let modified = first.headers()["last-modified"]
        .to_str()
        .unwrap()
        .to_string();
    first.bytes().await.unwrap();
    for (if_range, status) in [
        (etag.as_str(), 206),
        (modified.as_str(), 206),
        ("\"stale-etag\"", 200),
        ("Mon, 01 Jan 2001 00:00:00 GMT", 200),
    ] {
        let resp = client()
            .get(backend.download_url(&rec.call_sid))
            .header("range", "bytes=0-99")
            .header("if-range", if_range)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "If-Range: {if_range}");
        let want = if status == 206 { 100 } else { SIZE };
        assert_eq!(resp.bytes().await.unwrap().len() as u64, want);
    }
}
