//! The reactor task: sole owner of the UDP socket, the peer table and every `Tunn`.
//!
//! One loop selects on: the shutdown signal, the timer tick, the socket and the command
//! channel. Every boringtun `TunnResult` is handled: `WriteToNetwork` is sent (followed, after
//! `decapsulate`, by the drain loop `decapsulate(None, &[])` until `Done`), `WriteToTunnelV4`
//! is deframed and delivered, `WriteToTunnelV6` and `Err` are counted as bad packets.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::PublicKey;
use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tracing::{debug, trace, Instrument};

use super::stats::{add, bump, PeerCounters, StatsShared};
use super::{
    Datagram, EndpointConfig, TransportError, MAX_PROVISIONAL_PER_SOURCE, PROVISIONAL_TTL,
};
use crate::mesh::frame::{self, MAX_FRAME};
use crate::mesh::keys::{MeshKeys, MeshPublicKey, PresharedKey};

/// Size of the receive and work buffers: larger than any valid WireGuard message we accept
/// (a full data message is 32 + `MAX_FRAME` bytes). `decapsulate` needs an output buffer at
/// least as long as its input, so both buffers have this size and a longer datagram is
/// truncated by `recv_from` (and then fails authentication).
const BUF_LEN: usize = 2048;

/// Upper bound of the drain loop after one `decapsulate` (defence against a logic loop).
const MAX_DRAIN: usize = 1024;

/// WireGuard's REKEY_TIMEOUT. After answering a peer's handshake initiation, the send path
/// does not start a handshake of its own for this long: the responder of a fresh handshake has
/// no current session until the initiator's first data packet arrives, and starting a second,
/// crossing handshake meanwhile would make boringtun forget the first one (its response is
/// then refused). A handshake we started is retransmitted by boringtun (`update_timers`).
const HANDSHAKE_TRIGGER_INTERVAL: Duration = Duration::from_secs(5);

/// What counts as one source for the provisional limits: an IPv4 address, or an IPv6 /64
/// (one host typically holds a whole /64).
fn source_of(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                std::net::IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
        v4 => v4,
    }
}

/// A provisional peer this young is not evicted for a newer one.
const MIN_EVICTABLE_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// WireGuard message type of a cookie reply (first byte, little-endian u32).
const MSG_COOKIE_REPLY: u8 = 3;

/// A request from a handle.
#[derive(Debug)]
pub(crate) enum Command {
    AddPeer {
        key: MeshPublicKey,
        endpoint: Option<SocketAddr>,
        reply: oneshot::Sender<Result<(), TransportError>>,
    },
    RemovePeer {
        key: MeshPublicKey,
        reply: oneshot::Sender<bool>,
    },
    Send {
        peer: MeshPublicKey,
        payload: Bytes,
    },
}

/// Which WireGuard message a datagram was, for the roaming rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Init,
    Response,
    Cookie,
    Data,
}

struct Peer {
    key: MeshPublicKey,
    index: u32,
    tunn: Tunn,
    endpoint: Option<SocketAddr>,
    tunnel_ip: Ipv4Addr,
    /// Payloads waiting for a session (bounded by `pending_per_peer`).
    pending: VecDeque<Bytes>,
    /// When the current session was established (ms since endpoint start), to count rekeys.
    established_ms: Option<u64>,
    /// When we last answered the peer's handshake initiation.
    last_init_answered: Option<Instant>,
    /// Set while the peer is provisional: accepted from an unknown handshake and not yet
    /// proven by authenticated data.
    provisional_since: Option<Instant>,
    /// The source its unproven handshake came from ([`source_of`]; per-source limit).
    provisional_from: Option<std::net::IpAddr>,
    counters: Arc<PeerCounters>,
}

impl Peer {
    /// Whether `encapsulate` would encrypt now (boringtun reports a handshake age exactly when
    /// its current session slot is filled, which is what `encapsulate` checks).
    fn has_session(&self) -> bool {
        self.tunn.time_since_last_handshake().is_some()
    }

    fn set_endpoint(&mut self, endpoint: SocketAddr) {
        if self.endpoint != Some(endpoint) {
            debug!(peer = %self.key.short(), %endpoint, "peer endpoint updated");
            self.endpoint = Some(endpoint);
            self.counters.set_endpoint(Some(endpoint));
        }
    }
}

/// Everything but the peers, so a peer can be borrowed mutably alongside.
struct Io<'a> {
    socket: &'a UdpSocket,
    stats: &'a StatsShared,
    incoming: &'a mpsc::Sender<Datagram>,
    own_ip: Ipv4Addr,
}

impl Io<'_> {
    async fn send_to(&self, packet: &[u8], to: Option<SocketAddr>) {
        let Some(to) = to else {
            bump(&self.stats.global.dropped_no_route);
            return;
        };
        if let Err(err) = self.socket.send_to(packet, to).await {
            bump(&self.stats.global.socket_errors);
            debug!(%to, %err, "mesh UDP send failed");
        }
    }

    fn bad_packet(&self, counters: Option<&PeerCounters>) {
        bump(&self.stats.global.dropped_bad_packet);
        if let Some(c) = counters {
            bump(&c.rx_errors);
        }
    }

    /// Deframe an authenticated inner packet and queue it for the application.
    fn deliver(&self, peer: &Peer, packet: &[u8]) {
        match frame::decode(packet) {
            Ok(f) if f.src == peer.tunnel_ip && f.dst == self.own_ip => {
                let datagram = Datagram {
                    from: peer.key,
                    payload: Bytes::copy_from_slice(f.payload),
                };
                let len = datagram.payload.len();
                // Counted before queueing so a reader never sees a datagram its counters
                // do not include yet; taken back if the queue refuses it.
                bump(&peer.counters.rx_packets);
                add(&peer.counters.rx_bytes, len);
                if self.incoming.try_send(datagram).is_err() {
                    peer.counters.rx_packets.fetch_sub(1, Ordering::Relaxed);
                    peer.counters
                        .rx_bytes
                        .fetch_sub(len as u64, Ordering::Relaxed);
                    bump(&self.stats.global.dropped_queue_full);
                }
            }
            Ok(_) | Err(_) => {
                trace!(peer = %peer.key.short(), "authenticated packet with a bad inner frame");
                self.bad_packet(Some(&peer.counters));
            }
        }
    }

    /// Encrypt and send one payload on the current session (caller checked `has_session`).
    async fn encrypt_and_send(&self, peer: &mut Peer, payload: &[u8], work: &mut [u8]) {
        let mut framed = [0u8; MAX_FRAME];
        let len = match frame::encode(self.own_ip, peer.tunnel_ip, payload, &mut framed) {
            Ok(len) => len,
            Err(_) => {
                // Unreachable: handles check the length. Count rather than panic.
                bump(&self.stats.global.dropped_bad_packet);
                return;
            }
        };
        match peer.tunn.encapsulate(&framed[..len], work) {
            TunnResult::WriteToNetwork(packet) => {
                bump(&peer.counters.tx_packets);
                add(&peer.counters.tx_bytes, payload.len());
                self.send_to(packet, peer.endpoint).await;
            }
            TunnResult::Done => {
                // Queued inside Tunn behind a handshake in progress (not expected after the
                // session check); it is flushed by the drain loop.
                bump(&peer.counters.tx_packets);
                add(&peer.counters.tx_bytes, payload.len());
            }
            TunnResult::Err(err) => {
                debug!(peer = %peer.key.short(), ?err, "encapsulate failed");
                bump(&self.stats.global.dropped_no_route);
            }
            TunnResult::WriteToTunnelV4(..) | TunnResult::WriteToTunnelV6(..) => {}
        }
    }

    /// Track the peer's current session: its age for the stats, and a new establishment time
    /// (initial handshake or rekey) for the handshake counter.
    fn note_session(&self, peer: &mut Peer) {
        let Some(age) = peer.tunn.time_since_last_handshake() else {
            peer.counters.set_last_handshake_ms(None);
            return;
        };
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        let at = self.stats.now_ms().saturating_sub(age_ms);
        // A new session moves the establishment time forward; tolerate clock jitter (boringtun
        // stamps events with the time of its last timer tick).
        if peer.established_ms.is_none_or(|prev| at > prev + 1000) {
            bump(&peer.counters.handshakes);
            debug!(peer = %peer.key.short(), "session established");
            peer.established_ms = Some(at);
        }
        peer.counters.set_last_handshake_ms(peer.established_ms);
    }

    /// Start a handshake for pending payloads, unless one is in progress (boringtun then
    /// returns `Done`) or we just answered the peer's (see `HANDSHAKE_TRIGGER_INTERVAL`).
    async fn start_handshake(&self, peer: &mut Peer, work: &mut [u8]) {
        if peer
            .last_init_answered
            .is_some_and(|at| at.elapsed() < HANDSHAKE_TRIGGER_INTERVAL)
        {
            return;
        }
        if let TunnResult::WriteToNetwork(packet) =
            peer.tunn.format_handshake_initiation(work, false)
        {
            self.send_to(packet, peer.endpoint).await;
        }
    }

    /// Flush the peer's pending payloads if a session exists now.
    async fn flush_pending(&self, peer: &mut Peer, work: &mut [u8]) {
        while peer.has_session() {
            let Some(payload) = peer.pending.pop_front() else {
                break;
            };
            self.encrypt_and_send(peer, &payload, work).await;
        }
    }

    /// After a `decapsulate` that produced output, repeat with an empty datagram until `Done`
    /// (boringtun's contract), sending what comes out to the peer's endpoint.
    async fn drain(&self, peer: &mut Peer, work: &mut [u8]) {
        for _ in 0..MAX_DRAIN {
            match peer.tunn.decapsulate(None, &[], work) {
                TunnResult::WriteToNetwork(packet) => self.send_to(packet, peer.endpoint).await,
                _ => break,
            }
        }
    }
}

pub(crate) struct Reactor {
    socket: UdpSocket,
    keys: MeshKeys,
    own_public: PublicKey,
    psk: PresharedKey,
    config: EndpointConfig,
    own_ip: Ipv4Addr,
    peers: HashMap<MeshPublicKey, Peer>,
    by_index: HashMap<u32, MeshPublicKey>,
    rate_limiter: Arc<RateLimiter>,
    commands: mpsc::Receiver<Command>,
    incoming: mpsc::Sender<Datagram>,
    stats: Arc<StatsShared>,
    shutdown: oneshot::Receiver<()>,
}

impl Reactor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        socket: UdpSocket,
        keys: MeshKeys,
        psk: PresharedKey,
        config: EndpointConfig,
        commands: mpsc::Receiver<Command>,
        incoming: mpsc::Sender<Datagram>,
        stats: Arc<StatsShared>,
        shutdown: oneshot::Receiver<()>,
    ) -> Self {
        let own_public = keys.public_key().to_x25519();
        // Initiations pass the limiter twice (our pre-check, then `Tunn::decapsulate`), so
        // the shared limiter allows twice the configured rate.
        let rate_limiter = Arc::new(RateLimiter::new(
            &own_public,
            config.handshake_rate_limit().saturating_mul(2),
        ));
        Reactor {
            own_ip: frame::tunnel_addr(&keys.public_key()),
            socket,
            keys,
            own_public,
            psk,
            config,
            peers: HashMap::new(),
            by_index: HashMap::new(),
            rate_limiter,
            commands,
            incoming,
            stats,
            shutdown,
        }
    }

    pub(crate) async fn run(self) {
        let span = tracing::debug_span!("mesh", node = %self.keys.public_key().short());
        self.run_inner().instrument(span).await;
    }

    async fn run_inner(mut self) {
        let mut rx = vec![0u8; BUF_LEN];
        let mut work = vec![0u8; BUF_LEN];
        let mut tick = tokio::time::interval(self.config.timer_tick());
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        debug!(addr = %self.stats.local_addr, "mesh endpoint running");
        loop {
            tokio::select! {
                _ = &mut self.shutdown => break,
                _ = tick.tick() => self.on_tick(&mut work).await,
                received = self.socket.recv_from(&mut rx) => match received {
                    Ok((len, src)) => self.on_datagram(&rx[..len], src, &mut work).await,
                    Err(err) => {
                        bump(&self.stats.global.socket_errors);
                        debug!(%err, "mesh UDP receive failed");
                    }
                },
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command, &mut work).await,
                    None => break,
                },
            }
        }
        debug!("mesh endpoint stopped");
    }

    fn io(&self) -> Io<'_> {
        Io {
            socket: &self.socket,
            stats: &self.stats,
            incoming: &self.incoming,
            own_ip: self.own_ip,
        }
    }

    async fn on_command(&mut self, command: Command, work: &mut [u8]) {
        match command {
            Command::AddPeer {
                key,
                endpoint,
                reply,
            } => {
                let result = self.add_peer(key, endpoint);
                if let Some(peer) = self.peers.get_mut(&key) {
                    // Named by the caller: no longer provisional.
                    peer.provisional_since = None;
                    peer.provisional_from = None;
                }
                let _ = reply.send(result);
            }
            Command::RemovePeer { key, reply } => {
                let removed = match self.peers.remove(&key) {
                    Some(peer) => {
                        self.by_index.remove(&peer.index);
                        self.stats.remove_peer(&key);
                        add(&self.stats.global.dropped_no_route, peer.pending.len());
                        debug!(peer = %key.short(), "peer removed");
                        true
                    }
                    None => false,
                };
                let _ = reply.send(removed);
            }
            Command::Send { peer, payload } => {
                let io = Io {
                    socket: &self.socket,
                    stats: &self.stats,
                    incoming: &self.incoming,
                    own_ip: self.own_ip,
                };
                let Some(peer) = self.peers.get_mut(&peer) else {
                    bump(&self.stats.global.dropped_no_route);
                    return;
                };
                if peer.has_session() {
                    io.flush_pending(peer, work).await;
                    if peer.pending.is_empty() {
                        io.encrypt_and_send(peer, &payload, work).await;
                        return;
                    }
                }
                if peer.pending.len() >= self.config.pending_per_peer() {
                    bump(&self.stats.global.dropped_queue_full);
                    return;
                }
                peer.pending.push_back(payload);
                io.start_handshake(peer, work).await;
            }
        }
    }

    fn add_peer(
        &mut self,
        key: MeshPublicKey,
        endpoint: Option<SocketAddr>,
    ) -> Result<(), TransportError> {
        if key == self.keys.public_key() {
            return Err(TransportError::OwnKey);
        }
        if let Some(peer) = self.peers.get_mut(&key) {
            if let Some(endpoint) = endpoint {
                peer.set_endpoint(endpoint);
            }
            return Ok(());
        }
        if self.peers.len() >= self.config.max_peers() {
            return Err(TransportError::TooManyPeers {
                max: self.config.max_peers(),
            });
        }
        // 24-bit peer index; boringtun puts it in the upper bits of its session indices.
        let index = loop {
            let candidate = rand::random::<u32>() & 0x00ff_ffff;
            if candidate != 0 && !self.by_index.contains_key(&candidate) {
                break candidate;
            }
        };
        let tunn = Tunn::new(
            self.keys.secret().clone(),
            key.to_x25519(),
            Some(self.psk.bytes()),
            self.config.persistent_keepalive(),
            index,
            Some(Arc::clone(&self.rate_limiter)),
        );
        let counters = Arc::new(PeerCounters::new(endpoint));
        self.stats.insert_peer(key, Arc::clone(&counters));
        self.by_index.insert(index, key);
        self.peers.insert(
            key,
            Peer {
                key,
                index,
                tunn,
                endpoint,
                tunnel_ip: frame::tunnel_addr(&key),
                pending: VecDeque::new(),
                established_ms: None,
                last_init_answered: None,
                provisional_since: None,
                provisional_from: None,
                counters,
            },
        );
        debug!(peer = %key.short(), ?endpoint, "peer added");
        Ok(())
    }

    /// Find which configured peer a datagram belongs to, or count why it is dropped.
    fn route(&self, data: &[u8], src: SocketAddr, work: &mut [u8]) -> Route {
        let packet = match Tunn::parse_incoming_packet(data) {
            Ok(packet) => packet,
            Err(_) => return Route::Bad,
        };
        let by_index = |idx: u32, kind: Kind| match self.by_index.get(&(idx >> 8)) {
            Some(key) => Route::Peer(*key, kind),
            None => Route::Bad,
        };
        match packet {
            Packet::HandshakeInit(ref init) => {
                // mac1 and rate limit before spending a Diffie-Hellman on it.
                match self.rate_limiter.verify_packet(Some(src.ip()), data, work) {
                    Ok(_) => {}
                    Err(TunnResult::WriteToNetwork(cookie)) => {
                        return Route::Cookie(cookie.len());
                    }
                    Err(_) => return Route::Bad,
                }
                match parse_handshake_anon(self.keys.secret(), &self.own_public, init) {
                    Ok(half) => match MeshPublicKey::from_bytes(half.peer_static_public) {
                        Ok(key) if self.peers.contains_key(&key) => Route::Peer(key, Kind::Init),
                        Ok(key)
                            if self.config.accept_unknown_peers()
                                && key != self.keys.public_key() =>
                        {
                            // One source may hold only a few unproven slots; a full table
                            // makes room by evicting the oldest unproven peer (a real joiner
                            // proves itself within a round trip, so holding slots is useless).
                            if self.provisional_from(source_of(src.ip()))
                                >= MAX_PROVISIONAL_PER_SOURCE
                            {
                                Route::SourceLimited
                            } else {
                                Route::Accept(key)
                            }
                        }
                        _ => Route::UnknownPeer,
                    },
                    // mac1 was right for our key, but the static key does not decrypt.
                    Err(_) => Route::UnknownPeer,
                }
            }
            Packet::HandshakeResponse(ref p) => by_index(p.receiver_idx, Kind::Response),
            Packet::PacketCookieReply(ref p) => by_index(p.receiver_idx, Kind::Cookie),
            Packet::PacketData(ref p) => by_index(p.receiver_idx, Kind::Data),
        }
    }

    async fn on_datagram(&mut self, data: &[u8], src: SocketAddr, work: &mut [u8]) {
        let (key, kind) = match self.route(data, src, work) {
            Route::Peer(key, kind) => (key, kind),
            Route::Accept(key) => {
                if self.provisional_count() >= self.config.max_provisional()
                    && !self.evict_oldest_provisional()
                {
                    // Every slot was taken within the last moment: a real joiner in one of
                    // them is about to prove itself; this one retries (WireGuard: 5 s).
                    bump(&self.stats.global.dropped_unknown_peer);
                    return;
                }
                if self.add_peer(key, None).is_err() {
                    bump(&self.stats.global.dropped_unknown_peer);
                    return;
                }
                if let Some(peer) = self.peers.get_mut(&key) {
                    peer.provisional_since = Some(Instant::now());
                    peer.provisional_from = Some(source_of(src.ip()));
                }
                bump(&self.stats.global.peers_accepted);
                debug!(peer = %key.short(), %src, "unknown key's handshake answered (provisional)");
                (key, Kind::Init)
            }
            Route::Bad => {
                bump(&self.stats.global.dropped_bad_packet);
                return;
            }
            Route::UnknownPeer => {
                bump(&self.stats.global.dropped_unknown_peer);
                return;
            }
            Route::SourceLimited => {
                bump(&self.stats.global.dropped_unknown_peer);
                bump(&self.stats.global.provisional_source_limited);
                return;
            }
            Route::Cookie(len) => {
                // The cookie reply is in `work`.
                bump(&self.stats.global.cookie_replies_sent);
                self.io().send_to(&work[..len], Some(src)).await;
                return;
            }
        };
        let io = Io {
            socket: &self.socket,
            stats: &self.stats,
            incoming: &self.incoming,
            own_ip: self.own_ip,
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            io.bad_packet(None);
            return;
        };
        // `authenticated`: the packet proved the preshared key (roaming is allowed).
        let authenticated = match peer.tunn.decapsulate(Some(src.ip()), data, work) {
            TunnResult::WriteToNetwork(packet) => {
                let is_cookie = packet.first() == Some(&MSG_COOKIE_REPLY);
                if is_cookie {
                    bump(&io.stats.global.cookie_replies_sent);
                } else if kind == Kind::Init {
                    peer.last_init_answered = Some(Instant::now());
                    if peer.endpoint.is_none() {
                        peer.set_endpoint(src);
                    }
                }
                io.send_to(packet, Some(src)).await;
                !is_cookie && kind == Kind::Response
            }
            TunnResult::WriteToTunnelV4(packet, _) => {
                io.deliver(peer, packet);
                true
            }
            TunnResult::WriteToTunnelV6(..) => {
                io.bad_packet(Some(&peer.counters));
                true
            }
            // A keepalive (data) or a processed cookie reply.
            TunnResult::Done => kind == Kind::Data,
            TunnResult::Err(err) => {
                trace!(peer = %peer.key.short(), ?err, ?kind, "packet refused by WireGuard");
                io.bad_packet(Some(&peer.counters));
                return;
            }
        };
        if authenticated && matches!(kind, Kind::Data | Kind::Response) {
            peer.set_endpoint(src);
            if kind == Kind::Data && peer.provisional_since.take().is_some() {
                debug!(peer = %peer.key.short(), "provisional peer proved the preshared key");
            }
        }
        // Handshake messages and the first data packet of a new session switch sessions.
        io.note_session(peer);
        io.drain(peer, work).await;
        io.flush_pending(peer, work).await;
    }

    fn provisional_count(&self) -> usize {
        self.peers
            .values()
            .filter(|p| p.provisional_since.is_some())
            .count()
    }

    /// Unproven peers whose handshake came from `ip`.
    fn provisional_from(&self, ip: std::net::IpAddr) -> usize {
        self.peers
            .values()
            .filter(|p| p.provisional_since.is_some() && p.provisional_from == Some(ip))
            .count()
    }

    /// Makes room for a new provisional peer: drops the one unproven longest, if it has had
    /// [`MIN_EVICTABLE_AGE`] to prove itself (a joiner proves itself within a round trip, so a
    /// burst of strangers cannot evict it before it does). Returns whether a slot was freed.
    fn evict_oldest_provisional(&mut self) -> bool {
        let oldest = self
            .peers
            .values()
            .filter_map(|p| p.provisional_since.map(|t| (t, p.key)))
            .min_by_key(|(t, _)| *t)
            .filter(|(t, _)| t.elapsed() >= MIN_EVICTABLE_AGE)
            .map(|(_, key)| key);
        let Some(key) = oldest else {
            return false;
        };
        if let Some(peer) = self.peers.remove(&key) {
            self.by_index.remove(&peer.index);
            self.stats.remove_peer(&key);
            bump(&self.stats.global.provisional_evicted);
            debug!(peer = %key.short(), "provisional peer evicted to make room");
        }
        true
    }

    /// Drops provisional peers that did not prove the preshared key in time.
    fn expire_provisional(&mut self) {
        let expired: Vec<MeshPublicKey> = self
            .peers
            .values()
            .filter(|p| {
                p.provisional_since
                    .is_some_and(|t| t.elapsed() >= PROVISIONAL_TTL)
            })
            .map(|p| p.key)
            .collect();
        for key in expired {
            if let Some(peer) = self.peers.remove(&key) {
                self.by_index.remove(&peer.index);
                self.stats.remove_peer(&key);
                bump(&self.stats.global.provisional_expired);
                debug!(peer = %key.short(), "provisional peer never proved the preshared key; dropped");
            }
        }
    }

    async fn on_tick(&mut self, work: &mut [u8]) {
        self.rate_limiter.reset_count();
        self.expire_provisional();
        let io = Io {
            socket: &self.socket,
            stats: &self.stats,
            incoming: &self.incoming,
            own_ip: self.own_ip,
        };
        for peer in self.peers.values_mut() {
            match peer.tunn.update_timers(work) {
                TunnResult::WriteToNetwork(packet) => io.send_to(packet, peer.endpoint).await,
                TunnResult::Err(WireGuardError::ConnectionExpired) => {
                    // The handshake gave up (or keys aged out): pending payloads are lost.
                    add(&io.stats.global.dropped_no_route, peer.pending.len());
                    peer.pending.clear();
                }
                TunnResult::Err(err) => {
                    trace!(peer = %peer.key.short(), ?err, "update_timers error");
                }
                _ => {}
            }
            io.note_session(peer);
            if peer.has_session() {
                io.flush_pending(peer, work).await;
            } else if !peer.pending.is_empty() {
                // Payloads still wait: make sure a handshake is under way.
                io.start_handshake(peer, work).await;
            }
        }
    }
}

/// Where an incoming datagram goes.
enum Route {
    Peer(MeshPublicKey, Kind),
    /// Not WireGuard, failed mac1, or an unknown session index.
    Bad,
    /// A valid initiation from a key that is not a peer.
    UnknownPeer,
    /// An unknown key's initiation from a source that already holds its share of unproven
    /// slots.
    SourceLimited,
    /// A valid initiation from a key that is not a peer, to be answered provisionally.
    Accept(MeshPublicKey),
    /// Rate limited: a cookie reply of this length is in the work buffer.
    Cookie(usize),
}

#[cfg(test)]
mod tests {
    use super::source_of;
    use std::net::IpAddr;

    #[test]
    fn one_source_is_an_ipv4_address_or_an_ipv6_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(source_of(ip("127.0.0.5")), ip("127.0.0.5"));
        assert_eq!(source_of(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(source_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            source_of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            source_of(ip("2001:db8:1:2::7"))
        );
        assert_ne!(
            source_of(ip("2001:db8:1:3::1")),
            source_of(ip("2001:db8:1:2::1"))
        );
    }
}
