//! `mock-twilio`: the fake Twilio API as a standalone server, driven by its admin API.

use anyhow::Context;
use clap::Parser;
use mock_twilio::MockTwilio;
use std::io::Write;
use std::net::SocketAddr;

/// A fake of Twilio's recordings REST API that injects faults on command.
///
/// Prints `listening on http://HOST:PORT` as its first line, then serves the Twilio routes
/// and an admin API under /__admin (recordings, faults, requests, reset) until stopped.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 lets the OS choose.
    #[arg(long, default_value = "127.0.0.1:0", env = "MOCK_TWILIO_BIND")]
    bind: SocketAddr,
    /// The account SID to accept (AC + 32 hex digits).
    #[arg(long, env = "TWILIO_ACCOUNT_SID", default_value = mock_twilio::TEST_ACCOUNT_SID)]
    account_sid: String,
    /// The auth token to accept.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", default_value = mock_twilio::TEST_AUTH_TOKEN, hide_env_values = true, hide_default_value = true)]
    auth_token: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !mock_twilio::is_sid(&args.account_sid, "AC") {
        anyhow::bail!(
            "--account-sid must be AC followed by 32 hex digits, got {:?}",
            args.account_sid
        );
    }
    if args.auth_token.is_empty() {
        anyhow::bail!("--auth-token must not be empty");
    }
    let twilio = MockTwilio::builder()
        .account_sid(&args.account_sid)
        .auth_token(&args.auth_token)
        .bind(args.bind)
        .start()
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", twilio.uri())?;
    // Readers may stop after the first line: what follows is best effort.
    let _ = writeln!(
        out,
        "account {} (admin API at {}/__admin)",
        twilio.account_sid(),
        twilio.uri()
    );
    let _ = out.flush();
    drop(out);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
