//! A running backend process with its own temp dir, log capture and teardown.

use mock_twilio::{sid, MediaFormat, MockTwilio, Recording};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const DEADLINE: Duration = Duration::from_secs(20);

/// The backend process; killed (and its temp dir removed) when dropped.
pub struct Backend {
    child: Option<Child>,
    pub addr: String,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub dir: PathBuf,
    env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

pub fn env_for(twilio: &MockTwilio, dir: &Path) -> Vec<(String, String)> {
    [
        ("BIND", "127.0.0.1:0".to_string()),
        ("TWILIO_ACCOUNT_SID", twilio.account_sid().to_string()),
        ("TWILIO_AUTH_TOKEN", twilio.auth_token().to_string()),
        ("TWILIO_API_BASE", twilio.uri()),
        ("RECORDINGS_DIR", dir.display().to_string()),
        ("TWILIO_TIMEOUT_SECS", "3".to_string()),
        ("KEEP_ALIVE_TIMEOUT", "75".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl Backend {
    pub fn start(twilio: &MockTwilio) -> Backend {
        Self::start_with(twilio, &[])
    }

    pub fn start_with(twilio: &MockTwilio, extra: &[(&str, &str)]) -> Backend {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("recordings");
        let mut env = env_for(twilio, &dir);
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }
        let mut b = Backend {
            child: None,
            addr: String::new(),
            logs: Arc::default(),
            dir,
            env,
            _tmp: Some(tmp),
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let mut child = Command::new(crate::support::bin_exe(
            "recordings-backend",
            env!("CARGO_BIN_EXE_recordings-backend"),
        ))
        .env_clear()
        .envs(self.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = self.logs.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Some(addr) = line.split("listening on http://").nth(1) {
                        let _ = tx.send(addr.split('"').next().unwrap().to_string());
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        self.addr = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            panic!(
                "backend did not start; its output:\n{}",
                self.logs.lock().unwrap().join("\n")
            )
        });
        self.child = Some(child);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn download_url(&self, call_sid: &str) -> String {
        self.url(&format!("/api/calls/{call_sid}/download"))
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        wait_exit(&mut child)
    }

    /// Kills the process (SIGKILL: no drain, no cleanup) and waits for it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Waits for a process already sent SIGTERM to exit.
    pub fn terminate_wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        wait_exit(&mut child)
    }

    /// Stops and starts again with the same directory and settings.
    pub fn restart(&mut self) {
        let status = self.terminate();
        assert!(status.success());
        self.spawn();
    }

    /// Waits until a log line contains `text`; returns it.
    pub async fn wait_log(&self, text: &str) -> String {
        self.wait_logs(text, 1).await
    }

    /// Waits until `n` log lines contain `text`; returns the n-th.
    pub async fn wait_logs(&self, text: &str, n: usize) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(text))
                .nth(n - 1)
            {
                return line.clone();
            }
            if start.elapsed() > DEADLINE {
                let logs = self.logs.lock().unwrap().join("\n");
                panic!("no log line with {text:?}; logs:\n{logs}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until a download has written into a temp file (`.….part`) in the cache directory,
    /// and gives its name.
    pub async fn wait_part_file(&self) -> String {
        let start = Instant::now();
        loop {
            let written = self.cached_files().into_iter().find(|n| {
                n.ends_with(".part")
                    && std::fs::metadata(self.dir.join(n)).is_ok_and(|m| m.len() > 0)
            });
            if let Some(name) = written {
                return name;
            }
            assert!(start.elapsed() < DEADLINE, "no download wrote a temp file");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Files in the cache directory other than the database.
    pub fn cached_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with("recordings.db"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < DEADLINE, "process did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let logs = self
                .logs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .join("\n");
            eprintln!("--- backend log ---\n{logs}");
        }
    }
}

/// The body of a GET to `url`, which must arrive whole.
pub async fn get_body(url: impl reqwest::IntoUrl) -> bytes::Bytes {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .unwrap()
}

/// mock-twilio with one recording of `size` bytes for call `CA…01`, and a backend in front.
pub async fn stack(size: u64) -> (MockTwilio, Recording, Backend) {
    let twilio = MockTwilio::start().await.unwrap();
    let rec = twilio.add_recording(Recording::new(
        sid("RE", 1),
        sid("CA", 1),
        MediaFormat::Mp3,
        size,
    ));
    let backend = Backend::start(&twilio);
    (twilio, rec, backend)
}

/// Waits until `n` media downloads have reached Twilio (one it holds counts: its entry is made
/// before it is answered).
pub async fn wait_media_requests(twilio: &MockTwilio, n: usize) {
    let start = Instant::now();
    while media_requests(twilio) < n {
        assert!(
            start.elapsed() < DEADLINE,
            "{} of {n} media downloads reached Twilio",
            media_requests(twilio)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How many media downloads reached Twilio.
pub fn media_requests(twilio: &MockTwilio) -> usize {
    twilio
        .journal()
        .iter()
        .filter(|e| e.path.ends_with(".mp3") || e.path.ends_with(".wav"))
        .count()
}

/// The path of one of the workspace's binaries: nextest's `NEXTEST_BIN_EXE_<name>` (right also
/// when the tests run from an archive extracted elsewhere), else the path cargo compiled in.
pub fn bin_exe(name: &str, compiled: &str) -> std::path::PathBuf {
    std::env::var_os(format!("NEXTEST_BIN_EXE_{name}"))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(compiled))
}
