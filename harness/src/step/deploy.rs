//! The `deploy` step: [`Stack::deploy`] (every backend instance restarted in turn) while
//! clients keep downloading recordings and posting webhooks. Each instance stays out of service
//! until the load has had requests answered in that time, so what the load gets while an
//! instance is out is observed on every run, not by luck of timing.

use super::{webhook_request, Session};
use crate::app::download_path;
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
use std::time::Duration;

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
    failed: Option<String>,
}

/// What the clients and the deploy share.
#[derive(Default)]
struct Load {
    phase: AtomicU64,
    done: AtomicBool,
    sent: Mutex<Vec<Sent>>,
    /// Out-of-service windows that did not see the requests asked for.
    short: Mutex<Vec<String>>,
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
    let clients = (0..d.clients.max(1) as usize).map(|c| client(stack, session, c, &load));
    let causes = Mutex::new(std::collections::BTreeSet::new());
    let deploying = async {
        let result = stack
            .deploy(|n| out_of_service(stack, &load, d.during, n, &causes))
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
    outcome.deploy = Some(summarize(
        stack.instances(),
        &load.sent.lock().unwrap(),
        causes.into_inner().unwrap(),
    ));
    Ok(outcome)
}

/// While instance `n` is out of service: waits until the load has had `during` downloads and
/// `during` webhooks answered, and keeps nginx's causes from that time.
async fn out_of_service(
    stack: &Stack,
    load: &Load,
    during: u32,
    n: usize,
    causes: &Mutex<std::collections::BTreeSet<String>>,
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
    let mut causes = causes.lock().unwrap();
    causes.extend(
        lines
            .iter()
            .filter_map(|l| classify(l))
            .map(|e| e.cause.name().to_string()),
    );
}

/// One client: a whole download, then a signed webhook, and again, until the deploy is done.
async fn client(stack: &Stack, session: &Session, c: usize, load: &Load) {
    let mut k = c;
    while !load.done.load(Ordering::SeqCst) {
        let Some(rec) = session.recording(k % session.recording_count()) else {
            return;
        };
        let webhook = k % 2 == 1;
        let start = load.phase.load(Ordering::SeqCst);
        let o = if webhook {
            let req = webhook_request(stack, &rec, Signing::Valid);
            read::send(req, false, Verify::Nothing).await
        } else {
            let named = (rec.format != MediaFormat::Mp3).then_some(rec.format);
            let url = stack.url(&download_path(&rec.call_sid, named));
            let media = rec.media(rec.format);
            read::send(stack.client().get(url), false, Verify::Bytes(&media)).await
        };
        let end = load.phase.load(Ordering::SeqCst);
        load.sent.lock().unwrap().push(Sent {
            webhook,
            phases: (start, end),
            status: o.status_text(),
            failed: failure(&o, webhook),
        });
        k += 1;
    }
}

/// How a load request failed, if it did: its status, `none` (no answer) or `cut`.
fn failure(o: &Outcome, webhook: bool) -> Option<String> {
    let ok_status = o.status.is_some_and(|s| (200..300).contains(&s));
    if !ok_status {
        return Some(o.status_text());
    }
    let whole = webhook || matches!(o.body.check, BodyCheck::Whole);
    (!whole).then(|| "cut".to_string())
}

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
        if let Some(f) = &s.failed {
            d.failed += 1;
            *d.failed_by_status.entry(f.clone()).or_default() += 1;
        }
        if s.phases.0 == s.phases.1 && s.phases.0 % 2 == 1 {
            d.statuses_while_out.insert(s.status.clone());
        }
    }
    d
}
