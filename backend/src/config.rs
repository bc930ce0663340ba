//! Configuration: environment variables (the contract), or the same names as kebab-case flags.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the service reads from its environment.
#[derive(Parser, Clone)]
#[command(
    name = "recordings-backend",
    version,
    about = "Serves Twilio call recordings with HTTP Range support"
)]
pub struct Config {
    /// Address to listen on (port 0: the OS chooses; the chosen address is logged).
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,
    /// Twilio account SID.
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: String,
    /// Twilio auth token (never logged).
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: String,
    /// Base URL of Twilio's REST API.
    #[arg(
        long,
        env = "TWILIO_API_BASE",
        default_value = "https://api.twilio.com"
    )]
    pub twilio_api_base: String,
    /// Cache directory for downloaded recordings.
    #[arg(long, env = "RECORDINGS_DIR", default_value = "recordings")]
    pub recordings_dir: PathBuf,
    /// SQLite database file (default: `recordings.db` inside RECORDINGS_DIR).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// When set, `/api/` requires `Authorization: Bearer <token>`.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// External base URL Twilio calls (to check webhook signatures behind a proxy).
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Seconds an idle client keep-alive connection is kept open.
    #[arg(long, env = "KEEP_ALIVE_TIMEOUT", default_value_t = 75.0)]
    pub keep_alive_timeout: f64,
    /// Seconds to drain in-flight responses on SIGTERM.
    #[arg(long, env = "GRACEFUL_SHUTDOWN_TIMEOUT", default_value_t = 30.0)]
    pub graceful_shutdown_timeout: f64,
    /// Downloads slower than this many seconds log a warning.
    #[arg(long, env = "SLOW_DOWNLOAD_SECS", default_value_t = 10.0)]
    pub slow_download_secs: f64,
    /// Budget in seconds for one Twilio download (retries included) and for any stall in its body.
    #[arg(long, env = "TWILIO_TIMEOUT_SECS", default_value_t = 30.0)]
    pub twilio_timeout_secs: f64,
    /// When set (e.g. `/_recordings/`), a cached recording is handed to nginx to send itself:
    /// `X-Accel-Redirect: {prefix}{recording}.{ext}` to an `internal` location aliasing
    /// RECORDINGS_DIR. A Range nginx would answer wrongly (invalid syntax, several ranges) and
    /// every cache miss (a request that met this instance's download, even one finished before
    /// the answer) are still served by the backend.
    #[arg(long, env = "ACCEL_REDIRECT")]
    pub accel_redirect: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("twilio_account_sid", &self.twilio_account_sid)
            .field("twilio_auth_token", &"<redacted>")
            .field("twilio_api_base", &self.twilio_api_base)
            .field("recordings_dir", &self.recordings_dir)
            .field("database_url", &self.database_url)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("public_url", &self.public_url)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("graceful_shutdown_timeout", &self.graceful_shutdown_timeout)
            .field("slow_download_secs", &self.slow_download_secs)
            .field("twilio_timeout_secs", &self.twilio_timeout_secs)
            .field("accel_redirect", &self.accel_redirect)
            .finish()
    }
}

fn secs(v: f64) -> Duration {
    Duration::from_secs_f64(v.max(0.0))
}

impl Config {
    /// The SQLite file path.
    pub fn database_path(&self) -> PathBuf {
        match &self.database_url {
            Some(url) => PathBuf::from(
                url.strip_prefix("sqlite://")
                    .or_else(|| url.strip_prefix("sqlite:"))
                    .unwrap_or(url),
            ),
            None => self.recordings_dir.join("recordings.db"),
        }
    }

    /// Idle keep-alive timeout.
    pub fn keep_alive(&self) -> Duration {
        secs(self.keep_alive_timeout)
    }

    /// Drain time on SIGTERM.
    pub fn grace(&self) -> Duration {
        secs(self.graceful_shutdown_timeout)
    }

    /// Slow-download threshold.
    pub fn slow_download(&self) -> Duration {
        secs(self.slow_download_secs)
    }

    /// Twilio download budget.
    pub fn twilio_timeout(&self) -> Duration {
        secs(self.twilio_timeout_secs)
    }

    /// Checks values that clap cannot; the message names the variable.
    pub fn validate(&self) -> Result<(), String> {
        if !crate::sid::is_sid(&self.twilio_account_sid, "AC") {
            return Err("TWILIO_ACCOUNT_SID must be AC followed by 32 hex digits".into());
        }
        if self.twilio_auth_token.is_empty() {
            return Err("TWILIO_AUTH_TOKEN must not be empty".into());
        }
        for (name, v) in [
            ("KEEP_ALIVE_TIMEOUT", self.keep_alive_timeout),
            ("GRACEFUL_SHUTDOWN_TIMEOUT", self.graceful_shutdown_timeout),
            ("SLOW_DOWNLOAD_SECS", self.slow_download_secs),
            ("TWILIO_TIMEOUT_SECS", self.twilio_timeout_secs),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!(
                    "{name} must be a positive number of seconds, got {v}"
                ));
            }
        }
        if !(self.twilio_api_base.starts_with("http://")
            || self.twilio_api_base.starts_with("https://"))
        {
            return Err(format!(
                "TWILIO_API_BASE must be an http(s) URL, got {:?}",
                self.twilio_api_base
            ));
        }
        Ok(())
    }
}
