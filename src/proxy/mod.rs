//! The reverse proxy: each admitted onion stream is connected to the target and copied both
//! ways until both sides finish, one fails, it goes idle, or the node shuts down.
//!
//! This module owns the data path and its limits: admission against `target.max_connections`
//! ([`Proxy::try_admit`], checked before a stream is accepted, so the caller can refuse it with
//! an END), the connect timeout, the idle timeout, bounded per-stream buffers (back-pressure),
//! half-close, and the counters behind [`ProxyStats`]. It is generic over the stream types, so
//! it runs without Tor in tests; [`TargetConnector`] is the real TCP / onion connector.
//!
//! It must never log or report the target's address: logs name a [`StreamId`] and outcomes.
//! Note that Tor streams have no half-close (an END closes both directions); half-close is
//! honoured towards whichever side supports it.

mod connector;
mod copy;
mod error;

use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument as _};

use crate::config::TargetConfig;
use copy::{Bidi, CopyError};

pub use connector::{Connector, OnionConnector, TargetConnector, TargetStream, TcpConnector};
pub use error::{ConnectError, Direction, ProxyError, Transferred};

/// Buffer per direction per stream, unless [`ProxyLimits::buffer_size`] says otherwise.
pub const DEFAULT_BUFFER_SIZE: usize = 16 * 1024;

/// The proxy's timeouts and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyLimits {
    /// Time allowed to connect to the target.
    pub connect_timeout: Duration,
    /// A stream with no bytes moving either way for this long is closed.
    pub idle_timeout: Duration,
    /// Streams served at once; admission beyond this is refused.
    pub max_connections: usize,
    /// Buffer per direction per stream, in bytes.
    pub buffer_size: usize,
}

impl ProxyLimits {
    /// The limits configured in `[target]`, with the default buffer size.
    pub fn from_target(target: &TargetConfig) -> ProxyLimits {
        ProxyLimits {
            connect_timeout: target.connect_timeout,
            idle_timeout: target.idle_timeout,
            max_connections: target.max_connections,
            buffer_size: DEFAULT_BUFFER_SIZE,
        }
    }
}

/// Identifies one proxied stream in logs (assigned at admission, unique per [`Proxy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A counter snapshot for the status endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProxyStats {
    /// Rendezvous requests that reached this node (introductions through its intro points),
    /// whether or not a stream followed.
    #[serde(default)]
    pub rendezvous: u64,
    /// Streams admitted and not yet finished.
    pub active: u64,
    /// Streams admitted since start.
    pub total: u64,
    /// Admissions refused (at `max_connections`, or shutting down).
    pub refused: u64,
    /// Connects to the target that failed or timed out.
    pub failed_connects: u64,
    /// Bytes client → target.
    pub bytes_up: u64,
    /// Bytes target → client.
    pub bytes_down: u64,
}

/// Live counters behind [`ProxyStats`].
#[derive(Debug, Default)]
struct Counters {
    rendezvous: AtomicU64,
    active: AtomicU64,
    total: AtomicU64,
    refused: AtomicU64,
    failed_connects: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// The right to serve one stream, from [`Proxy::try_admit`]; the slot is released on drop.
pub struct Permit {
    id: StreamId,
    _slot: OwnedSemaphorePermit,
    counters: Arc<Counters>,
}

impl Permit {
    /// The stream's id in logs.
    pub fn id(&self) -> StreamId {
        self.id
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("id", &self.id).finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.counters.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a stream that ran to completion ended: both sides finished writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyOutcome {
    /// The stream.
    pub stream: StreamId,
    /// Bytes moved each way.
    pub transferred: Transferred,
    /// From the start of the connect to the end of the copy.
    pub duration: Duration,
}

/// State shared by all clones of a [`Proxy`].
struct Shared<C> {
    connector: C,
    limits: ProxyLimits,
    slots: Arc<Semaphore>,
    counters: Arc<Counters>,
    shutdown: watch::Receiver<bool>,
    next_id: AtomicU64,
}

/// The reverse proxy for one target. Cheap to clone; clones share limits and counters.
pub struct Proxy<C: Connector = TargetConnector> {
    shared: Arc<Shared<C>>,
}

impl<C: Connector> Clone for Proxy<C> {
    fn clone(&self) -> Self {
        Proxy {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: Connector> fmt::Debug for Proxy<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("limits", &self.shared.limits)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Resolves once `shutdown` says `true` or its sender is gone.
async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) {
    // A dropped sender means the owner is gone: treat it as shutdown too.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

impl<C: Connector> Proxy<C> {
    /// A proxy that reaches the target through `connector`. It shuts down (refuses admission
    /// and ends in-flight streams) when `shutdown` becomes `true` or its sender is dropped.
    pub fn new(limits: ProxyLimits, connector: C, shutdown: watch::Receiver<bool>) -> Proxy<C> {
        let permits = limits.max_connections.min(Semaphore::MAX_PERMITS);
        Proxy {
            shared: Arc::new(Shared {
                connector,
                limits,
                slots: Arc::new(Semaphore::new(permits)),
                counters: Arc::new(Counters::default()),
                shutdown,
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// The configured limits.
    pub fn limits(&self) -> &ProxyLimits {
        &self.shared.limits
    }

    /// True once shutdown has been signalled.
    pub fn is_shutting_down(&self) -> bool {
        let rx = &self.shared.shutdown;
        *rx.borrow() || rx.has_changed().is_err()
    }

    /// Counts a rendezvous request (an introduction that reached this node).
    pub fn count_rendezvous(&self) {
        self.shared
            .counters
            .rendezvous
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Admits one more stream if under `max_connections` and not shutting down. `None` means
    /// the caller must refuse the stream (e.g. reject the onion stream request with an END).
    pub fn try_admit(&self) -> Option<Permit> {
        let counters = &self.shared.counters;
        let slot = if self.is_shutting_down() {
            None
        } else {
            Arc::clone(&self.shared.slots).try_acquire_owned().ok()
        };
        let Some(slot) = slot else {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            debug!(
                active = counters.active.load(Ordering::Relaxed),
                "stream refused"
            );
            return None;
        };
        counters.active.fetch_add(1, Ordering::Relaxed);
        counters.total.fetch_add(1, Ordering::Relaxed);
        let id = StreamId(self.shared.next_id.fetch_add(1, Ordering::Relaxed));
        Some(Permit {
            id,
            _slot: slot,
            counters: Arc::clone(counters),
        })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            rendezvous: c.rendezvous.load(Ordering::Relaxed),
            active: c.active.load(Ordering::Relaxed),
            total: c.total.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            failed_connects: c.failed_connects.load(Ordering::Relaxed),
            bytes_up: c.bytes_up.load(Ordering::Relaxed),
            bytes_down: c.bytes_down.load(Ordering::Relaxed),
        }
    }

    /// Serves one admitted stream: [`connect_target`](Self::connect_target), then
    /// [`splice`](Self::splice). On a connect failure `client` is dropped (closed) and the error
    /// returned promptly; callers that can reject a stream before accepting it (onion stream
    /// requests) should call the two steps themselves and reject on error.
    pub async fn serve_stream<S>(
        &self,
        permit: Permit,
        client: S,
    ) -> Result<ProxyOutcome, ProxyError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let conn = self.connect_target(permit).await?;
        self.splice(conn, client).await
    }

    /// Connects to the target for an admitted stream, within the connect timeout. Returns
    /// promptly with [`ProxyError::ConnectFailed`] or [`ProxyError::ConnectTimeout`] (the
    /// permit is then released), or [`ProxyError::Shutdown`] if shutdown comes first.
    pub async fn connect_target(
        &self,
        permit: Permit,
    ) -> Result<TargetConn<C::Stream>, ProxyError> {
        let span = tracing::info_span!("proxy_stream", stream = permit.id.0);
        self.connect_inner(permit).instrument(span).await
    }

    async fn connect_inner(&self, permit: Permit) -> Result<TargetConn<C::Stream>, ProxyError> {
        let shared = &*self.shared;
        let limits = &shared.limits;
        let counters = &shared.counters;
        let mut shutdown = shared.shutdown.clone();
        let started = Instant::now();

        let connect = tokio::time::timeout(limits.connect_timeout, shared.connector.connect());
        let connected = tokio::select! {
            biased;
            () = shutdown_signalled(&mut shutdown) => {
                debug!("shutdown while connecting");
                return Err(ProxyError::Shutdown { transferred: Transferred::default() });
            }
            r = connect => r,
        };
        match connected {
            Ok(Ok(stream)) => {
                debug!(elapsed = ?started.elapsed(), "connected to target");
                Ok(TargetConn {
                    permit,
                    stream,
                    started,
                })
            }
            Ok(Err(e)) => {
                counters.failed_connects.fetch_add(1, Ordering::Relaxed);
                warn!(kind = %e.kind, tor_kind = ?e.tor_kind, "connect to target failed");
                Err(ProxyError::ConnectFailed(e))
            }
            Err(_elapsed) => {
                counters.failed_connects.fetch_add(1, Ordering::Relaxed);
                warn!(timeout = ?limits.connect_timeout, "connect to target timed out");
                Err(ProxyError::ConnectTimeout {
                    timeout: limits.connect_timeout,
                })
            }
        }
    }

    /// Copies both ways between `client` and a connected target until both sides have finished
    /// writing (half-close is passed on), one side fails, no bytes move for the idle timeout, or
    /// shutdown is signalled. Both streams are closed and the permit released on return.
    pub async fn splice<S>(
        &self,
        conn: TargetConn<C::Stream>,
        client: S,
    ) -> Result<ProxyOutcome, ProxyError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let span = tracing::info_span!("proxy_stream", stream = conn.permit.id.0);
        self.splice_inner(conn, client).instrument(span).await
    }

    async fn splice_inner<S>(
        &self,
        conn: TargetConn<C::Stream>,
        mut client: S,
    ) -> Result<ProxyOutcome, ProxyError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let TargetConn {
            permit,
            stream: mut target,
            started,
        } = conn;
        let id = permit.id;
        let shared = &*self.shared;
        let limits = &shared.limits;
        let counters = &shared.counters;
        let mut shutdown = shared.shutdown.clone();

        let mut bidi = Bidi::new(limits.buffer_size, limits.idle_timeout);
        let copied = tokio::select! {
            biased;
            () = shutdown_signalled(&mut shutdown) => None,
            r = poll_fn(|cx| bidi.poll_copy(
                cx,
                &mut client,
                &mut target,
                (&counters.bytes_up, &counters.bytes_down),
            )) => Some(r),
        };
        let transferred = bidi.transferred();
        // Close both sides now, before the permit's slot is released.
        drop(target);
        drop(client);
        drop(permit);
        let duration = started.elapsed();
        let (up, down) = (transferred.up, transferred.down);

        match copied {
            Some(Ok(())) => {
                info!(up, down, ?duration, "stream finished");
                Ok(ProxyOutcome {
                    stream: id,
                    transferred,
                    duration,
                })
            }
            Some(Err(CopyError::Idle)) => {
                info!(up, down, ?duration, "stream idle, closed");
                Err(ProxyError::Idle {
                    timeout: limits.idle_timeout,
                    transferred,
                })
            }
            Some(Err(CopyError::Io(direction, source))) => {
                debug!(up, down, %direction, error = %source, "stream I/O error, closed");
                Err(ProxyError::Io {
                    direction,
                    source,
                    transferred,
                })
            }
            None => {
                info!(up, down, "shutting down, stream closed");
                Err(ProxyError::Shutdown { transferred })
            }
        }
    }
}

/// An admitted stream whose target connection is open, from [`Proxy::connect_target`]; pass
/// it to [`Proxy::splice`]. Dropping it closes the target connection and releases the slot.
pub struct TargetConn<T> {
    permit: Permit,
    stream: T,
    started: Instant,
}

impl<T> TargetConn<T> {
    /// The stream's id in logs.
    pub fn id(&self) -> StreamId {
        self.permit.id
    }
}

impl<T> fmt::Debug for TargetConn<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetConn")
            .field("id", &self.permit.id)
            .finish_non_exhaustive()
    }
}

impl Proxy<TargetConnector> {
    /// The proxy for the configured `[target]`; `tor` reaches onion targets.
    pub fn from_config(
        target: &TargetConfig,
        tor: &Arc<arti_client::TorClient<tor_rtcompat::PreferredRuntime>>,
        shutdown: watch::Receiver<bool>,
    ) -> Proxy<TargetConnector> {
        Proxy::new(
            ProxyLimits::from_target(target),
            TargetConnector::new(&target.address, tor),
            shutdown,
        )
    }
}

#[cfg(test)]
mod tests;
