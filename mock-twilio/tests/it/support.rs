//! Helpers: a raw HTTP/1.1 client that reports exactly what arrived and how the connection ended.

use base64::Engine;
use mock_twilio::MockTwilio;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a raw client saw.
#[derive(Debug)]
pub struct Raw {
    pub bytes: Vec<u8>,
    /// How reading ended: `None` for a clean EOF.
    pub error: Option<ErrorKind>,
    /// True if the read deadline passed with the connection still open.
    pub timed_out: bool,
    pub elapsed: Duration,
    /// Time until the first byte arrived.
    pub first_byte: Option<Duration>,
}

impl Raw {
    pub fn head(&self) -> String {
        let end = self
            .bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
            .unwrap_or(self.bytes.len());
        String::from_utf8_lossy(&self.bytes[..end]).into_owned()
    }

    pub fn body(&self) -> &[u8] {
        let end = self
            .bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
            .unwrap_or(self.bytes.len());
        &self.bytes[end..]
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head().lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

pub fn basic(twilio: &MockTwilio) -> String {
    let creds = format!("{}:{}", twilio.account_sid(), twilio.auth_token());
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(creds)
    )
}

/// Sends one request with `Connection: close` and reads until the connection ends or `deadline`.
pub async fn raw_get(addr: SocketAddr, path: &str, auth: Option<&str>, deadline: Duration) -> Raw {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    if let Some(a) = auth {
        req.push_str(&format!("authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let start = Instant::now();
    let mut raw = Raw {
        bytes: Vec::new(),
        error: None,
        timed_out: false,
        elapsed: Duration::ZERO,
        first_byte: None,
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => {
                raw.timed_out = true;
                break;
            }
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                raw.first_byte.get_or_insert(start.elapsed());
                raw.bytes.extend_from_slice(&buf[..n]);
            }
            Ok(Err(e)) => {
                raw.error = Some(e.kind());
                break;
            }
        }
    }
    raw.elapsed = start.elapsed();
    raw
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}
