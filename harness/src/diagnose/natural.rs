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
    let mut bracket = Bracket::around(around);
    let mut found = NaturalRace {
        trials,
        hits: 0,
        backend_idle_close_ms: idle.map(|i| i * 1000.0),
        around_ms: around,
        early: 0,
        late: 0,
    };
    for k in 0..trials {
        let gap_ms = bracket.next_gap(k);
        let gap = Duration::from_secs_f64(gap_ms.max(0.0) / 1000.0);
        let fell = trial(&stack, &rec, gap).await;
        match fell {
            Fell::Hit => found.hits += 1,
            Fell::Early => found.early += 1,
            Fell::Late => found.late += 1,
        }
        bracket.record(fell, gap_ms);
    }
    found.around_ms = bracket.middle();
    Ok(found)
}

/// The gaps still to try: bisection between one that came early and one that came late, then
/// a sweep of ±0.5 ms around the boundary, which it follows as it drifts.
#[derive(Debug)]
struct Bracket {
    lo: f64,
    hi: f64,
    seen_early: bool,
    seen_late: bool,
}

impl Bracket {
    /// ±20 ms around where the boundary is expected.
    fn around(ms: f64) -> Bracket {
        Bracket {
            lo: ms - 20.0,
            hi: ms + 20.0,
            seen_early: false,
            seen_late: false,
        }
    }

    /// The `k`th trial's gap, in ms.
    fn next_gap(&self, k: usize) -> f64 {
        let mid = self.middle();
        if self.hi - self.lo > 0.2 {
            mid
        } else {
            mid - 0.5 + (k % 11) as f64 * 0.1
        }
    }

    fn middle(&self) -> f64 {
        (self.lo + self.hi) / 2.0
    }

    /// Narrows the bracket by where a trial at `gap` fell. Until both sides have been seen the
    /// bracket may be wrong (the idle close measured late on a loaded machine): it moves past
    /// the side seen, doubling.
    fn record(&mut self, fell: Fell, gap: f64) {
        let widen = |other_side_seen: bool, width: f64| {
            if other_side_seen {
                0.1
            } else {
                2.0 * width.max(20.0)
            }
        };
        match fell {
            Fell::Hit => {}
            Fell::Early => {
                let width = widen(self.seen_late, self.hi - self.lo);
                self.seen_early = true;
                self.lo = gap;
                self.hi = self.hi.max(gap + width);
            }
            Fell::Late => {
                let width = widen(self.seen_early, self.hi - self.lo);
                self.seen_late = true;
                self.hi = gap;
                self.lo = self.lo.min(gap - width);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trials against a boundary at `boundary` ms (a 0.2 ms window of hits below it), the
    /// bracket starting around `expected`: how many hit, and where the bracket ended.
    fn sweep_against(boundary: f64, expected: f64) -> (usize, f64) {
        let mut bracket = Bracket::around(expected);
        let mut hits = 0;
        for k in 0..40 {
            let gap = bracket.next_gap(k);
            let fell = if gap < boundary - 0.2 {
                Fell::Early
            } else if gap <= boundary {
                Fell::Hit
            } else {
                Fell::Late
            };
            hits += usize::from(fell == Fell::Hit);
            bracket.record(fell, gap);
        }
        (hits, bracket.middle())
    }

    #[test]
    fn the_sweep_finds_a_boundary_inside_its_first_bracket() {
        let (hits, middle) = sweep_against(1003.0, 1000.0);
        assert!(hits >= 1, "{hits} hits, ended at {middle}");
        assert!((middle - 1003.0).abs() < 1.0, "{middle}");
    }

    #[test]
    fn the_sweep_leaves_a_first_bracket_the_boundary_is_outside_of() {
        // The idle close measured 26 ms late: the boundary is below the first bracket.
        let (hits, middle) = sweep_against(1000.0, 1026.0);
        assert!(hits >= 1, "{hits} hits, ended at {middle}");
        assert!((middle - 1000.0).abs() < 1.0, "{middle}");
        // And above it.
        let (hits, middle) = sweep_against(1050.0, 1000.0);
        assert!(hits >= 1, "{hits} hits, ended at {middle}");
        assert!((middle - 1050.0).abs() < 1.0, "{middle}");
    }
}
