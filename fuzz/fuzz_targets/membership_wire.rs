//! Fuzzes the membership gossip wire format: whatever bytes arrive, decoding never panics.
//!
//! Every input goes through:
//! 1. the pure decoders: the envelope (`wire::decode`) and the state body (`StateMsg::decode`,
//!    on the envelope's body and on the raw input), with round-trip checks on what decodes;
//! 2. one long-lived `Membership` (`handle_datagram`), as if an authenticated peer sent it.
//!
//! Input layout for step 2: if the input has more than one byte and its first byte has the
//! top bit set (0x80..=0xff), the rest is framed in a valid envelope header (magic, version,
//! kind = SWIM, state, intro points or cluster message by the low two bits (0, 1, 2, 3), timestamp = the fixed `NOW`), so that foca's
//! decoder and the state decoder are reached without the fuzzer having to find the header and a
//! timestamp within the skew bound. Otherwise the input is the datagram as is (a valid envelope
//! starts with 'R' = 0x52, so it takes this path).
//!
//! The node under test is warmed up before the first input: a real second member ("peer") joins
//! it, a third joins the peer, and the peer probes and gossips; so the fuzzed sender (the peer's
//! key) is a live member, its state messages are processed (not dropped as "not gossiped yet"),
//! and the seeds include SWIM packets that carry membership updates. Keys are fixed (not random)
//! so that a corpus entry addressed to the node means the same thing in every run. The node's
//! state carries over from input to input (that is what lets a sequence of inputs reach deep
//! states), so a crash found late in a run may need the run's earlier inputs to reproduce.
//!
//! Environment (both optional, for maintenance):
//! - `RB_FUZZ_WRITE_SEEDS=<dir>`: at start-up, write the datagrams the peer sent during the
//!   warm-up to `<dir>` as `seed-*` files (raw and framed forms); used to make the checked-in
//!   corpus.
//! - `RB_FUZZ_DEBUG=1`: print the node's counters after every input (to check what a given
//!   input reaches, e.g. `RB_FUZZ_DEBUG=1 cargo fuzz run membership_wire <file>`).

#![no_main]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rustbalance::election::{Lease, Role, WallTime};
use rustbalance::membership::wire::{self, Kind, StateMsg, HEADER_LEN, MAGIC, VERSION};
use rustbalance::membership::{
    Action, Health, IptSummary, KeyCoverage, MemberId, Membership, MembershipConfig, NodeState,
};
use rustbalance::mesh::{MeshKeys, MeshPublicKey};

/// The wall clock of every node, for every call (the node under test's timers never fire).
const NOW: WallTime = WallTime::from_millis(1_800_000_000_000);
/// Fixed private keys (`wg genkey` form) of the node under test and of the fuzzed sender.
const ME_SECRET: &str = "EBEREREREREREREREREREREREREREREREREREREREVE=";
const PEER_SECRET: &str = "ICIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiImI=";
const THIRD_SECRET: &str = "MDMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM3M=";
/// The node is rebuilt this often, or when fuzzed gossip has made it learn this many members:
/// foca keeps members in a list searched linearly, so an ever-growing one would slow every
/// execution down and grow memory without bound.
const REBUILD_EVERY: u64 = 20_000;
const MAX_LIVE_MEMBERS: usize = 128;

struct Harness {
    me: Membership,
    peer_key: MeshPublicKey,
    inputs: u64,
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("RB_FUZZ_DEBUG").is_some())
}

fn keys(secret: &str) -> MeshKeys {
    MeshKeys::from_private_base64(secret).expect("fixed key parses")
}

fn member(node_id: &str, keys: &MeshKeys, port: u16) -> MemberId {
    MemberId {
        node_id: node_id.to_owned(),
        key: *keys.public_key().as_bytes(),
        endpoint: SocketAddr::from(([127, 0, 0, 1], port)),
        boot: 1,
    }
}

fn standby() -> NodeState {
    NodeState {
        priority: 1,
        health: Health::Healthy,
        role: Role::Standby,
        lease: None,
        intro_points: IptSummary::default(),
        keys: KeyCoverage::default(),
        pow_effort: 0,
        weight: 1,
    }
}

const ME: usize = 0;
const PEER: usize = 1;

/// The timers of the nodes other than the node under test, on a virtual clock (the nodes'
/// wall clock stays `NOW`; only the order of events matters here).
struct Timers {
    clock: Duration,
    queue: Vec<(Duration, usize, Action)>,
    /// How many more may fire.
    budget: usize,
}

/// Delivers every pending datagram between the nodes; returns what the peer sent to the node
/// under test. Each time the network is quiet, the timer due soonest fires, while the budget
/// lasts: this is what makes the peer probe and gossip, piggybacking updates about the third
/// node. The node under test's timers are dropped (its state comes from datagrams only).
fn route(nodes: &mut [(MeshPublicKey, Membership)], timers: &mut Timers) -> Vec<Vec<u8>> {
    let mut to_me = Vec::new();
    for _ in 0..1000 {
        let mut quiet = true;
        for from in 0..nodes.len() {
            let from_key = nodes[from].0;
            for action in nodes[from].1.drain_actions() {
                match action {
                    Action::Send { to, payload } => {
                        quiet = false;
                        let Some(dest) = nodes.iter().position(|(k, _)| *k == to) else {
                            continue;
                        };
                        if from == PEER && dest == ME {
                            to_me.push(payload.clone());
                        }
                        nodes[dest].1.handle_datagram(NOW, &from_key, &payload);
                    }
                    Action::Timer { after, .. } if from != ME => {
                        timers.queue.push((timers.clock + after, from, action));
                    }
                    _ => {}
                }
            }
        }
        if quiet {
            if timers.budget == 0 || timers.queue.is_empty() {
                break;
            }
            timers.budget -= 1;
            let soonest = (0..timers.queue.len())
                .min_by_key(|&i| timers.queue[i].0)
                .expect("not empty");
            let (due, node, action) = timers.queue.remove(soonest);
            timers.clock = due;
            if let Action::Timer { timer, .. } = action {
                nodes[node].1.handle_timer(NOW, timer);
            }
        }
    }
    to_me
}

/// The node under test ("fuzz", no seeds) after a real peer joined it, a third node joined
/// the peer, and the peer probed, gossiped and sent its state; and every datagram the peer
/// sent it.
fn warm_up() -> (Harness, Vec<Vec<u8>>) {
    let me_keys = keys(ME_SECRET);
    let peer_keys = keys(PEER_SECRET);
    let third_keys = keys(THIRD_SECRET);
    let me_id = member("fuzz", &me_keys, 51820);
    let peer_id = member("peer", &peer_keys, 51821);
    let me_seed = [(me_keys.public_key(), me_id.endpoint)];
    let peer_seed = [(peer_keys.public_key(), peer_id.endpoint)];
    let config = MembershipConfig::default();
    let mut nodes = [
        (
            me_keys.public_key(),
            Membership::new(me_id, config, standby(), &[], 0),
        ),
        (
            peer_keys.public_key(),
            Membership::new(peer_id, config, standby(), &me_seed, 1),
        ),
        (
            third_keys.public_key(),
            Membership::new(
                member("other", &third_keys, 51822),
                config,
                standby(),
                &peer_seed,
                2,
            ),
        ),
    ];
    let mut timers = Timers {
        clock: Duration::ZERO,
        queue: Vec::new(),
        budget: 0,
    };
    nodes[PEER].1.join(NOW);
    let mut sent = route(&mut nodes, &mut timers);
    nodes[2].1.join(NOW);
    sent.extend(route(&mut nodes, &mut timers));
    // A state with every optional field set (lease with yield_to, echo of our timestamp).
    nodes[PEER].1.set_local(
        NOW,
        NodeState {
            priority: 2,
            health: Health::Healthy,
            role: Role::Publisher,
            lease: Some(Lease {
                holder: "peer".into(),
                until: WallTime::from_millis(NOW.as_millis() + 6_000),
                term: 3,
                yield_to: Some("fuzz".into()),
            }),
            intro_points: IptSummary {
                generation: 4,
                count: 3,
            },
            keys: KeyCoverage {
                holder: false,
                until_period: 7,
            },
            pow_effort: 40,
            weight: 2,
        },
    );
    sent.extend(route(&mut nodes, &mut timers));
    // About two seconds of the peer's and the third node's timers: probes and gossip, SWIM
    // packets carrying membership updates.
    timers.budget = 40;
    sent.extend(route(&mut nodes, &mut timers));
    if debug() {
        for (_, n) in &nodes {
            eprintln!(
                "warm-up node {}: live {}, {:?}",
                n.me().node_id,
                n.live_members(),
                n.counters()
            );
        }
    }
    let [(_, mut me), ..] = nodes;
    me.drain_actions();
    me.take_changed();
    let c = me.counters();
    assert!(
        c.received as usize >= sent.len() && c.members_up >= 1,
        "warm-up: the peer joins the node under test ({c:?}, {} sent)",
        sent.len()
    );
    if debug() {
        eprintln!(
            "warm-up: {c:?}, {} datagrams from the peer, live members {}",
            sent.len(),
            me.live_members()
        );
    }
    let harness = Harness {
        me,
        peer_key: peer_keys.public_key(),
        inputs: 0,
    };
    (harness, sent)
}

/// Writes the warm-up datagrams as seeds: raw (valid envelopes) and framed (mode byte + body).
fn write_seeds(dir: &str, sent: &[Vec<u8>]) {
    let mut seen = std::collections::HashSet::new();
    for payload in sent {
        let env = wire::decode(payload).expect("own datagram decodes");
        let (name, mode) = match env.kind {
            Kind::Swim => ("swim", 0x80u8),
            Kind::State => ("state", 0x81u8),
            Kind::Ipts => ("ipts", 0x82u8),
            Kind::Cluster => ("cluster", 0x83u8),
        };
        let mut framed = vec![mode];
        framed.extend_from_slice(env.body);
        for (form, bytes) in [("raw", payload.clone()), ("framed", framed)] {
            if seen.insert(bytes.clone()) {
                let path = format!("{dir}/seed-{form}-{name}-{:02}", seen.len());
                std::fs::write(&path, &bytes).expect("write seed");
                eprintln!("wrote {path} ({} bytes)", bytes.len());
            }
        }
    }
}

fn new_harness() -> Harness {
    let (harness, sent) = warm_up();
    static WROTE: OnceLock<()> = OnceLock::new();
    if let Some(dir) = std::env::var_os("RB_FUZZ_WRITE_SEEDS") {
        WROTE.get_or_init(|| write_seeds(&dir.to_string_lossy(), &sent));
    }
    harness
}

/// Whatever decodes as a state body re-encodes and decodes to the same message.
fn check_state(body: &[u8]) {
    if let Ok(msg) = StateMsg::decode(body) {
        let again = msg.encode().expect("a decoded state re-encodes");
        assert!(again.len() <= body.len(), "re-encoding is no longer");
        assert_eq!(StateMsg::decode(&again), Ok(msg), "state round trip");
    }
}

/// Whatever decodes as an intro-points body re-encodes and decodes to the same message, and
/// each intro point in it converts to a descriptor entry or is refused (never a panic); one
/// that converts converts back to the same wire form.
fn check_ipts(body: &[u8]) {
    if let Ok(msg) = wire::IptsMsg::decode(body) {
        let again = msg.encode().expect("decoded intro points re-encode");
        for w in &msg.ipts {
            if let Ok(d) = rustbalance::descriptor::ipt_from_wire(w) {
                let back = rustbalance::descriptor::ipt_to_wire(&d);
                assert_eq!(back.auth_key, w.auth_key, "intro point keys survive");
                assert_eq!(back.enc_key, w.enc_key);
                assert_eq!(back.onion_key, w.onion_key);
            }
        }
        assert_eq!(
            wire::IptsMsg::decode(&again),
            Ok(msg),
            "intro points round trip"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // 1. The pure decoders.
    if let Ok(env) = wire::decode(data) {
        assert_eq!(
            wire::encode(env.kind, env.timestamp, env.body).as_deref(),
            Ok(data),
            "envelope round trip"
        );
        check_state(env.body);
        check_ipts(env.body);
    }
    check_state(data);
    check_ipts(data);

    // 2. The membership state machine.
    let framed;
    let datagram: &[u8] = match data.split_first() {
        Some((&mode, rest)) if mode & 0x80 != 0 && !rest.is_empty() => {
            let kind = match mode & 3 {
                0 => 1,
                1 => 2,
                2 => 3,
                _ => 4,
            };
            let mut buf = Vec::with_capacity(HEADER_LEN + rest.len());
            buf.extend_from_slice(&MAGIC);
            buf.push(VERSION);
            buf.push(kind);
            buf.extend_from_slice(&NOW.as_millis().to_be_bytes());
            buf.extend_from_slice(rest);
            framed = buf;
            &framed
        }
        _ => data,
    };
    HARNESS.with(|cell| {
        let mut slot = cell.borrow_mut();
        let h = slot.get_or_insert_with(new_harness);
        h.inputs += 1;
        if h.inputs % REBUILD_EVERY == 0 || h.me.live_members() > MAX_LIVE_MEMBERS {
            *h = new_harness();
        }
        h.me.handle_datagram(NOW, &h.peer_key, datagram);
        h.me.drain_actions();
        h.me.take_changed();
        if debug() {
            eprintln!(
                "len {} -> {:?}, live members {}",
                datagram.len(),
                h.me.counters(),
                h.me.live_members()
            );
        }
    });
});
