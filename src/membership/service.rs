//! The membership task: runs an [`Agent`] (membership + election) over the WireGuard
//! [`Endpoint`] with the real clock, and reports through channels:
//! - in: this node's health and intro-point summary ([`LocalInputs`], a watch);
//! - out: the election's role (a watch the publisher obeys) and a [`MeshStatus`] for the status
//!   endpoint (refreshed every 500 ms).
//!
//! One task owns the endpoint's receive side, foca's timers and the agent; it steps the agent
//! every 100 ms. On shutdown it leaves the cluster (members drop it at once instead of waiting
//! for the failure detector) and closes the endpoint.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use foca::Timer;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::election::{ElectionConfig, Lease, Reason, Role, WallTime};
use crate::mesh::{
    Endpoint, EndpointConfig, EndpointHandle, EndpointStats, MeshKeys, MeshPublicKey, PresharedKey,
    TransportError,
};

use super::agent::Agent;
use super::core::{Action, Counters, Liveness, Membership, MembershipConfig};
use super::identity::MemberId;
use super::wire::{ClusterMsg, Health, IptSummary, IptWire, KeyCoverage, NodeState};

/// How often the agent is stepped.
pub const STEP: Duration = Duration::from_millis(100);
/// How often the status is refreshed.
pub const STATUS_EVERY: Duration = Duration::from_millis(500);
/// Cluster messages queued each way (more are dropped and resent by their senders).
pub const CLUSTER_QUEUE: usize = 64;

/// What the rest of the node tells the mesh about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalInputs {
    /// Health.
    pub health: Health,
    /// The intro points' generation (changes whenever they do).
    pub ipt_generation: u64,
    /// This node's intro points.
    pub ipts: Vec<IptWire>,
    /// This node's master key coverage.
    pub keys: KeyCoverage,
    /// This node's own suggested PoW effort.
    pub pow_effort: u32,
}

/// What the rest of the node asks of the mesh.
#[derive(Debug)]
pub enum MeshCommand {
    /// Send a cluster message to every live member.
    Broadcast(ClusterMsg),
    /// A node was just granted a join: add its WireGuard key at once, so its handshake is
    /// expected rather than provisional.
    ExpectPeer {
        /// Its WireGuard public key.
        key: MeshPublicKey,
        /// Its endpoint.
        endpoint: SocketAddr,
    },
}

/// Where a member is in its life, as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// In the mesh, its first state not received yet.
    Joining,
    /// Starting: Arti bootstrapping, or no intro points yet.
    Initializing,
    /// Serving: healthy, with intro points.
    Healthy,
    /// Its target does not answer: out of the descriptor.
    TargetDown,
    /// Its own Tor side is broken (self-check failing): out of the descriptor, repairing.
    TorBroken,
    /// Refused: another key holds its node id.
    Refused,
    /// Declared down.
    Down,
}

impl Lifecycle {
    /// A member's lifecycle from what it advertises.
    pub fn of(liveness: Liveness, duplicate_id: bool, state: Option<&NodeState>) -> Lifecycle {
        if duplicate_id {
            return Lifecycle::Refused;
        }
        if liveness == Liveness::Down {
            return Lifecycle::Down;
        }
        match state {
            None => Lifecycle::Joining,
            Some(s) => match s.health {
                Health::TargetDown => Lifecycle::TargetDown,
                Health::TorBroken => Lifecycle::TorBroken,
                Health::Healthy if s.intro_points.count > 0 => Lifecycle::Healthy,
                _ => Lifecycle::Initializing,
            },
        }
    }
}

/// A live member's intro points, for the publisher's merged descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIpts {
    /// Its node id.
    pub node_id: String,
    /// Whether it advertises itself healthy (its intro points belong in the descriptor).
    pub healthy: bool,
    /// The set's generation.
    pub generation: u64,
    /// Its intro points.
    pub ipts: Vec<IptWire>,
    /// Its own suggested PoW effort.
    pub pow_effort: u32,
    /// Its weight (`node.weight`).
    pub weight: u32,
}

/// Everything needed to start the task.
pub struct ServiceConfig {
    /// This node's id.
    pub node_id: String,
    /// Its priority.
    pub priority: u32,
    /// Its weight (`node.weight`).
    pub weight: u32,
    /// WireGuard keys.
    pub keys: MeshKeys,
    /// The cluster token's preshared key.
    pub psk: PresharedKey,
    /// UDP listen address.
    pub listen: SocketAddr,
    /// Endpoint advertised to peers.
    pub endpoint: SocketAddr,
    /// Seeds: key and endpoint.
    pub seeds: Vec<(MeshPublicKey, SocketAddr)>,
    /// Membership timers.
    pub membership: MembershipConfig,
    /// Election timers.
    pub election: ElectionConfig,
}

/// One member as the status endpoint shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Node id.
    pub node_id: String,
    /// WireGuard public key (base64).
    pub public_key: String,
    /// Advertised endpoint.
    pub endpoint: String,
    /// Boot number of the life we know.
    pub boot: u64,
    /// Liveness per the failure detector.
    pub liveness: Liveness,
    /// Advertised priority, health and role (absent until its first state arrived).
    pub priority: Option<u32>,
    /// Its health.
    pub health: Option<Health>,
    /// Its role.
    pub role: Option<Role>,
    /// The lease it advertises.
    pub lease: Option<Lease>,
    /// Its intro points.
    pub intro_points: Option<IptSummary>,
    /// Milliseconds since a valid message from it arrived.
    pub last_seen_ms_ago: Option<u64>,
    /// Round-trip time through the mesh, in ms.
    pub rtt_ms: Option<u64>,
    /// Its clock minus ours (plus one-way delay), in ms.
    pub clock_offset_ms: Option<i64>,
    /// Its messages refused for clock skew.
    pub rejected_skew: u64,
    /// Age of the WireGuard session with it, in ms (None: no direct session).
    pub wireguard_handshake_age_ms: Option<u64>,
    /// Refused: another key holds its node id (its state and intro points are not used).
    pub duplicate_id: bool,
    /// Where it is in its life: joining → initializing → healthy.
    pub lifecycle: Lifecycle,
    /// Its master key coverage (absent until its first state arrived).
    pub keys: Option<KeyCoverage>,
    /// Its own suggested PoW effort (absent until its first state arrived).
    #[serde(default)]
    pub pow_effort: Option<u32>,
    /// Its weight (absent until its first state arrived).
    #[serde(default)]
    pub weight: Option<u32>,
}

/// The mesh part of `rustbalance status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshStatus {
    /// This node's WireGuard public key (base64), for other nodes' seeds.
    pub public_key: String,
    /// Advertised endpoint.
    pub endpoint: String,
    /// This life's boot number.
    pub boot: u64,
    /// The election's decision.
    pub role: Role,
    /// Why: the election's reason, as data (`{"kind": "lease_held", "holder": "n1"}`).
    pub reason: Option<Reason>,
    /// The lease this node advertises.
    pub lease: Option<Lease>,
    /// Who publishes, as far as this node can tell (itself, or the member advertising it).
    pub publisher: Option<String>,
    /// Role changes since start.
    pub role_changes: u64,
    /// Members (down ones included until forgotten), by node id.
    pub members: Vec<MemberStatus>,
    /// Membership counters.
    pub counters: Counters,
    /// WireGuard transport counters.
    pub transport: EndpointStats,
}

impl MeshStatus {
    /// Members held alive or suspect.
    pub fn live_members(&self) -> impl Iterator<Item = &MemberStatus> {
        self.members.iter().filter(|m| m.liveness != Liveness::Down)
    }
}

/// The running task's outputs.
pub struct MeshHandle {
    /// The current role.
    pub role: watch::Receiver<Role>,
    /// The latest status.
    pub status: watch::Receiver<Option<MeshStatus>>,
    /// Where to report this node's health and intro points.
    pub inputs: watch::Sender<LocalInputs>,
    /// Live members' complete intro-point sets (changes only when they do).
    pub peer_ipts: watch::Receiver<Vec<PeerIpts>>,
    /// Cluster messages from members, with the sender's node id.
    pub cluster_msgs: mpsc::Receiver<(String, ClusterMsg)>,
    /// Requests to the mesh.
    pub commands: mpsc::Sender<MeshCommand>,
    /// The task; ends after shutdown.
    pub task: JoinHandle<()>,
}

fn wall_now() -> WallTime {
    WallTime::from_system_time(SystemTime::now())
}

/// Binds the endpoint and starts the task. Fails only if the UDP socket cannot be bound.
pub async fn start(
    config: ServiceConfig,
    initial: LocalInputs,
    shutdown: watch::Receiver<bool>,
) -> Result<MeshHandle, TransportError> {
    let endpoint_config = EndpointConfig::builder()
        .accept_unknown_peers(true)
        .build()?;
    let public = config.keys.public_key();
    let endpoint = Endpoint::bind(config.listen, config.keys, config.psk, endpoint_config).await?;
    let now = wall_now();
    let me = MemberId {
        node_id: config.node_id.clone(),
        key: *public.as_bytes(),
        endpoint: config.endpoint,
        boot: now.as_millis(),
    };
    let local = NodeState {
        priority: config.priority,
        health: initial.health,
        role: Role::Standby,
        lease: None,
        intro_points: IptSummary::default(),
        keys: initial.keys,
        pow_effort: initial.pow_effort,
        weight: config.weight,
    };
    let membership = Membership::new(
        me,
        config.membership,
        local,
        &config.seeds,
        rand::random::<u64>(),
    );
    let agent = Agent::new(membership, config.election);
    let (role_tx, role_rx) = watch::channel(Role::Standby);
    let (status_tx, status_rx) = watch::channel(None);
    let (inputs_tx, inputs_rx) = watch::channel(initial);
    let (peer_ipts_tx, peer_ipts_rx) = watch::channel(Vec::new());
    let (cluster_tx, cluster_rx) = mpsc::channel(CLUSTER_QUEUE);
    let (commands_tx, commands_rx) = mpsc::channel(CLUSTER_QUEUE);
    tracing::info!(
        public_key = %public.to_base64(),
        endpoint = %config.endpoint,
        seeds = config.seeds.len(),
        "mesh starting"
    );
    let task = tokio::spawn(run(
        endpoint,
        agent,
        inputs_rx,
        Outputs {
            role: role_tx,
            status: status_tx,
            peer_ipts: peer_ipts_tx,
            cluster: cluster_tx,
        },
        commands_rx,
        shutdown,
    ));
    Ok(MeshHandle {
        role: role_rx,
        status: status_rx,
        inputs: inputs_tx,
        peer_ipts: peer_ipts_rx,
        cluster_msgs: cluster_rx,
        commands: commands_tx,
        task,
    })
}

/// foca's timers, due at monotonic instants.
#[derive(Default)]
struct Timers {
    seq: u64,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    events: HashMap<u64, Timer<MemberId>>,
}

impl Timers {
    fn push(&mut self, timer: Timer<MemberId>, after: Duration) {
        self.seq += 1;
        self.heap.push(Reverse((Instant::now() + after, self.seq)));
        self.events.insert(self.seq, timer);
    }

    fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    fn pop_due(&mut self, now: Instant) -> Vec<Timer<MemberId>> {
        let mut out = Vec::new();
        while let Some(&Reverse((at, seq))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            if let Some(t) = self.events.remove(&seq) {
                out.push(t);
            }
        }
        out
    }
}

async fn execute(agent: &mut Agent, handle: &EndpointHandle, timers: &mut Timers) {
    for action in agent.membership().drain_actions() {
        match action {
            Action::AddPeer { key, endpoint } => {
                if let Err(e) = handle.add_peer(key, Some(endpoint)).await {
                    tracing::warn!(peer = %key.short(), error = %e, "could not add mesh peer");
                }
            }
            Action::RemovePeer { key } => {
                let _ = handle.remove_peer(key).await;
            }
            Action::Send { to, payload } => {
                // A full queue drops (and counts) rather than stalling membership.
                let _ = handle.try_send(to, payload);
            }
            Action::Timer { timer, after } => timers.push(timer, after),
        }
    }
}

struct Outputs {
    role: watch::Sender<Role>,
    status: watch::Sender<Option<MeshStatus>>,
    peer_ipts: watch::Sender<Vec<PeerIpts>>,
    cluster: mpsc::Sender<(String, ClusterMsg)>,
}

/// Live members whose complete intro-point set matches the generation their state advertises.
fn peer_ipts(agent: &Agent) -> Vec<PeerIpts> {
    agent
        .membership_ref()
        .peers()
        .into_iter()
        .filter(|p| p.liveness != Liveness::Down && !p.duplicate_id)
        .filter_map(|p| {
            let state = p.state?;
            let (generation, ipts) = p.ipts?;
            (generation == state.intro_points.generation).then(|| PeerIpts {
                node_id: p.id.node_id,
                healthy: state.health.eligible(),
                generation,
                ipts,
                pow_effort: state.pow_effort,
                weight: state.weight,
            })
        })
        .collect()
}

async fn run(
    mut endpoint: Endpoint,
    mut agent: Agent,
    mut inputs: watch::Receiver<LocalInputs>,
    out: Outputs,
    mut commands: mpsc::Receiver<MeshCommand>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Outputs {
        role: role_tx,
        status: status_tx,
        peer_ipts: peer_ipts_tx,
        cluster: cluster_tx,
    } = out;
    let handle = endpoint.handle();
    let mut timers = Timers::default();
    agent.membership().join(wall_now());
    execute(&mut agent, &handle, &mut timers).await;
    let mut step = tokio::time::interval(STEP);
    step.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status = Instant::now() - STATUS_EVERY;
    let mut expected: Vec<(MeshPublicKey, SocketAddr)> = Vec::new();
    loop {
        let next_timer = timers.next_due();
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            received = endpoint.recv() => {
                let Some(dg) = received else { break };
                agent.membership().handle_datagram(wall_now(), &dg.from, &dg.payload);
                for msg in agent.membership().drain_cluster_msgs() {
                    // A full queue drops: senders repeat what matters (key pushes).
                    let _ = cluster_tx.try_send(msg);
                }
            }
            Some(command) = commands.recv() => match command {
                MeshCommand::Broadcast(msg) => {
                    if let Err(e) = agent.membership().broadcast_cluster(wall_now(), &msg) {
                        tracing::warn!(error = %e, "cluster message not sent");
                    }
                }
                MeshCommand::ExpectPeer { key, endpoint } => expected.push((key, endpoint)),
            },
            _ = async {
                match next_timer {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                for timer in timers.pop_due(Instant::now()) {
                    agent.membership().handle_timer(wall_now(), timer);
                }
            }
            _ = step.tick() => {
                let now = wall_now();
                let local = inputs.borrow_and_update().clone();
                agent.set_health(now, local.health);
                agent.set_intro_points(now, local.ipt_generation, local.ipts);
                agent.set_keys(now, local.keys);
                agent.set_pow_effort(now, local.pow_effort);
                let role = agent.step(now);
                let role_changed = role_tx.send_if_modified(|r| std::mem::replace(r, role) != role);
                let ipts = peer_ipts(&agent);
                peer_ipts_tx.send_if_modified(|v| {
                    if *v == ipts {
                        false
                    } else {
                        *v = ipts;
                        true
                    }
                });
                // A new role shows at once: the status never says standby while the publisher
                // (which obeys the role watch) is already uploading.
                if role_changed || last_status.elapsed() >= STATUS_EVERY {
                    last_status = Instant::now();
                    status_tx.send_replace(Some(status(&agent, now, endpoint.stats())));
                }
            }
        }
        for (key, endpoint) in expected.drain(..) {
            if let Err(e) = handle.add_peer(key, Some(endpoint)).await {
                tracing::warn!(peer = %key.short(), error = %e, "could not add the joining node's key");
            }
        }
        execute(&mut agent, &handle, &mut timers).await;
    }
    agent.membership().leave(wall_now());
    execute(&mut agent, &handle, &mut timers).await;
    role_tx.send_replace(Role::Standby);
    // Let the leave notices go out before the socket closes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    endpoint.shutdown().await;
    tracing::info!("mesh stopped");
}

fn status(agent: &Agent, now: WallTime, transport: EndpointStats) -> MeshStatus {
    let m = agent.membership_ref();
    let me = m.me();
    let decision = agent.decision();
    let role = agent.role();
    let peers = m.peers();
    let members: Vec<MemberStatus> = peers
        .iter()
        .map(|p| {
            let key = p.id.public_key();
            MemberStatus {
                node_id: p.id.node_id.clone(),
                public_key: key.map(|k| k.to_base64()).unwrap_or_default(),
                endpoint: p.id.endpoint.to_string(),
                boot: p.id.boot,
                liveness: p.liveness,
                priority: p.state.as_ref().map(|s| s.priority),
                health: p.state.as_ref().map(|s| s.health),
                role: p.state.as_ref().map(|s| s.role),
                lease: p.state.as_ref().and_then(|s| s.lease.clone()),
                intro_points: p.state.as_ref().map(|s| s.intro_points),
                last_seen_ms_ago: p
                    .last_seen
                    .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                rtt_ms: p.rtt.map(|d| d.as_millis() as u64),
                clock_offset_ms: p.clock_offset_ms,
                rejected_skew: p.rejected_skew,
                wireguard_handshake_age_ms: key
                    .and_then(|k| transport.peer(&k).and_then(|s| s.last_handshake_age_ms)),
                duplicate_id: p.duplicate_id,
                lifecycle: Lifecycle::of(p.liveness, p.duplicate_id, p.state.as_ref()),
                keys: p.state.as_ref().map(|s| s.keys),
                pow_effort: p.state.as_ref().map(|s| s.pow_effort),
                weight: p.state.as_ref().map(|s| s.weight),
            }
        })
        .collect();
    let publisher = if role == Role::Publisher {
        Some(me.node_id.clone())
    } else {
        members
            .iter()
            .find(|p| {
                p.liveness != Liveness::Down && !p.duplicate_id && p.role == Some(Role::Publisher)
            })
            .map(|p| p.node_id.clone())
    };
    MeshStatus {
        public_key: transport.public_key.to_base64(),
        endpoint: me.endpoint.to_string(),
        boot: me.boot,
        role,
        reason: decision.map(|d| d.reason.clone()),
        lease: decision.and_then(|d| d.lease.clone()),
        publisher,
        role_changes: agent.role_changes(),
        members,
        counters: m.counters(),
        transport,
    }
}
