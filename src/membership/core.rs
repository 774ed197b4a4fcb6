//! The membership state machine: foca's SWIM plus node states, skew checks and counters.
//! I/O-free: the caller passes datagrams, timer events and the time in, and carries out the
//! [`Action`]s that come out (the daemon over the WireGuard endpoint, tests and the benchmark
//! over a simulated network).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use foca::{Codec, Foca, Notification, PostcardCodec, Runtime, Timer};
use rand09::rngs::SmallRng;
use rand09::SeedableRng;

use crate::election::{MembershipView, PeerState, WallTime};
use crate::mesh::MeshPublicKey;

use super::identity::MemberId;
use super::wire::{self, ClusterMsg, Echo, IptWire, IptsMsg, Kind, NodeState, StateMsg, WireError};

/// How many members get the periodic state refresh per `state_interval` (changes go to all).
pub const STATE_FANOUT: usize = 16;

/// Timers and bounds of the membership protocol (validated by the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipConfig {
    /// Messages whose timestamp differs from our clock by more are rejected and counted.
    pub max_clock_skew: Duration,
    /// SWIM probe period: one random member probed per period.
    pub probe_period: Duration,
    /// Wait for a direct ack before asking others to probe indirectly.
    pub probe_timeout: Duration,
    /// Suspected → declared down, unless the member refutes.
    pub suspect_timeout: Duration,
    /// Every member gets our state at least this often.
    pub state_interval: Duration,
    /// Seeds that are not live members are announced to this often.
    pub announce_interval: Duration,
    /// The farthest a gossiped lease may end ahead of our clock (the lease duration plus the
    /// skew bound); a state with a later lease is refused, so no member can hold the role
    /// with a far-future lease.
    pub max_lease_ahead: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            max_clock_skew: Duration::from_secs(5),
            probe_period: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            suspect_timeout: Duration::from_secs(2),
            state_interval: Duration::from_secs(1),
            announce_interval: Duration::from_secs(2),
            max_lease_ahead: Duration::from_secs(6 + 5),
        }
    }
}

impl MembershipConfig {
    fn foca(&self) -> foca::Config {
        // Sized for up to ~1000 members: each update is piggybacked 12 times.
        let mut c = foca::Config::new_lan(NonZeroU32::new(1000).expect("non-zero"));
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_timeout;
        c.suspect_to_down_after = self.suspect_timeout;
        c.max_packet_size = NonZeroUsize::new(wire::MAX_BODY).expect("non-zero");
        // Down members are remembered for 10 minutes so stale gossip cannot resurrect them;
        // a restarted node comes back under a new boot number anyway.
        c.remove_down_after = Duration::from_secs(600);
        c.notify_down_members = true;
        // Anti-entropy: ask a random member for its member list every 5 s (repairs what
        // piggybacked gossip missed), and knock on down members' doors every announce interval
        // so a restarted node without seeds hears of the cluster before its startup hold ends.
        c.periodic_announce = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(5),
            num_members: NonZeroUsize::new(1).expect("non-zero"),
        });
        c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: self.announce_interval,
            num_members: NonZeroUsize::new(3).expect("non-zero"),
        });
        c
    }
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Make sure the transport has this peer, reached at `endpoint`.
    AddPeer {
        /// The peer's key.
        key: MeshPublicKey,
        /// Its advertised endpoint.
        endpoint: SocketAddr,
    },
    /// Drop the transport's peer and its sessions (a member declared down: a restarted
    /// process has none of the old session keys, so the next contact must handshake afresh).
    RemovePeer {
        /// The peer's key.
        key: MeshPublicKey,
    },
    /// Send a datagram (an envelope) to a peer.
    Send {
        /// The recipient.
        to: MeshPublicKey,
        /// The datagram.
        payload: Vec<u8>,
    },
    /// Call [`Membership::handle_timer`] with `timer` after `after`.
    Timer {
        /// The event.
        timer: Timer<MemberId>,
        /// The delay.
        after: Duration,
    },
}

/// A member's liveness as foca sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Answering.
    Alive,
    /// Missed a probe; declared down unless it refutes within the suspect timeout.
    Suspect,
    /// Declared down.
    Down,
}

/// Everything known about one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// Its identity (as last gossiped).
    pub id: MemberId,
    /// Its liveness.
    pub liveness: Liveness,
    /// The last state it sent, if any.
    pub state: Option<NodeState>,
    /// When a valid message from it last arrived (our clock).
    pub last_seen: Option<WallTime>,
    /// The last round-trip time measured through state echoes.
    pub rtt: Option<Duration>,
    /// Its clock minus ours, from its last message (includes one-way delay), in ms.
    pub clock_offset_ms: Option<i64>,
    /// Its messages rejected for clock skew.
    pub rejected_skew: u64,
    /// Its last complete intro-point set: (generation, intro points).
    pub ipts: Option<(u64, Vec<IptWire>)>,
    /// Its node id is held by another key (an earlier claim): it is refused, its state and
    /// intro points count for nothing (not in the election, not in the merge).
    pub duplicate_id: bool,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Datagrams accepted.
    pub received: u64,
    /// Refused: timestamp beyond the skew bound.
    pub rejected_skew: u64,
    /// Refused: not a valid envelope or body (bad magic, version, kind, truncated, invalid).
    pub rejected_malformed: u64,
    /// Refused: the identity or node id claimed does not match the authenticated sender.
    pub rejected_spoofed: u64,
    /// SWIM packets foca refused.
    pub swim_errors: u64,
    /// Members that came up.
    pub members_up: u64,
    /// Members declared down.
    pub members_down: u64,
    /// Members refused because another key already holds their node id.
    pub rejected_duplicate_id: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Cluster messages (key pushes, invite redemptions) accepted from members.
    #[serde(default)]
    pub cluster_msgs: u64,
}

#[derive(Debug, Clone)]
struct Peer {
    id: MemberId,
    state: Option<(u64, u64, NodeState)>,
    last_seen: Option<WallTime>,
    /// Their last timestamp and when it arrived, for the echo.
    last_ts: Option<(u64, WallTime)>,
    rtt: Option<Duration>,
    clock_offset_ms: Option<i64>,
    rejected_skew: u64,
    last_skew_warning: Option<WallTime>,
    /// Its last complete intro-point set: (boot, generation, intro points).
    ipts: Option<(u64, u64, Vec<IptWire>)>,
    /// A set being received in parts.
    ipts_pending: Option<PendingIpts>,
}

/// The parts of one intro-point set received so far.
#[derive(Debug, Clone)]
struct PendingIpts {
    boot: u64,
    generation: u64,
    parts: Vec<Option<Vec<IptWire>>>,
}

impl Peer {
    fn new(id: MemberId) -> Peer {
        Peer {
            id,
            state: None,
            last_seen: None,
            last_ts: None,
            rtt: None,
            clock_offset_ms: None,
            rejected_skew: 0,
            last_skew_warning: None,
            ipts: None,
            ipts_pending: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Note {
    Up(MemberId),
    Down(MemberId),
    Rename(MemberId, MemberId),
    Rejoin(MemberId),
    Other,
}

/// The runtime foca talks to during one call: collects actions and notifications.
struct Collect<'a> {
    now: WallTime,
    out: &'a mut Vec<Action>,
    notes: &'a mut Vec<Note>,
    wg: &'a mut HashMap<[u8; 32], SocketAddr>,
    counters: &'a mut Counters,
}

impl Collect<'_> {
    fn ensure_peer(&mut self, id: &MemberId) -> Option<MeshPublicKey> {
        let key = id.public_key()?;
        if self.wg.get(&id.key) != Some(&id.endpoint) {
            self.wg.insert(id.key, id.endpoint);
            self.out.push(Action::AddPeer {
                key,
                endpoint: id.endpoint,
            });
        }
        Some(key)
    }
}

impl Runtime<MemberId> for Collect<'_> {
    fn notify(&mut self, notification: Notification<'_, MemberId>) {
        self.notes.push(match notification {
            Notification::MemberUp(id) => Note::Up(id.clone()),
            Notification::MemberDown(id) => Note::Down(id.clone()),
            Notification::Rename(a, b) => Note::Rename(a.clone(), b.clone()),
            Notification::Rejoin(id) => Note::Rejoin(id.clone()),
            _ => Note::Other,
        });
    }

    fn send_to(&mut self, to: MemberId, data: &[u8]) {
        let Some(key) = self.ensure_peer(&to) else {
            return;
        };
        match wire::encode(Kind::Swim, self.now, data) {
            Ok(payload) => {
                self.counters.sent += 1;
                self.out.push(Action::Send { to: key, payload });
            }
            Err(e) => tracing::warn!(error = %e, "SWIM packet not sent"),
        }
    }

    fn submit_after(&mut self, timer: Timer<MemberId>, after: Duration) {
        self.out.push(Action::Timer { timer, after });
    }
}

/// One node's membership: who is in the mesh, alive, and in what state.
pub struct Membership {
    config: MembershipConfig,
    foca: Foca<MemberId, PostcardCodec, SmallRng, foca::NoCustomBroadcast>,
    me: MemberId,
    seeds: Vec<MemberId>,
    local: NodeState,
    local_seq: u64,
    local_ipts: Vec<IptWire>,
    peers: HashMap<[u8; 32], Peer>,
    wg: HashMap<[u8; 32], SocketAddr>,
    out: Vec<Action>,
    notes: Vec<Note>,
    counters: Counters,
    last_state_round: Option<WallTime>,
    /// Where the round-robin refresh continues.
    refresh_cursor: usize,
    last_announce: Option<WallTime>,
    changed: bool,
    /// When a duplicate node id was last warned about, per id.
    duplicate_warned: HashMap<String, WallTime>,
    /// Cluster messages from members, for the service to hand on.
    inbox: Vec<(String, ClusterMsg)>,
}

impl Membership {
    /// A member `me` with initial state `local`, joining through `seeds` (key and endpoint of
    /// nodes to announce to; may be empty for the first node). `rng_seed` seeds foca's random
    /// member selection.
    pub fn new(
        me: MemberId,
        config: MembershipConfig,
        local: NodeState,
        seeds: &[(MeshPublicKey, SocketAddr)],
        rng_seed: u64,
    ) -> Membership {
        let seeds = seeds
            .iter()
            .filter(|(k, _)| k.as_bytes() != &me.key)
            .map(|(k, e)| MemberId::seed(k, *e))
            .collect();
        Membership {
            foca: Foca::new(
                me.clone(),
                config.foca(),
                SmallRng::seed_from_u64(rng_seed),
                PostcardCodec,
            ),
            config,
            me,
            seeds,
            local,
            local_seq: 1,
            local_ipts: Vec::new(),
            peers: HashMap::new(),
            wg: HashMap::new(),
            out: Vec::new(),
            notes: Vec::new(),
            counters: Counters::default(),
            last_state_round: None,
            refresh_cursor: 0,
            last_announce: None,
            changed: true,
            duplicate_warned: HashMap::new(),
            inbox: Vec::new(),
        }
    }

    /// This node's current identity (its boot number changes on a rejoin).
    pub fn me(&self) -> &MemberId {
        &self.me
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// This node's advertised state.
    pub fn local(&self) -> &NodeState {
        &self.local
    }

    /// The actions produced so far; the caller carries them out in order.
    pub fn drain_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// The cluster messages received from members since the last call, with the sender's
    /// node id.
    pub fn drain_cluster_msgs(&mut self) -> Vec<(String, ClusterMsg)> {
        std::mem::take(&mut self.inbox)
    }

    /// A cluster message to every live member (not refused duplicates): the datagrams to send.
    pub fn broadcast_cluster(
        &mut self,
        now: WallTime,
        msg: &ClusterMsg,
    ) -> Result<usize, WireError> {
        let body = msg.encode()?;
        let datagram = wire::encode(Kind::Cluster, now, &body)?;
        let targets: Vec<MeshPublicKey> = self
            .peers()
            .into_iter()
            .filter(|p| p.liveness != Liveness::Down && !p.duplicate_id)
            .filter_map(|p| p.id.public_key())
            .collect();
        for to in &targets {
            self.counters.sent += 1;
            self.out.push(Action::Send {
                to: *to,
                payload: datagram.clone(),
            });
        }
        Ok(targets.len())
    }

    /// Whether the view (members, liveness, states) changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::replace(&mut self.changed, false)
    }

    fn with_foca<R>(
        &mut self,
        now: WallTime,
        f: impl FnOnce(
            &mut Foca<MemberId, PostcardCodec, SmallRng, foca::NoCustomBroadcast>,
            &mut Collect<'_>,
        ) -> R,
    ) -> R {
        let mut rt = Collect {
            now,
            out: &mut self.out,
            notes: &mut self.notes,
            wg: &mut self.wg,
            counters: &mut self.counters,
        };
        let r = f(&mut self.foca, &mut rt);
        self.apply_notes(now);
        r
    }

    fn apply_notes(&mut self, now: WallTime) {
        let notes = std::mem::take(&mut self.notes);
        for note in notes {
            match note {
                Note::Up(id) => {
                    self.counters.members_up += 1;
                    tracing::info!(member = %id.short(), endpoint = %id.endpoint, "member up");
                    self.check_duplicate_id(now, &id);
                    self.learn(id.clone());
                    self.send_state_to(now, &id);
                    self.send_ipts_to(now, &id);
                }
                Note::Down(id) => {
                    self.counters.members_down += 1;
                    tracing::warn!(member = %id.short(), "member declared down");
                    if let (Some(key), Some(_)) = (id.public_key(), self.wg.remove(&id.key)) {
                        self.out.push(Action::RemovePeer { key });
                    }
                }
                Note::Rename(old, new) => {
                    tracing::info!(from = %old.short(), to = %new.short(), boot = new.boot, "member renewed");
                    self.check_duplicate_id(now, &new);
                    self.learn(new);
                }
                Note::Rejoin(new_me) => {
                    tracing::warn!(boot = new_me.boot, "this node was declared down; rejoined");
                    self.me = new_me;
                }
                Note::Other => {}
            }
            self.changed = true;
        }
    }

    /// Which key holds `node_id`: of this node and every active member claiming it, the
    /// earliest claim (lowest boot, then lowest key). Every member computes the same holder
    /// from the same membership, so a second key claiming an existing id is refused alike by
    /// all, the two claimants included.
    fn id_holder(&self, node_id: &str) -> [u8; 32] {
        std::iter::once(&self.me)
            .chain(self.foca.iter_members().map(|m| m.id()))
            .filter(|id| id.node_id == node_id)
            .map(|id| (id.boot, id.key))
            .min()
            .map_or(self.me.key, |(_, key)| key)
    }

    /// Whether the member `id` is refused: another key holds its node id.
    fn is_duplicate(&self, id: &MemberId) -> bool {
        self.id_holder(&id.node_id) != id.key
    }

    /// The member holding this node's id, if that is not this node: this node is then the
    /// duplicate, refused by the cluster, and must neither publish nor count itself in.
    pub fn id_taken_by(&self) -> Option<MemberId> {
        let holder = self.id_holder(&self.me.node_id);
        (holder != self.me.key)
            .then(|| {
                self.foca
                    .iter_members()
                    .map(|m| m.id().clone())
                    .find(|m| m.key == holder)
            })
            .flatten()
    }

    /// Counts and warns (at most every 30 s per id) when `id` and another key claim one node
    /// id; the warning names both keys and which one holds the id.
    fn check_duplicate_id(&mut self, now: WallTime, id: &MemberId) {
        let other = std::iter::once(&self.me)
            .chain(self.foca.iter_members().map(|m| m.id()))
            .find(|m| m.node_id == id.node_id && m.key != id.key)
            .cloned();
        let Some(other) = other else { return };
        self.counters.rejected_duplicate_id += 1;
        let due = self
            .duplicate_warned
            .get(&id.node_id)
            .is_none_or(|t| now.saturating_duration_since(*t) >= Duration::from_secs(30));
        if !due {
            return;
        }
        self.duplicate_warned.insert(id.node_id.clone(), now);
        let holder = self.id_holder(&id.node_id);
        let (kept, refused) = if holder == id.key {
            (id, &other)
        } else {
            (&other, id)
        };
        let key = |m: &MemberId| m.public_key().map(|k| k.to_base64()).unwrap_or_default();
        tracing::warn!(
            node_id = %id.node_id,
            holder = %key(kept),
            refused = %key(refused),
            this_node_refused = refused.key == self.me.key,
            "two keys claim one node id: the earlier claim keeps it, the other is refused \
             (give every node its own node.id)"
        );
    }

    /// Records a gossiped identity; the transport learns its key and endpoint (this is what
    /// turns a chain into a full mesh).
    fn learn(&mut self, id: MemberId) {
        if let Some(key) = id.public_key() {
            if self.wg.get(&id.key) != Some(&id.endpoint) {
                self.wg.insert(id.key, id.endpoint);
                self.out.push(Action::AddPeer {
                    key,
                    endpoint: id.endpoint,
                });
            }
        }
        let peer = self
            .peers
            .entry(id.key)
            .or_insert_with(|| Peer::new(id.clone()));
        if peer.id.node_id != id.node_id {
            // Another node id on the same key: nothing it said holds for the new one.
            peer.state = None;
        }
        // A restarted process's old state stays stored (the new life's first state replaces
        // it, sent the moment it sees us) but is not shown: views and the election ignore
        // state and intro points of an earlier process (see `same_life`), so neither the old
        // life's lease nor its dead intro points count for the new one.
        peer.id = id;
    }

    /// Starts joining: announces to every seed. Call once after creation; [`Membership::tick`]
    /// repeats it for the seeds that are not live members.
    pub fn join(&mut self, now: WallTime) {
        self.announce_to_seeds(now, false);
    }

    /// Announces to the seeds (all of them, or only those not held live). Seeds are retried
    /// until they answer: a seed that was not up yet when this node started, or that went away
    /// and came back, is reached without waiting for some member to mention it.
    fn announce_to_seeds(&mut self, now: WallTime, only_missing: bool) {
        self.last_announce = Some(now);
        let live: std::collections::HashSet<[u8; 32]> =
            self.foca.iter_members().map(|m| m.id().key).collect();
        let seeds: Vec<MemberId> = self
            .seeds
            .iter()
            .filter(|s| !only_missing || !live.contains(&s.key))
            .cloned()
            .collect();
        for seed in seeds {
            self.with_foca(now, |foca, rt| {
                if let Err(e) = foca.announce(seed.clone(), rt) {
                    tracing::debug!(error = %e, "announce failed");
                }
            });
        }
    }

    /// Periodic duties; call at least every 100 ms: state to every member each
    /// `state_interval`, announces to seeds not yet (or no longer) live members each
    /// `announce_interval`.
    pub fn tick(&mut self, now: WallTime) {
        if self
            .last_announce
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.announce_interval)
        {
            self.announce_to_seeds(now, true);
        }
        if self
            .last_state_round
            .is_none_or(|t| now.saturating_duration_since(t) >= self.config.state_interval)
        {
            self.state_round(now);
        }
    }

    /// The periodic refresh: our state to the next [`STATE_FANOUT`] members in round-robin
    /// order, so every member hears from us at least every `ceil(n / 16)` intervals (every
    /// interval up to 16 members) while the cost per node stays constant as the mesh grows.
    fn state_round(&mut self, now: WallTime) {
        self.last_state_round = Some(now);
        // Forget what foca forgot (down members are dropped after a while): the peer table
        // stays as large as the membership.
        let known: std::collections::HashSet<[u8; 32]> = self
            .foca
            .iter_membership_state()
            .map(|m| m.id().key)
            .collect();
        self.peers.retain(|k, _| known.contains(k));
        let ids: std::collections::HashSet<String> = self
            .foca
            .iter_membership_state()
            .map(|m| m.id().node_id.clone())
            .collect();
        self.duplicate_warned.retain(|id, _| ids.contains(id));
        let members: Vec<MemberId> = self.foca.iter_members().map(|m| m.id().clone()).collect();
        if members.is_empty() {
            return;
        }
        let n = members.len().min(STATE_FANOUT);
        for i in 0..n {
            let id = &members[(self.refresh_cursor + i) % members.len()];
            self.send_state_to(now, id);
            self.send_ipts_to(now, id);
        }
        self.refresh_cursor = (self.refresh_cursor + n) % members.len();
    }

    /// A change goes to every live member at once; against loss, the periodic refresh
    /// ([`Membership::tick`]) repeats it.
    fn broadcast_state(&mut self, now: WallTime) {
        let members: Vec<MemberId> = self.foca.iter_members().map(|m| m.id().clone()).collect();
        for id in members {
            self.send_state_to(now, &id);
        }
    }

    fn send_state_to(&mut self, now: WallTime, id: &MemberId) {
        let Some(key) = id.public_key() else { return };
        let echo = self
            .peers
            .get(&id.key)
            .and_then(|p| p.last_ts)
            .and_then(|(ts, at)| {
                let held = now.saturating_duration_since(at);
                (held <= self.config.state_interval * 2).then(|| Echo {
                    timestamp: ts,
                    held_ms: u32::try_from(held.as_millis()).unwrap_or(u32::MAX),
                })
            });
        let msg = StateMsg {
            node_id: self.me.node_id.clone(),
            boot: self.me.boot,
            seq: self.local_seq,
            state: self.local.clone(),
            echo,
        };
        match msg
            .encode()
            .and_then(|b| wire::encode(Kind::State, now, &b))
        {
            Ok(payload) => {
                if self.wg.get(&id.key) != Some(&id.endpoint) {
                    self.wg.insert(id.key, id.endpoint);
                    self.out.push(Action::AddPeer {
                        key,
                        endpoint: id.endpoint,
                    });
                }
                self.counters.sent += 1;
                self.out.push(Action::Send { to: key, payload });
            }
            Err(e) => tracing::warn!(error = %e, "state not sent"),
        }
    }

    fn send_ipts_to(&mut self, now: WallTime, id: &MemberId) {
        let Some(key) = id.public_key() else { return };
        let parts = IptsMsg::split(
            &self.me.node_id,
            self.me.boot,
            self.local.intro_points.generation,
            &self.local_ipts,
        );
        for part in parts {
            match part
                .encode()
                .and_then(|b| wire::encode(Kind::Ipts, now, &b))
            {
                Ok(payload) => {
                    self.counters.sent += 1;
                    self.out.push(Action::Send { to: key, payload });
                }
                Err(e) => tracing::warn!(error = %e, "intro points not sent"),
            }
        }
    }

    /// Replaces this node's intro points (advertised as `generation` in the state); a new
    /// generation goes to every member at once.
    pub fn set_local_ipts(&mut self, now: WallTime, generation: u64, ipts: Vec<IptWire>) {
        if generation == self.local.intro_points.generation && ipts == self.local_ipts {
            return;
        }
        self.local_ipts = ipts;
        let mut state = self.local.clone();
        state.intro_points = wire::IptSummary {
            generation,
            count: u16::try_from(self.local_ipts.len()).unwrap_or(u16::MAX),
        };
        let members: Vec<MemberId> = self.foca.iter_members().map(|m| m.id().clone()).collect();
        self.local = state.clone();
        self.local_seq += 1;
        self.changed = true;
        for id in &members {
            self.send_ipts_to(now, id);
        }
        self.broadcast_state(now);
    }

    /// This node's intro points.
    pub fn local_ipts(&self) -> &[IptWire] {
        &self.local_ipts
    }

    /// Replaces this node's advertised state; a change goes to every member at once.
    pub fn set_local(&mut self, now: WallTime, state: NodeState) {
        if state == self.local {
            return;
        }
        self.local = state;
        self.local_seq += 1;
        self.changed = true;
        self.broadcast_state(now);
    }

    /// Leaves the cluster: members learn at once that this node is gone (a clean stop does
    /// not wait for the failure detector).
    pub fn leave(&mut self, now: WallTime) {
        self.with_foca(now, |foca, rt| {
            if let Err(e) = foca.leave_cluster(rt) {
                tracing::debug!(error = %e, "leave");
            }
        });
    }

    /// A foca timer fired.
    pub fn handle_timer(&mut self, now: WallTime, timer: Timer<MemberId>) {
        self.with_foca(now, |foca, rt| {
            if let Err(e) = foca.handle_timer(timer, rt) {
                tracing::debug!(error = %e, "timer");
            }
        });
    }

    /// A datagram from the authenticated peer `from`. Invalid input is counted and dropped.
    pub fn handle_datagram(&mut self, now: WallTime, from: &MeshPublicKey, datagram: &[u8]) {
        match self.try_datagram(now, from, datagram) {
            Ok(()) => self.counters.received += 1,
            Err(Refused::Malformed(e)) => {
                self.counters.rejected_malformed += 1;
                tracing::debug!(peer = %from.short(), error = %e, "malformed datagram dropped");
            }
            Err(Refused::Spoofed(what)) => {
                self.counters.rejected_spoofed += 1;
                tracing::warn!(peer = %from.short(), what, "datagram claims another identity; dropped");
            }
            Err(Refused::Skew) => self.counters.rejected_skew += 1,
            Err(Refused::Swim(e)) => {
                self.counters.swim_errors += 1;
                tracing::debug!(peer = %from.short(), error = %e, "SWIM packet refused");
            }
        }
    }

    fn try_datagram(
        &mut self,
        now: WallTime,
        from: &MeshPublicKey,
        datagram: &[u8],
    ) -> Result<(), Refused> {
        let env = wire::decode(datagram).map_err(Refused::Malformed)?;
        let ts = env.timestamp.as_millis();
        let offset = i128::from(ts) - i128::from(now.as_millis());
        let offset_ms = i64::try_from(offset).unwrap_or(i64::MAX);
        let skewed = offset.unsigned_abs() > self.config.max_clock_skew.as_millis();
        if skewed {
            if let Some(p) = self.peers.get_mut(from.as_bytes()) {
                p.rejected_skew += 1;
                p.clock_offset_ms = Some(offset_ms);
                let warn = p
                    .last_skew_warning
                    .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(30));
                if warn {
                    p.last_skew_warning = Some(now);
                    tracing::warn!(
                        member = %p.id.short(),
                        offset_ms,
                        max_ms = self.config.max_clock_skew.as_millis() as u64,
                        "peer's clock is off beyond mesh.max_clock_skew: its messages are rejected"
                    );
                }
            } else {
                tracing::warn!(peer = %from.short(), offset_ms, "message beyond mesh.max_clock_skew rejected");
            }
            return Err(Refused::Skew);
        }
        match env.kind {
            Kind::Swim => {
                let header =
                    PostcardCodec
                        .decode_header(env.body)
                        .map_err(|e: postcard::Error| {
                            Refused::Malformed(WireError::Body {
                                kind: Kind::Swim,
                                reason: e.to_string(),
                            })
                        })?;
                let src: &MemberId = &header.src;
                if src.key != *from.as_bytes() {
                    return Err(Refused::Spoofed("SWIM source key"));
                }
                if !src.is_valid() {
                    return Err(Refused::Malformed(WireError::Invalid {
                        field: "identity",
                        problem: "bad node id or endpoint",
                    }));
                }
                self.check_swim_identities(now, &header, env.body)?;
                self.seen(now, from, ts, offset_ms);
                let body = env.body;
                self.with_foca(now, |foca, rt| foca.handle_data(body, rt))
                    .map_err(|e| Refused::Swim(e.to_string()))
            }
            Kind::Ipts => {
                let msg = IptsMsg::decode(env.body).map_err(Refused::Malformed)?;
                if msg.boot > self.latest_boot(now) {
                    return Err(Refused::Malformed(WireError::Invalid {
                        field: "ipts.boot",
                        problem: "a start time in the future",
                    }));
                }
                let Some(peer) = self.peers.get_mut(from.as_bytes()) else {
                    return Ok(());
                };
                if peer.id.node_id != msg.node_id {
                    return Err(Refused::Spoofed("intro points node id"));
                }
                if peer.ipts.as_ref().is_some_and(|(b, g, _)| {
                    msg.boot < *b || (msg.boot == *b && msg.generation == *g)
                }) {
                    // Older life, or the set we already have.
                    self.seen(now, from, ts, offset_ms);
                    return Ok(());
                }
                let fresh_pending = peer.ipts_pending.as_ref().is_none_or(|p| {
                    (p.boot, p.generation) != (msg.boot, msg.generation)
                        || p.parts.len() != msg.parts as usize
                });
                if fresh_pending {
                    peer.ipts_pending = Some(PendingIpts {
                        boot: msg.boot,
                        generation: msg.generation,
                        parts: vec![None; msg.parts as usize],
                    });
                }
                if let Some(p) = peer.ipts_pending.as_mut() {
                    p.parts[msg.part as usize] = Some(msg.ipts);
                    if p.parts.iter().all(Option::is_some) {
                        let all: Vec<IptWire> = p
                            .parts
                            .iter_mut()
                            .flat_map(|part| part.take().unwrap_or_default())
                            .collect();
                        peer.ipts = Some((p.boot, p.generation, all));
                        peer.ipts_pending = None;
                        self.changed = true;
                    }
                }
                self.seen(now, from, ts, offset_ms);
                Ok(())
            }
            Kind::Cluster => {
                let msg = ClusterMsg::decode(env.body).map_err(Refused::Malformed)?;
                let Some(peer) = self.peers.get(from.as_bytes()) else {
                    // Only members speak for the cluster.
                    return Err(Refused::Spoofed("cluster message from a non-member"));
                };
                let id = peer.id.clone();
                if self.is_duplicate(&id) {
                    return Err(Refused::Spoofed(
                        "cluster message from a refused duplicate id",
                    ));
                }
                self.counters.cluster_msgs += 1;
                self.inbox.push((id.node_id.clone(), msg));
                self.seen(now, from, ts, offset_ms);
                Ok(())
            }
            Kind::State => {
                let msg = StateMsg::decode(env.body).map_err(Refused::Malformed)?;
                if msg.boot > self.latest_boot(now) {
                    return Err(Refused::Malformed(WireError::Invalid {
                        field: "state.boot",
                        problem: "a start time in the future",
                    }));
                }
                if let Some(lease) = &msg.state.lease {
                    if lease.until.as_millis()
                        > now.saturating_add(self.config.max_lease_ahead).as_millis()
                    {
                        return Err(Refused::Malformed(WireError::Invalid {
                            field: "state.lease.until",
                            problem: "ends beyond the lease duration plus the skew bound",
                        }));
                    }
                }
                let Some(peer) = self.peers.get_mut(from.as_bytes()) else {
                    // Not gossiped yet: its SWIM traffic will introduce it, and it resends.
                    return Ok(());
                };
                if peer.id.node_id != msg.node_id {
                    return Err(Refused::Spoofed("state node id"));
                }
                let newer = peer
                    .state
                    .as_ref()
                    .is_none_or(|(b, s, _)| (msg.boot, msg.seq) > (*b, *s));
                let fresh = peer
                    .state
                    .as_ref()
                    .is_none_or(|(b, s, _)| (msg.boot, msg.seq) >= (*b, *s));
                if newer {
                    peer.state = Some((msg.boot, msg.seq, msg.state));
                    self.changed = true;
                }
                if fresh {
                    if let Some(echo) = msg.echo {
                        let rtt = now
                            .as_millis()
                            .checked_sub(echo.timestamp)
                            .and_then(|d| d.checked_sub(u64::from(echo.held_ms)));
                        if let Some(rtt) = rtt.filter(|r| *r < 60_000) {
                            peer.rtt = Some(Duration::from_millis(rtt));
                        }
                    }
                }
                self.seen(now, from, ts, offset_ms);
                Ok(())
            }
        }
    }

    /// The latest boot a member may claim at `now`: its start time, on a clock within the
    /// skew bound, plus foca's renewals (+1 each).
    fn latest_boot(&self, now: WallTime) -> u64 {
        now.saturating_add(self.config.max_clock_skew)
            .as_millis()
            .saturating_add(RENEWALS)
    }

    /// Every identity a SWIM packet carries (its updates and the one in its message) must be
    /// well formed and claim no boot in the future: an insider could otherwise gossip another
    /// member's key with a huge boot, which wins every identity conflict (foca keeps the
    /// higher boot) and redirects that member's endpoint for good.
    fn check_swim_identities(
        &self,
        now: WallTime,
        header: &foca::Header<MemberId>,
        body: &[u8],
    ) -> Result<(), Refused> {
        use bytes::Buf;
        use foca::Message;
        let latest = self.latest_boot(now);
        let check = |id: &MemberId, field: &'static str| {
            if !id.is_valid() {
                return Err(Refused::Malformed(WireError::Invalid {
                    field,
                    problem: "bad node id, key or endpoint",
                }));
            }
            if id.boot > latest {
                return Err(Refused::Malformed(WireError::Invalid {
                    field,
                    problem: "a boot (start time) in the future",
                }));
            }
            Ok(())
        };
        check(&header.src, "SWIM source")?;
        match &header.message {
            Message::PingReq { target: id, .. }
            | Message::IndirectPing { origin: id, .. }
            | Message::IndirectAck { target: id, .. }
            | Message::ForwardedAck { origin: id, .. } => check(id, "SWIM message identity")?,
            _ => {}
        }
        let malformed = |e: postcard::Error| {
            Refused::Malformed(WireError::Body {
                kind: Kind::Swim,
                reason: e.to_string(),
            })
        };
        // The updates follow the header as foca reads them: a u16 count, then members.
        let mut data = body;
        let _: foca::Header<MemberId> =
            PostcardCodec.decode_header(&mut data).map_err(malformed)?;
        if data.remaining() >= 2
            && !matches!(header.message, Message::Broadcast | Message::Announce)
        {
            let n = data.get_u16();
            for _ in 0..n {
                let member: foca::Member<MemberId> =
                    PostcardCodec.decode_member(&mut data).map_err(malformed)?;
                check(member.id(), "SWIM update identity")?;
            }
        }
        Ok(())
    }

    fn seen(&mut self, now: WallTime, from: &MeshPublicKey, ts: u64, offset_ms: i64) {
        if let Some(p) = self.peers.get_mut(from.as_bytes()) {
            p.last_seen = Some(now);
            p.last_ts = Some((ts, now));
            p.clock_offset_ms = Some(offset_ms);
        }
    }

    /// Every member foca knows (down ones included, until forgotten), with what we know of it.
    pub fn peers(&self) -> Vec<PeerView> {
        let mut out: Vec<PeerView> = self
            .foca
            .iter_membership_state()
            .map(|m| {
                let id = m.id();
                let p = self.peers.get(&id.key);
                PeerView {
                    id: id.clone(),
                    liveness: match m.state() {
                        foca::State::Alive => Liveness::Alive,
                        foca::State::Suspect => Liveness::Suspect,
                        foca::State::Down => Liveness::Down,
                    },
                    state: p
                        .and_then(|p| p.state.as_ref())
                        .filter(|(b, _, _)| same_life(*b, id.boot))
                        .map(|(_, _, s)| s.clone()),
                    last_seen: p.and_then(|p| p.last_seen),
                    rtt: p.and_then(|p| p.rtt),
                    clock_offset_ms: p.and_then(|p| p.clock_offset_ms),
                    rejected_skew: p.map(|p| p.rejected_skew).unwrap_or(0),
                    ipts: p
                        .and_then(|p| p.ipts.as_ref())
                        .filter(|(b, _, _)| same_life(*b, id.boot))
                        .map(|(_, g, i)| (*g, i.clone())),
                    duplicate_id: self.is_duplicate(id),
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.node_id.cmp(&b.id.node_id));
        out
    }

    /// How many peers the table holds (for tests: it follows foca's membership).
    pub fn peer_table_len(&self) -> usize {
        self.peers.len()
    }

    /// How many members foca holds active (alive or suspect).
    pub fn live_members(&self) -> usize {
        self.foca.num_members()
    }

    /// What the election sees: live members that have told us their state.
    pub fn election_view(&self) -> MembershipView {
        MembershipView {
            self_id: self.me.node_id.clone(),
            self_priority: self.local.priority,
            self_eligible: self.local.health.eligible(),
            peers: self
                .foca
                .iter_members()
                // A refused duplicate id counts for nothing; neither does a holder of this
                // node's own id (then this node is the duplicate and the agent stands by).
                .filter(|m| m.id().node_id != self.me.node_id && !self.is_duplicate(m.id()))
                .filter_map(|m| {
                    let p = self.peers.get(&m.id().key)?;
                    // Only what this life said: a restarted node's old lease is not held by
                    // anyone, and honouring it made the current holder step down.
                    let (_, _, s) = p
                        .state
                        .as_ref()
                        .filter(|(b, _, _)| same_life(*b, m.id().boot))?;
                    Some(PeerState {
                        id: m.id().node_id.clone(),
                        priority: s.priority,
                        eligible: s.health.eligible(),
                        lease: s.lease.clone(),
                    })
                })
                .collect(),
        }
    }
}

/// Whether state sent with `state_boot` belongs to the process now known as `id_boot`. A
/// process's boot is its start time in ms; foca renewing its identity (after being declared
/// down) adds 1 each time, so the same process stays within a few units, while a restart
/// starts at least a second later. A newer state boot than the id's is fine too: foca's view
/// of a renewed identity can lag the node's own messages.
fn same_life(state_boot: u64, id_boot: u64) -> bool {
    state_boot.saturating_add(RENEWALS) > id_boot
}

/// How far foca's identity renewals (+1 each) may move one process's boot.
const RENEWALS: u64 = 1000;

enum Refused {
    Malformed(WireError),
    Spoofed(&'static str),
    Skew,
    Swim(String),
}

#[cfg(test)]
mod life_tests {
    use super::same_life;

    #[test]
    fn renewals_are_the_same_life_and_a_restart_is_not() {
        let start = 1_795_526_770_047;
        assert!(same_life(start, start));
        assert!(
            same_life(start, start + 3),
            "foca renewed the identity three times"
        );
        assert!(
            same_life(start + 3, start),
            "foca's view lags the node's messages"
        );
        // Restarted 2 s later: the old life's lease and intro points no longer count.
        assert!(!same_life(start, start + 2_000));
    }
}
