//! Election tests in simulated time: unit checks of the rules, scripted scenarios and a seeded
//! random-schedule simulation.

use std::collections::VecDeque;
use std::time::Duration;

use super::*;

const TICK: u64 = 250;

fn secs(s: u64) -> u64 {
    s * 1000
}

/// One simulated node.
struct Node {
    id: String,
    priority: u32,
    eligible: bool,
    up: bool,
    /// Offset of this node's clock from global time, in ms.
    skew: i64,
    /// Its lease gossip is stuck: peers keep seeing the last value.
    frozen: bool,
    election: Election,
    /// What it advertised, with the global time it started to.
    history: VecDeque<(u64, Option<Lease>)>,
    decision: Option<Decision>,
}

/// Several nodes, a liveness matrix (the failure detector's verdicts) and gossip delay.
struct Sim {
    config: ElectionConfig,
    now: u64,
    nodes: Vec<Node>,
    /// `group[i]`: nodes see each other as live iff both are up and in the same group.
    group: Vec<u32>,
    /// Per ordered pair (observer, observed): how old the lease seen is, in ms.
    delay: Vec<Vec<u64>>,
    /// Extra liveness cuts: `cut[i][j]`: i does not see j.
    cut: Vec<Vec<bool>>,
}

impl Sim {
    fn new(config: ElectionConfig, priorities: &[u32]) -> Sim {
        let n = priorities.len();
        let nodes = priorities
            .iter()
            .enumerate()
            .map(|(i, &priority)| Node {
                id: format!("n{i}"),
                priority,
                eligible: true,
                up: true,
                skew: 0,
                frozen: false,
                election: Election::new(config),
                history: VecDeque::from([(0, None)]),
                decision: None,
            })
            .collect();
        Sim {
            config,
            now: 0,
            nodes,
            group: vec![0; n],
            delay: vec![vec![0; n]; n],
            cut: vec![vec![false; n]; n],
        }
    }

    fn live(&self, i: usize, j: usize) -> bool {
        i != j
            && self.nodes[i].up
            && self.nodes[j].up
            && self.group[i] == self.group[j]
            && !self.cut[i][j]
    }

    /// The lease node `j` advertised as of `at` (global time).
    fn advertised(&self, j: usize, at: u64) -> Option<Lease> {
        self.nodes[j]
            .history
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .or(self.nodes[j].history.front())
            .and_then(|(_, l)| l.clone())
    }

    fn view(&self, i: usize) -> MembershipView {
        let me = &self.nodes[i];
        MembershipView {
            self_id: me.id.clone(),
            self_priority: me.priority,
            self_eligible: me.eligible,
            peers: (0..self.nodes.len())
                .filter(|&j| self.live(i, j))
                .map(|j| PeerState {
                    id: self.nodes[j].id.clone(),
                    priority: self.nodes[j].priority,
                    eligible: self.nodes[j].eligible,
                    lease: self.advertised(j, self.now.saturating_sub(self.delay[i][j])),
                })
                .collect(),
        }
    }

    fn local_time(&self, i: usize) -> WallTime {
        // Global time starts far from the epoch so negative skews stay positive.
        WallTime::from_millis((1_000_000_000 + self.now as i64 + self.nodes[i].skew) as u64)
    }

    /// Every up node observes (all on the same snapshot), then gossip records their leases,
    /// then time advances one tick.
    fn step(&mut self) {
        let views: Vec<Option<MembershipView>> = (0..self.nodes.len())
            .map(|i| self.nodes[i].up.then(|| self.view(i)))
            .collect();
        for (i, view) in views.into_iter().enumerate() {
            let Some(view) = view else { continue };
            let now = self.local_time(i);
            let node = &mut self.nodes[i];
            let d = node.election.observe(now, &view);
            if !node.frozen && node.history.back().map(|(_, l)| l) != Some(&d.lease) {
                node.history.push_back((self.now, d.lease.clone()));
                while node.history.len() > 64 {
                    node.history.pop_front();
                }
            }
            node.decision = Some(d);
        }
        self.now += TICK;
    }

    fn run_until(&mut self, t: u64) {
        while self.now < t {
            self.step();
        }
    }

    fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.up = false;
        node.decision = None;
        node.history.push_back((self.now, None));
    }

    fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.up = true;
        node.frozen = false;
        node.election = Election::new(self.config);
        node.history.push_back((self.now, None));
    }

    fn is_publisher(&self, i: usize) -> bool {
        self.nodes[i].up
            && self.nodes[i]
                .decision
                .as_ref()
                .is_some_and(|d| d.role == Role::Publisher)
    }

    fn publishers(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.is_publisher(i))
            .collect()
    }

    fn publishers_in(&self, group: u32) -> usize {
        (0..self.nodes.len())
            .filter(|&i| self.group[i] == group && self.is_publisher(i))
            .count()
    }

    fn reason(&self, i: usize) -> Reason {
        self.nodes[i].decision.as_ref().unwrap().reason.clone()
    }
}

/// The sole publisher, asserting there is exactly one.
fn sole(sim: &Sim) -> usize {
    let p = sim.publishers();
    assert_eq!(p.len(), 1, "t={} publishers {p:?}", sim.now);
    p[0]
}

/// Runs until `t`, recording every change of the set of publishers and asserting that there
/// is never more than one.
fn run_watching(sim: &mut Sim, t: u64, changes: &mut Vec<(u64, Vec<usize>)>) {
    let mut current = sim.publishers();
    while sim.now < t {
        sim.step();
        let p = sim.publishers();
        assert!(p.len() <= 1, "t={} publishers {p:?}", sim.now);
        if p != current {
            current = p.clone();
            changes.push((sim.now, p));
        }
    }
}

/// Sim with three nodes, `n0` best, settled with `n0` publishing.
fn settled3() -> Sim {
    let mut sim = Sim::new(ElectionConfig::default(), &[1, 2, 3]);
    sim.run_until(secs(10));
    assert_eq!(sole(&sim), 0);
    sim
}

// ---------------------------------------------------------------------------------------------
// Config, types

#[test]
fn config_defaults_and_validation() {
    let c = ElectionConfig::default();
    assert_eq!(c.lease_duration(), Duration::from_secs(6));
    assert_eq!(c.renew_interval(), Duration::from_secs(2));
    assert_eq!(c.skew_margin(), Duration::from_secs(5));
    assert_eq!(c.handback_after(), Duration::from_secs(10));
    assert_eq!(c.startup_hold(), Duration::from_secs(6));
    assert_eq!(
        ElectionConfig::new(
            Duration::from_secs(6),
            Duration::from_secs(5),
            Duration::from_secs(10)
        ),
        Ok(c)
    );
    assert_eq!(
        ElectionConfig::new(Duration::ZERO, Duration::ZERO, Duration::ZERO),
        Err(ElectionError::LeaseTooShort(Duration::ZERO))
    );
    let err = ElectionConfig::new(
        Duration::from_secs(6),
        Duration::from_secs(6),
        Duration::ZERO,
    )
    .unwrap_err();
    assert!(matches!(err, ElectionError::SkewNotBelowLease { .. }));
    assert!(err.to_string().contains("skew_margin"), "{err}");
    assert!(ElectionConfig::new(Duration::from_millis(3), Duration::ZERO, Duration::ZERO).is_ok());
}

#[test]
fn wall_time_conversions() {
    let t = WallTime::from_unix(Duration::from_millis(1500));
    assert_eq!(t.as_millis(), 1500);
    assert_eq!(
        WallTime::from_system_time(UNIX_EPOCH + Duration::from_secs(2)),
        WallTime::from_millis(2000)
    );
    assert_eq!(
        t.saturating_add(Duration::from_secs(1)),
        WallTime::from_millis(2500)
    );
    assert_eq!(
        t.saturating_duration_since(WallTime::from_millis(2000)),
        Duration::ZERO
    );
    assert_eq!(
        WallTime::from_millis(u64::MAX).saturating_add(Duration::from_secs(1)),
        WallTime::from_millis(u64::MAX)
    );
}

#[test]
fn serde_round_trips() {
    let lease = Lease {
        holder: "a".into(),
        until: WallTime::from_millis(42),
        term: 7,
        yield_to: Some("b".into()),
    };
    let d = Decision {
        role: Role::Standby,
        lease: Some(lease.clone()),
        reason: Reason::Yielding { to: "b".into() },
        next_check: Some(WallTime::from_millis(50)),
    };
    let json = serde_json::to_string(&d).unwrap();
    assert!(json.contains(r#""role":"standby""#), "{json}");
    assert!(json.contains(r#""kind":"yielding""#), "{json}");
    assert!(json.contains(r#""until":42"#), "{json}");
    assert_eq!(serde_json::from_str::<Decision>(&json).unwrap(), d);
    // A lease without yield_to writes it as null (never skipped: the gossip encoding is not
    // self-describing) and reads back, in JSON and in postcard.
    let plain = Lease {
        yield_to: None,
        ..lease
    };
    let json = serde_json::to_string(&plain).unwrap();
    assert!(json.contains(r#""yield_to":null"#), "{json}");
    assert_eq!(serde_json::from_str::<Lease>(&json).unwrap(), plain);
    let bytes = postcard::to_allocvec(&plain).unwrap();
    assert_eq!(postcard::from_bytes::<Lease>(&bytes).unwrap(), plain);
    for reason in [
        Reason::Claimed,
        Reason::Holding,
        Reason::StartupHold {
            until: WallTime::from_millis(1),
        },
    ] {
        let json = serde_json::to_string(&reason).unwrap();
        assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), reason);
    }
}

// ---------------------------------------------------------------------------------------------
// Direct rule checks on one Election

fn view(me: &str, priority: u32, eligible: bool, peers: Vec<PeerState>) -> MembershipView {
    MembershipView {
        self_id: me.into(),
        self_priority: priority,
        self_eligible: eligible,
        peers,
    }
}

fn peer(id: &str, priority: u32, lease: Option<Lease>) -> PeerState {
    PeerState {
        id: id.into(),
        priority,
        eligible: true,
        lease,
    }
}

fn lease(holder: &str, until: u64, term: u64) -> Option<Lease> {
    Some(Lease {
        holder: holder.into(),
        until: WallTime::from_millis(until),
        term,
        yield_to: None,
    })
}

fn at(ms: u64) -> WallTime {
    WallTime::from_millis(ms)
}

/// Observes every tick after `from` up to and including `to`; returns the last decision.
fn drive(e: &mut Election, from: u64, to: u64, v: &MembershipView) -> Decision {
    let mut t = from + TICK;
    let mut last = e.observe(at(from), v);
    while t <= to {
        last = e.observe(at(t), v);
        t += TICK;
    }
    last
}

#[test]
fn single_node_claims_after_startup_hold_and_renews() {
    let mut e = Election::new(ElectionConfig::default());
    let v = view("a", 1, true, vec![]);
    let d = e.observe(at(0), &v);
    assert_eq!(d.role, Role::Standby);
    assert_eq!(d.reason, Reason::StartupHold { until: at(6000) });
    assert_eq!(d.next_check, Some(at(6000)));
    assert_eq!(e.observe(at(5999), &v).role, Role::Standby);
    let d = e.observe(at(6000), &v);
    assert_eq!((d.role, &d.reason), (Role::Publisher, &Reason::Claimed));
    let l = d.lease.unwrap();
    assert_eq!((l.term, l.until), (1, at(12000)));
    assert_eq!(d.next_check, Some(at(8000)));
    // Not renewed before lease/3, renewed at it.
    assert_eq!(e.observe(at(7999), &v).lease.unwrap().until, at(12000));
    let d = e.observe(at(8000), &v);
    assert_eq!(d.reason, Reason::Holding);
    assert_eq!(d.lease.unwrap().until, at(14000));
    // Observed too late: the lease lapsed, a new term is claimed.
    let d = e.observe(at(14001), &v);
    assert_eq!(d.reason, Reason::Claimed);
    assert_eq!(d.lease.unwrap().term, 2);
    // Clock stepping back renews at once, the lease stays valid.
    let d = e.observe(at(13000), &v);
    assert_eq!(d.lease.unwrap().until, at(19000));
}

#[test]
fn foreign_or_self_entries_are_ignored() {
    let mut e = Election::new(ElectionConfig::default());
    // A peer advertising someone else's lease, and an entry with our own id.
    let v = view(
        "b",
        2,
        true,
        vec![peer("c", 3, lease("a", 100_000, 9)), peer("b", 0, None)],
    );
    e.observe(at(0), &v);
    let d = e.observe(at(6000), &v);
    assert_eq!(d.reason, Reason::Claimed);
    assert_eq!(d.lease.unwrap().term, 1);
}

#[test]
fn standby_respects_valid_lease_and_claims_with_higher_term() {
    let mut e = Election::new(ElectionConfig::default());
    // b is better than holder c but must not preempt.
    let v = view("b", 1, true, vec![peer("c", 5, lease("c", 20_000, 41))]);
    e.observe(at(0), &v);
    let d = e.observe(at(10_000), &v);
    assert_eq!(d.reason, Reason::LeaseHeld { holder: "c".into() });
    assert_eq!(d.next_check, Some(at(25_001)));
    assert_eq!(e.observe(at(25_000), &v).role, Role::Standby);
    // Stale: c is live but no longer a candidate; b claims above c's term.
    let d = e.observe(at(25_001), &v);
    assert_eq!(d.reason, Reason::Claimed);
    assert_eq!(d.lease.unwrap().term, 42);
}

#[test]
fn conflict_equal_terms_resolved_deterministically() {
    // Two holders with equal terms, neither the candidate (x is better but standby).
    let cfg = ElectionConfig::default();
    let mut a = Election::new(cfg);
    let mut b = Election::new(cfg);
    let solo_a = view("a", 2, true, vec![]);
    let solo_b = view("b", 2, true, vec![]);
    a.observe(at(0), &solo_a);
    b.observe(at(0), &solo_b);
    let la = a.observe(at(6000), &solo_a).lease;
    let lb = b.observe(at(6000), &solo_b).lease;
    assert_eq!(la.as_ref().unwrap().term, lb.as_ref().unwrap().term);
    let x = peer("x", 1, None);
    let da = a.observe(
        at(6500),
        &view("a", 2, true, vec![x.clone(), peer("b", 2, lb)]),
    );
    let db = b.observe(at(6500), &view("b", 2, true, vec![x, peer("a", 2, la)]));
    assert_eq!(da.role, Role::Publisher);
    assert_eq!(db.role, Role::Standby);
    assert_eq!(db.reason, Reason::SteppedDown { winner: "a".into() });
    assert_eq!(db.lease, None);
}

#[test]
fn conflict_candidate_wins_over_higher_term() {
    let mut b = Election::new(ElectionConfig::default());
    let solo = view("b", 2, true, vec![]);
    b.observe(at(0), &solo);
    b.observe(at(6000), &solo);
    // a (better priority, lower term) holds too: b is not the candidate and steps down.
    let d = b.observe(
        at(6500),
        &view("b", 2, true, vec![peer("a", 1, lease("a", 12_000, 0))]),
    );
    assert_eq!(d.reason, Reason::SteppedDown { winner: "a".into() });
}

#[test]
fn unaccepted_yield_is_withdrawn_and_retried_after_handback() {
    let mut h = Election::new(ElectionConfig::default());
    // h holds; a better node c is live and eligible but never takes over (its election is
    // not running, say).
    let solo = view("h", 5, true, vec![]);
    h.observe(at(0), &solo);
    assert_eq!(h.observe(at(6000), &solo).reason, Reason::Claimed);
    let with_c = view("h", 5, true, vec![peer("c", 1, None)]);
    // c is stable from 6.25 s: the yield is due at 16.25 s.
    assert_eq!(drive(&mut h, 6250, 16_000, &with_c).reason, Reason::Holding);
    let d = h.observe(at(16_249), &with_c);
    assert_eq!(d.role, Role::Publisher);
    assert_eq!(d.next_check, Some(at(16_250)));
    let d = h.observe(at(16_250), &with_c);
    assert_eq!(d.role, Role::Standby);
    assert_eq!(d.reason, Reason::Yielding { to: "c".into() });
    assert_eq!(d.lease.as_ref().unwrap().yield_to.as_deref(), Some("c"));
    assert_eq!(d.lease.as_ref().unwrap().until, at(22_250));
    // Still renewing the yielding lease.
    let d = drive(&mut h, 16_500, 18_250, &with_c);
    assert_eq!(d.lease.unwrap().until, at(24_250));
    // Not taken within a lease: publish again; the next attempt after handback_after.
    let d = drive(&mut h, 18_500, 22_000, &with_c);
    assert_eq!(d.role, Role::Standby);
    let d = h.observe(at(22_250), &with_c);
    assert_eq!((d.role, &d.reason), (Role::Publisher, &Reason::Holding));
    assert_eq!(d.lease.unwrap().yield_to, None);
    assert_eq!(drive(&mut h, 22_500, 32_000, &with_c).role, Role::Publisher);
    assert_eq!(h.observe(at(32_250), &with_c).role, Role::Standby);
    // c disappears: the yield is withdrawn at once.
    let d = h.observe(at(32_500), &solo);
    assert_eq!((d.role, d.lease.unwrap().yield_to), (Role::Publisher, None));
}

#[test]
fn yield_target_takes_over_and_holder_steps_down() {
    let cfg = ElectionConfig::default();
    let mut c = Election::new(cfg);
    let yielding = Some(Lease {
        holder: "h".into(),
        until: at(20_000),
        term: 3,
        yield_to: Some("c".into()),
    });
    let d = c.observe(
        at(15_000),
        &view("c", 1, true, vec![peer("h", 5, yielding)]),
    );
    // Even within its own startup hold: a yield is explicit.
    assert_eq!(d.reason, Reason::TookOver { from: "h".into() });
    assert_eq!(d.lease.as_ref().unwrap().term, 4);
    // An ineligible target refuses while an eligible node exists.
    let mut c2 = Election::new(cfg);
    let yielding = Some(Lease {
        holder: "h".into(),
        until: at(20_000),
        term: 3,
        yield_to: Some("c".into()),
    });
    let d = c2.observe(
        at(15_000),
        &view("c", 1, false, vec![peer("h", 5, yielding)]),
    );
    assert_eq!(d.role, Role::Standby);
}

// ---------------------------------------------------------------------------------------------
// Scenarios in simulated time

#[test]
fn initial_election_picks_best_priority_once() {
    let mut sim = Sim::new(ElectionConfig::default(), &[3, 1, 2]);
    let mut changes = vec![];
    run_watching(&mut sim, secs(60), &mut changes);
    // Nobody during the startup hold, then n1 for good.
    assert_eq!(changes, vec![(secs(6) + TICK, vec![1])]);
    assert_eq!(
        sim.reason(0),
        Reason::LeaseHeld {
            holder: "n1".into()
        }
    );
}

#[test]
fn dead_publisher_replaced_at_detection() {
    let mut sim = settled3();
    let mut changes = vec![];
    run_watching(&mut sim, secs(20), &mut changes);
    // The failure detector removes n0 at t=20 s: n1 publishes at the very next observation.
    sim.kill(0);
    sim.step();
    assert_eq!(sole(&sim), 1);
    assert_eq!(sim.reason(1), Reason::Claimed);
    // n2 learns n1's lease one gossip round later.
    assert_eq!(
        sim.reason(2),
        Reason::AwaitingCandidate {
            candidate: "n1".into()
        }
    );
    sim.step();
    assert_eq!(
        sim.reason(2),
        Reason::LeaseHeld {
            holder: "n1".into()
        }
    );
    // And n1 keeps it; n2 never publishes.
    let mut changes = vec![];
    run_watching(&mut sim, secs(120), &mut changes);
    assert_eq!(changes, vec![]);
}

#[test]
fn live_but_silent_publisher_replaced_after_lease_plus_skew() {
    let mut sim = settled3();
    // Align with a renewal of n0, then freeze its lease gossip; it stays live.
    loop {
        sim.step();
        // The observation just made was at local time (now - TICK).
        let observed = sim.local_time(0).as_millis() - TICK;
        let until = sim.nodes[0].election.lease().unwrap().until.as_millis();
        if until == observed + secs(6) {
            break;
        }
    }
    let renewed = sim.now - TICK;
    sim.nodes[0].frozen = true;
    let limit = renewed + secs(6) + secs(5);
    while sim.now <= limit {
        sim.step();
        assert!(
            !sim.is_publisher(1) && !sim.is_publisher(2),
            "t={}",
            sim.now
        );
    }
    // The first observation past until + skew: n1 (n0 is no longer a candidate) claims.
    sim.step();
    assert!(sim.is_publisher(1));
    assert!(!sim.is_publisher(2));
    assert_eq!(sim.reason(1), Reason::Claimed);
}

#[test]
fn rejoin_of_best_node_hands_back_exactly_once_after_handback() {
    let mut sim = settled3();
    sim.run_until(secs(20));
    sim.kill(0);
    sim.run_until(secs(30));
    assert_eq!(sole(&sim), 1);
    sim.restart(0);
    let rejoined = sim.now;
    let mut changes = vec![];
    run_watching(&mut sim, secs(120), &mut changes);
    // One change only, from n1 to n0, after n0 was stable for handback_after (plus one
    // gossip round for the takeover; nobody publishes during that round).
    let to_n0: Vec<_> = changes.iter().filter(|(_, p)| p == &vec![0]).collect();
    assert_eq!(to_n0.len(), 1, "{changes:?}");
    let t = to_n0[0].0;
    assert!(t >= rejoined + secs(10), "{changes:?}");
    assert!(t <= rejoined + secs(10) + 2 * TICK, "{changes:?}");
    assert_eq!(changes.len(), 2, "{changes:?}"); // [] during the handover, then [n0]
    assert!(changes[0].1.is_empty());
    assert_eq!(sole(&sim), 0);
    // The term went up at each change.
    assert_eq!(sim.nodes[0].election.lease().unwrap().term, 3);
}

#[test]
fn restarted_node_does_not_claim_before_hearing_gossip() {
    let mut sim = settled3();
    sim.kill(0);
    sim.run_until(secs(20));
    assert_eq!(sole(&sim), 1);
    // n0 restarts but hears nobody for 3 s (the others already see it).
    sim.restart(0);
    sim.cut[0] = vec![true; 3];
    let mut changes = vec![];
    let rejoined = sim.now;
    run_watching(&mut sim, rejoined + secs(3), &mut changes);
    assert!(matches!(sim.reason(0), Reason::StartupHold { .. }));
    sim.cut[0] = vec![false; 3];
    run_watching(&mut sim, rejoined + secs(60), &mut changes);
    // No steal at sync: the role comes back once, after handback_after.
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[1].1, vec![0]);
    assert!(changes[1].0 >= rejoined + secs(10), "{changes:?}");
}

#[test]
fn flapping_better_node_never_takes_the_role() {
    let mut sim = settled3();
    sim.kill(0);
    sim.run_until(secs(20));
    assert_eq!(sole(&sim), 1);
    let mut changes = vec![];
    // n0 crashes and restarts: up 8 s, down 3 s, for 2 minutes.
    for _ in 0..11 {
        sim.restart(0);
        let t = sim.now + secs(8);
        run_watching(&mut sim, t, &mut changes);
        sim.kill(0);
        let t = sim.now + secs(3);
        run_watching(&mut sim, t, &mut changes);
    }
    // n0 stays up but n1's failure detector flaps on it: seen 9 s, missed 1 s.
    sim.restart(0);
    for _ in 0..10 {
        let t = sim.now + secs(9);
        run_watching(&mut sim, t, &mut changes);
        sim.cut[1][0] = true;
        let t = sim.now + secs(1);
        run_watching(&mut sim, t, &mut changes);
        sim.cut[1][0] = false;
    }
    assert_eq!(changes, vec![], "n1 must keep the role throughout");
    assert_eq!(sole(&sim), 1);
    // Once n0 is steady, exactly one handback.
    let steady = sim.now;
    run_watching(&mut sim, steady + secs(60), &mut changes);
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[1].1, vec![0]);
    assert!(changes[1].0 >= steady + secs(10));
}

#[test]
fn priority_change_hands_over_once_after_handback() {
    let mut sim = settled3();
    sim.run_until(secs(20));
    sim.nodes[2].priority = 0;
    let changed = sim.now;
    let mut changes = vec![];
    run_watching(&mut sim, secs(90), &mut changes);
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[1].1, vec![2]);
    assert!(changes[1].0 >= changed + secs(10), "{changes:?}");
    assert!(changes[1].0 <= changed + secs(10) + 2 * TICK, "{changes:?}");
}

#[test]
fn partition_one_publisher_per_side_then_heals_to_one() {
    let mut sim = settled3();
    sim.run_until(secs(20));
    // {n0} | {n1, n2}: n0 keeps publishing on its side, n1 takes over on the other.
    sim.group = vec![0, 1, 1];
    for _ in 0..(secs(60) / TICK) {
        sim.step();
        assert_eq!(sim.publishers_in(0), 1, "t={}", sim.now);
        assert!(sim.publishers_in(1) <= 1, "t={}", sim.now);
    }
    assert!(sim.is_publisher(0) && sim.is_publisher(1));
    // Heal: one publisher (n0, the candidate) within one lease period, and it stays.
    sim.group = vec![0, 0, 0];
    let healed = sim.now;
    while sim.publishers().len() > 1 {
        sim.step();
        assert!(sim.now <= healed + secs(6), "not converged");
    }
    assert_eq!(sole(&sim), 0);
    assert_eq!(
        sim.reason(1),
        Reason::SteppedDown {
            winner: "n0".into()
        }
    );
    let mut changes = vec![];
    run_watching(&mut sim, healed + secs(120), &mut changes);
    assert_eq!(changes, vec![]);
}

#[test]
fn partition_isolating_a_standby_heals_with_gossip_delay() {
    let mut sim = settled3();
    for i in 0..3 {
        for j in 0..3 {
            sim.delay[i][j] = 1000;
        }
    }
    sim.run_until(secs(20));
    // {n0, n1} | {n2}: n2 becomes publisher of its side.
    sim.group = vec![0, 0, 1];
    sim.run_until(secs(40));
    assert_eq!(sim.publishers(), vec![0, 2]);
    sim.group = vec![0, 0, 0];
    let healed = sim.now;
    while sim.publishers().len() > 1 {
        sim.step();
        assert!(sim.now <= healed + secs(6), "not converged");
    }
    assert_eq!(sole(&sim), 0);
}

#[test]
fn clock_skew_within_margin_keeps_one_publisher() {
    // Skews at the margin (pairwise 5 s), gossip delay 1 s on every link.
    for skews in [[2500, -2500, 0], [-2500, 2500, 1000], [0, 5000, 5000]] {
        let mut sim = Sim::new(ElectionConfig::default(), &[1, 2, 3]);
        for (i, s) in skews.iter().enumerate() {
            sim.nodes[i].skew = *s;
            for j in 0..3 {
                sim.delay[i][j] = 1000;
            }
        }
        let mut changes = vec![];
        run_watching(&mut sim, secs(600), &mut changes);
        assert_eq!(changes.len(), 1, "{skews:?}: {changes:?}");
        assert_eq!(changes[0].1, vec![0]);
        // The same with the publisher killed: n1 takes over and keeps it.
        sim.kill(0);
        let mut changes = vec![];
        run_watching(&mut sim, secs(1200), &mut changes);
        assert_eq!(changes, vec![(secs(600) + TICK, vec![1])], "{skews:?}");
    }
}

#[test]
fn ineligible_node_never_publishes_while_an_eligible_one_exists() {
    let mut sim = Sim::new(ElectionConfig::default(), &[1, 2, 3]);
    sim.nodes[0].eligible = false;
    let mut changes = vec![];
    run_watching(&mut sim, secs(30), &mut changes);
    assert_eq!(sole(&sim), 1);
    // The holder's target goes down: it yields to n2, which has long been stable.
    sim.nodes[1].eligible = false;
    let down = sim.now;
    for _ in 0..(secs(60) / TICK) {
        sim.step();
        assert!(!sim.is_publisher(0));
        assert!(sim.publishers().len() <= 1);
    }
    assert_eq!(sole(&sim), 2);
    assert!(changes.len() <= 2);
    // It moved within two gossip rounds, with no wait: n2 was stable for long.
    let _ = down;
    let mut sim2 = Sim::new(ElectionConfig::default(), &[1, 2, 3]);
    sim2.nodes[0].eligible = false;
    sim2.run_until(secs(30));
    sim2.nodes[1].eligible = false;
    sim2.step();
    sim2.step();
    assert_eq!(sole(&sim2), 2);
}

#[test]
fn no_eligible_node_best_priority_publishes_anyway() {
    let mut sim = Sim::new(ElectionConfig::default(), &[2, 1, 3]);
    for n in &mut sim.nodes {
        n.eligible = false;
    }
    let mut changes = vec![];
    run_watching(&mut sim, secs(30), &mut changes);
    assert_eq!(sole(&sim), 1);
    // n2 recovers: it becomes the candidate and gets the role after handback_after.
    sim.nodes[2].eligible = true;
    let recovered = sim.now;
    run_watching(&mut sim, secs(90), &mut changes);
    assert_eq!(sole(&sim), 2);
    let last = changes.last().unwrap().0;
    assert!(last >= recovered + secs(10), "{changes:?}");
}

// ---------------------------------------------------------------------------------------------
// Random schedules

/// A 64-bit LCG (Knuth's MMIX constants); the high bits are used.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Components of the liveness graph among up nodes (groups, as `cut` is not used here).
fn components(sim: &Sim) -> Vec<Vec<usize>> {
    let mut out: Vec<(u32, Vec<usize>)> = vec![];
    for i in 0..sim.nodes.len() {
        if !sim.nodes[i].up {
            continue;
        }
        match out.iter_mut().find(|(g, _)| *g == sim.group[i]) {
            Some((_, v)) => v.push(i),
            None => out.push((sim.group[i], vec![i])),
        }
    }
    out.into_iter().map(|(_, v)| v).collect()
}

/// Runs a random schedule of crashes, restarts, partitions, heals, health and priority
/// changes, with per-node clock skew within the margin and per-link gossip delay up to 1 s.
/// Checks, for every stretch in which nothing changed:
/// - after one lease period, at most one publisher per connected component;
/// - after startup hold + lease + 2 s, exactly one per component;
/// - after one lease period, at most one change of publisher per component (the handback).
///
/// Returns the number of stable-state checks and of changes of the set of publishers.
fn random_schedule(seed: u64, n: usize, steps: usize) -> (usize, usize) {
    let cfg = ElectionConfig::default();
    let mut rng = Lcg(seed);
    let priorities: Vec<u32> = (0..n).map(|_| rng.below(4) as u32).collect();
    let mut sim = Sim::new(cfg, &priorities);
    for i in 0..n {
        sim.nodes[i].skew = rng.below(5001) as i64 - 2500;
        for j in 0..n {
            sim.delay[i][j] = rng.below(4) * TICK;
        }
    }
    let lease = cfg.lease_duration().as_millis() as u64;
    let settle = cfg.startup_hold().as_millis() as u64 + lease + 2000;
    let mut stable_since = 0u64;
    let mut last_pub: Vec<Option<Vec<usize>>> = vec![None; n];
    let mut changes_in_window = vec![0usize; n];
    let mut checks = 0;
    let mut handovers = 0;
    let mut previous = vec![];
    for _ in 0..steps {
        // At most one event per step, rare enough for long stable stretches.
        let mut event = true;
        let r = rng.below(1000);
        let i = rng.below(n as u64) as usize;
        match r {
            0..=3 if sim.nodes[i].up && sim.nodes.iter().filter(|n| n.up).count() > 1 => {
                sim.kill(i)
            }
            4..=9 if !sim.nodes[i].up => sim.restart(i),
            10..=11 => {
                let split = rng.below(1 << n) as u32;
                sim.group = (0..n).map(|k| (split >> k) & 1).collect();
            }
            12..=15 if sim.group.iter().any(|&g| g != sim.group[0]) => sim.group = vec![0; n],
            16..=17 => sim.nodes[i].eligible = !sim.nodes[i].eligible,
            18 => sim.nodes[i].priority = rng.below(4) as u32,
            _ => event = false,
        }
        if event {
            stable_since = sim.now;
            last_pub = vec![None; n];
            changes_in_window = vec![0; n];
        }
        sim.step();
        let now_publishing = sim.publishers();
        if now_publishing != previous && !now_publishing.is_empty() {
            handovers += 1;
        }
        previous = now_publishing;
        let age = sim.now - stable_since;
        for comp in components(&sim) {
            let p: Vec<usize> = comp
                .iter()
                .copied()
                .filter(|&k| sim.is_publisher(k))
                .collect();
            if age > lease {
                checks += 1;
                assert!(
                    p.len() <= 1,
                    "seed {seed}: t={} stable {age} ms: component {comp:?} publishers {p:?}",
                    sim.now
                );
                let key = comp[0];
                if last_pub[key].as_ref().is_some_and(|q| q != &p) && !p.is_empty() {
                    changes_in_window[key] += 1;
                    assert!(
                        changes_in_window[key] <= 1,
                        "seed {seed}: t={} component {comp:?} flapped",
                        sim.now
                    );
                }
                if !p.is_empty() {
                    last_pub[key] = Some(p.clone());
                }
            }
            if age > settle {
                assert_eq!(
                    p.len(),
                    1,
                    "seed {seed}: t={} stable {age} ms: component {comp:?} has no publisher",
                    sim.now
                );
            }
        }
    }
    (checks, handovers)
}

#[test]
fn random_schedules_three_nodes() {
    for seed in 1..=8 {
        let (checks, handovers) = random_schedule(seed, 3, 6000);
        eprintln!("3 nodes, seed {seed}: {checks} stable checks, {handovers} handovers");
        assert!(
            handovers > 10,
            "seed {seed}: too little happened ({handovers})"
        );
        assert!(
            checks > 1000,
            "seed {seed}: too few stable checks ({checks})"
        );
    }
}

#[test]
fn random_schedules_five_nodes() {
    for seed in 100..=107 {
        let (checks, handovers) = random_schedule(seed, 5, 6000);
        eprintln!("5 nodes, seed {seed}: {checks} stable checks, {handovers} handovers");
        assert!(
            handovers > 10,
            "seed {seed}: too little happened ({handovers})"
        );
        assert!(
            checks > 1000,
            "seed {seed}: too few stable checks ({checks})"
        );
    }
}
