//! Rendezvous streams on the master address → the proxy. A stream for a port that is not a
//! virtual port, over the connection limit, or whose target cannot be reached is refused with
//! a RELAY_END (the client sees a closed stream at once, never a hang); the target is connected
//! before the stream is accepted.

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tor_cell::relaycell::msg::{Connected, End, EndReason};
use tor_hsservice::{RendRequest, StreamRequest};
use tor_proto::stream::IncomingStreamRequest;

use crate::proxy::Proxy;

/// Serves every stream of `requests` until shutdown.
pub async fn serve(
    requests: impl Stream<Item = RendRequest> + Send + Unpin + 'static,
    proxy: Proxy,
    ports: Vec<u16>,
    mut shutdown: watch::Receiver<bool>,
) {
    let counted = proxy.clone();
    let requests = requests.inspect(move |_| counted.count_rendezvous());
    let mut streams = tor_hsservice::handle_rend_requests(requests);
    loop {
        let req = tokio::select! {
            r = streams.next() => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let Some(req) = req else { break };
        let proxy = proxy.clone();
        let ports = ports.clone();
        tokio::spawn(async move { handle(req, proxy, &ports).await });
    }
}

async fn handle(req: StreamRequest, proxy: Proxy, ports: &[u16]) {
    let port = match req.request() {
        IncomingStreamRequest::Begin(b) => b.port(),
        _ => {
            let _ = req
                .reject(End::new_with_reason(EndReason::EXITPOLICY))
                .await;
            return;
        }
    };
    if !ports.contains(&port) {
        tracing::debug!(port, "stream for a port that is not proxied: refused");
        let _ = req
            .reject(End::new_with_reason(EndReason::EXITPOLICY))
            .await;
        return;
    }
    let Some(permit) = proxy.try_admit() else {
        tracing::info!("stream refused: connection limit or shutting down");
        let _ = req
            .reject(End::new_with_reason(EndReason::RESOURCELIMIT))
            .await;
        return;
    };
    let conn = match proxy.connect_target(permit).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "target unreachable: stream refused");
            let reason = if matches!(e, crate::proxy::ProxyError::ConnectTimeout { .. }) {
                EndReason::TIMEOUT
            } else {
                EndReason::CONNECTREFUSED
            };
            let _ = req.reject(End::new_with_reason(reason)).await;
            return;
        }
    };
    let stream = match req.accept(Connected::new_empty()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(error = %e, "client went away before the stream was accepted");
            return;
        }
    };
    match proxy.splice(conn, stream).await {
        Ok(o) => {
            tracing::debug!(stream = %o.stream, up = o.transferred.up, down = o.transferred.down, "stream done")
        }
        Err(e) => tracing::debug!(error = %e, "stream ended"),
    }
}
