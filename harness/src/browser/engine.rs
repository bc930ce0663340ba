//! The three browser engines the harness drives over WebDriver, and how each one is found,
//! started and asked for a session: Chromium (`chromedriver`, headless), Firefox ESR
//! (`geckodriver`, headless) and WebKitGTK (`WebKitWebDriver` driving MiniBrowser, which has no
//! headless mode, in an Xvfb display of its own).

use crate::error::HarnessError;
use crate::process::ChildGuard;
use crate::ready::{wait_ready, Probe};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A browser engine.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Chromium (Debian's `chromium`), headless, through `chromedriver`.
    #[default]
    Chromium,
    /// Firefox ESR (Debian's `firefox-esr`), headless, through `geckodriver`.
    Firefox,
    /// WebKitGTK's MiniBrowser (Debian's `webkit2gtk-driver`) under Xvfb, through
    /// `WebKitWebDriver`: the engine of Safari.
    Webkit,
}

impl Engine {
    /// Every engine, in the order reports list them.
    pub const ALL: [Engine; 3] = [Engine::Chromium, Engine::Firefox, Engine::Webkit];

    /// Its name in scenario files, snapshots and reports.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Chromium => "chromium",
            Engine::Firefox => "firefox",
            Engine::Webkit => "webkit",
        }
    }

    /// The browsers built on this engine, for reports (what was measured is the engine as
    /// Debian ships it: Safari itself was not).
    pub fn users(self) -> &'static str {
        match self {
            Engine::Chromium => "Chromium browsers such as Chrome and Edge",
            Engine::Firefox => "Firefox",
            Engine::Webkit => "WebKit browsers such as Safari",
        }
    }

    /// How to install it (what `scripts/setup` does).
    pub fn install_hint(self) -> &'static str {
        match self {
            Engine::Chromium => {
                "install Debian's packages: `apt-get install chromium chromium-driver` (or run \
                 scripts/setup; HARNESS_CHROMIUM and HARNESS_CHROMEDRIVER point at other binaries)"
            }
            Engine::Firefox => {
                "install Debian's `firefox-esr` and build geckodriver from crates.io: \
                 `apt-get install firefox-esr && cargo install geckodriver --locked` (or run \
                 scripts/setup; HARNESS_FIREFOX and HARNESS_GECKODRIVER point at other binaries)"
            }
            Engine::Webkit => {
                "install Debian's packages: `apt-get install webkit2gtk-driver xvfb \
                 gstreamer1.0-plugins-good gstreamer1.0-libav` (or run scripts/setup; \
                 HARNESS_MINIBROWSER and HARNESS_WEBKITWEBDRIVER point at other binaries)"
            }
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Engine::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| format!("unknown browser {s:?}: chromium, firefox or webkit"))
    }
}

/// An engine's binaries.
#[derive(Debug, Clone)]
pub struct EngineTools {
    /// Which engine.
    pub engine: Engine,
    /// The browser itself (Chromium, Firefox, MiniBrowser).
    pub browser: PathBuf,
    /// Its WebDriver server.
    pub driver: PathBuf,
    /// The X server WebKit runs in (WebKit only).
    pub xvfb: Option<PathBuf>,
}

fn find_tool(env: &str, names: &[&str], extra: &[PathBuf]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    extra
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .or_else(|| names.iter().find_map(|n| crate::locate::which(n)))
}

/// Where `cargo install` puts binaries (`$CARGO_HOME/bin`, else `~/.cargo/bin`), which a
/// non-login shell may not have on its PATH.
fn cargo_bin(name: &str) -> Vec<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    home.map(|h| h.join("bin").join(name)).into_iter().collect()
}

/// MiniBrowser is not on PATH: Debian installs it under the library folder of its API version.
fn minibrowser_paths() -> Vec<PathBuf> {
    ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .flat_map(|arch| {
            ["webkit2gtk-4.1", "webkit2gtk-4.0", "webkitgtk-6.0"]
                .map(|api| PathBuf::from(format!("/usr/lib/{arch}/{api}/MiniBrowser")))
        })
        .collect()
}

/// Finds `engine`'s browser and WebDriver server (and Xvfb for WebKit): the `HARNESS_*`
/// variables named in [`Engine::install_hint`], else PATH and the places Debian installs them.
pub fn find(engine: Engine) -> Result<EngineTools, HarnessError> {
    let missing = |tool: &'static str| HarnessError::ToolMissing {
        tool,
        hint: engine.install_hint().to_string(),
    };
    // Debian's /usr/bin/chromium is a wrapper script; the binary proper is under /usr/lib.
    let (browser, driver, xvfb) = match engine {
        Engine::Chromium => (
            find_tool(
                "HARNESS_CHROMIUM",
                &["chromium", "chromium-browser", "google-chrome"],
                &[PathBuf::from("/usr/lib/chromium/chromium")],
            )
            .ok_or_else(|| missing("chromium"))?,
            find_tool("HARNESS_CHROMEDRIVER", &["chromedriver"], &[])
                .ok_or_else(|| missing("chromedriver"))?,
            None,
        ),
        Engine::Firefox => (
            find_tool("HARNESS_FIREFOX", &["firefox-esr", "firefox"], &[])
                .ok_or_else(|| missing("firefox-esr"))?,
            find_tool(
                "HARNESS_GECKODRIVER",
                &["geckodriver"],
                &cargo_bin("geckodriver"),
            )
            .ok_or_else(|| missing("geckodriver"))?,
            None,
        ),
        Engine::Webkit => (
            find_tool(
                "HARNESS_MINIBROWSER",
                &["MiniBrowser"],
                &minibrowser_paths(),
            )
            .ok_or_else(|| missing("MiniBrowser"))?,
            find_tool("HARNESS_WEBKITWEBDRIVER", &["WebKitWebDriver"], &[])
                .ok_or_else(|| missing("WebKitWebDriver"))?,
            Some(find_tool("HARNESS_XVFB", &["Xvfb"], &[]).ok_or_else(|| missing("Xvfb"))?),
        ),
    };
    Ok(EngineTools {
        engine,
        browser,
        driver,
        xvfb,
    })
}

/// Every process of a browser session (its X display, its driver and the browser the driver
/// starts) has its session's own folder in this environment variable: a session's processes
/// can be found, and found gone.
pub const SCRATCH_ENV: &str = "HARNESS_BROWSER_SCRATCH";

/// A started WebDriver server, and the X display it runs in (WebKit).
pub struct Driver {
    /// The WebDriver server (and the browser it starts, in its process group).
    pub process: ChildGuard,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Xvfb, ended after the driver (WebKit only).
    pub display: Option<ChildGuard>,
}

/// Starts Xvfb on a display number it picks itself (`-displayfd`), once it accepts clients.
async fn start_xvfb(
    xvfb: &Path,
    log: &Path,
    scratch: &Path,
) -> Result<(ChildGuard, String), HarnessError> {
    let mut cmd = Command::new(xvfb);
    cmd.args([
        "-displayfd",
        "1",
        "-screen",
        "0",
        "1280x900x24",
        "-nolisten",
        "tcp",
    ])
    .env(SCRATCH_ENV, scratch);
    let x = ChildGuard::spawn("Xvfb", cmd, log)?;
    // It writes the display's number once the display is ready.
    let ready = Probe::LogLine {
        log: x.log().clone(),
        offset: 0,
        pattern: regex::Regex::new(r"(?m)^(\d+)\n").expect("valid regex"),
    };
    let exited = || async { x.try_exit().map(|s| s.to_string()) };
    let n = wait_ready("Xvfb", &ready, exited, || x.log().tail(20)).await?;
    Ok((x, format!(":{n}")))
}

/// A free port on 127.0.0.1 for a driver that cannot pick its own (WebKitWebDriver): taken from
/// the OS and released; a driver that then finds it taken exits, and is started again.
fn free_port() -> Result<u16, HarnessError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(HarnessError::io("find a free port"))
}

/// The command that starts `tools`' driver, and the log line that announces its port (`None`:
/// the port is chosen here, and readiness is a connect).
fn driver_command(
    tools: &EngineTools,
    scratch: &Path,
) -> Result<(Command, Option<regex::Regex>, u16), HarnessError> {
    let mut cmd = Command::new(&tools.driver);
    cmd.env(SCRATCH_ENV, scratch);
    let re = |p: &str| Some(regex::Regex::new(p).expect("valid regex"));
    Ok(match tools.engine {
        Engine::Chromium => {
            cmd.arg("--port=0");
            (cmd, re(r"started successfully on port (\d+)\."), 0)
        }
        Engine::Firefox => {
            // Firefox's profile is made in TMPDIR: the browser's own folder, removed with it.
            // System access: a play ends with privileged script (see `fresh.rs`).
            cmd.args([
                "--port",
                "0",
                "--websocket-port",
                "0",
                "--allow-system-access",
            ])
            .env("TMPDIR", scratch);
            (cmd, re(r"Listening on [^\s]*:(\d+)"), 0)
        }
        Engine::Webkit => {
            let port = free_port()?;
            cmd.arg(format!("--port={port}"));
            for (k, v) in [("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config")] {
                cmd.env(k, scratch.join(v));
            }
            (cmd, None, port)
        }
    })
}

/// Starts `tools`' WebDriver server on a port of its own (and, for WebKit, its X display), and
/// returns once it accepts connections. A driver may find its port taken (chromedriver binds
/// the IPv4 port the OS gave it on IPv6 too; WebKitWebDriver is given a port that was free a
/// moment before): a failed start is tried again, on another port, up to three times. Logs go
/// to `log_dir/{driver}-N-ATTEMPT.log`.
pub async fn start_driver(
    tools: &EngineTools,
    log_dir: &Path,
    scratch: &Path,
) -> Result<Driver, HarnessError> {
    // One log per launch: a stack plays several times.
    static LAUNCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let name = tools.driver.file_name().map_or_else(
        || "webdriver".to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    let display = match &tools.xvfb {
        Some(xvfb) => {
            let log = log_dir.join(format!("xvfb-{n}.log"));
            Some(start_xvfb(xvfb, &log, scratch).await?)
        }
        None => None,
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let log = log_dir.join(format!("{name}-{n}-{attempt}.log"));
        let (mut cmd, announces, chosen) = driver_command(tools, scratch)?;
        if let Some((_, d)) = &display {
            cmd.env("DISPLAY", d);
        }
        let driver = ChildGuard::spawn(&name, cmd, &log)?;
        let exited = || async { driver.try_exit().map(|s| s.to_string()) };
        let port = match announces {
            None => chosen,
            // Only once the number is complete (followed by its full stop or line's end).
            Some(pattern) => {
                let announced = Probe::LogLine {
                    log: driver.log().clone(),
                    offset: 0,
                    pattern,
                };
                match wait_ready(&name, &announced, exited, || driver.log().tail(20)).await {
                    Ok(port) => port.parse::<u16>().unwrap_or(0),
                    Err(e) if attempt >= 3 => return Err(e),
                    Err(_) => continue,
                }
            }
        };
        // It announces the port a moment before it accepts on it.
        let accepts = Probe::Connect {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        };
        match wait_ready(&name, &accepts, exited, || driver.log().tail(20)).await {
            Ok(_) => {}
            Err(e) if attempt >= 3 => return Err(e),
            Err(_) => continue,
        }
        return Ok(Driver {
            process: driver,
            port,
            display: display.map(|(x, _)| x),
        });
    }
}

/// The WebDriver capabilities of a session of `tools`' engine, its scratch files in `scratch`.
pub fn capabilities(
    tools: &EngineTools,
    scratch: &Path,
) -> serde_json::Map<String, serde_json::Value> {
    let (name, key, options) = match tools.engine {
        Engine::Chromium => {
            let mut args = vec![
                "--headless=new".to_string(),
                "--autoplay-policy=no-user-gesture-required".to_string(),
                "--mute-audio".to_string(),
                "--disable-gpu".to_string(),
                "--disable-dev-shm-usage".to_string(),
                "--no-first-run".to_string(),
                "--disable-background-networking".to_string(),
                "--window-size=1280,900".to_string(),
                format!("--user-data-dir={}", scratch.display()),
            ];
            // Chromium refuses to start as root with its sandbox on; only then is it off.
            if nix::unistd::geteuid().is_root() {
                args.push("--no-sandbox".to_string());
            }
            let options = serde_json::json!({ "binary": tools.browser, "args": args });
            ("chrome", "goog:chromeOptions", options)
        }
        Engine::Firefox => {
            // Without an audio device Firefox fails every media element (MediaError 3) unless
            // it plays into a mock audio context.
            let options = serde_json::json!({
                "binary": tools.browser,
                "args": ["-headless"],
                "prefs": {
                    "media.cubeb.force_mock_context": true,
                    "media.autoplay.default": 0,
                    "media.autoplay.blocking_policy": 0,
                },
            });
            ("firefox", "moz:firefoxOptions", options)
        }
        Engine::Webkit => {
            let options = serde_json::json!({
                "binary": tools.browser,
                "args": ["--automation", "--autoplay-policy=allow"],
            });
            ("MiniBrowser", "webkitgtk:browserOptions", options)
        }
    };
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), name.into());
    caps.insert(key.into(), options);
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engines_parse_by_name_and_refuse_others_with_the_choices() {
        for e in Engine::ALL {
            assert_eq!(e.name().parse::<Engine>(), Ok(e));
        }
        let err = "safari".parse::<Engine>().unwrap_err();
        assert!(err.contains("chromium, firefox or webkit"), "{err}");
    }

    #[test]
    fn firefox_plays_into_a_mock_audio_context() {
        let tools = EngineTools {
            engine: Engine::Firefox,
            browser: "/usr/bin/firefox-esr".into(),
            driver: "geckodriver".into(),
            xvfb: None,
        };
        let caps = capabilities(&tools, Path::new("/tmp/x"));
        assert_eq!(
            caps["moz:firefoxOptions"]["prefs"]["media.cubeb.force_mock_context"],
            true
        );
        assert_eq!(caps["moz:firefoxOptions"]["args"][0], "-headless");
    }
}
