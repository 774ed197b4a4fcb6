//! Counters of one endpoint: atomics written by the reactor, read as a [`EndpointStats`]
//! snapshot by anyone holding a handle (the `status` service serializes it).
//!
//! The reactor is the only writer. The per-peer registry is touched only when a peer is added
//! or removed; packet paths only bump atomics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::mesh::keys::MeshPublicKey;

const NO_HANDSHAKE: u64 = u64::MAX;

/// Counters of one peer.
#[derive(Debug)]
pub(crate) struct PeerCounters {
    pub(crate) rx_packets: AtomicU64,
    pub(crate) rx_bytes: AtomicU64,
    pub(crate) tx_packets: AtomicU64,
    pub(crate) tx_bytes: AtomicU64,
    pub(crate) rx_errors: AtomicU64,
    pub(crate) handshakes: AtomicU64,
    /// Milliseconds since the endpoint started at which the current session was established,
    /// or `NO_HANDSHAKE`.
    last_handshake_ms: AtomicU64,
    endpoint: Mutex<Option<SocketAddr>>,
}

impl PeerCounters {
    pub(crate) fn new(endpoint: Option<SocketAddr>) -> Self {
        PeerCounters {
            rx_packets: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            rx_errors: AtomicU64::new(0),
            handshakes: AtomicU64::new(0),
            last_handshake_ms: AtomicU64::new(NO_HANDSHAKE),
            endpoint: Mutex::new(endpoint),
        }
    }

    pub(crate) fn set_endpoint(&self, endpoint: Option<SocketAddr>) {
        if let Ok(mut guard) = self.endpoint.lock() {
            *guard = endpoint;
        }
    }

    pub(crate) fn set_last_handshake_ms(&self, ms: Option<u64>) {
        self.last_handshake_ms
            .store(ms.unwrap_or(NO_HANDSHAKE), Ordering::Relaxed);
    }
}

/// Endpoint-wide counters.
#[derive(Debug, Default)]
pub(crate) struct GlobalCounters {
    pub(crate) dropped_unknown_peer: AtomicU64,
    pub(crate) dropped_bad_packet: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_no_route: AtomicU64,
    pub(crate) cookie_replies_sent: AtomicU64,
    pub(crate) socket_errors: AtomicU64,
    pub(crate) peers_accepted: AtomicU64,
    pub(crate) provisional_expired: AtomicU64,
    pub(crate) provisional_evicted: AtomicU64,
    pub(crate) provisional_source_limited: AtomicU64,
}

/// Shared between the reactor (writer) and the handles (readers).
#[derive(Debug)]
pub(crate) struct StatsShared {
    started: Instant,
    pub(crate) public_key: MeshPublicKey,
    pub(crate) local_addr: SocketAddr,
    pub(crate) global: GlobalCounters,
    peers: RwLock<BTreeMap<MeshPublicKey, Arc<PeerCounters>>>,
}

/// Increment a counter by one.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Add `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

impl StatsShared {
    pub(crate) fn new(public_key: MeshPublicKey, local_addr: SocketAddr) -> Self {
        StatsShared {
            started: Instant::now(),
            public_key,
            local_addr,
            global: GlobalCounters::default(),
            peers: RwLock::new(BTreeMap::new()),
        }
    }

    /// Milliseconds since the endpoint started.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    pub(crate) fn insert_peer(&self, key: MeshPublicKey, counters: Arc<PeerCounters>) {
        if let Ok(mut peers) = self.peers.write() {
            peers.insert(key, counters);
        }
    }

    pub(crate) fn remove_peer(&self, key: &MeshPublicKey) {
        if let Ok(mut peers) = self.peers.write() {
            peers.remove(key);
        }
    }

    pub(crate) fn snapshot(&self) -> EndpointStats {
        let now_ms = self.now_ms();
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let peers = match self.peers.read() {
            Ok(peers) => peers
                .iter()
                .map(|(key, c)| {
                    let established = load(&c.last_handshake_ms);
                    PeerStats {
                        public_key: *key,
                        endpoint: c.endpoint.lock().ok().and_then(|e| *e),
                        last_handshake_age_ms: (established != NO_HANDSHAKE)
                            .then(|| now_ms.saturating_sub(established)),
                        handshakes: load(&c.handshakes),
                        rx_packets: load(&c.rx_packets),
                        rx_bytes: load(&c.rx_bytes),
                        tx_packets: load(&c.tx_packets),
                        tx_bytes: load(&c.tx_bytes),
                        rx_errors: load(&c.rx_errors),
                    }
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        let g = &self.global;
        EndpointStats {
            public_key: self.public_key,
            local_addr: self.local_addr,
            dropped_unknown_peer: load(&g.dropped_unknown_peer),
            dropped_bad_packet: load(&g.dropped_bad_packet),
            dropped_queue_full: load(&g.dropped_queue_full),
            dropped_no_route: load(&g.dropped_no_route),
            cookie_replies_sent: load(&g.cookie_replies_sent),
            socket_errors: load(&g.socket_errors),
            peers_accepted: load(&g.peers_accepted),
            provisional_expired: load(&g.provisional_expired),
            provisional_evicted: load(&g.provisional_evicted),
            provisional_source_limited: load(&g.provisional_source_limited),
            peers,
        }
    }
}

/// A point-in-time copy of an endpoint's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStats {
    /// This endpoint's public key.
    pub public_key: MeshPublicKey,
    /// The bound UDP address.
    pub local_addr: SocketAddr,
    /// Handshake initiations from a key that is not a configured peer (or, after mac1 passed,
    /// that could not be decrypted at all).
    pub dropped_unknown_peer: u64,
    /// Datagrams that are not WireGuard, fail authentication (including a wrong preshared key),
    /// replays, unroutable session indices, and authenticated packets with a bad inner frame.
    pub dropped_bad_packet: u64,
    /// Datagrams dropped because a bounded queue was full: the incoming queue (receiver too
    /// slow or gone), a peer's pending queue (no session yet) or `try_send`'s command queue.
    pub dropped_queue_full: u64,
    /// Outgoing datagrams to a peer that is not configured, or WireGuard messages that could
    /// not be sent because the peer's endpoint is unknown, or pending payloads discarded when
    /// the handshake gave up.
    pub dropped_no_route: u64,
    /// Cookie replies sent because handshakes arrived faster than the rate limit.
    pub cookie_replies_sent: u64,
    /// Errors from the UDP socket (send or receive).
    pub socket_errors: u64,
    /// Unknown keys whose handshake was answered (provisional peers, when accepted).
    pub peers_accepted: u64,
    /// Provisional peers dropped because they never proved the preshared key.
    pub provisional_expired: u64,
    /// Provisional peers evicted (oldest unproven first) to make room for a new one.
    #[serde(default)]
    pub provisional_evicted: u64,
    /// Unknown initiations dropped because their source IP held its share of unproven slots.
    #[serde(default)]
    pub provisional_source_limited: u64,
    /// One entry per configured peer, ordered by public key.
    pub peers: Vec<PeerStats>,
}

impl EndpointStats {
    /// The entry of one peer.
    pub fn peer(&self, key: &MeshPublicKey) -> Option<&PeerStats> {
        self.peers.iter().find(|p| &p.public_key == key)
    }

    /// Sum of all drop counters.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_unknown_peer
            + self.dropped_bad_packet
            + self.dropped_queue_full
            + self.dropped_no_route
    }
}

/// Counters of one peer. Packet and byte counts are of mesh payloads (not keepalives or
/// handshakes, not WireGuard overhead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStats {
    /// The peer's public key.
    pub public_key: MeshPublicKey,
    /// Where the peer is reached now (configured or learned from authenticated packets).
    pub endpoint: Option<SocketAddr>,
    /// Age of the current WireGuard session in milliseconds, `None` before the first one.
    pub last_handshake_age_ms: Option<u64>,
    /// Sessions established with this peer (initial handshake plus rekeys), as observed at
    /// timer ticks.
    pub handshakes: u64,
    /// Payloads received and queued for the application.
    pub rx_packets: u64,
    /// Bytes of those payloads.
    pub rx_bytes: u64,
    /// Payloads handed to WireGuard for this peer (sent, or pending a handshake).
    pub tx_packets: u64,
    /// Bytes of those payloads.
    pub tx_bytes: u64,
    /// Packets routed to this peer's session that WireGuard refused (bad tag, replay, wrong
    /// preshared key in a handshake response...).
    pub rx_errors: u64,
}

impl PeerStats {
    /// [`PeerStats::last_handshake_age_ms`] as a `Duration`.
    pub fn last_handshake_age(&self) -> Option<Duration> {
        self.last_handshake_age_ms.map(Duration::from_millis)
    }
}
