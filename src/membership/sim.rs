//! A simulated mesh for the membership protocol: many [`Agent`]s in one process, a network with
//! latency, jitter, loss and partitions, per-node clock offsets, crashes and restarts, all on
//! simulated time. Deterministic for a given seed. Used by the unit tests (failure detection,
//! takeover, rejoin, partition/heal, clock skew) and by the convergence benchmark; the real
//! transport is exercised by the multi-process tests instead.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use foca::Timer;
use rand09::rngs::SmallRng;
use rand09::{Rng, SeedableRng};

use crate::election::{ElectionConfig, Role, WallTime};
use crate::mesh::{MeshKeys, MeshPublicKey};

use super::agent::Agent;
use super::core::{Action, Membership, MembershipConfig};
use super::identity::MemberId;
use super::wire::{Health, IptSummary, NodeState};

/// Simulated time starts here (a plausible wall clock, so timestamps look real).
pub const EPOCH_MS: u64 = 1_800_000_000_000;
/// How often every node is stepped.
pub const STEP: Duration = Duration::from_millis(100);

/// Network behaviour.
#[derive(Debug, Clone, Copy)]
pub struct NetConfig {
    /// One-way latency.
    pub latency: Duration,
    /// Extra uniform random delay, up to this.
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            latency: Duration::from_millis(5),
            jitter: Duration::from_millis(5),
            loss: 0.0,
        }
    }
}

enum Event {
    Deliver {
        to: usize,
        from: MeshPublicKey,
        payload: Vec<u8>,
    },
    Timer {
        node: usize,
        life: u64,
        timer: Timer<MemberId>,
    },
    Step,
}

/// One simulated node.
pub struct SimNode {
    /// Its agent (membership + election); `None` while crashed.
    pub agent: Option<Agent>,
    /// Its key.
    pub key: MeshPublicKey,
    /// Its node id.
    pub node_id: String,
    /// Its priority.
    pub priority: u32,
    /// Its clock minus the true time, in ms.
    pub clock_offset_ms: i64,
    /// Partition group: datagrams only flow within a group.
    pub group: u32,
    life: u64,
    seeds: Vec<usize>,
}

/// The simulated mesh.
pub struct Sim {
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    nodes: Vec<SimNode>,
    by_key: HashMap<[u8; 32], usize>,
    rng: SmallRng,
    net: NetConfig,
    membership: MembershipConfig,
    election: ElectionConfig,
    /// Whether nodes run the election (off: membership only, for large convergence runs).
    pub elect: bool,
    /// Datagrams delivered / lost so far.
    pub delivered: u64,
    /// Datagrams lost or cut by a partition.
    pub dropped: u64,
}

impl Sim {
    /// An empty mesh with default links ([`NetConfig::default`]) and default timers.
    pub fn with_defaults(seed: u64) -> Sim {
        Sim::new(
            seed,
            NetConfig::default(),
            MembershipConfig::default(),
            ElectionConfig::default(),
        )
    }

    /// An empty mesh.
    pub fn new(
        seed: u64,
        net: NetConfig,
        membership: MembershipConfig,
        election: ElectionConfig,
    ) -> Sim {
        let mut sim = Sim {
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            nodes: Vec::new(),
            by_key: HashMap::new(),
            rng: SmallRng::seed_from_u64(seed),
            net,
            membership,
            election,
            elect: true,
            delivered: 0,
            dropped: 0,
        };
        sim.schedule(0, Event::Step);
        sim
    }

    /// True time elapsed since the start.
    pub fn elapsed(&self) -> Duration {
        Duration::from_millis(self.now_ms)
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((self.now_ms + after_ms, self.seq)));
        self.events.insert(self.seq, event);
    }

    fn clock(&self, node: usize) -> WallTime {
        let t = (EPOCH_MS + self.now_ms) as i128 + i128::from(self.nodes[node].clock_offset_ms);
        WallTime::from_millis(t.max(0) as u64)
    }

    /// Adds a node that joins through `seeds` (indices of earlier nodes); it starts at once.
    pub fn add_node(&mut self, node_id: &str, priority: u32, seeds: &[usize]) -> usize {
        self.add_node_with_clock(node_id, priority, seeds, 0)
    }

    /// Like [`Sim::add_node`], with the node's clock `clock_offset_ms` off the true time.
    pub fn add_node_with_clock(
        &mut self,
        node_id: &str,
        priority: u32,
        seeds: &[usize],
        clock_offset_ms: i64,
    ) -> usize {
        let key = MeshKeys::generate().public_key();
        let idx = self.nodes.len();
        self.nodes.push(SimNode {
            agent: None,
            key,
            node_id: node_id.to_string(),
            priority,
            clock_offset_ms,
            group: 0,
            life: 0,
            seeds: seeds.to_vec(),
        });
        self.by_key.insert(*key.as_bytes(), idx);
        self.start(idx);
        idx
    }

    fn endpoint(idx: usize) -> SocketAddr {
        let n = idx as u32 + 1;
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8),
            51820,
        ))
    }

    fn start(&mut self, idx: usize) {
        let now = self.clock(idx);
        let node = &mut self.nodes[idx];
        node.life += 1;
        let me = MemberId {
            node_id: node.node_id.clone(),
            key: *node.key.as_bytes(),
            endpoint: Self::endpoint(idx),
            boot: now.as_millis(),
        };
        let seed_idx = node.seeds.clone();
        let seeds: Vec<(MeshPublicKey, SocketAddr)> = seed_idx
            .iter()
            .map(|&s| (self.nodes[s].key, Self::endpoint(s)))
            .collect();
        let node = &self.nodes[idx];
        let local = NodeState {
            priority: node.priority,
            health: Health::Healthy,
            role: Role::Standby,
            lease: None,
            intro_points: IptSummary::default(),
            keys: Default::default(),
            pow_effort: 0,
            weight: 1,
        };
        let seed = self.rng.random::<u64>();
        let mut membership = Membership::new(me, self.membership, local, &seeds, seed);
        membership.join(now);
        self.nodes[idx].agent = Some(Agent::new(membership, self.election));
        self.flush(idx);
    }

    /// Kills a node (like `kill -9`): it stops answering, its pending timers die with it.
    pub fn crash(&mut self, idx: usize) {
        self.nodes[idx].agent = None;
    }

    /// Starts a crashed node again (new boot number, same key).
    pub fn restart(&mut self, idx: usize) {
        if self.nodes[idx].agent.is_none() {
            self.start(idx);
        }
    }

    /// Puts nodes into partition groups (`groups[i]` for node i; missing ones stay in 0).
    pub fn partition(&mut self, groups: &[u32]) {
        for (i, n) in self.nodes.iter_mut().enumerate() {
            n.group = groups.get(i).copied().unwrap_or(0);
        }
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        for n in &mut self.nodes {
            n.group = 0;
        }
    }

    /// Sets a node's clock offset from the true time.
    pub fn set_clock_offset(&mut self, idx: usize, offset_ms: i64) {
        self.nodes[idx].clock_offset_ms = offset_ms;
    }

    /// Sets a node's health.
    pub fn set_health(&mut self, idx: usize, health: Health) {
        let now = self.clock(idx);
        if let Some(a) = self.nodes[idx].agent.as_mut() {
            a.set_health(now, health);
        }
        self.flush(idx);
    }

    /// The nodes.
    pub fn nodes(&self) -> &[SimNode] {
        &self.nodes
    }

    /// A running node's agent.
    pub fn agent(&self, idx: usize) -> Option<&Agent> {
        self.nodes[idx].agent.as_ref()
    }

    /// A running node's agent, to hand it crafted input (its actions are not carried out).
    pub fn agent_mut(&mut self, idx: usize) -> Option<&mut Agent> {
        self.nodes[idx].agent.as_mut()
    }

    /// Node `idx`'s clock now.
    pub fn now_at(&self, idx: usize) -> WallTime {
        self.clock(idx)
    }

    /// Indices of running nodes whose role is Publisher.
    pub fn publishers(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.agent(i).is_some_and(|a| a.role() == Role::Publisher))
            .collect()
    }

    /// The fewest live members any running node sees.
    pub fn min_live_members(&self) -> usize {
        self.nodes
            .iter()
            .filter_map(|n| n.agent.as_ref())
            .map(|a| a.membership_ref().live_members())
            .min()
            .unwrap_or(0)
    }

    /// Whether every running node sees every other running node alive (foca's view).
    pub fn converged(&self) -> bool {
        let running = self.nodes.iter().filter(|n| n.agent.is_some()).count();
        self.nodes
            .iter()
            .filter_map(|n| n.agent.as_ref())
            .all(|a| a.membership_ref().live_members() + 1 == running)
    }

    fn flush(&mut self, idx: usize) {
        let Some(agent) = self.nodes[idx].agent.as_mut() else {
            return;
        };
        let actions = agent.membership().drain_actions();
        let from = self.nodes[idx].key;
        let life = self.nodes[idx].life;
        let group = self.nodes[idx].group;
        for action in actions {
            match action {
                Action::AddPeer { .. } | Action::RemovePeer { .. } => {}
                Action::Send { to, payload } => {
                    let Some(&dst) = self.by_key.get(to.as_bytes()) else {
                        self.dropped += 1;
                        continue;
                    };
                    if self.nodes[dst].group != group || self.rng.random::<f64>() < self.net.loss {
                        self.dropped += 1;
                        continue;
                    }
                    let jitter = self.net.jitter.as_millis() as u64;
                    let delay = self.net.latency.as_millis() as u64
                        + if jitter > 0 {
                            self.rng.random_range(0..=jitter)
                        } else {
                            0
                        };
                    self.schedule(
                        delay,
                        Event::Deliver {
                            to: dst,
                            from,
                            payload,
                        },
                    );
                }
                Action::Timer { timer, after } => {
                    self.schedule(
                        after.as_millis() as u64,
                        Event::Timer {
                            node: idx,
                            life,
                            timer,
                        },
                    );
                }
            }
        }
    }

    /// Runs the simulation for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now_ms + d.as_millis() as u64;
        self.run_until_ms(end, |_| false);
    }

    /// Runs until `done` holds (checked after every step round) or `limit` elapses; returns
    /// the time it took, or `None` on the limit.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.now_ms;
        let end = start + limit.as_millis() as u64;
        if done(self) {
            return Some(Duration::ZERO);
        }
        self.run_until_ms(end, |s| done(s))
            .map(|t| Duration::from_millis(t - start))
    }

    fn run_until_ms(&mut self, end: u64, mut done: impl FnMut(&Sim) -> bool) -> Option<u64> {
        while let Some(&Reverse((at, seq))) = self.queue.peek() {
            if at > end {
                break;
            }
            self.queue.pop();
            self.now_ms = at;
            let Some(event) = self.events.remove(&seq) else {
                continue;
            };
            match event {
                Event::Deliver { to, from, payload } => {
                    let now = self.clock(to);
                    if let Some(agent) = self.nodes[to].agent.as_mut() {
                        self.delivered += 1;
                        agent.membership().handle_datagram(now, &from, &payload);
                        self.flush(to);
                    }
                }
                Event::Timer { node, life, timer } => {
                    if self.nodes[node].life != life {
                        continue;
                    }
                    let now = self.clock(node);
                    if let Some(agent) = self.nodes[node].agent.as_mut() {
                        agent.membership().handle_timer(now, timer);
                        self.flush(node);
                    }
                }
                Event::Step => {
                    for i in 0..self.nodes.len() {
                        let now = self.clock(i);
                        if let Some(agent) = self.nodes[i].agent.as_mut() {
                            if self.elect {
                                agent.step(now);
                            } else {
                                agent.membership().tick(now);
                            }
                            self.flush(i);
                        }
                    }
                    self.schedule(STEP.as_millis() as u64, Event::Step);
                    if done(self) {
                        return Some(self.now_ms);
                    }
                }
            }
        }
        self.now_ms = self.now_ms.max(end);
        None
    }
}
