//! The mesh transport: an in-process WireGuard endpoint carrying datagrams between nodes.
//!
//! This module owns one UDP socket per node and, in a single reactor task, the peer table and
//! one boringtun [`Tunn`](boringtun::noise::Tunn) per peer. The reactor selects on the socket,
//! on commands from [`EndpointHandle`]s (add/remove peer, send), on a timer tick that drives
//! WireGuard's handshake/rekey/keepalive timers (`update_timers`), and on a shutdown signal.
//! Received payloads go to a bounded channel read with [`Endpoint::recv`].
//!
//! Protocol: standard WireGuard (Noise_IKpsk2) with the cluster token as preshared key
//! ([`crate::mesh::keys`]). Each payload travels inside a minimal IPv4/UDP frame
//! ([`crate::mesh::frame`]) because `Tunn` only accepts IP-looking plaintext. Datagrams are
//! unreliable like UDP: nothing is retransmitted and order is not guaranteed (WireGuard
//! accepts reordering within its replay window).
//!
//! Incoming packets are routed without trusting them: handshake initiations are checked for
//! mac1 and the rate limit, then decrypted only far enough to learn the sender's static key
//! (`parse_handshake_anon`); every other message type is routed by the session index we
//! assigned (`receiver_idx >> 8`). Packets of unknown keys, failing authentication (including
//! a wrong preshared key) or otherwise malformed are dropped and counted ([`EndpointStats`]).
//! Optionally ([`EndpointConfigBuilder::accept_unknown_peers`], used by the daemon so a seed can
//! admit a node it was not told about) an unknown key's initiation is answered and the key kept
//! as a bounded, short-lived provisional peer until its first authenticated data packet proves
//! the preshared key.
//! A peer's endpoint is learned (roaming) only from packets that prove the preshared key: data
//! packets and handshake responses; a handshake initiation sets it only when none is known.
//! A wrong preshared key shows at the initiator (the handshake response fails to decrypt and
//! is counted); the responder of such a handshake cannot tell, but no data from that node is
//! ever accepted.
//!
//! Before a session exists, payloads wait in a bounded per-peer queue (not in `Tunn`'s own
//! queue, which drops silently) and are flushed in order once the handshake completes.
//!
//! What it must never do: panic or allocate without bound on network input; block the reactor
//! on a slow consumer (a full incoming queue drops and counts); log keys or payloads; use
//! boringtun's `device` module (TUN, signal handlers).

mod reactor;
mod stats;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use self::stats::{EndpointStats, PeerStats};
pub use crate::mesh::frame::MAX_PAYLOAD;

/// How long a provisional peer (see [`EndpointConfigBuilder::accept_unknown_peers`]) has to
/// prove the preshared key with authenticated data before it is dropped.
pub const PROVISIONAL_TTL: Duration = Duration::from_secs(10);
/// Default for the most provisional peers held at once
/// ([`EndpointConfig::max_provisional`]); when full, a new unknown initiation evicts the one
/// unproven longest, if it had a second to prove itself (counted in `provisional_evicted`).
pub const MAX_PROVISIONAL: usize = 256;
/// Most provisional peers one source may hold (an IPv4 address, an IPv6 /64); further
/// initiations from it are dropped and counted (`provisional_source_limited`). So filling the
/// default table takes 64 sources, each of which must also answer cookies under load.
pub const MAX_PROVISIONAL_PER_SOURCE: usize = 4;
use crate::mesh::keys::{MeshKeys, MeshPublicKey, PresharedKey};

use self::reactor::{Command, Reactor};
use self::stats::StatsShared;

/// A payload received from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The authenticated sender.
    pub from: MeshPublicKey,
    /// The payload (at most [`MAX_PAYLOAD`] bytes).
    pub payload: Bytes,
}

/// Errors of the mesh transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A configuration value is out of range; `key` names it.
    #[error("mesh transport config `{key}`: {reason}")]
    Config {
        /// The offending key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The UDP socket could not be bound.
    #[error("cannot bind mesh UDP socket on {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The payload is larger than [`MAX_PAYLOAD`].
    #[error("payload of {len} bytes exceeds the mesh maximum of {max}")]
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A node cannot be its own peer.
    #[error("cannot add this endpoint's own public key as a peer")]
    OwnKey,
    /// The peer table is full.
    #[error("peer table full ({max} peers)")]
    TooManyPeers {
        /// The configured maximum.
        max: usize,
    },
    /// `try_send` found the command queue full (the datagram was dropped and counted).
    #[error("mesh transport command queue full")]
    QueueFull,
    /// The endpoint has shut down.
    #[error("mesh transport endpoint is shut down")]
    Closed,
}

/// Validated endpoint settings. Build with [`EndpointConfig::builder`]; `Default` gives the
/// documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    timer_tick: Duration,
    persistent_keepalive: Option<u16>,
    incoming_queue: usize,
    command_queue: usize,
    pending_per_peer: usize,
    max_peers: usize,
    handshake_rate_limit: u64,
    accept_unknown_peers: bool,
    max_provisional: usize,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            timer_tick: Duration::from_millis(250),
            persistent_keepalive: None,
            incoming_queue: 1024,
            command_queue: 1024,
            pending_per_peer: 1024,
            max_peers: 1024,
            handshake_rate_limit: 100,
            accept_unknown_peers: false,
            max_provisional: MAX_PROVISIONAL,
        }
    }
}

impl EndpointConfig {
    /// Whether a handshake from an unknown key is answered (see [`EndpointConfigBuilder::accept_unknown_peers`]).
    pub fn accept_unknown_peers(&self) -> bool {
        self.accept_unknown_peers
    }

    /// A builder starting from the defaults.
    pub fn builder() -> EndpointConfigBuilder {
        EndpointConfigBuilder {
            config: EndpointConfig::default(),
        }
    }

    /// How often WireGuard's timers run (`update_timers` for every peer). Default 250 ms.
    pub fn timer_tick(&self) -> Duration {
        self.timer_tick
    }

    /// WireGuard persistent keepalive in seconds (for NAT). Default none.
    pub fn persistent_keepalive(&self) -> Option<u16> {
        self.persistent_keepalive
    }

    /// Capacity of the received-datagram queue. Default 1024.
    pub fn incoming_queue(&self) -> usize {
        self.incoming_queue
    }

    /// Capacity of the command (send/add/remove) queue. Default 1024.
    pub fn command_queue(&self) -> usize {
        self.command_queue
    }

    /// Payloads kept per peer while no session exists. Default 1024.
    pub fn pending_per_peer(&self) -> usize {
        self.pending_per_peer
    }

    /// Largest peer table. Default 1024.
    pub fn max_peers(&self) -> usize {
        self.max_peers
    }

    /// Handshake messages per second accepted before cookies are required. Default 100.
    pub fn handshake_rate_limit(&self) -> u64 {
        self.handshake_rate_limit
    }

    /// Most provisional (unproven) peers held at once. Default [`MAX_PROVISIONAL`].
    pub fn max_provisional(&self) -> usize {
        self.max_provisional.min(self.max_peers)
    }
}

/// Builder of [`EndpointConfig`]; [`EndpointConfigBuilder::build`] validates.
#[derive(Debug, Clone)]
pub struct EndpointConfigBuilder {
    config: EndpointConfig,
}

impl EndpointConfigBuilder {
    /// See [`EndpointConfig::timer_tick`]; 10 ms ..= 1 s.
    pub fn timer_tick(mut self, tick: Duration) -> Self {
        self.config.timer_tick = tick;
        self
    }

    /// See [`EndpointConfig::persistent_keepalive`]; 1 ..= 3600 s when set.
    pub fn persistent_keepalive(mut self, secs: Option<u16>) -> Self {
        self.config.persistent_keepalive = secs;
        self
    }

    /// See [`EndpointConfig::incoming_queue`]; 1 ..= 1 000 000.
    pub fn incoming_queue(mut self, n: usize) -> Self {
        self.config.incoming_queue = n;
        self
    }

    /// See [`EndpointConfig::command_queue`]; 1 ..= 1 000 000.
    pub fn command_queue(mut self, n: usize) -> Self {
        self.config.command_queue = n;
        self
    }

    /// See [`EndpointConfig::pending_per_peer`]; 1 ..= 100 000.
    pub fn pending_per_peer(mut self, n: usize) -> Self {
        self.config.pending_per_peer = n;
        self
    }

    /// See [`EndpointConfig::max_peers`]; 1 ..= 65 536.
    pub fn max_peers(mut self, n: usize) -> Self {
        self.config.max_peers = n;
        self
    }

    /// See [`EndpointConfig::handshake_rate_limit`]; 1 ..= 1 000 000.
    pub fn handshake_rate_limit(mut self, per_sec: u64) -> Self {
        self.config.handshake_rate_limit = per_sec;
        self
    }

    /// See [`EndpointConfig::max_provisional`]; 1 ..= 65 536 (the peer table's size bounds
    /// it too).
    pub fn max_provisional(mut self, n: usize) -> Self {
        self.config.max_provisional = n;
        self
    }

    /// Answer handshake initiations from keys that are not peers (default off). Such a key
    /// becomes a *provisional* peer: it is kept only if it sends authenticated data (proving
    /// the preshared key, i.e. the cluster token) within [`PROVISIONAL_TTL`], at most
    /// [`EndpointConfig::max_provisional`] at a time and [`MAX_PROVISIONAL_PER_SOURCE`] per
    /// source, each counted in `peers_accepted` and, when dropped unproven, in
    /// `provisional_expired` (or `provisional_evicted`, to make room). This is how a seed lets a new node in that it was
    /// not told about; a stranger with a valid key but the wrong token never delivers a byte.
    pub fn accept_unknown_peers(mut self, accept: bool) -> Self {
        self.config.accept_unknown_peers = accept;
        self
    }

    /// Validate into an immutable config; the error names the offending key.
    pub fn build(self) -> Result<EndpointConfig, TransportError> {
        let c = self.config;
        let bad = |key: &'static str, reason: String| Err(TransportError::Config { key, reason });
        if !(Duration::from_millis(10)..=Duration::from_secs(1)).contains(&c.timer_tick) {
            return bad(
                "timer_tick",
                format!("{:?} is outside 10 ms ..= 1 s", c.timer_tick),
            );
        }
        if let Some(secs) = c.persistent_keepalive {
            if !(1..=3600).contains(&secs) {
                return bad(
                    "persistent_keepalive",
                    format!("{secs} s is outside 1 ..= 3600"),
                );
            }
        }
        for (key, value, max) in [
            ("incoming_queue", c.incoming_queue, 1_000_000),
            ("command_queue", c.command_queue, 1_000_000),
            ("pending_per_peer", c.pending_per_peer, 100_000),
            ("max_peers", c.max_peers, 65_536),
            ("max_provisional", c.max_provisional, 65_536),
        ] {
            if !(1..=max).contains(&value) {
                return bad(key, format!("{value} is outside 1 ..= {max}"));
            }
        }
        if !(1..=1_000_000).contains(&c.handshake_rate_limit) {
            return bad(
                "handshake_rate_limit",
                format!("{} is outside 1 ..= 1000000", c.handshake_rate_limit),
            );
        }
        Ok(c)
    }
}

/// A cloneable handle to a running endpoint: peer management, sending, statistics.
#[derive(Debug, Clone)]
pub struct EndpointHandle {
    commands: mpsc::Sender<Command>,
    stats: Arc<StatsShared>,
}

impl EndpointHandle {
    /// This endpoint's public key.
    pub fn public_key(&self) -> MeshPublicKey {
        self.stats.public_key
    }

    /// The bound UDP address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.stats.local_addr
    }

    /// Add a peer, or update it if present: idempotent. An `endpoint` of `Some` sets or
    /// replaces where the peer is reached; `None` keeps what is known (the endpoint is then
    /// learned when the peer contacts us).
    pub async fn add_peer(
        &self,
        public_key: MeshPublicKey,
        endpoint: Option<SocketAddr>,
    ) -> Result<(), TransportError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::AddPeer {
                key: public_key,
                endpoint,
                reply,
            })
            .await
            .map_err(|_| TransportError::Closed)?;
        rx.await.map_err(|_| TransportError::Closed)?
    }

    /// Remove a peer and its sessions; returns whether it was present.
    pub async fn remove_peer(&self, public_key: MeshPublicKey) -> Result<bool, TransportError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::RemovePeer {
                key: public_key,
                reply,
            })
            .await
            .map_err(|_| TransportError::Closed)?;
        rx.await.map_err(|_| TransportError::Closed)
    }

    fn check_len(payload: &Bytes) -> Result<(), TransportError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(TransportError::PayloadTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        Ok(())
    }

    /// Queue a datagram for `peer`, waiting while the command queue is full (back-pressure).
    /// Delivery is not confirmed; a datagram to an unconfigured peer is dropped and counted
    /// (`dropped_no_route`).
    pub async fn send(
        &self,
        peer: MeshPublicKey,
        payload: impl Into<Bytes>,
    ) -> Result<(), TransportError> {
        let payload = payload.into();
        Self::check_len(&payload)?;
        self.commands
            .send(Command::Send { peer, payload })
            .await
            .map_err(|_| TransportError::Closed)
    }

    /// Like [`EndpointHandle::send`] but never waits: a full queue drops the datagram, counts
    /// it (`dropped_queue_full`) and returns [`TransportError::QueueFull`].
    pub fn try_send(
        &self,
        peer: MeshPublicKey,
        payload: impl Into<Bytes>,
    ) -> Result<(), TransportError> {
        let payload = payload.into();
        Self::check_len(&payload)?;
        match self.commands.try_send(Command::Send { peer, payload }) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                stats::bump(&self.stats.global.dropped_queue_full);
                Err(TransportError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(TransportError::Closed),
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EndpointStats {
        self.stats.snapshot()
    }
}

/// A running WireGuard endpoint. Dropping it stops the reactor task (as does
/// [`Endpoint::shutdown`], which also waits for it).
#[derive(Debug)]
pub struct Endpoint {
    handle: EndpointHandle,
    incoming: mpsc::Receiver<Datagram>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Endpoint {
    /// Bind the UDP socket on `listen` and start the reactor task (needs a tokio runtime).
    pub async fn bind(
        listen: SocketAddr,
        keys: MeshKeys,
        psk: PresharedKey,
        config: EndpointConfig,
    ) -> Result<Endpoint, TransportError> {
        let socket = UdpSocket::bind(listen)
            .await
            .map_err(|source| TransportError::Bind {
                addr: listen,
                source,
            })?;
        let local_addr = socket.local_addr().map_err(|source| TransportError::Bind {
            addr: listen,
            source,
        })?;
        let stats = Arc::new(StatsShared::new(keys.public_key(), local_addr));
        let (cmd_tx, cmd_rx) = mpsc::channel(config.command_queue);
        let (in_tx, in_rx) = mpsc::channel(config.incoming_queue);
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let reactor = Reactor::new(
            socket,
            keys,
            psk,
            config,
            cmd_rx,
            in_tx,
            Arc::clone(&stats),
            shutdown_rx,
        );
        let task = tokio::spawn(reactor.run());
        Ok(Endpoint {
            handle: EndpointHandle {
                commands: cmd_tx,
                stats,
            },
            incoming: in_rx,
            shutdown: Some(shutdown_tx),
            task: Some(task),
        })
    }

    /// A cloneable handle for other tasks.
    pub fn handle(&self) -> EndpointHandle {
        self.handle.clone()
    }

    /// This endpoint's public key.
    pub fn public_key(&self) -> MeshPublicKey {
        self.handle.public_key()
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// See [`EndpointHandle::add_peer`].
    pub async fn add_peer(
        &self,
        public_key: MeshPublicKey,
        endpoint: Option<SocketAddr>,
    ) -> Result<(), TransportError> {
        self.handle.add_peer(public_key, endpoint).await
    }

    /// See [`EndpointHandle::remove_peer`].
    pub async fn remove_peer(&self, public_key: MeshPublicKey) -> Result<bool, TransportError> {
        self.handle.remove_peer(public_key).await
    }

    /// See [`EndpointHandle::send`].
    pub async fn send(
        &self,
        peer: MeshPublicKey,
        payload: impl Into<Bytes>,
    ) -> Result<(), TransportError> {
        self.handle.send(peer, payload).await
    }

    /// See [`EndpointHandle::try_send`].
    pub fn try_send(
        &self,
        peer: MeshPublicKey,
        payload: impl Into<Bytes>,
    ) -> Result<(), TransportError> {
        self.handle.try_send(peer, payload)
    }

    /// The next received datagram; `None` once the endpoint has shut down and the queue is
    /// drained.
    pub async fn recv(&mut self) -> Option<Datagram> {
        self.incoming.recv().await
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> EndpointStats {
        self.handle.stats()
    }

    /// Whether the reactor task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stop the reactor and wait for it to end (the socket is closed when this returns).
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
