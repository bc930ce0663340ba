//! The Range matrix: every form of Range (and If-Range, HEAD), on a cached and on an uncached
//! recording, mp3 and wav, under every default profile: the same answers whether the backend
//! sends the bytes (fixed, legacy) or hands a cached file to nginx (hardened).

use crate::support::check;
use harness::{Method, RecordingSpec, RequestStep, Scenario};
use mock_twilio::MediaFormat;
use rstest::rstest;

const SIZE: u64 = 20_000;

/// (method, Range, If-Range) rows; each is one request.
const ROWS: &[(Method, Option<&str>, Option<&str>)] = &[
    (Method::Get, None, None),
    (Method::Get, Some("bytes=0-999"), None),
    (Method::Get, Some("bytes=0-"), None),
    (Method::Get, Some("bytes=-500"), None),
    (Method::Get, Some("bytes=-0"), None),
    (Method::Get, Some("bytes=-200000"), None),
    (Method::Get, Some("bytes=19000-50000"), None),
    (Method::Get, Some("bytes=20000-"), None),
    (Method::Get, Some("bytes=5-3"), None),
    (Method::Get, Some("bytes=garbage"), None),
    (Method::Get, Some("items=0-5"), None),
    (Method::Get, Some("bytes=0-1,5-9"), None),
    (Method::Head, None, None),
    (Method::Get, Some("bytes=0-99"), Some("{etag}")),
    (Method::Get, Some("bytes=0-99"), Some("\"stale-etag\"")),
    (Method::Head, Some("bytes=-500"), None),
];

#[rstest]
fn range_matrix(
    #[values(true, false)] cached: bool,
    #[values(MediaFormat::Mp3, MediaFormat::Wav)] format: MediaFormat,
) {
    let state = if cached { "cached" } else { "uncached" };
    let name = format!("range-{state}-{}", format.extension());
    let mut scenario = Scenario::new(&name, RecordingSpec::new(format, SIZE).cached(cached)).describe(&format!(
        "Every Range form on a{} {} recording of {SIZE} bytes{}",
        if cached { " cached" } else { "n uncached" },
        format.extension(),
        if cached { "" } else { " (a fresh recording per request, so each is a cache miss; the If-Range row follows a HEAD of its recording)" }
    ));
    scenario.recordings.clear();
    let mut recording = 0;
    for (i, (method, range, if_range)) in ROWS.iter().enumerate() {
        if !cached {
            // The If-Range row reuses the HEAD before it, whose ETag it quotes.
            if if_range != &Some("{etag}") || i == 0 {
                scenario.recordings.push(RecordingSpec::new(format, SIZE));
                recording = scenario.recordings.len() - 1;
            }
        } else if scenario.recordings.is_empty() {
            scenario
                .recordings
                .push(RecordingSpec::new(format, SIZE).cached(true));
        }
        let mut step = RequestStep::get()
            .method(*method)
            .range(*range)
            .recording(recording);
        if let Some(ir) = if_range {
            step = step.if_range(ir);
        }
        scenario = scenario.request(step);
    }
    let run = check(scenario);
    // Whatever the profile, the Range answers are the same: nginx passes the backend's through,
    // or (hardened) sends the cached file itself, honouring an If-Range the backend's ETag made.
    // Same statuses and Content-Range; the same bodies where there is content (a 416 from
    // nginx's static module carries its error page where the backend's is empty).
    if let Some(run) = run {
        let fixed = run.snapshot().profiles["fixed"].clone();
        let legacy = run.snapshot().profiles["legacy"].clone();
        let hardened = run.snapshot().profiles["hardened"].clone();
        let strip = |v: &Vec<harness::outcome::SnapshotOutcome>| {
            v.iter()
                .map(|o| {
                    let content = matches!(o.status.as_deref(), Some("200" | "206"));
                    (
                        o.status.clone(),
                        content.then(|| o.body.clone()),
                        content.then_some(o.body_bytes).flatten(),
                        o.headers
                            .as_ref()
                            .and_then(|h| h.get("content-range").cloned()),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(&fixed), strip(&legacy));
        assert_eq!(strip(&fixed), strip(&hardened));
    }
}
