//! The `deploy` step: [`Stack::deploy`] (every backend instance restarted in turn) while
//! clients keep downloading recordings and posting webhooks. Each instance stays out of service
//! until the load has had requests answered in that time, so what the load gets while an
//! instance is out is observed on every run, not by luck of timing.

use super::{webhook_request, Session};
use crate::app::{download_path, WEBHOOK_PATH};
use crate::error::HarnessError;
use crate::gateway::classify;
use crate::outcome::read::{self, Verify};
use crate::outcome::{BodyCheck, DeployOutcome, Outcome};
use crate::ready::poll;
use crate::scenario::DeployStep;
use crate::stack::Stack;
use mock_twilio::{MediaFormat, Signing};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an instance waits out of service for the load's requests to be answered.
pub const OUT_OF_SERVICE_DEADLINE: Duration = Duration::from_secs(30);

/// One request of the load.
struct Sent {
    webhook: bool,
    /// The phase it started and ended in: even while every instance serves, odd while one is
    /// out of service.
    phases: (u64, u64),
    /// `200`, `502`, `none`.
    status: String,
    /// How it failed, if it did: its status, `none`, `cut` or `differs`; and the request in
    /// words, for the reader of a failed run: which request, when, and what came back.
    failed: Option<(String, String)>,
}

/// The causes of the gateway errors among nginx's error-log `lines`, one per error.
fn causes(lines: &[String]) -> impl Iterator<Item = String> + '_ {
    lines
        .iter()
        .filter_map(|l| classify(l))
        .map(|e| e.cause.name().to_string())
}

/// What the clients and the deploy share.
struct Load {
    /// When the deploy step began: requests' times are told from here.
    began: Instant,
    phase: AtomicU64,
    done: AtomicBool,
    sent: Mutex<Vec<Sent>>,
    /// Out-of-service windows that did not see the requests asked for.
    short: Mutex<Vec<String>>,
}

impl Default for Load {
    fn default() -> Self {
        Load {
            began: Instant::now(),
            phase: AtomicU64::default(),
            done: AtomicBool::default(),
            sent: Mutex::default(),
            short: Mutex::default(),
        }
    }
}

impl Load {
    /// Requests of each kind (downloads, webhooks) that started and ended in `phase`.
    fn answered_in(&self, phase: u64) -> (u32, u32) {
        let sent = self.sent.lock().unwrap();
        let within = sent.iter().filter(|s| s.phases == (phase, phase));
        within.fold(
            (0, 0),
            |(d, w), s| {
                if s.webhook {
                    (d, w + 1)
                } else {
                    (d + 1, w)
                }
            },
        )
    }
}

/// Runs a deploy step on `stack` with the session's recordings.
pub async fn deploy(
    stack: &Stack,
    session: &Session,
    d: &DeployStep,
    step: usize,
) -> Result<Outcome, HarnessError> {
    let recordings = session.recording_count();
    if recordings == 0 {
        return Err(HarnessError::step(
            step,
            "a deploy needs a recording to load",
        ));
    }
    let load = Load::default();
    let error_log = stack.error_log();
    let from = error_log.len();
    let clients = (0..d.clients.max(1) as usize).map(|c| client(stack, session, c, &load));
    let while_out = Mutex::new(std::collections::BTreeSet::new());
    let deploying = async {
        let result = stack
            .deploy(|n| out_of_service(stack, &load, d.during, n, &while_out))
            .await;
        load.done.store(true, Ordering::SeqCst);
        result
    };
    let (_, result) = tokio::join!(futures::future::join_all(clients), deploying);
    result?;
    let name = d.name.clone().unwrap_or_else(|| "deploy".into());
    let n = stack.instances();
    let request = format!(
        "DEPLOY {n} instance{} one at a time, under {} clients downloading and posting webhooks",
        if n == 1 { "" } else { "s" },
        d.clients.max(1)
    );
    let mut outcome = Outcome::blank(name, request);
    let short = load.short.lock().unwrap().join("; ");
    if !short.is_empty() {
        return Err(HarnessError::step(step, short));
    }
    let mut d = summarize(
        stack.instances(),
        &load.sent.lock().unwrap(),
        while_out.into_inner().unwrap(),
    );
    for cause in causes(&error_log.lines_since(from).0) {
        *d.nginx_causes.entry(cause).or_default() += 1;
    }
    outcome.deploy = Some(d);
    Ok(outcome)
}

/// While instance `n` is out of service: waits until the load has had `during` downloads and
/// `during` webhooks answered, and keeps nginx's causes from that time.
async fn out_of_service(
    stack: &Stack,
    load: &Load,
    during: u32,
    n: usize,
    seen: &Mutex<std::collections::BTreeSet<String>>,
) {
    let error_log = stack.error_log();
    let from = error_log.len();
    let phase = load.phase.fetch_add(1, Ordering::SeqCst) + 1;
    let answered = poll(OUT_OF_SERVICE_DEADLINE, || async {
        let (downloads, webhooks) = load.answered_in(phase);
        (downloads >= during && webhooks >= during).then_some(())
    })
    .await;
    load.phase.fetch_add(1, Ordering::SeqCst);
    if answered.is_none() {
        let (downloads, webhooks) = load.answered_in(phase);
        load.short.lock().unwrap().push(format!(
            "while instance {} was out of service, {downloads} downloads and {webhooks} webhooks were answered in {} s ({during} of each asked)",
            n + 1,
            OUT_OF_SERVICE_DEADLINE.as_secs()
        ));
    }
    let (lines, _) = error_log.lines_since(from);
    seen.lock().unwrap().extend(causes(&lines));
}

/// One client: a whole download of a recording, then a signed webhook of it, then the next
/// recording, until the deploy is done. Client `c` begins `c` requests into that round, so the
/// clients ask for every recording, both ways, from the start.
async fn client(stack: &Stack, session: &Session, c: usize, load: &Load) {
    let mut k = c;
    while !load.done.load(Ordering::SeqCst) {
        let (index, webhook) = nth_request(k, session.recording_count());
        let Some(rec) = session.recording(index) else {
            return;
        };
        let start = load.phase.load(Ordering::SeqCst);
        let sent_at = load.began.elapsed();
        let (what, o) = if webhook {
            let req = webhook_request(stack, &rec, Signing::Valid);
            let what = format!("POST {WEBHOOK_PATH} ({})", rec.call_sid);
            (what, read::send(req, false, Verify::Nothing).await)
        } else {
            let named = (rec.format != MediaFormat::Mp3).then_some(rec.format);
            let path = download_path(&rec.call_sid, named);
            let media = rec.media(rec.format);
            let req = stack.client().get(stack.url(&path));
            let o = read::send(req, false, Verify::Bytes(&media)).await;
            (format!("GET {path}"), o)
        };
        let end = load.phase.load(Ordering::SeqCst);
        let failed = failure(&o, webhook).map(|kind| {
            let (from, to) = (sent_at.as_secs_f64(), load.began.elapsed().as_secs_f64());
            let described = format!(
                "{what} ({from:.2}-{to:.2} s, phases {start}-{end}): {}",
                answer(&o)
            );
            (kind, described)
        });
        load.sent.lock().unwrap().push(Sent {
            webhook,
            phases: (start, end),
            status: o.status_text(),
            failed,
        });
        k += 1;
    }
}

/// The load's `k`th request among `recordings`: which recording, and whether it is the webhook
/// (else the download). Each recording is downloaded, then posted, then the next one.
fn nth_request(k: usize, recordings: usize) -> (usize, bool) {
    (k / 2 % recordings, k % 2 == 1)
}

/// How a load request failed, if it did: its status, `none` (no answer), `cut` (fewer bytes
/// than announced), `differs` (bytes that are not the recording's) or, for a download whose
/// body is something else, that body's kind.
fn failure(o: &Outcome, webhook: bool) -> Option<String> {
    let ok_status = o.status.is_some_and(|s| (200..300).contains(&s));
    if !ok_status {
        return Some(o.status_text());
    }
    match &o.body.check {
        _ if webhook => None,
        BodyCheck::Whole => None,
        BodyCheck::Truncated { .. } => Some("cut".into()),
        other => Some(other.kind().to_string()),
    }
}

/// What a failed request got: `502 (nginx error page)`, `200, 12000 bytes: truncated
/// (announced 30000); error decoding response body`.
fn answer(o: &Outcome) -> String {
    let error = o.client_error.as_deref().map(|e| format!("; {e}"));
    format!(
        "{}, {} bytes: {}{}",
        o.status_text(),
        o.body.bytes,
        o.body.check.words(),
        error.unwrap_or_default()
    )
}

/// How many failed requests of each kind a deploy's Outcome describes (the rest are only
/// counted).
const FAILED_REQUESTS_KEPT: u64 = 5;

/// The deploy's counts, from what its load sent.
fn summarize(
    instances: usize,
    sent: &[Sent],
    causes: std::collections::BTreeSet<String>,
) -> DeployOutcome {
    let mut d = DeployOutcome {
        instances,
        requests: sent.len() as u64,
        nginx_causes_while_out: causes,
        ..Default::default()
    };
    for s in sent {
        if let Some((kind, described)) = &s.failed {
            d.failed += 1;
            let of_kind = d.failed_by_status.entry(kind.clone()).or_default();
            *of_kind += 1;
            // The first few of each kind: an unexpected `cut` stays visible among the 502s that
            // fixed and legacy always get.
            if *of_kind <= FAILED_REQUESTS_KEPT {
                d.failed_requests.push(described.clone());
            }
        }
        if s.phases.0 == s.phases.1 && s.phases.0 % 2 == 1 {
            d.statuses_while_out.insert(s.status.clone());
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::BodyOutcome;

    fn answered(status: Option<u16>, check: BodyCheck) -> Outcome {
        let mut o = Outcome::blank("load".into(), "GET /api/calls/CA1/download".into());
        o.status = status;
        o.body = BodyOutcome { bytes: 12, check };
        o
    }

    #[test]
    fn a_failed_request_says_whether_it_got_no_answer_a_status_a_cut_or_other_bytes() {
        let whole = answered(Some(200), BodyCheck::Whole);
        assert_eq!(failure(&whole, false), None);
        let cut = answered(Some(200), BodyCheck::Truncated { announced: 30 });
        assert_eq!(failure(&cut, false).as_deref(), Some("cut"));
        let other = answered(Some(200), BodyCheck::Differs { at: 4 });
        assert_eq!(failure(&other, false).as_deref(), Some("differs"));
        let accepted = answered(Some(204), BodyCheck::Empty);
        assert_eq!(failure(&accepted, true), None);
        let gateway = answered(Some(502), BodyCheck::NginxErrorPage);
        assert_eq!(failure(&gateway, true).as_deref(), Some("502"));
        assert_eq!(
            failure(&answered(None, BodyCheck::Empty), false).as_deref(),
            Some("none")
        );
        assert_eq!(answer(&cut), "200, 12 bytes: truncated (announced 30)");
    }

    #[test]
    fn the_clients_download_and_post_every_recording_from_their_first_requests() {
        // Four clients over two recordings (the deploy file's): their first two requests each.
        let first: std::collections::BTreeSet<_> = (0..4)
            .flat_map(|c| [nth_request(c, 2), nth_request(c + 1, 2)])
            .collect();
        let every: std::collections::BTreeSet<_> =
            [(0, false), (0, true), (1, false), (1, true)].into();
        assert_eq!(first, every);
        assert_eq!(nth_request(5, 1), (0, true));
    }

    #[test]
    fn the_outcome_describes_the_first_failed_requests_of_each_kind_and_counts_every_one() {
        let failed = |k: usize, how: &str| Sent {
            webhook: false,
            phases: (1, 1),
            status: "200".into(),
            failed: Some((how.into(), format!("request {k}: {how}"))),
        };
        let mut sent: Vec<Sent> = (0..12).map(|k| failed(k, "502")).collect();
        sent.push(failed(12, "cut"));
        let d = summarize(1, &sent, Default::default());
        assert_eq!(d.failed, 13);
        assert_eq!(d.failed_by_status.get("502"), Some(&12));
        assert_eq!(d.failed_requests.len(), FAILED_REQUESTS_KEPT as usize + 1);
        assert_eq!(d.failed_requests[0], "request 0: 502");
        assert_eq!(d.failed_requests.last().unwrap(), "request 12: cut");
    }
}
