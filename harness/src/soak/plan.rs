//! A soak step's plan, from the seed and the step's number alone: which recording, which
//! request (any Range form, If-Range, HEAD, a signed or forged webhook), or which Twilio fault
//! on a fresh recording. A plan is ordinary [`Step`]s with their [`Expect`]s, run by the one
//! executor: a violation is a failed expectation.

use crate::expect::{Expect, StatusMatch};
use crate::outcome::AnsweredBy;
use crate::scenario::{FaultPoint, Method, RequestStep, Step};
use crate::spec::BackendSpec;
use mock_twilio::{sid, Fault, FaultRule, MediaFormat, Recording, Signing};

/// splitmix64: the plan's only source of randomness.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Draws for one step, in order.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    /// Log-uniform in `lo..=hi`.
    fn size(&mut self, lo: u64, hi: u64) -> u64 {
        let (a, b) = ((lo as f64).ln(), (hi as f64).ln());
        let t = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (a + (b - a) * t).exp().round() as u64
    }
}

/// The recordings every soak of a seed shares (cached on first use): 1 KB to 50 MB, mp3 and wav
/// (before the soak's formats apply). Their session indexes are their places here.
pub fn pool(seed: u64) -> Vec<Recording> {
    let mut d = Draws(mix(seed));
    let mut sizes: Vec<u64> = (0..6).map(|_| d.size(1_000, 2_000_000)).collect();
    sizes.push(1_000);
    sizes.push(50_000_000);
    sizes
        .into_iter()
        .enumerate()
        .map(|(i, size)| {
            let format = if i % 3 == 2 {
                MediaFormat::Wav
            } else {
                MediaFormat::Mp3
            };
            Recording::new(
                sid("RE", i as u64 + 1),
                sid("CA", i as u64 + 1),
                format,
                size,
            )
        })
        .collect()
}

/// Every fault kind mock-twilio has, with values that matter under the default timeouts
/// (Twilio budget 3 s): slowness inside the budget, statuses, cuts, hangs past it.
fn fault(d: &mut Draws, size: u64) -> Fault {
    let status = |status| Fault::Status {
        status,
        retry_after: (status == 429).then_some(0),
    };
    match d.below(11) {
        0 => Fault::Delay {
            ms: 100 + d.below(1500),
            max_ms: None,
            seed: None,
        },
        1 => Fault::Throttle {
            bytes_per_sec: (size * 2).max(50_000),
        },
        2 => Fault::Dribble {
            chunk_bytes: (size / 4).max(1),
            pause_ms: 100,
        },
        3 => status(404),
        4 => status(429),
        5 => status(500),
        6 => status(503),
        7 => Fault::Reset,
        8 => Fault::CloseAfter {
            bytes: (size / 2).max(1),
        },
        9 => Fault::Hang,
        _ => Fault::Garbage,
    }
}

/// A fault's name in reports: its kind, and a status fault's status (`status_503`).
pub fn fault_name(f: &Fault) -> String {
    match f {
        Fault::Status { status, .. } => format!("{}_{status}", f.kind()),
        _ => f.kind().to_string(),
    }
}

/// Where a plan's steps name the fresh recording (see [`SoakPlan::bind`]).
const FRESH: usize = usize::MAX;

/// What step `number` of a soak does.
#[derive(Debug, Clone, PartialEq)]
pub struct SoakPlan {
    /// The step's number.
    pub number: u64,
    /// `GET`, `HEAD`, `WEBHOOK` or `fault:<kind>`.
    pub kind: String,
    /// A recording made for this step alone (fault steps), added before its steps run.
    pub fresh: Option<Recording>,
    /// Its steps; the last one's expectation is what the step must show.
    pub steps: Vec<Step>,
}

impl SoakPlan {
    /// The steps, with the fresh recording's session index filled in.
    pub fn bind(&self, fresh: Option<usize>) -> Vec<Step> {
        let mut steps = self.steps.clone();
        for step in &mut steps {
            let index = match step {
                Step::Request(r) => &mut r.recording,
                Step::Webhook { recording, .. } => recording,
                _ => continue,
            };
            if *index == FRESH {
                *index = fresh.unwrap_or(FRESH);
            }
        }
        steps
    }
}

/// The plan of step `k` of `seed`: a function of the two (and the soak's settings) alone.
pub fn plan(
    seed: u64,
    k: u64,
    fault_rate: f64,
    backend: &BackendSpec,
    formats: &[MediaFormat],
) -> SoakPlan {
    let mut d = Draws(mix(seed ^ mix(k.wrapping_add(1))));
    let pool = pool(seed);
    let recording = d.below(pool.len() as u64) as usize;
    let pick = |f: MediaFormat| match formats {
        [] => f,
        fs if fs.contains(&f) => f,
        fs => fs[0],
    };
    if d.chance(fault_rate) {
        let size = d.size(1_000, 2_000_000);
        let format = pick(if d.chance(0.3) {
            MediaFormat::Wav
        } else {
            MediaFormat::Mp3
        });
        let fault = fault(&mut d, size);
        let n = 10_000 + k;
        let fresh = Recording::new(sid("RE", n), sid("CA", n), format, size);
        return faulted(k, fresh, fault, backend);
    }
    let sid = &pool[recording].sid;
    match d.below(10) {
        0 => request(
            k,
            "HEAD",
            sid,
            recording,
            RequestStep::get().method(Method::Head),
            None,
        ),
        1 => {
            let signing = if d.chance(0.5) {
                Signing::Forged
            } else {
                Signing::Valid
            };
            webhook(k, recording, signing)
        }
        _ => ranged(k, &mut d, sid, recording),
    }
}

/// A GET with any form of Range (or none), sometimes with a current or a stale If-Range.
fn ranged(k: u64, d: &mut Draws, sid: &str, recording: usize) -> SoakPlan {
    let range = match d.below(7) {
        0 => None,
        1 => Some("bytes=0-".to_string()),
        2 => Some(format!("bytes=-{}", 1 + d.below(5000))),
        3 => Some(format!("bytes={}-", d.below(3000))),
        4 => {
            let a = d.below(3000);
            Some(format!("bytes={a}-{}", a + d.below(3000)))
        }
        5 => Some("bytes=999999999-".into()),
        _ => Some("bytes=0-0".into()),
    };
    let current = range.is_some() && d.chance(0.2);
    let if_range = current.then(|| if d.chance(0.5) { "{etag}" } else { "\"stale\"" });
    let get = RequestStep::get().range(range.as_deref());
    let get = match if_range {
        Some(v) => get.if_range(v),
        None => get,
    };
    // A current validator is whatever the backend sent: ask for it first.
    let head = (if_range == Some("{etag}")).then(|| RequestStep::get().method(Method::Head));
    request(k, "GET", sid, recording, get, head)
}

fn request(
    k: u64,
    kind: &str,
    sid: &str,
    recording: usize,
    r: RequestStep,
    before: Option<RequestStep>,
) -> SoakPlan {
    let range = r
        .range
        .as_deref()
        .map(|r| format!(" (Range: {r})"))
        .unwrap_or_default();
    let mut r = r
        .recording(recording)
        .named(&format!("{kind} {sid}{range}"));
    r.expect = Expect {
        status_in: Some([200, 206, 416].map(StatusMatch::Exactly).to_vec()),
        complete: Some(true),
        ..Default::default()
    };
    let steps = before
        .map(|b| Step::Request(b.recording(recording)))
        .into_iter()
        .chain([Step::Request(r)])
        .collect();
    SoakPlan {
        number: k,
        kind: kind.into(),
        fresh: None,
        steps,
    }
}

fn webhook(k: u64, recording: usize, signing: Signing) -> SoakPlan {
    let status = if signing == Signing::Forged { 403 } else { 204 };
    SoakPlan {
        number: k,
        kind: "WEBHOOK".into(),
        fresh: None,
        steps: vec![Step::Webhook {
            recording,
            signing,
            pause_ms: 0,
            expect: Expect {
                status: Some(status),
                ..Default::default()
            },
        }],
    }
}

/// A download of a fresh recording through one Twilio fault: a clean answer from the backend,
/// or (for the faults that cut) a body cut after the headers.
fn faulted(k: u64, fresh: Recording, fault: Fault, backend: &BackendSpec) -> SoakPlan {
    let kind = format!("fault:{}", fault_name(&fault));
    let name = format!("GET {} [Twilio {}]", fresh.sid, fault_name(&fault));
    let cuts = matches!(
        fault,
        Fault::CloseAfter { .. } | Fault::Reset | Fault::Garbage
    );
    let failure = match backend {
        // The reference backend answers a Twilio failure with 503 (and Retry-After); another
        // backend passes with any 5xx of its own, never nginx's.
        BackendSpec::Reference => StatusMatch::Exactly(503),
        BackendSpec::File(_) => StatusMatch::Class(5),
    };
    let mut expect = Expect {
        status_in: Some(match fault {
            Fault::Status { status: 404, .. } => {
                vec![StatusMatch::Exactly(200), StatusMatch::Exactly(404)]
            }
            _ => vec![StatusMatch::Exactly(200), failure],
        }),
        complete: (!cuts).then_some(true),
        ..Default::default()
    };
    if matches!(backend, BackendSpec::File(_)) {
        expect.answered_by = Some(AnsweredBy::Backend);
    }
    let mut get = RequestStep::get().recording(FRESH).named(&name);
    get.expect = expect;
    let rule = FaultRule::new(fault).recording(&fresh.sid).times(1);
    SoakPlan {
        number: k,
        kind,
        fresh: Some(fresh),
        steps: vec![
            Step::Arm {
                at: FaultPoint::Twilio,
                rule,
            },
            Step::Request(get),
        ],
    }
}
