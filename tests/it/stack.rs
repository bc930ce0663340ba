//! The stack itself: start, teardown (also on panic), parallel stacks, clear errors.

use crate::support::{rt, tools_present};
use harness::{Profile, Stack, StackSpec};
use mock_twilio::Fault;
use std::path::PathBuf;

fn alive(pid: u32) -> bool {
    // A zombie is gone for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Every live process in the stack's process groups.
fn stack_pids(stack: &Stack) -> Vec<u32> {
    let groups = stack.process_groups();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // /proc/PID/stat: "pid (comm) state ppid pgrp ..."
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                let after = s.rsplit(')').next().unwrap_or("");
                let pgrp = after
                    .split_whitespace()
                    .nth(2)
                    .and_then(|p| p.parse::<u32>().ok());
                pgrp.is_some_and(|g| groups.contains(&g))
            })
        })
        .collect()
}

#[test]
fn a_dropped_stack_leaves_nothing_behind() {
    if !tools_present() {
        return;
    }
    let rt = rt();
    let (sandbox, pids, addr): (PathBuf, Vec<u32>, std::net::SocketAddr) = rt.block_on(async {
        let stack = Stack::start(StackSpec::new(Profile::Fixed)).await.unwrap();
        let resp = stack
            .client()
            .get(stack.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let sandbox = stack.sandbox().to_path_buf();
        let pids = stack_pids(&stack);
        assert!(pids.len() >= 2, "nginx and the backend run: {pids:?}");
        (sandbox, pids, stack.nginx_addr())
    });
    assert!(!sandbox.exists(), "sandbox removed");
    for pid in pids {
        assert!(!alive(pid), "process {pid} still runs");
    }
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "nginx's port is closed"
    );
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    if !tools_present() {
        return;
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen2 = seen.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt().block_on(async {
            let stack = Stack::start(StackSpec::new(Profile::Legacy)).await.unwrap();
            *seen2.lock().unwrap() = Some((stack.sandbox().to_path_buf(), stack_pids(&stack)));
            panic!("a test fails mid-scenario");
        })
    }));
    assert!(result.is_err());
    let (sandbox, pids) = seen.lock().unwrap().take().unwrap();
    assert!(!sandbox.exists());
    assert!(pids.iter().all(|p| !alive(*p)), "{pids:?}");
}

#[test]
fn stacks_run_side_by_side() {
    if !tools_present() {
        return;
    }
    rt().block_on(async {
        let (a, b) = tokio::join!(
            Stack::start(StackSpec::new(Profile::Fixed)),
            Stack::start(StackSpec::new(Profile::Fixed))
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a.nginx_addr(), b.nginx_addr());
        assert_ne!(a.sandbox(), b.sandbox());
        for s in [&a, &b] {
            assert_eq!(
                s.client()
                    .get(s.url("/healthz"))
                    .send()
                    .await
                    .unwrap()
                    .status(),
                200
            );
        }
    });
}

#[test]
fn a_broken_nginx_config_fails_with_every_log_tail() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let good =
        std::fs::read_to_string(crate::support::checkout().join("docker/nginx.conf")).unwrap();
    std::fs::write(
        dir.path().join("nginx.conf"),
        good.replace("proxy_buffering off;", "proxy_buffering sideways;"),
    )
    .unwrap();
    let mut spec = StackSpec::new(Profile::Fixed);
    spec.configs_dir = Some(dir.path().to_path_buf());
    let err = rt()
        .block_on(Stack::start(spec))
        .err()
        .expect("start fails")
        .to_string();
    assert!(err.contains("nginx"), "{err}");
    assert!(
        err.contains("sideways"),
        "nginx's own complaint is in the error: {err}"
    );
    assert!(
        err.contains("--- backend"),
        "every component's log tail: {err}"
    );
}

#[test]
fn a_missing_nginx_says_how_to_install_it() {
    // Only the lookup is under test: no stack is started.
    let err = {
        let _guard = EnvGuard::set("HARNESS_NGINX", "/nonexistent/nginx");
        harness::nginx::find_nginx().unwrap_err().to_string()
    };
    assert!(err.contains("apt-get install nginx-light"), "{err}");
}

struct EnvGuard(&'static str, Option<std::ffi::OsString>);

impl EnvGuard {
    fn set(key: &'static str, value: &str) -> Self {
        let old = std::env::var_os(key);
        // SAFETY: this test binary reads HARNESS_NGINX only in this test.
        unsafe { std::env::set_var(key, value) };
        EnvGuard(key, old)
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe {
            match &self.1 {
                Some(v) => std::env::set_var(self.0, v),
                None => std::env::remove_var(self.0),
            }
        }
    }
}

#[test]
fn the_fixed_profile_keeps_the_keepalive_rule() {
    // nginx must drop idle upstream connections before the backend does.
    let Ok(backend) = harness::stack::find_backend() else {
        return assert!(!tools_present());
    };
    let conf =
        std::fs::read_to_string(crate::support::checkout().join("docker/nginx.conf")).unwrap();
    let nginx = harness::nginx::timeouts(&conf);
    let backend_keepalive = Profile::Fixed.backend_keep_alive_secs(&backend);
    assert!(
        nginx.upstream_keepalive < backend_keepalive,
        "docker/nginx.conf keeps idle upstream connections {} s, the backend only {backend_keepalive} s: the keep-alive race is back",
        nginx.upstream_keepalive
    );
    // And the backend gives up on Twilio well before nginx gives up on the backend.
    let budget = harness::stack::backend_default(&backend, "--twilio-timeout-secs").unwrap();
    assert!(
        budget < nginx.proxy_read,
        "TWILIO_TIMEOUT_SECS {budget} s vs proxy_read_timeout {} s",
        nginx.proxy_read
    );
    let legacy = harness::nginx::timeouts(
        &std::fs::read_to_string(crate::support::checkout().join("docker/nginx.legacy.conf"))
            .unwrap(),
    );
    assert!(
        legacy.upstream_keepalive > Profile::Legacy.backend_keep_alive_secs(&backend),
        "the legacy profile reproduces the race"
    );
}

/// A deploy under `hardened` lets a download under way finish: the instance it runs on drains
/// (its listener closed, SIGTERM) and only then stops; the client gets every byte, whether its
/// answer had begun (Twilio slow) or not (Twilio late).
#[rstest::rstest]
#[case::answer_begun(Fault::Throttle { bytes_per_sec: 200_000 })]
#[case::answer_not_begun(Fault::Delay { ms: 1500, max_ms: None, seed: None })]
fn a_deploy_lets_the_download_under_way_finish(#[case] fault: Fault) {
    if !tools_present() {
        return;
    }
    use mock_twilio::{FaultRule, MediaFormat, Recording};
    rt().block_on(async {
        let stack = Stack::start(StackSpec::new(Profile::Hardened))
            .await
            .unwrap();
        let rec = stack.twilio().add_recording(Recording::new(
            "RE00000000000000000000000000000031",
            "CA00000000000000000000000000000031",
            MediaFormat::Mp3,
            400_000,
        ));
        stack
            .twilio()
            .arm(FaultRule::new(fault).recording(&rec.sid))
            .unwrap();
        let url = stack.url(&harness::app::download_path(&rec.call_sid, None));
        // Keep-alive connections that have served a request already.
        for _ in 0..4 {
            let h = stack
                .client()
                .get(stack.url("/healthz"))
                .send()
                .await
                .unwrap();
            assert_eq!(h.status(), 200);
        }
        let download = tokio::spawn({
            let client = stack.client().clone();
            async move {
                let resp = client.get(url).send().await.unwrap();
                (resp.status().as_u16(), resp.bytes().await.map(|b| b.len()))
            }
        });
        let log = stack.backend_log();
        harness::ready::poll(std::time::Duration::from_secs(10), || async {
            log.lines_since(0)
                .0
                .iter()
                .any(|l| l.contains("Cache miss"))
                .then_some(())
        })
        .await
        .expect("the download began");
        stack.deploy(|_| async {}).await.unwrap();
        let (status, body) = download.await.unwrap();
        assert_eq!(status, 200, "{}", stack.logs());
        assert_eq!(body.unwrap(), 400_000, "{}", stack.logs());
    });
}

/// A stack that waited idle (as one waits for a browser slot) past the legacy backend's
/// keep-alive, then is checked again, meets its next request as a stack just started does: over
/// the idle upstream connection the check left. Without the check (the control) the backend has
/// closed the one the start left, and the request needs a new connection.
#[test]
fn a_stack_checked_again_after_waiting_idle_reuses_the_connection_the_check_left() {
    if !tools_present() {
        return;
    }
    // The legacy backend keeps idle connections 5 s × 0.2 = 1 s; each wait is 2.5 s of idle,
    // the input under test (not a synchronisation).
    let timeouts = harness::Timeouts {
        keepalive_scale: 0.2,
        ..harness::Timeouts::default()
    };
    let idle = std::time::Duration::from_millis(2_500);
    rt().block_on(async {
        let stack = Stack::start(StackSpec::new(Profile::Legacy).timeouts(timeouts))
            .await
            .unwrap();
        let opened_by = |before: u64| stack.hop_connections() - before;
        let health = || async {
            let resp = stack.client().get(stack.url("/healthz")).send().await;
            assert_eq!(resp.unwrap().status(), 200);
        };
        tokio::time::sleep(idle).await;
        let before = stack.hop_connections();
        health().await;
        assert_eq!(
            opened_by(before),
            1,
            "the control: the first idle connection was closed"
        );

        tokio::time::sleep(idle).await;
        stack.ready_again().await.unwrap();
        let before = stack.hop_connections();
        health().await;
        assert_eq!(
            opened_by(before),
            0,
            "the check's idle connection was reused"
        );
    });
}

/// A set-up pre-download whose webhook meets a connection the backend closed (here a reset, once,
/// at the nginx → backend hop; in CI it was the keep-alive race after the readiness check) is
/// sent once more, and the run says so; without that, the scenario could not run at all.
#[test]
fn a_set_up_webhook_that_met_a_closed_connection_is_sent_again_and_said() {
    if !tools_present() {
        return;
    }
    use harness::{RecordingSpec, RequestStep, Scenario};
    use mock_twilio::{Fault, FaultRule, MediaFormat};
    let scenario = Scenario::new(
        "set-up-mended",
        RecordingSpec::new(MediaFormat::Mp3, 10_000).cached(true),
    )
    .request(RequestStep::get().expect_status(200));
    rt().block_on(async {
        let stack = Stack::start(StackSpec::new(Profile::Fixed)).await.unwrap();
        let once = FaultRule::new(Fault::Reset)
            .path_regex("^/webhook/")
            .times(1);
        stack.hop_faults().arm(once).unwrap();
        let run = harness::runner::run_on_stack(&stack, &scenario, None, Profile::Fixed)
            .await
            .unwrap();
        assert_eq!(
            run.set_up,
            [
                "pre-download of recording 0 (its signed status webhook) answered 502 \
              (reset_by_peer), sent once more"
            ]
        );
        assert_eq!(run.outcomes.len(), 1, "{:?}", run.outcomes);
        assert_eq!(run.outcomes[0].status, Some(200));
        assert!(run.failures.is_empty(), "{:?}", run.failures);
    });
}
