//! Processes owned by guards (killed with their whole process group when dropped, also on
//! panic).

use crate::error::HarnessError;
pub use crate::log::LogFile;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Makes `cmd`'s child inherit file descriptor `fd` (a listening socket the harness bound on an
/// OS-chosen port): close-on-exec is cleared in the child only, after fork, so no other process
/// started meanwhile inherits it.
pub fn inherit_fd(cmd: &mut Command, fd: std::os::fd::RawFd) {
    // SAFETY: fcntl is async-signal-safe, and the closure touches nothing else.
    unsafe {
        cmd.pre_exec(move || {
            let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD)?;
            let mut flags = nix::fcntl::FdFlag::from_bits_truncate(flags);
            flags.remove(nix::fcntl::FdFlag::FD_CLOEXEC);
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(flags))?;
            Ok(())
        });
    }
}

/// A child process in a process group of its own; the group is killed when the guard drops.
#[must_use = "the process is killed when the guard drops"]
pub struct ChildGuard {
    name: String,
    pid: u32,
    child: Mutex<Option<Child>>,
    /// `sh` that kills the child's group if we die without dropping this guard.
    watchdog: Mutex<Option<Child>>,
    log: LogFile,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self, HarnessError> {
        // Orphans of our children (nginx's workers once their master is gone) come to us, so
        // that we can reap them instead of leaving zombies where no init reaps.
        static SUBREAPER: std::sync::Once = std::sync::Once::new();
        SUBREAPER.call_once(|| {
            let _ = nix::sys::prctl::set_child_subreaper(true);
        });
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(HarnessError::io(format!("open {}", log.display())))?;
        let err = out.try_clone().map_err(HarnessError::io("dup log file"))?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd.spawn().map_err(HarnessError::io(format!(
            "start {name} ({:?})",
            cmd.get_program()
        )))?;
        // For when we die without dropping the guard (SIGKILL, Ctrl-C on `cargo test`: the
        // child's own process group keeps the terminal's signal from it): kill the child's group.
        let watchdog = watchdog("kill -9 -\"$1\" 2>/dev/null", &child.id().to_string());
        Ok(ChildGuard {
            name: name.to_string(),
            pid: child.id(),
            child: Mutex::new(Some(child)),
            watchdog: Mutex::new(watchdog),
            log: LogFile::new(log.to_path_buf()),
        })
    }

    /// The process id (also its process group id), while it has not been killed.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(|_| self.pid)
    }

    /// Its output log.
    pub fn log(&self) -> &LogFile {
        &self.log
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends `signal` to the whole process group.
    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.pid() {
            let _ = killpg(Pid::from_raw(pid as i32), signal);
        }
    }

    /// The exit status, if it has exited.
    pub fn try_exit(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `deadline` for the process to exit.
    pub async fn wait_exit(&self, deadline: Duration) -> Option<ExitStatus> {
        crate::ready::poll(deadline, || async { self.try_exit() }).await
    }

    /// Kills the process group and reaps the process (and its watchdog).
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let pgid = Pid::from_raw(child.id() as i32);
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
            reap_group(pgid);
        }
        if let Some(mut watchdog) = self.watchdog.lock().unwrap().take() {
            // Closing its stdin lets it finish (its kill now finds nothing).
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

/// Reaps what is left of a killed group: its own children (nginx's workers) were handed to
/// us, the subreaper.
fn reap_group(pgid: Pid) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        match waitpid(Pid::from_raw(-pgid.as_raw()), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(1)),
            Ok(_) => continue,
            Err(_) => break,
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `sh` that waits for its stdin, a pipe only this process holds, to close (this process is
/// gone, SIGKILL included), then runs `script` with `$1` = `arg`. In a process group of its own,
/// so the terminal's Ctrl-C does not stop it first. Dropping the [`Child`]'s stdin runs it;
/// killing the `sh` dismisses it. `None` if `sh` cannot start.
pub fn watchdog(script: &str, arg: &str) -> Option<Child> {
    Command::new("/bin/sh")
        .args(["-c", &format!("read _; {script}"), "watchdog", arg])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()
}

/// A process's resident memory (kB) and open file descriptors, from `/proc`.
pub fn gauges(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}
