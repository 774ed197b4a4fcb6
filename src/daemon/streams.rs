//! Rendezvous streams on the master address → the proxy. A stream for a port that is not a
//! virtual port, over the connection limit, or whose target cannot be reached is refused with
//! a RELAY_END (the client sees a closed stream at once, never a hang); the target is connected
//! before the stream is accepted. Streams for the join port go to the join service (never to
//! the target), at most one per rendezvous circuit; without a join service they are refused
//! like any port that is not proxied.
//!
//! With PoW on, at most `pow.rendezvous_concurrency` rendezvous handshakes run at once: the
//! next request is taken from Arti's queue only when one finishes. So under a flood requests
//! wait in that queue, where Arti serves the highest effort first, drops the lowest when it is
//! full, and measures the load its suggested effort follows (taking them as fast as they come
//! would keep the queue empty and PoW without effect).

use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tor_cell::relaycell::msg::{Connected, End, EndReason};
use tor_error::ErrorReport as _;
use tor_hsservice::{RendRequest, StreamRequest};
use tor_proto::stream::IncomingStreamRequest;

use crate::join::server::JoinServer;
use crate::proxy::Proxy;

/// The next item of `requests` once `limit` (if any) grants a slot, with the slot: the stream
/// is not polled while every slot is taken.
async fn next_admitted<S: Stream + Unpin>(
    requests: &mut S,
    limit: Option<&Arc<Semaphore>>,
) -> Option<(S::Item, Option<OwnedSemaphorePermit>)> {
    let permit = match limit {
        Some(sem) => Some(Arc::clone(sem).acquire_owned().await.ok()?),
        None => None,
    };
    requests.next().await.map(|r| (r, permit))
}

/// Serves every stream of `requests` until shutdown, running at most `rendezvous_limit`
/// rendezvous handshakes at once (unbounded with `None`).
pub async fn serve(
    requests: impl Stream<Item = RendRequest> + Send + Unpin + 'static,
    proxy: Proxy,
    ports: Vec<u16>,
    join: Option<Arc<JoinServer>>,
    metrics: crate::status::metrics::Live,
    rendezvous_limit: Option<usize>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut requests = requests;
    let ports = Arc::new(ports);
    let limit = rendezvous_limit.map(|n| Arc::new(Semaphore::new(n.max(1))));
    loop {
        let next = tokio::select! {
            r = next_admitted(&mut requests, limit.as_ref()) => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let Some((rend, slot)) = next else { break };
        proxy.count_rendezvous();
        let proxy = proxy.clone();
        let ports = Arc::clone(&ports);
        let join = join.clone();
        let metrics = metrics.clone();
        let mut stop = shutdown.clone();
        // One task per rendezvous circuit: its streams, and its join-stream budget.
        tokio::spawn(async move {
            let t0 = std::time::Instant::now();
            let accepted = rend.accept().await;
            // The handshake is done: its slot goes to the next queued request.
            drop(slot);
            let mut streams = match accepted {
                Ok(s) => {
                    metrics.rend_circuit_built(t0.elapsed());
                    s
                }
                Err(e) => {
                    // With its causes (a lost burst showed only "circuit failed" before);
                    // Arti's errors carry no target address.
                    tracing::debug!(error = %e.report(), "rendezvous request not accepted");
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn requests_wait_in_the_queue_while_every_slot_is_taken() {
        let pulled = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&pulled);
        let mut requests = futures::stream::iter(0..10).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let limit = Arc::new(Semaphore::new(2));
        let (a, slot_a) = next_admitted(&mut requests, Some(&limit)).await.unwrap();
        let (b, _slot_b) = next_admitted(&mut requests, Some(&limit)).await.unwrap();
        assert_eq!((a, b), (0, 1));
        // Both slots taken: the third is not even taken from the queue.
        let third = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            next_admitted(&mut requests, Some(&limit)),
        )
        .await;
        assert!(third.is_err());
        assert_eq!(pulled.load(Ordering::SeqCst), 2);
        // A handshake finishes: the next request comes.
        drop(slot_a);
        let (c, _) = next_admitted(&mut requests, Some(&limit)).await.unwrap();
        assert_eq!(c, 2);
        // Without a limit, requests come as they are asked for.
        let (d, none) = next_admitted(&mut requests, None).await.unwrap();
        assert_eq!((d, none.is_none()), (3, true));
    }
}
