//! The HTTP surface: `GET|HEAD /api/calls/{call_sid}/download`, `POST /webhook/recording-status`,
//! `GET /healthz`.

use crate::error::AppError;
use crate::range::{decide, if_range_holds, Decision};
use crate::sid::is_sid;
use crate::store::CallRecording;
use crate::twilio::{FetchError, Format};
use crate::App;
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;

/// The service's routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/api/calls/{call_sid}/download", get(download))
        .route("/webhook/recording-status", post(recording_status))
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({"error": "Not found"})),
            )
        })
        .layer(axum::middleware::from_fn(log_request))
        .with_state(app)
}

/// One log line per request: method, path, status, Range, time to headers.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let began = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        method = %method,
        path = %path,
        range = range.as_deref().unwrap_or(""),
        status = response.status().as_u16(),
        headers_ms = began.elapsed().as_millis() as u64,
        "request"
    );
    response
}

#[derive(Deserialize)]
struct DownloadQuery {
    format: Option<String>,
}

fn check_bearer(app: &App, headers: &HeaderMap) -> Result<(), AppError> {
    let Some(token) = &app.config.api_token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.trim().as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err(AppError::Unauthorized),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn find_recording(app: &App, call_sid: &str) -> Result<CallRecording, AppError> {
    let internal = |e: rusqlite::Error| AppError::Internal {
        cause: format!("database: {e}"),
    };
    if let Some(rec) = app.store.get(call_sid).await.map_err(internal)? {
        return Ok(rec);
    }
    // Concurrent first plays of a call wait for one look-up instead of each asking Twilio.
    let lock = app
        .lookups
        .lock()
        .unwrap()
        .entry(call_sid.to_string())
        .or_default()
        .clone();
    let _guard = lock.lock().await;
    // ...and so do those of other instances sharing the cache folder.
    let found = match app.cache.lock_named(&format!("{call_sid}.lookup")).await {
        Ok(_shared) => find_at_twilio(app, call_sid).await,
        Err(e) => Err(AppError::Internal {
            cause: format!("look-up lock: {e}"),
        }),
    };
    app.lookups.lock().unwrap().remove(call_sid);
    found
}

async fn find_at_twilio(app: &App, call_sid: &str) -> Result<CallRecording, AppError> {
    let internal = |e: rusqlite::Error| AppError::Internal {
        cause: format!("database: {e}"),
    };
    // Another request may have looked it up while this one waited.
    if let Some(rec) = app.store.get(call_sid).await.map_err(internal)? {
        return Ok(rec);
    }
    match app.twilio.newest_recording(call_sid).await {
        Ok(Some((recording_sid, recording_url))) => {
            let rec = CallRecording {
                call_sid: call_sid.to_string(),
                recording_sid,
                recording_url,
            };
            app.store.put(rec.clone()).await.map_err(internal)?;
            Ok(rec)
        }
        Ok(None) | Err(FetchError::NotFound) => Err(AppError::NoRecording),
        Err(FetchError::Failed(cause)) => Err(AppError::Upstream { cause }),
    }
}

async fn download(
    State(app): State<Arc<App>>,
    Path(call_sid): Path<String>,
    Query(query): Query<DownloadQuery>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    check_bearer(&app, &headers)?;
    if !is_sid(&call_sid, "CA") {
        return Err(AppError::BadCallSid);
    }
    let format = match query.format.as_deref() {
        None => Format::Mp3,
        Some(f) => Format::parse(f).ok_or(AppError::BadRequest("format must be mp3 or wav"))?,
    };
    let rec = find_recording(&app, &call_sid).await?;
    let source = app
        .cache
        .open(&call_sid, &rec.recording_sid, format)
        .await?;
    let size = source.size();
    let modified = source.modified();
    let etag = etag(modified, size);
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let decision = if if_range_holds(header_str(header::IF_RANGE), &etag, modified) {
        decide(header_str(header::RANGE), size)
    } else {
        Decision::Full
    };
    tracing::debug!(call_sid = %call_sid, hit = source.is_hit(), ?decision, "serving");
    if let Some(prefix) = app.config.accel_redirect.as_deref() {
        if source.is_hit() && nginx_answers_right(header_str(header::RANGE)) {
            return accel_redirect(prefix, &rec.recording_sid, format);
        }
    }

    let mut builder = Response::builder()
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, format.content_type())
        .header(header::ETAG, &etag)
        .header(header::LAST_MODIFIED, httpdate::fmt_http_date(modified))
        .header(header::CACHE_CONTROL, "private, max-age=3600");
    let (status, range) = match decision {
        Decision::Full => (StatusCode::OK, (size > 0).then(|| (0, size - 1))),
        Decision::Partial { start, end } => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
            (StatusCode::PARTIAL_CONTENT, Some((start, end)))
        }
        Decision::Unsatisfiable => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes */{size}"));
            (StatusCode::RANGE_NOT_SATISFIABLE, None)
        }
    };
    let length = range.map(|(s, e)| e - s + 1).unwrap_or(0);
    let mut source = source;
    if let Some((start, _)) = range {
        source.ready_at(start).await?;
    }
    let body = match range {
        Some((start, end)) if method != Method::HEAD => {
            Body::from_stream(source.stream(start, end))
        }
        _ => Body::empty(),
    };
    builder
        .status(status)
        .header(header::CONTENT_LENGTH, length)
        .body(body)
        .map_err(|e| AppError::Internal {
            cause: e.to_string(),
        })
}

/// The recording's strong validator, in nginx's own form (`"{mtime:x}-{size:x}"`): a cached
/// file nginx sends itself (`X-Accel-Redirect`) carries the same ETag as the backend gave for it,
/// also while it was still downloading (the file's mtime is set to the download's start), so a
/// player's `If-Range` holds whichever of the two answers.
fn etag(modified: std::time::SystemTime, size: u64) -> String {
    let secs = modified
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("\"{secs:x}-{size:x}\"")
}

/// Whether nginx's static module answers this Range as RFC 9110 says: none, or one range of
/// valid syntax. nginx answers 416 to invalid syntax, which RFC 9110 says to ignore, so those
/// (and several ranges, which the backend answers itself) stay with the backend.
fn nginx_answers_right(range: Option<&str>) -> bool {
    let Some(spec) = range.map(str::trim) else {
        return true;
    };
    let Some(spec) = spec.strip_prefix("bytes=") else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match spec.split_once('-') {
        Some(("", n)) => digits(n),
        Some((a, "")) => digits(a),
        Some((a, b)) if digits(a) && digits(b) => a.parse::<u64>().ok() <= b.parse::<u64>().ok(),
        _ => false,
    }
}

/// Hands a cached recording to nginx (`X-Accel-Redirect`), which sends it itself: sendfile,
/// Range, If-Range, HEAD.
fn accel_redirect(prefix: &str, recording_sid: &str, format: Format) -> Result<Response, AppError> {
    Response::builder()
        .header(
            "x-accel-redirect",
            format!("{prefix}{recording_sid}.{}", format.ext()),
        )
        .header(header::CONTENT_TYPE, format.content_type())
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "private, max-age=3600")
        .body(Body::empty())
        .map_err(|e| AppError::Internal {
            cause: e.to_string(),
        })
}

/// Twilio's `X-Twilio-Signature`: HMAC-SHA1 over the URL and the sorted params, base64.
fn twilio_signature(token: &str, url: &str, params: &[(String, String)]) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).expect("any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

async fn recording_status(
    State(app): State<Arc<App>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let base = match &app.config.public_url {
        Some(url) => url.trim_end_matches('/').to_string(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}")
        }
    };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{base}{path}");
    let given = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok());
    let expected = twilio_signature(&app.config.twilio_auth_token, &url, &params);
    if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
        tracing::warn!(url = %url, signed = given.is_some(), "webhook rejected: bad X-Twilio-Signature");
        return Err(AppError::BadSignature);
    }
    let field = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if field("AccountSid") != Some(app.config.twilio_account_sid.as_str()) {
        return Err(AppError::BadSignature);
    }
    let (Some(call_sid), Some(recording_sid)) = (field("CallSid"), field("RecordingSid")) else {
        return Err(AppError::BadRequest(
            "CallSid and RecordingSid are required",
        ));
    };
    if !is_sid(call_sid, "CA") || !is_sid(recording_sid, "RE") {
        return Err(AppError::BadRequest("CallSid or RecordingSid is malformed"));
    }
    let status = field("RecordingStatus").unwrap_or("");
    tracing::info!(call_sid, recording_sid, status, "recording status callback");
    if status == "completed" {
        let rec = CallRecording {
            call_sid: call_sid.to_string(),
            recording_sid: recording_sid.to_string(),
            recording_url: field("RecordingUrl").unwrap_or("").to_string(),
        };
        app.store
            .put(rec.clone())
            .await
            .map_err(|e| AppError::Internal {
                cause: format!("database: {e}"),
            })?;
        // Pre-download now, so the first Play is a cache hit; answer Twilio at once.
        app.cache
            .prefetch(&rec.call_sid, &rec.recording_sid, Format::Mp3);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
