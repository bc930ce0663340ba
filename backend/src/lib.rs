//! The recordings service: nginx proxies `/api/` to it; it fetches call recordings from
//! Twilio's REST API, caches them on disk and serves them with HTTP Range support.
//!
//! Configured by environment ([`Config`]); see the README for the contract. Run it as the
//! `recordings-backend` binary, or embed it:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use clap::Parser;
//! let config = recordings_backend::Config::parse_from([
//!     "recordings-backend",
//!     "--twilio-account-sid", "AC00000000000000000000000000000001",
//!     "--twilio-auth-token", "secret",
//!     "--recordings-dir", "/tmp/recordings",
//!     "--bind", "127.0.0.1:0",
//! ]);
//! let server = recordings_backend::Server::bind(config).await?;
//! println!("listening on {}", server.local_addr());
//! server.run(std::future::pending()).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod cache;
pub mod config;
pub mod error;
pub mod lock_file;
pub mod range;
mod routes;
pub mod sid;
pub mod store;
pub mod twilio;

pub use config::Config;
pub use error::AppError;

use anyhow::Context;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Shared state of the running service.
pub struct App {
    /// The configuration it started with.
    pub config: Config,
    /// Call → recording.
    pub store: store::Store,
    /// Twilio client.
    pub twilio: Arc<twilio::Twilio>,
    /// Recordings cache and downloads.
    pub cache: Arc<cache::Cache>,
    /// One Twilio look-up per unknown call at a time, however many requests want it.
    pub lookups: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A bound, not yet serving, service.
pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
}

impl Server {
    /// Validates the config, opens the database and the cache, binds the listener.
    pub async fn bind(config: Config) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        std::fs::create_dir_all(&config.recordings_dir).with_context(|| {
            format!(
                "cannot create RECORDINGS_DIR {}",
                config.recordings_dir.display()
            )
        })?;
        let db = config.database_path();
        let store = store::Store::open(&db)
            .with_context(|| format!("cannot open database {}", db.display()))?;
        let twilio = Arc::new(twilio::Twilio::new(
            &config.twilio_api_base,
            &config.twilio_account_sid,
            &config.twilio_auth_token,
            config.twilio_timeout(),
        ));
        let cache = Arc::new(
            cache::Cache::new(
                &config.recordings_dir,
                twilio.clone(),
                config.slow_download(),
            )
            .with_context(|| {
                format!(
                    "cannot use RECORDINGS_DIR {}",
                    config.recordings_dir.display()
                )
            })?,
        );
        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.bind))?;
        Ok(Server {
            listener,
            app: Arc::new(App {
                config,
                store,
                twilio,
                cache,
                lookups: Default::default(),
            }),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight responses
    /// finish for up to `GRACEFUL_SHUTDOWN_TIMEOUT` and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Server { listener, app } = self;
        let router = routes::router(app.clone());
        let graceful = GracefulShutdown::new();
        let keep_alive = app.config.keep_alive();
        tokio::pin!(shutdown);
        loop {
            let (stream, _) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                },
            };
            stream.set_nodelay(true).ok();
            let service = TowerToHyperService::new(router.clone());
            // hyper's header-read timer runs from the moment a connection waits for its next
            // request, so it is exactly the idle keep-alive timeout. hyper queues a response
            // body's chunks up to max_buf_size (about 400 kB by default) before it waits for
            // the socket: one 64 kB chunk at a time keeps a backend serving 200 concurrent
            // cached downloads under 64 MB resident (bench/RESULTS.md: 43 MB, 116 before).
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(keep_alive)
                .keep_alive(true)
                .max_buf_size(cache::CHUNK as usize)
                .serve_connection(TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        drop(listener);
        let grace = app.config.grace();
        tracing::info!(
            grace_secs = grace.as_secs_f64(),
            "shutting down: draining in-flight responses"
        );
        match tokio::time::timeout(grace, graceful.shutdown()).await {
            Ok(()) => tracing::info!("all connections closed"),
            Err(_) => tracing::warn!("grace period over: closing remaining connections"),
        }
        Ok(())
    }
}
