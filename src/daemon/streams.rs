//! Rendezvous streams on the master address → the proxy. A stream for a port that is not a
//! virtual port, over the connection limit, or whose target cannot be reached is refused with
//! a RELAY_END (the client sees a closed stream at once, never a hang); the target is connected
//! before the stream is accepted. Streams for the join port go to the join service (never to
//! the target), at most one per rendezvous circuit; without a join service they are refused
//! like any port that is not proxied.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tor_cell::relaycell::msg::{Connected, End, EndReason};
use tor_hsservice::{RendRequest, StreamRequest};
use tor_proto::stream::IncomingStreamRequest;

use crate::join::server::JoinServer;
use crate::proxy::Proxy;

/// Serves every stream of `requests` until shutdown.
pub async fn serve(
    requests: impl Stream<Item = RendRequest> + Send + Unpin + 'static,
    proxy: Proxy,
    ports: Vec<u16>,
    join: Option<Arc<JoinServer>>,
    metrics: crate::status::metrics::Live,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut requests = requests;
    let ports = Arc::new(ports);
    loop {
        let rend = tokio::select! {
            r = requests.next() => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let Some(rend) = rend else { break };
        proxy.count_rendezvous();
        let proxy = proxy.clone();
        let ports = Arc::clone(&ports);
        let join = join.clone();
        let metrics = metrics.clone();
        let mut stop = shutdown.clone();
        // One task per rendezvous circuit: its streams, and its join-stream budget.
        tokio::spawn(async move {
            let t0 = std::time::Instant::now();
            let mut streams = match rend.accept().await {
                Ok(s) => {
                    metrics.rend_circuit_built(t0.elapsed());
                    s
                }
                Err(e) => {
                    tracing::debug!(error = %e, "rendezvous request not accepted");
                    return;
                }
            };
            let mut join_streams = 0u32;
            loop {
                let req = tokio::select! {
                    r = streams.next() => r,
                    _ = stop.wait_for(|s| *s) => break,
                };
                let Some(req) = req else { break };
                if is_join(&req) {
                    join_streams += 1;
                    let join = join.clone();
                    tokio::spawn(async move { handle_join(req, join, join_streams).await });
                    continue;
                }
                let proxy = proxy.clone();
                let ports = Arc::clone(&ports);
                tokio::spawn(async move { handle(req, proxy, &ports).await });
            }
        });
    }
}

fn is_join(req: &StreamRequest) -> bool {
    matches!(req.request(), IncomingStreamRequest::Begin(b) if b.port() == crate::join::JOIN_PORT)
}

async fn handle_join(req: StreamRequest, join: Option<Arc<JoinServer>>, nth_on_circuit: u32) {
    let Some(join) = join else {
        let _ = req
            .reject(End::new_with_reason(EndReason::EXITPOLICY))
            .await;
        return;
    };
    if nth_on_circuit > crate::join::server::STREAMS_PER_CIRCUIT {
        join.refuse_stream();
        let _ = req
            .reject(End::new_with_reason(EndReason::RESOURCELIMIT))
            .await;
        return;
    }
    match req.accept(Connected::new_empty()).await {
        Ok(stream) => join.handle(stream).await,
        Err(e) => tracing::debug!(error = %e, "join client went away"),
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
