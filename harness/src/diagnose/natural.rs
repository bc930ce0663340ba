//! The keep-alive race by its natural timing, without the hop's `keepalive_race` fault: a
//! webhook, then another sent at the instant the backend closes the idle connection, many
//! times. The window is the time between the backend's close and nginx noticing it, well under
//! a millisecond on an idle machine and wider under load, and it drifts with load. So each trial
//! also says which side of it it fell on (the connection was still reused: early; nginx had
//! already opened a new one: late), and the trials home in on the boundary by bisection, then
//! sweep across it. The deterministic fault makes exactly this crossing certain.

use super::probe;
use crate::error::HarnessError;
use crate::nginx_conf;
use crate::spec::StackSpec;
use crate::stack::Stack;
use mock_twilio::{MediaFormat, Recording, Signing};
use serde::Serialize;
use std::time::{Duration, Instant};

/// What a sweep found.
#[derive(Debug, Clone, Serialize)]
pub struct NaturalRace {
    /// Trials run.
    pub trials: usize,
    /// Trials whose second webhook got nginx's 502.
    pub hits: usize,
    /// The backend's idle close, as measured, in ms (`None`: it outlived nginx's timeout, and
    /// the sweep was around nginx's own close instead).
    pub backend_idle_close_ms: Option<f64>,
    /// The instant the trials homed in on, ms after the first webhook's answer.
    pub around_ms: f64,
    /// Trials that came too early (the connection was still reused).
    pub early: usize,
    /// Trials that came too late (nginx had already opened a new connection).
    pub late: usize,
}

/// Which side of the window a trial fell on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fell {
    Early,
    Hit,
    Late,
}

/// Waits until `at`: sleeps to within 2 ms of it, then spins, for sub-millisecond aim.
async fn until(at: Instant) {
    if let Some(d) = at.checked_duration_since(Instant::now()) {
        if d > Duration::from_millis(2) {
            tokio::time::sleep(d - Duration::from_millis(2)).await;
        }
    }
    while Instant::now() < at {
        std::hint::spin_loop();
    }
}

/// One trial: a webhook, then another `gap` after the first one's answer.
async fn trial(stack: &Stack, rec: &Recording, gap: Duration) -> Fell {
    let send = || crate::step::webhook_request(stack, rec, Signing::Valid).send();
    let Ok(first) = send().await else {
        return Fell::Late;
    };
    let _ = first.bytes().await;
    until(Instant::now() + gap).await;
    let before = stack.hop_connections();
    match send().await {
        Ok(r) if r.status() == 502 => Fell::Hit,
        Ok(_) if stack.hop_connections() == before => Fell::Early,
        _ => Fell::Late,
    }
}

/// Runs `trials` trials on a stack of `spec` with no fault armed: bisecting between a gap that
/// came early and one that came late, starting ±20 ms around the earlier of the two idle closes
/// (the backend's, measured; nginx's, from its config) and widening past it while every trial
/// falls on one side, then sweeping ±0.5 ms around the boundary, which it follows as it drifts.
pub async fn sweep(spec: &StackSpec, trials: usize) -> Result<NaturalRace, HarnessError> {
    let stack = Stack::start(spec.clone()).await?;
    let rendered = std::fs::read_to_string(stack.sandbox().join("nginx.conf"))
        .map_err(HarnessError::io("read the rendered nginx.conf"))?;
    let kat = nginx_conf::facts(&rendered, stack.nginx_version()).keepalive_timeout_secs;
    let addr = stack
        .backend_addr()
        .ok_or_else(|| HarnessError::step(0, "the backend is not running"))?;
    let idle = probe::idle_close(addr, "/healthz", Duration::from_secs_f64(kat + 3.0)).await?;
    let around = idle.filter(|i| *i < kat).unwrap_or(kat) * 1000.0;
    let rec = stack.twilio().add_recording(Recording::new(
        mock_twilio::sid("RE", 1),
        mock_twilio::sid("CA", 1),
        MediaFormat::Mp3,
        10_000,
    ));
    let (mut lo, mut hi) = (around - 20.0, around + 20.0);
    let mut found = NaturalRace {
        trials,
        hits: 0,
        backend_idle_close_ms: idle.map(|i| i * 1000.0),
        around_ms: around,
        early: 0,
        late: 0,
    };
    for k in 0..trials {
        let gap_ms = if hi - lo > 0.2 {
            (lo + hi) / 2.0
        } else {
            let mid = (lo + hi) / 2.0;
            mid - 0.5 + (k % 11) as f64 * 0.1
        };
        match trial(
            &stack,
            &rec,
            Duration::from_secs_f64(gap_ms.max(0.0) / 1000.0),
        )
        .await
        {
            Fell::Hit => found.hits += 1,
            // Until both sides have been seen the bracket may be wrong (the idle close was
            // measured late on a loaded machine): it moves past the side seen, doubling.
            Fell::Early => {
                found.early += 1;
                let width = if found.late == 0 {
                    2.0 * (hi - lo).max(20.0)
                } else {
                    0.1
                };
                lo = gap_ms;
                hi = hi.max(lo + width);
            }
            Fell::Late => {
                found.late += 1;
                let width = if found.early == 0 {
                    2.0 * (hi - lo).max(20.0)
                } else {
                    0.1
                };
                hi = gap_ms;
                lo = lo.min(hi - width);
            }
        }
    }
    found.around_ms = (lo + hi) / 2.0;
    Ok(found)
}
