//! [testcontainers](https://docs.rs/testcontainers) images of the stack's parts, for a team's own
//! `cargo test`: nginx with a config, the reference backend, and mock-twilio. They follow
//! testcontainers' module conventions: a fixed tag, a `Default` that runs, builder methods, and
//! `WaitFor` readiness. No registry is needed: [`build`] makes the images offline (as
//! `harness images build` does), and testcontainers uses a local image without pulling it.
//!
//! ```no_run
//! use harness::testcontainers_images::{build, MockTwilio, Nginx, RecordingsBackend};
//! use testcontainers::{core::Host, runners::AsyncRunner, ImageExt};
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! build().await?;
//! // A network of one's own: the containers' addresses are read from it.
//! let twilio = MockTwilio::default().with_network("my-test").start().await?;
//! let twilio_ip = twilio.get_bridge_ip_address().await?;
//! let backend = RecordingsBackend::default()
//!     .with_twilio_api_base(format!("http://{twilio_ip}:{}", MockTwilio::PORT))
//!     .with_network("my-test")
//!     .start()
//!     .await?;
//! let nginx = Nginx::default()
//!     .with_host("backend", Host::Addr(backend.get_bridge_ip_address().await?))
//!     .with_network("my-test")
//!     .start()
//!     .await?;
//! let port = nginx.get_host_port_ipv4(Nginx::PORT).await?;
//! // http://127.0.0.1:{port}/api/calls/{call_sid}/download
//! # Ok(()) }
//! ```

use crate::error::HarnessError;
use crate::images::{self, NGINX_REPOSITORY, STABLE_TAG};
use crate::nginx::NginxLine;
use crate::spec::Profile;
use std::borrow::Cow;
use testcontainers::core::{ContainerPort, CopyToContainer, WaitFor};
use testcontainers::Image;

/// Builds the images these types name where they are missing (nginx 1.22, the backend,
/// mock-twilio), offline, as `harness images build --testcontainers` does.
pub async fn build() -> Result<images::TestcontainersImages, HarnessError> {
    build_lines(&[NginxLine::DEFAULT]).await
}

/// Like [`build`], with nginx of `lines`.
pub async fn build_lines(
    lines: &[NginxLine],
) -> Result<images::TestcontainersImages, HarnessError> {
    images::build_testcontainers_images(lines, &|_| {}).await
}

/// nginx of one line (1.22 by default) running a config: the `fixed` profile's
/// `docker/nginx.conf` by default, which proxies to `backend:8000` (give the backend's address
/// with `ImageExt::with_host("backend", …)`). Ready when its workers have started.
#[derive(Debug, Clone)]
pub struct Nginx {
    line: NginxLine,
    config: Vec<CopyToContainer>,
}

impl Nginx {
    /// The port nginx listens on in the carried configs.
    pub const PORT: u16 = 80;

    /// nginx of `line` (1.22, 1.26 or 1.30).
    pub fn with_line(mut self, line: NginxLine) -> Self {
        self.line = line;
        self
    }

    /// The config of `profile` as the harness carries it (`docker/nginx.legacy.conf`, …).
    pub fn with_profile(self, profile: Profile) -> Self {
        let text = crate::assets::nginx_config(profile.config_file())
            .expect("every profile's config is carried");
        self.with_config(text)
    }

    /// A config of one's own, as `/etc/nginx/nginx.conf`.
    pub fn with_config(mut self, text: impl Into<String>) -> Self {
        let bytes = text.into().into_bytes();
        self.config = vec![CopyToContainer::new(bytes, "/etc/nginx/nginx.conf")];
        self
    }
}

impl Default for Nginx {
    fn default() -> Self {
        Nginx {
            line: NginxLine::DEFAULT,
            config: Vec::new(),
        }
        .with_profile(Profile::Fixed)
    }
}

impl Image for Nginx {
    fn name(&self) -> &str {
        NGINX_REPOSITORY
    }

    fn tag(&self) -> &str {
        self.line.name()
    }

    fn ready_conditions(&self) -> Vec<WaitFor> {
        // Listening sockets are open before the workers start.
        vec![WaitFor::message_on_stderr("start worker process")]
    }

    fn cmd(&self) -> impl IntoIterator<Item = impl Into<Cow<'_, str>>> {
        // The config's own error_log stays; notices also go to stderr, for readiness.
        ["nginx", "-g", "daemon off; error_log stderr notice;"]
    }

    fn copy_to_sources(&self) -> impl IntoIterator<Item = &CopyToContainer> {
        &self.config
    }

    fn expose_ports(&self) -> &[ContainerPort] {
        &[ContainerPort::Tcp(Nginx::PORT)]
    }
}

/// The reference backend (`recordings-backend`), with mock-twilio's test account; point it at a
/// Twilio with [`RecordingsBackend::with_twilio_api_base`]. Ready when it listens.
#[derive(Debug, Clone)]
pub struct RecordingsBackend {
    env: Vec<(String, String)>,
}

impl RecordingsBackend {
    /// The port it listens on.
    pub const PORT: u16 = 8000;

    /// Where it fetches recordings from (`TWILIO_API_BASE`), e.g. a [`MockTwilio`]'s address.
    pub fn with_twilio_api_base(self, url: impl Into<String>) -> Self {
        self.with_env("TWILIO_API_BASE", url)
    }

    /// Any of its settings (`KEEP_ALIVE_TIMEOUT`, `PUBLIC_URL`, …; see its README).
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let name = name.into();
        self.env.retain(|(n, _)| *n != name);
        self.env.push((name, value.into()));
        self
    }
}

impl Default for RecordingsBackend {
    fn default() -> Self {
        RecordingsBackend { env: Vec::new() }
            .with_env("TWILIO_ACCOUNT_SID", mock_twilio::TEST_ACCOUNT_SID)
            .with_env("TWILIO_AUTH_TOKEN", mock_twilio::TEST_AUTH_TOKEN)
    }
}

impl Image for RecordingsBackend {
    fn name(&self) -> &str {
        "recordings-harness/backend"
    }

    fn tag(&self) -> &str {
        STABLE_TAG
    }

    fn ready_conditions(&self) -> Vec<WaitFor> {
        vec![WaitFor::message_on_either_std("listening on")]
    }

    fn env_vars(
        &self,
    ) -> impl IntoIterator<Item = (impl Into<Cow<'_, str>>, impl Into<Cow<'_, str>>)> {
        self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn expose_ports(&self) -> &[ContainerPort] {
        &[ContainerPort::Tcp(RecordingsBackend::PORT)]
    }
}

/// mock-twilio, the Twilio fake, with its test account (`mock_twilio::TEST_ACCOUNT_SID`). Add
/// recordings and arm faults through its admin API (`/__admin`, see mock-twilio's README).
#[derive(Debug, Clone, Default)]
pub struct MockTwilio {
    _private: (),
}

impl MockTwilio {
    /// The port it listens on.
    pub const PORT: u16 = 8080;
}

impl Image for MockTwilio {
    fn name(&self) -> &str {
        "recordings-harness/mock-twilio"
    }

    fn tag(&self) -> &str {
        STABLE_TAG
    }

    fn ready_conditions(&self) -> Vec<WaitFor> {
        vec![WaitFor::message_on_stdout("listening on")]
    }

    fn expose_ports(&self) -> &[ContainerPort] {
        &[ContainerPort::Tcp(MockTwilio::PORT)]
    }
}
