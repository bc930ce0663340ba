//! The connection-level fault layer: a small HTTP/1.1 proxy that reads each request,
//! asks its [`FaultSet`] for a [`Plan`], and then forwards, delays, throttles, cuts,
//! resets or hangs at the byte level, which an HTTP server library cannot do.
//!
//! Each client connection gets exactly one upstream connection, opened when the client
//! connects and closed when the upstream closes it, so the upstream's own keep-alive
//! behaviour (an idle timeout, `Connection: close`) reaches the client unchanged. The same
//! proxy stands in front of wiremock (mock-twilio) and between nginx and a backend (the
//! harness's hop fault point).

use crate::fault::{Fault, FaultSet, Plan};
use crate::journal::{Journal, JournalEntry};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A body the proxy generates itself, a piece at a time, instead of forwarding it: the
/// upstream (wiremock, whose bodies live in memory) only names it.
pub trait GeneratedBody: Send + Sync {
    /// Its length in bytes.
    fn len(&self) -> u64;
    /// True when it has no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes the bytes from `offset` into `buf` (`offset + buf.len() <= len()`).
    fn fill(&self, offset: u64, buf: &mut [u8]);
}

/// Where generated bodies come from: the upstream names one in a private response header,
/// which the proxy never passes on.
pub trait BodySource: Send + Sync {
    /// The private header's name (lowercase).
    fn header(&self) -> &'static str;
    /// The body the header's value names, if it names one.
    fn body(&self, value: &str) -> Option<Box<dyn GeneratedBody>>;
}

/// Builds the body of a `status` fault: `(content type, body)`.
pub type ErrorBody = fn(u16) -> (&'static str, Vec<u8>);

/// Classifies a request's `Authorization` header (`valid`, `invalid`, `missing`) for the journal.
pub type AuthClassifier = Arc<dyn Fn(Option<&str>) -> String + Send + Sync>;

/// How a [`FaultProxy`] behaves.
#[derive(Clone)]
pub struct ProxyConfig {
    /// Where requests are forwarded.
    pub upstream: SocketAddr,
    /// Paths starting with this prefix are forwarded untouched and not journaled.
    pub internal_prefix: Option<String>,
    /// Classifies a request's `Authorization` header for the journal.
    pub auth: Option<AuthClassifier>,
    /// Body of `status` faults.
    pub error_body: ErrorBody,
    /// Generate bodies where the upstream names one (mock-twilio's media).
    pub generated: Option<Arc<dyn BodySource>>,
}

impl ProxyConfig {
    /// A transparent proxy to `upstream` with plain JSON error bodies.
    pub fn new(upstream: SocketAddr) -> Self {
        ProxyConfig {
            upstream,
            internal_prefix: None,
            auth: None,
            error_body: plain_error_body,
            generated: None,
        }
    }
}

fn plain_error_body(status: u16) -> (&'static str, Vec<u8>) {
    let body = serde_json::json!({ "error": "injected fault", "status": status });
    ("application/json", body.to_string().into_bytes())
}

/// A running fault proxy; it stops (and drops every connection) when dropped.
#[must_use = "the proxy stops when dropped"]
pub struct FaultProxy {
    addr: SocketAddr,
    faults: Arc<FaultSet>,
    journal: Arc<Journal>,
    connections: Arc<std::sync::atomic::AtomicU64>,
    cancel: CancellationToken,
    /// Stops only the accept loop (its listener closes); connections carry on.
    accepting: CancellationToken,
    /// The accept loop (it owns the listener).
    acceptor: TaskTracker,
    tasks: TaskTracker,
}

impl FaultProxy {
    /// Binds `bind` (use port 0 to let the OS choose) and starts serving.
    pub async fn start(bind: SocketAddr, config: ProxyConfig) -> std::io::Result<Self> {
        Self::start_with(bind, config, Arc::default(), Arc::default()).await
    }

    /// Like [`FaultProxy::start`], sharing a fault set and journal owned elsewhere.
    pub async fn start_with(
        bind: SocketAddr,
        config: ProxyConfig,
        faults: Arc<FaultSet>,
        journal: Arc<Journal>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let shared = Arc::new(Shared {
            config,
            faults: faults.clone(),
            journal: journal.clone(),
        });
        let token = cancel.clone();
        let accepting = cancel.child_token();
        let stop_accepting = accepting.clone();
        let connections: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let counter = connections.clone();
        let tasks = TaskTracker::new();
        let tracker = tasks.clone();
        let acceptor = TaskTracker::new();
        acceptor.spawn(async move {
            let serve = |stream: TcpStream| {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let shared = shared.clone();
                let token = token.clone();
                tracker.spawn(async move {
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = serve_connection(stream, shared) => {}
                    }
                });
            };
            loop {
                let accepted = tokio::select! {
                    _ = stop_accepting.cancelled() => break,
                    a = listener.accept() => a,
                };
                if let Ok((stream, _)) = accepted {
                    serve(stream);
                }
            }
            // Connections the kernel completed but nobody accepted yet would be reset when the
            // listener closes, after their client sent a request: serve them instead.
            let Ok(listener) = listener.into_std() else {
                return;
            };
            while let Ok((stream, _)) = listener.accept() {
                let stream = stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream));
                if let Ok(stream) = stream {
                    serve(stream);
                }
            }
        });
        Ok(FaultProxy {
            addr,
            faults,
            journal,
            connections,
            cancel,
            accepting,
            acceptor,
            tasks,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The fault rules of this point.
    pub fn faults(&self) -> &Arc<FaultSet> {
        &self.faults
    }

    /// Every request seen.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// How many client connections it has accepted.
    pub fn connections(&self) -> u64 {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl FaultProxy {
    /// Stops accepting: its listener closes (connects are refused from then on) before this
    /// returns; the connections it has carry on until they end or [`FaultProxy::shutdown`].
    pub async fn stop_accepting(&self) {
        self.accepting.cancel();
        self.acceptor.close();
        self.acceptor.wait().await;
    }

    /// Stops accepting, gives the connections it has up to `deadline` to end by themselves
    /// (one whose upstream closed still forwards what the upstream sent before it did), then
    /// closes the rest, and returns once they are closed.
    pub async fn finish(self, deadline: Duration) {
        self.stop_accepting().await;
        self.tasks.close();
        let _ = tokio::time::timeout(deadline, self.tasks.wait()).await;
        self.shutdown().await;
    }

    /// Stops: closes the listener and every connection, and returns once they are closed.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.acceptor.close();
        self.acceptor.wait().await;
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct Shared {
    config: ProxyConfig,
    faults: Arc<FaultSet>,
    journal: Arc<Journal>,
}

struct Head {
    method: String,
    path: String,
    http10: bool,
    headers: Vec<(String, Vec<u8>)>,
    content_length: usize,
    chunked: bool,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn wants_close(&self) -> bool {
        let conn = self.header("connection").unwrap_or("");
        self.http10 && !conn.eq_ignore_ascii_case("keep-alive")
            || conn
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
    }
}

const MAX_HEAD: usize = 64 * 1024;

async fn read_head(r: &mut BufReader<TcpStream>, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.clear();
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return if buf.is_empty() {
                Ok(false)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        let old = buf.len();
        buf.extend_from_slice(avail);
        let from = old.saturating_sub(3);
        if let Some(pos) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + pos + 4;
            r.consume(end - old);
            buf.truncate(end);
            return Ok(true);
        }
        let n = buf.len() - old;
        r.consume(n);
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
    }
}

fn parse_head(buf: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    let mut head = Head {
        method: req.method?.to_string(),
        path: req.path?.to_string(),
        http10: req.version == Some(0),
        headers,
        content_length: 0,
        chunked: false,
    };
    head.content_length = head
        .header("content-length")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    head.chunked = head
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    Some(head)
}

/// Hop-by-hop headers that the proxy re-creates itself.
fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "proxy-connection",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

async fn connect_upstream(addr: SocketAddr) -> Option<(SendRequest<Full<Bytes>>, Arc<Notify>)> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    let closed = Arc::new(Notify::new());
    let signal = closed.clone();
    tokio::spawn(async move {
        let _ = conn.await;
        signal.notify_one();
    });
    Some((sender, closed))
}

/// This client connection's upstream connection, and what the fault layer knows of it.
struct Upstream {
    sender: SendRequest<Full<Bytes>>,
    closed: Arc<Notify>,
    /// The upstream closed it while it was idle, and the client was not told (only while a
    /// keep-alive race is armed).
    stale: bool,
}

impl Upstream {
    async fn connect(addr: SocketAddr) -> Option<Upstream> {
        let (sender, closed) = connect_upstream(addr).await?;
        Some(Upstream {
            sender,
            closed,
            stale: false,
        })
    }
}

/// What a connection does after a request.
enum Read {
    Request(Head, Vec<u8>),
    /// The client closed, sent something unreadable (already answered), or the upstream's
    /// idle close was passed on.
    Done,
}

/// Reads the next request head and body, passing the upstream's idle close on at once (as a
/// network would) unless a keep-alive race is armed, which keeps it from the client.
async fn next_request(
    conn: &mut BufReader<TcpStream>,
    buf: &mut Vec<u8>,
    upstream: &mut Upstream,
    shared: &Shared,
    last_request: Option<Instant>,
) -> Read {
    let got = loop {
        tokio::select! {
            r = read_head(conn, buf) => break r,
            _ = upstream.closed.notified(), if !upstream.stale => {
                if shared.faults.has_armed(|f| matches!(f, Fault::KeepaliveRace)) {
                    upstream.stale = true;
                    shared.journal.note_held_close(last_request);
                } else {
                    break Ok(false);
                }
            }
        }
    };
    let Ok(true) = got else { return Read::Done };
    let Some(head) = parse_head(buf) else {
        let _ = write_simple(conn.get_mut(), 400, "text/plain", b"bad request\n", true).await;
        return Read::Done;
    };
    if head.chunked {
        let text = b"chunked request bodies are not supported by the fault proxy\n";
        let _ = write_simple(conn.get_mut(), 411, "text/plain", text, true).await;
        return Read::Done;
    }
    let mut body = vec![0; head.content_length];
    if conn.read_exact(&mut body).await.is_err() {
        return Read::Done;
    }
    Read::Request(head, body)
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    stream.set_nodelay(true).ok();
    let Some(mut upstream) = Upstream::connect(shared.config.upstream).await else {
        // Nothing to forward to: refuse the way a dead server's port would.
        reset(stream);
        return;
    };
    let mut conn = BufReader::with_capacity(16 * 1024, stream);
    let mut buf = Vec::with_capacity(4096);
    let mut last_request = None;
    while let Read::Request(head, body) =
        next_request(&mut conn, &mut buf, &mut upstream, &shared, last_request).await
    {
        let internal = shared
            .config
            .internal_prefix
            .as_deref()
            .is_some_and(|p| head.path.starts_with(p));
        let plan = if internal {
            Plan::default()
        } else {
            shared.faults.plan(&head.method, &head.path, upstream.stale)
        };
        if upstream.stale && !matches!(plan.terminal, Some(Fault::KeepaliveRace)) {
            // The race did not fire for this request: carry on over a fresh upstream connection.
            match Upstream::connect(shared.config.upstream).await {
                Some(fresh) => upstream = fresh,
                None => break,
            }
        }
        let progress = Progress {
            journal: &shared.journal,
            seq: (!internal).then(|| shared.journal.push(journal_entry(&shared, &head, &plan))),
        };
        // Taken after the push (for a journaled request): no earlier than its arrival there.
        last_request = Some(Instant::now());
        let result = handle(
            &mut conn,
            &mut upstream.sender,
            &shared,
            &head,
            body,
            &plan,
            &progress,
        )
        .await;
        if let Some((status, sent)) = result.sent {
            progress.update(|e| {
                e.status = Some(status);
                e.body_bytes = sent;
            });
        }
        // The request ends (its progress is dropped) before the client can learn of it,
        // except for a hang, which ends when the client gives up.
        if let Some(seq) = progress.seq {
            if !matches!(result.next, Next::KeepAlive) || head.wants_close() {
                shared.journal.note_connection_end(seq, head.wants_close());
            }
        }
        match result.next {
            Next::KeepAlive if !head.wants_close() => continue,
            Next::Reset => {
                drop(progress);
                reset(conn.into_inner());
                return;
            }
            Next::Hang => {
                hang(conn).await;
                return;
            }
            _ => break,
        }
    }
    let mut stream = conn.into_inner();
    let _ = stream.shutdown().await;
}

/// The journal's entry for a request, made before it is answered (its status is filled in as
/// soon as the head is sent, so an observer that has seen the response also sees the entry).
fn journal_entry(shared: &Shared, head: &Head, plan: &Plan) -> JournalEntry {
    JournalEntry {
        seq: 0,
        method: head.method.clone(),
        path: head.path.clone(),
        range: head.header("range").map(str::to_string),
        auth: shared
            .config
            .auth
            .as_ref()
            .map(|classify| classify(head.header("authorization"))),
        faults: plan.fired.iter().map(|s| s.to_string()).collect(),
        status: None,
        body_bytes: 0,
    }
}

/// One request's progress, told to the journal: its status once the head goes out, every
/// write of its response (any may be the last), and its end, when this is dropped.
struct Progress<'a> {
    journal: &'a Journal,
    /// Its journal entry; `None` for requests that are not journaled.
    seq: Option<u64>,
}

impl Progress<'_> {
    fn update(&self, change: impl FnOnce(&mut JournalEntry)) {
        if let Some(seq) = self.seq {
            self.journal.update(seq, change);
        }
    }

    fn head(&self, status: u16) {
        self.update(|e| e.status = Some(status));
    }

    fn writing(&self) {
        if let Some(seq) = self.seq {
            self.journal.writing(seq);
        }
    }
}

impl Drop for Progress<'_> {
    fn drop(&mut self) {
        if let Some(seq) = self.seq {
            self.journal.end(seq);
        }
    }
}

enum Next {
    KeepAlive,
    Close,
    Reset,
    Hang,
}

struct Handled {
    /// Status and body bytes sent, when a response was sent.
    sent: Option<(u16, u64)>,
    next: Next,
}

impl Handled {
    fn no_response(next: Next) -> Self {
        Handled { sent: None, next }
    }
}

fn reset(stream: TcpStream) {
    // SO_LINGER 0: close() sends RST instead of FIN.
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn hang(mut conn: BufReader<TcpStream>) {
    let mut sink = [0u8; 4096];
    while let Ok(n) = conn.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

async fn handle(
    conn: &mut BufReader<TcpStream>,
    upstream: &mut SendRequest<Full<Bytes>>,
    shared: &Shared,
    head: &Head,
    body: Vec<u8>,
    plan: &Plan,
    progress: &Progress<'_>,
) -> Handled {
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    match &plan.terminal {
        Some(Fault::Reset) => Handled::no_response(Next::Reset),
        Some(Fault::Hang) => Handled::no_response(Next::Hang),
        Some(Fault::KeepaliveRace) => Handled::no_response(Next::Close),
        Some(Fault::Garbage) => {
            progress.writing();
            let garbage = b"\x16\x03\x01garbage: this is not HTTP \xff\xfe\x00\r\n\r\n";
            let _ = conn.get_mut().write_all(garbage).await;
            Handled::no_response(Next::Close)
        }
        Some(Fault::Status {
            status,
            retry_after,
        }) => {
            answer_status(
                conn.get_mut(),
                shared,
                head,
                *status,
                *retry_after,
                progress,
            )
            .await
        }
        _ => forward(conn.get_mut(), upstream, shared, head, body, plan, progress).await,
    }
}

/// A `status` fault: that status with the fault point's error body, instead of the upstream.
async fn answer_status(
    w: &mut TcpStream,
    shared: &Shared,
    head: &Head,
    status: u16,
    retry_after: Option<u64>,
    progress: &Progress<'_>,
) -> Handled {
    let (ctype, body) = (shared.config.error_body)(status);
    let retry = retry_after.or(matches!(status, 429 | 503).then_some(1));
    let extra = retry
        .map(|secs| format!("retry-after: {secs}\r\n"))
        .unwrap_or_default();
    let head_bytes = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n{extra}\r\n",
        reason(status),
        body.len()
    );
    progress.head(status);
    progress.writing();
    let is_head = head.method == "HEAD";
    let ok = w.write_all(head_bytes.as_bytes()).await.is_ok()
        && (is_head || w.write_all(&body).await.is_ok());
    Handled {
        sent: Some((status, if is_head { 0 } else { body.len() as u64 })),
        next: if ok { Next::KeepAlive } else { Next::Close },
    }
}

/// Forwards the request on this connection's own upstream connection and passes the answer
/// on, shaped by the plan (throttle, dribble, close_after).
async fn forward(
    w: &mut TcpStream,
    upstream: &mut SendRequest<Full<Bytes>>,
    shared: &Shared,
    head: &Head,
    body: Vec<u8>,
    plan: &Plan,
    progress: &Progress<'_>,
) -> Handled {
    let mut builder = hyper::Request::builder()
        .method(head.method.as_str())
        .uri(head.path.as_str());
    let stripped = |name: &str| {
        plan.strip_range
            && (name.eq_ignore_ascii_case("range") || name.eq_ignore_ascii_case("if-range"))
    };
    for (name, value) in &head.headers {
        if stripped(name) {
            continue;
        }
        if !is_hop_by_hop(name) || name.eq_ignore_ascii_case("connection") {
            builder = builder.header(name.as_str(), value.as_slice());
        }
    }
    let Ok(request) = builder.body(Full::new(Bytes::from(body))) else {
        let _ = write_simple(w, 400, "text/plain", b"bad request\n", true).await;
        return Handled::no_response(Next::Close);
    };
    // The upstream closed just as this request came (or failed it): close without answering,
    // exactly what the client would have met talking to the upstream directly.
    if upstream.ready().await.is_err() {
        return Handled::no_response(Next::Close);
    }
    let Ok(response) = upstream.send_request(request).await else {
        return Handled::no_response(Next::Close);
    };
    let (parts, incoming) = response.into_parts();
    let generated = shared.config.generated.as_ref().and_then(|source| {
        let value = parts.headers.get(source.header())?.to_str().ok()?;
        source.body(value)
    });
    let status = parts.status.as_u16();
    let bodiless =
        head.method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);
    let out = response_head(
        shared,
        head,
        &parts,
        generated.as_deref(),
        bodiless,
        &plan.headers,
    );
    progress.head(status);
    progress.writing();
    if w.write_all(out.text.as_bytes()).await.is_err() {
        return Handled::no_response(Next::Close);
    }
    let keep = |ok: bool| {
        if ok && !out.closing {
            Next::KeepAlive
        } else {
            Next::Close
        }
    };
    if bodiless {
        return Handled {
            sent: Some((status, 0)),
            next: keep(true),
        };
    }
    let mut shaper = Shaper::new(plan, progress);
    let result = match generated {
        Some(g) => send_generated(w, incoming, g.as_ref(), &mut shaper).await,
        None => send_forwarded(w, incoming, out.chunked, &mut shaper).await,
    };
    Handled {
        sent: Some((status, shaper.sent)),
        next: keep(result.is_ok()),
    }
}

/// A response head as the proxy writes it.
struct ResponseHead {
    text: String,
    chunked: bool,
    closing: bool,
}

/// The upstream's head without its hop-by-hop headers (and the private body header), with
/// the generated body's length, chunked framing where no length is known, and a close where
/// the upstream or the client asked for one.
fn response_head(
    shared: &Shared,
    head: &Head,
    parts: &hyper::http::response::Parts,
    generated: Option<&dyn GeneratedBody>,
    bodiless: bool,
    replaced: &[(String, String)],
) -> ResponseHead {
    let private = shared.config.generated.as_ref().map(|s| s.header());
    let is_replaced = |n: &str| replaced.iter().any(|(r, _)| r == n);
    let mut text = format!(
        "HTTP/1.1 {} {}\r\n",
        parts.status.as_u16(),
        parts.status.canonical_reason().unwrap_or("")
    );
    let mut content_length = generated.map(|g| g.len());
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if is_hop_by_hop(n)
            || Some(n) == private
            || is_replaced(n)
            || (n == "content-length" && generated.is_some())
        {
            continue;
        }
        if n == "content-length" {
            content_length = value.to_str().ok().and_then(|v| v.parse::<u64>().ok());
        }
        text.push_str(&format!(
            "{n}: {}\r\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    if let Some(g) = generated.filter(|_| !is_replaced("content-length")) {
        text.push_str(&format!("content-length: {}\r\n", g.len()));
    }
    for (name, value) in replaced {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    let chunked = !bodiless && content_length.is_none() && !is_replaced("content-length");
    if chunked {
        text.push_str("transfer-encoding: chunked\r\n");
    }
    let upstream_close = parts
        .headers
        .get(hyper::header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    // A replaced Content-Length no longer frames the body: the close does.
    let closing = upstream_close || head.wants_close() || is_replaced("content-length");
    if closing {
        text.push_str("connection: close\r\n");
    }
    text.push_str("\r\n");
    ResponseHead {
        text,
        chunked,
        closing,
    }
}

/// Streams a generated body in 64 KiB pieces.
async fn send_generated(
    w: &mut TcpStream,
    mut placeholder: hyper::body::Incoming,
    body: &dyn GeneratedBody,
    shaper: &mut Shaper<'_, '_>,
) -> Result<(), Cut> {
    // Drain the (empty) placeholder body so the upstream connection stays usable.
    while let Some(Ok(_)) = placeholder.frame().await {}
    let mut pos = 0u64;
    let mut chunk = vec![0u8; 64 * 1024];
    while pos < body.len() {
        let n = (body.len() - pos).min(chunk.len() as u64) as usize;
        body.fill(pos, &mut chunk[..n]);
        pos += n as u64;
        shaper.send(w, &chunk[..n], false).await?;
    }
    Ok(())
}

/// Passes the upstream's body on as it arrives; breaks off where it breaks off.
async fn send_forwarded(
    w: &mut TcpStream,
    mut incoming: hyper::body::Incoming,
    chunked: bool,
    shaper: &mut Shaper<'_, '_>,
) -> Result<(), Cut> {
    while let Some(frame) = incoming.frame().await {
        // The upstream broke off: break off too, so the client can tell.
        let frame = frame.map_err(|_| Cut)?;
        if let Ok(data) = frame.into_data() {
            shaper.send(w, &data, chunked).await?;
        }
    }
    if chunked {
        shaper.progress.writing();
        w.write_all(b"0\r\n\r\n").await.map_err(|_| Cut)?;
    }
    Ok(())
}

/// The body was cut on purpose (close_after) or by a broken peer.
struct Cut;

/// Applies throttle, dribble and close_after to a body as it is written.
struct Shaper<'p, 'j> {
    progress: &'p Progress<'j>,
    sent: u64,
    start: Instant,
    throttle: Option<u64>,
    dribble: Option<(u64, Duration)>,
    close_after: Option<u64>,
}

impl<'p, 'j> Shaper<'p, 'j> {
    fn new(plan: &Plan, progress: &'p Progress<'j>) -> Self {
        Shaper {
            progress,
            sent: 0,
            start: Instant::now(),
            throttle: plan.throttle,
            dribble: plan.dribble,
            close_after: plan.close_after,
        }
    }

    async fn send(&mut self, w: &mut TcpStream, mut data: &[u8], chunked: bool) -> Result<(), Cut> {
        let mut cut = false;
        if let Some(limit) = self.close_after {
            let room = limit.saturating_sub(self.sent) as usize;
            if data.len() >= room {
                data = &data[..room];
                cut = true;
            }
        }
        if chunked && !data.is_empty() {
            self.progress.writing();
            w.write_all(format!("{:x}\r\n", data.len()).as_bytes())
                .await
                .map_err(|_| Cut)?;
        }
        let piece = match (self.throttle, self.dribble) {
            (_, Some((chunk, _))) => chunk as usize,
            (Some(rate), None) => ((rate / 50) as usize).clamp(1, 64 * 1024),
            (None, None) => usize::MAX,
        };
        for part in data.chunks(piece.max(1)) {
            if let Some((_, pause)) = self.dribble {
                if self.sent > 0 {
                    tokio::time::sleep(pause).await;
                }
            }
            if let Some(rate) = self.throttle {
                let due = self.start + Duration::from_secs_f64(self.sent as f64 / rate as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            self.progress.writing();
            w.write_all(part).await.map_err(|_| Cut)?;
            self.sent += part.len() as u64;
        }
        if chunked && !data.is_empty() && !cut {
            self.progress.writing();
            w.write_all(b"\r\n").await.map_err(|_| Cut)?;
        }
        if cut {
            let _ = w.flush().await;
            return Err(Cut);
        }
        Ok(())
    }
}

async fn write_simple(
    w: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &[u8],
    close: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n{}\r\n",
        reason(status),
        body.len(),
        if close { "connection: close\r\n" } else { "" }
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(body).await
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}
