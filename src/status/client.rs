//! The client `rustbalance status` uses: one `GET /status` over hyper's HTTP/1 client, with
//! the access token when one is configured, a bounded answer and a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{AUTHORIZATION, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Snapshot, StatusError};

/// Largest status answer accepted.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// Asks a running daemon at `addr` for its status (sending `token` if given).
pub async fn fetch(addr: SocketAddr, token: Option<&str>) -> Result<Snapshot, StatusError> {
    let fail = |problem: String| StatusError::Fetch { addr, problem };
    let attempt = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(conn);
        let mut req = Request::get("/status").header(HOST, addr.to_string());
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let code = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| fail(format!("reading the answer: {e}")))?
            .to_bytes();
        if !code.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(fail(format!("{code}: {}", text.trim())));
        }
        serde_json::from_slice(&body).map_err(|e| fail(format!("bad status JSON: {e}")))
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err(fail("timed out".into())))
}
