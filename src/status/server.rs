//! The status endpoint: `GET /status` answers the latest snapshot as JSON, on hyper's HTTP/1
//! server with bounds everywhere:
//! - at most [`MAX_CONNECTIONS`] connections at once; more are closed at accept (a flood of
//!   idle connections cannot hold the endpoint: each connection is also closed after
//!   [`CONNECTION_TIMEOUT`], and its request head must arrive within [`HEADER_TIMEOUT`]);
//! - the request head is at most 8 KiB; one request per connection;
//! - a `Host` header must name a loopback host (`localhost`, `127.x.y.z`, `[::1]`), so a web
//!   page cannot read the status through DNS rebinding; a missing `Host` (non-browser
//!   clients) is fine;
//! - with an access token configured (required for a non-loopback `status.listen`), every
//!   request must send `Authorization: Bearer <token>` (compared in constant time), and the
//!   `Host` check is left to the token;
//! - accept errors (out of file descriptors) back off instead of spinning.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::{Snapshot, StatusError};
use crate::membership::MeshStatus;

/// Connections served at once; more are closed at accept. Idle ones cost a task and a
/// socket each and leave after [`HEADER_TIMEOUT`], so thousands of them leave room to serve.
pub const MAX_CONNECTIONS: usize = 2048;
/// The request head must arrive within this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this, whatever it is doing.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Backoff after an accept error (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Who may ask.
#[derive(Clone, Default)]
pub struct Access {
    /// The token every request must send, if configured.
    pub token: Option<Arc<zeroize::Zeroizing<String>>>,
    /// The live metrics `/metrics` renders with the snapshot.
    pub metrics: super::metrics::Live,
}

/// Binds the endpoint (so a bad address fails at start-up, not later).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StatusError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StatusError::Bind { addr, source })
}

/// Serves `GET /status` with the latest snapshot (and the latest mesh status in its
/// `cluster` field) until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    snapshots: watch::Receiver<Snapshot>,
    cluster: watch::Receiver<Option<MeshStatus>>,
    access: Access,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut refused: u64 = 0;
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let stream = match conn {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "status endpoint: accept failed; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    max = MAX_CONNECTIONS,
                    "status endpoint: too many connections; closing new ones"
                );
            }
            drop(stream);
            continue;
        };
        let snapshots = snapshots.clone();
        let cluster = cluster.clone();
        let access = access.clone();
        tokio::spawn(async move {
            let _slot = slot;
            serve_stream(stream, snapshots, cluster, access).await;
        });
    }
}

/// Serves one connection (any byte stream: a TCP connection, or a fuzzer's pipe) with every
/// per-connection bound: head timeout and size, one request, the connection deadline.
pub async fn serve_stream<S>(
    stream: S,
    snapshots: watch::Receiver<Snapshot>,
    cluster: watch::Receiver<Option<MeshStatus>>,
    access: Access,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let answer = answer(&req, &snapshots, &cluster, &access);
        async move { Ok::<_, Infallible>(answer) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(8192)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
}

/// The answer to one request.
fn answer(
    req: &Request<Incoming>,
    snapshots: &watch::Receiver<Snapshot>,
    cluster: &watch::Receiver<Option<MeshStatus>>,
    access: &Access,
) -> Response<Full<Bytes>> {
    if let Some(token) = &access.token {
        let sent = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
        let ok = sent.is_some_and(|s| constant_time_eq(s, token.as_bytes()));
        if !ok {
            return json(
                StatusCode::UNAUTHORIZED,
                "{\"error\":\"send Authorization: Bearer <status.access_token_file's token>\"}",
            );
        }
    } else if let Some(host) = req.headers().get(HOST) {
        if !loopback_host(host) {
            return json(
                StatusCode::MISDIRECTED_REQUEST,
                "{\"error\":\"the status endpoint answers loopback host names only\"}",
            );
        }
    }
    if req.method() != Method::GET {
        let mut r = json(StatusCode::METHOD_NOT_ALLOWED, "{\"error\":\"GET only\"}");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return r;
    }
    match req.uri().path() {
        "/status" => {
            let mut snapshot = snapshots.borrow().clone();
            snapshot.cluster = cluster.borrow().clone();
            match serde_json::to_string_pretty(&snapshot) {
                Ok(body) => json(StatusCode::OK, body),
                Err(_) => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "{\"error\":\"encoding\"}",
                ),
            }
        }
        "/metrics" => {
            let mut snapshot = snapshots.borrow().clone();
            snapshot.cluster = cluster.borrow().clone();
            match super::metrics::render(&snapshot, &access.metrics) {
                Ok(body) => {
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    r.headers_mut().insert(
                        CONTENT_TYPE,
                        HeaderValue::from_static(
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        ),
                    );
                    r
                }
                Err(_) => json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "{\"error\":\"encoding\"}",
                ),
            }
        }
        _ => json(
            StatusCode::NOT_FOUND,
            "{\"error\":\"try GET /status or GET /metrics\"}",
        ),
    }
}

fn json(code: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Whether a `Host` header names a loopback host (with or without a port).
fn loopback_host(value: &HeaderValue) -> bool {
    let Ok(host) = value.to_str() else {
        return false;
    };
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((ip, _)) => ip,
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_only() {
        for ok in [
            "localhost",
            "LOCALHOST:9191",
            "127.0.0.1",
            "127.0.0.1:9191",
            "127.3.4.5:1",
            "[::1]:9191",
            "[::1]",
        ] {
            assert!(loopback_host(&HeaderValue::from_static(ok)), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9191",
            "localhost.evil.example",
            "10.0.0.1:9191",
            "[::2]:9191",
            "[::1",
            "",
        ] {
            assert!(!loopback_host(&HeaderValue::from_static(bad)), "{bad}");
        }
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
