//! `harness check`: the background write-up's manual verification against a deployed stack
//! (HEAD, `bytes=0-999`, the suffix `bytes=-500`, `bytes=0-`, past the end, If-Range), as
//! ordinary request steps with expectations, run by the one executor against a URL-only target.
//! Nothing is started.

use crate::error::HarnessError;
use crate::expect::Expect;
use crate::scenario::{Method, RequestStep, Step};
use crate::step::{self, execute, Executed, Observe, Session, UrlTarget};
use std::collections::BTreeMap;

/// One check: what it verifies, whether it held, and what was seen.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// What it verifies (`Range: bytes=-500 → 206 (iOS Safari)`).
    pub name: String,
    /// It held.
    pub ok: bool,
    /// What the stack answered, and what was wrong.
    pub detail: String,
}

/// A GET of the download with `range`, expecting `status`, that `Content-Range` and a body of
/// `len` bytes (announced and received).
fn ranged(
    path: &str,
    name: &str,
    range: &str,
    status: u16,
    content_range: String,
    len: u64,
) -> (String, RequestStep) {
    let mut r = RequestStep::get()
        .with_path(path)
        .named(name)
        .range(Some(range));
    r.expect = Expect {
        status: Some(status),
        headers: BTreeMap::from([
            ("content-range".to_string(), content_range),
            ("content-length".to_string(), len.to_string()),
        ]),
        body_bytes: Some(len),
        ..Default::default()
    };
    (name.to_string(), r)
}

/// The Range checks for a recording of `size` bytes (If-Range too where it has an ETag).
fn range_checks(path: &str, size: u64, etag: bool) -> Vec<(String, RequestStep)> {
    let last = size - 1;
    let first = 999.min(last);
    let from = size.saturating_sub(500);
    let mut checks = vec![
        ranged(
            path,
            "Range: bytes=0-999 → 206",
            "bytes=0-999",
            206,
            format!("bytes 0-{first}/{size}"),
            first + 1,
        ),
        ranged(
            path,
            "Range: bytes=-500 → 206 (iOS Safari)",
            "bytes=-500",
            206,
            format!("bytes {from}-{last}/{size}"),
            size - from,
        ),
        ranged(
            path,
            "Range: bytes=0- → 206",
            "bytes=0-",
            206,
            format!("bytes 0-{last}/{size}"),
            size,
        ),
        ranged(
            path,
            "Range past the end → 416",
            &format!("bytes={size}-"),
            416,
            format!("bytes */{size}"),
            0,
        ),
    ];
    let mut if_range = RequestStep::get()
        .with_path(path)
        .range(Some("bytes=0-99"))
        .if_range("{etag}");
    if_range.expect.status = Some(206);
    if etag {
        checks.push(("If-Range with the current ETag → 206".into(), if_range));
    }
    checks
}

/// Runs one check through the executor.
async fn run_one(
    target: &UrlTarget,
    session: &Session,
    name: String,
    r: RequestStep,
    i: usize,
) -> Result<(CheckResult, Option<crate::Outcome>), HarnessError> {
    let step = Step::Request(r);
    let Executed::Outcome(o) = execute(step::Target::Url(target), session, &step, i).await? else {
        unreachable!("a request observes an outcome");
    };
    let failures = step.expect().map(|e| e.failures(&o)).unwrap_or_default();
    let seen = format!(
        "{}: {} content-range={:?} content-length={} body={} bytes",
        o.request,
        o.summary(),
        o.headers
            .get("content-range")
            .map(String::as_str)
            .unwrap_or(""),
        o.headers
            .get("content-length")
            .map(String::as_str)
            .unwrap_or("-"),
        o.body.bytes
    );
    let detail = if failures.is_empty() {
        seen
    } else {
        format!("{seen}\n      {}", failures.join("\n      "))
    };
    Ok((
        CheckResult {
            ok: failures.is_empty(),
            name,
            detail,
        },
        Some(*o),
    ))
}

/// Checks `base` (`https://calls.example.com`) for a call that has a recording.
pub async fn check(
    base: &str,
    call_sid: &str,
    token: Option<String>,
) -> Result<Vec<CheckResult>, HarnessError> {
    let target = UrlTarget::new(base, token);
    let session = Session::new(Observe::Client);
    let path = crate::app::download_path(call_sid, None);
    let mut head = RequestStep::get().with_path(&path).method(Method::Head);
    head.expect = Expect {
        status: Some(200),
        headers: BTreeMap::from([("accept-ranges".to_string(), "bytes".to_string())]),
        ..Default::default()
    };
    let name = "curl -I: 200, Accept-Ranges: bytes, a Content-Length".to_string();
    let (mut first, o) = run_one(&target, &session, name, head, 0).await?;
    let size: u64 = o
        .as_ref()
        .and_then(|o| o.headers.get("content-length")?.parse().ok())
        .unwrap_or(0);
    if size == 0 {
        first.ok = false;
        first
            .detail
            .push_str("\n      no Content-Length: the Range checks cannot run");
    }
    let mut results = vec![first];
    if size > 0 {
        let etag = o.as_ref().is_some_and(|o| o.validators.is_some());
        for (i, (name, r)) in range_checks(&path, size, etag).into_iter().enumerate() {
            results.push(run_one(&target, &session, name, r, i + 1).await?.0);
        }
    }
    Ok(results)
}
