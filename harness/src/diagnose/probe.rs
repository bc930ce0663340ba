//! Measuring the backend on connections of its own, bypassing nginx: how long it keeps an idle
//! keep-alive connection, and how large its response headers are.

use crate::error::HarnessError;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response read off a raw connection.
pub struct RawResponse {
    /// Its status.
    pub status: u16,
    /// The size of its head (status line and headers), bytes.
    pub head_bytes: usize,
    /// It announced `Connection: close`.
    pub closes: bool,
}

/// Sends `request` (a whole HTTP/1.1 request) on `conn` and reads one response (its head, and
/// its body by Content-Length, or to the end).
async fn exchange(conn: &mut TcpStream, request: &str) -> Result<RawResponse, String> {
    conn.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let (head_end, status, length, closes) = loop {
        let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before a response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(end)) = resp.parse(&buf) {
            let get = |name: &str| {
                resp.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
            };
            let length: Option<usize> = get("content-length").and_then(|v| v.trim().parse().ok());
            let closes = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
            break (end, resp.code.unwrap_or(0), length, closes);
        }
    };
    let want = head_end + length.unwrap_or(0);
    while buf.len() < want {
        let n = conn.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(RawResponse {
        status,
        head_bytes: head_end,
        closes,
    })
}

/// One request on a new connection to `addr`.
pub async fn request(addr: SocketAddr, request: &str) -> Result<RawResponse, HarnessError> {
    let fail = |e: String| HarnessError::Io {
        what: format!("a request straight to the backend at {addr}"),
        source: std::io::Error::other(e),
    };
    let mut conn = TcpStream::connect(addr)
        .await
        .map_err(|e| fail(e.to_string()))?;
    exchange(&mut conn, request).await.map_err(fail)
}

/// A plain GET of `path`, kept alive.
pub fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: backend\r\nUser-Agent: harness-diagnose\r\n\r\n")
}

/// How long the backend keeps an idle keep-alive connection: a request on a connection of its
/// own, then the seconds until the backend closes it. `None` when it is still open after `cap`
/// (or the backend closes every connection after its answer: `Some(0.0)`).
pub async fn idle_close(
    addr: SocketAddr,
    path: &str,
    cap: Duration,
) -> Result<Option<f64>, HarnessError> {
    let mut conn = TcpStream::connect(addr)
        .await
        .map_err(HarnessError::io(format!(
            "connect to the backend at {addr}"
        )))?;
    let resp = exchange(&mut conn, &get(path))
        .await
        .map_err(|e| HarnessError::Io {
            what: format!("GET {path} straight to the backend at {addr}"),
            source: std::io::Error::other(e),
        })?;
    if resp.closes {
        return Ok(Some(0.0));
    }
    let idle_from = Instant::now();
    let mut byte = [0u8; 1];
    match tokio::time::timeout(cap, conn.read(&mut byte)).await {
        Err(_) => Ok(None),
        Ok(_) => Ok(Some(idle_from.elapsed().as_secs_f64())),
    }
}
