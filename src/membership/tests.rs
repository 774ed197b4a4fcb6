//! Membership and election together, on the simulated mesh (simulated time, no sleeps).

use std::time::Duration;

use super::core::{Liveness, MembershipConfig};
use super::sim::{NetConfig, Sim};
use super::wire::Health;
use crate::election::{ElectionConfig, Role};

const S: fn(u64) -> Duration = Duration::from_secs;

fn sim(seed: u64) -> Sim {
    Sim::with_defaults(seed)
}

/// Three nodes: a (priority 1), b (2), c (3), started as a chain: b knows a, c knows only b.
fn chain(seed: u64) -> Sim {
    let mut s = sim(seed);
    let a = s.add_node("a", 1, &[]);
    let b = s.add_node("b", 2, &[a]);
    s.add_node("c", 3, &[b]);
    s
}

fn liveness(s: &Sim, observer: usize, of: usize) -> Option<Liveness> {
    let key = s.nodes()[of].key;
    s.agent(observer)?
        .membership_ref()
        .peers()
        .into_iter()
        .find(|p| p.id.key == *key.as_bytes())
        .map(|p| p.liveness)
}

#[test]
fn a_chain_heals_into_a_full_mesh() {
    let mut s = chain(1);
    let took = s.run_until(S(10), |s| s.converged()).expect("converges");
    assert!(took < S(3), "took {took:?}");
    // c was told only about b, yet knows a directly, with a's state (priority 1).
    let c = s.agent(2).unwrap().membership_ref();
    let a = c
        .peers()
        .into_iter()
        .find(|p| p.id.node_id == "a")
        .expect("c knows a");
    assert_eq!(a.liveness, Liveness::Alive);
    s.run_for(S(2));
    let c = s.agent(2).unwrap().membership_ref();
    let a = c.peers().into_iter().find(|p| p.id.node_id == "a").unwrap();
    assert_eq!(a.state.expect("a's state reached c").priority, 1);
    assert!(a.rtt.is_some(), "RTT measured from echoes");
    let rtt = a.rtt.unwrap();
    assert!(
        rtt >= Duration::from_millis(10) && rtt <= Duration::from_millis(25),
        "rtt {rtt:?} for 5-10 ms one way"
    );
}

#[test]
fn the_best_priority_publishes_alone_after_the_startup_hold() {
    let mut s = chain(2);
    s.run_for(S(5));
    assert!(
        s.publishers().is_empty(),
        "startup hold: nobody claims before 6 s"
    );
    s.run_for(S(3));
    assert_eq!(s.publishers(), vec![0]);
    s.run_for(S(60));
    assert_eq!(s.publishers(), vec![0]);
    for i in 0..3 {
        assert_eq!(
            s.agent(i).unwrap().role_changes(),
            if i == 0 { 1 } else { 0 }
        );
    }
}

/// Crashes `victim` after convergence; returns (detection, takeover) times: until every
/// survivor holds the victim down, and until exactly one survivor publishes.
fn crash_and_measure(seed: u64, victim: usize) -> (Duration, Duration) {
    let mut s = chain(seed);
    s.run_for(S(15));
    assert_eq!(s.publishers(), vec![0]);
    s.crash(victim);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let mut detected = None;
    let mut took_over = None;
    s.run_until(S(30), |s| {
        let t = s.elapsed();
        if detected.is_none()
            && survivors
                .iter()
                .all(|&o| liveness(s, o, victim) == Some(Liveness::Down))
        {
            detected = Some(t);
        }
        let p = s.publishers();
        if took_over.is_none() && p.len() == 1 && p[0] != victim && victim == 0 {
            took_over = Some(t);
        }
        detected.is_some() && (victim != 0 || took_over.is_some())
    })
    .expect("detected");
    let start = S(15);
    (
        detected.unwrap() - start,
        took_over.map(|t| t - start).unwrap_or_default(),
    )
}

#[test]
fn a_dead_node_is_detected_within_five_seconds() {
    let mut times: Vec<Duration> = (0..9).map(|seed| crash_and_measure(seed, 2).0).collect();
    times.sort();
    let median = times[times.len() / 2];
    assert!(median <= S(5), "median detection {median:?} ({times:?})");
    assert!(*times.last().unwrap() <= S(8), "worst {times:?}");
}

#[test]
fn a_dead_publisher_is_replaced_by_the_next_priority_at_detection() {
    let mut takeovers = Vec::new();
    for seed in 0..9 {
        let (detected, took_over) = crash_and_measure(seed + 100, 0);
        assert!(
            took_over <= detected + Duration::from_millis(200),
            "takeover {took_over:?} waits for nothing after detection {detected:?}"
        );
        takeovers.push(took_over);
    }
    takeovers.sort();
    let median = takeovers[takeovers.len() / 2];
    assert!(
        median <= S(10),
        "median takeover {median:?} ({takeovers:?})"
    );
}

#[test]
fn the_next_priority_is_the_one_that_takes_over() {
    let mut s = chain(7);
    s.run_for(S(15));
    s.crash(0);
    s.run_for(S(10));
    assert_eq!(s.publishers(), vec![1], "b (priority 2) over c (3)");
}

#[test]
fn a_restarted_best_node_gets_the_role_back_once() {
    let mut s = chain(8);
    s.run_for(S(15));
    s.crash(0);
    s.run_for(S(10));
    assert_eq!(s.publishers(), vec![1]);
    let b_changes = s.agent(1).unwrap().role_changes();
    s.restart(0);
    // Startup hold (6 s) then hysteresis (10 s of stability) before the handback.
    s.run_for(S(8));
    assert_eq!(
        s.publishers(),
        vec![1],
        "no preemption before the hysteresis"
    );
    s.run_for(S(15));
    assert_eq!(s.publishers(), vec![0], "handed back");
    s.run_for(S(120));
    assert_eq!(s.publishers(), vec![0]);
    assert_eq!(
        s.agent(1).unwrap().role_changes(),
        b_changes + 1,
        "b gave the role back exactly once"
    );
    assert_eq!(s.agent(0).unwrap().role_changes(), 1, "a took it once");
}

#[test]
fn a_partition_has_one_publisher_per_side_and_heals_to_one() {
    let mut s = sim(9);
    let a = s.add_node("a", 1, &[]);
    for (i, id) in ["b", "c", "d"].iter().enumerate() {
        s.add_node(id, 2 + i as u32, &[a]);
    }
    s.run_for(S(15));
    assert_eq!(s.publishers(), vec![0]);
    s.partition(&[0, 0, 1, 1]);
    s.run_for(S(20));
    assert_eq!(s.publishers(), vec![0, 2], "one per side");
    s.heal();
    let took = s
        .run_until(S(60), |s| s.publishers() == vec![0] && s.converged())
        .expect("heals to one publisher");
    assert!(took < S(30), "healed in {took:?}");
    s.run_for(S(30));
    assert_eq!(s.publishers(), vec![0]);
}

#[test]
fn clock_skew_beyond_the_bound_is_rejected_and_counted() {
    let mut s = sim(10);
    let a = s.add_node("a", 1, &[]);
    let b = s.add_node_with_clock("b", 2, &[a], 3_000);
    let c = s.add_node_with_clock("c", 3, &[a], 8_000);
    s.run_for(S(20));
    assert_eq!(
        liveness(&s, a, b),
        Some(Liveness::Alive),
        "3 s of skew is fine"
    );
    assert_eq!(liveness(&s, a, c), None, "c never becomes a member at a");
    let ca = s.agent(a).unwrap().membership_ref().counters();
    assert!(ca.rejected_skew > 5, "{ca:?}");
    assert_eq!(ca.rejected_malformed, 0);
    assert_eq!(
        s.agent(c).unwrap().membership_ref().live_members(),
        0,
        "a's replies are 8 s in c's past: rejected there too"
    );
}

#[test]
fn state_changes_reach_every_member_at_once() {
    let mut s = chain(11);
    s.run_for(S(10));
    s.set_health(2, Health::TargetDown);
    s.run_for(Duration::from_millis(150));
    for o in [0, 1] {
        let m = s.agent(o).unwrap().membership_ref();
        let c = m.peers().into_iter().find(|p| p.id.node_id == "c").unwrap();
        assert_eq!(c.state.unwrap().health, Health::TargetDown);
    }
}

#[test]
fn an_unhealthy_publisher_hands_over_to_a_healthy_node() {
    let mut s = chain(12);
    s.run_for(S(15));
    assert_eq!(s.publishers(), vec![0]);
    s.set_health(0, Health::TargetDown);
    s.run_for(S(15));
    assert_eq!(s.publishers(), vec![1]);
}

#[test]
fn lossy_network_no_false_failure_in_six_minutes() {
    let mut s = Sim::new(
        13,
        NetConfig {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(30),
            loss: 0.05,
        },
        MembershipConfig::default(),
        ElectionConfig::default(),
    );
    let a = s.add_node("a", 1, &[]);
    let b = s.add_node("b", 2, &[a]);
    s.add_node("c", 3, &[b]);
    s.run_for(S(15));
    assert_eq!(s.publishers(), vec![0]);
    s.run_for(S(360));
    for i in 0..3 {
        let c = s.agent(i).unwrap().membership_ref().counters();
        assert_eq!(c.members_down, 0, "node {i}: {c:?}");
        assert_eq!(
            s.agent(i).unwrap().role_changes(),
            if i == 0 { 1 } else { 0 }
        );
    }
    assert_eq!(s.publishers(), vec![0]);
    assert!(
        s.dropped > 100,
        "the network did lose datagrams: {}",
        s.dropped
    );
}

#[test]
fn a_hundred_nodes_converge() {
    let mut s = sim(14);
    let first = s.add_node("n0", 0, &[]);
    for i in 1..100 {
        s.add_node(&format!("n{i}"), i, &[first]);
    }
    let took = s.run_until(S(60), |s| s.converged()).expect("converges");
    assert!(took < S(30), "{took:?}");
    s.run_for(S(10));
    assert_eq!(s.publishers(), vec![0]);
}

#[test]
fn role_is_standby_until_decided() {
    let s = chain(15);
    assert_eq!(s.agent(0).unwrap().role(), Role::Standby);
}

#[test]
fn a_seed_that_starts_late_is_still_reached() {
    let mut s = sim(16);
    let a = s.add_node("a", 1, &[]);
    s.crash(a);
    let b = s.add_node("b", 2, &[a]);
    s.add_node("c", 3, &[b]);
    s.run_for(S(5));
    assert_eq!(
        s.agent(b).unwrap().membership_ref().live_members(),
        1,
        "b has c"
    );
    s.restart(a);
    let took = s
        .run_until(S(10), |s| s.converged())
        .expect("b keeps announcing to its seed");
    assert!(took <= S(3), "{took:?}");
}

/// Two keys with one node id (an operator copied a config): the earlier claim keeps the id,
/// the later one is refused by every member, the two claimants included. It never publishes,
/// never counts in anyone's election, and its intro points are not merged; before the fix both
/// "node-1"s were publisher forever.
#[test]
fn a_second_key_claiming_an_existing_node_id_is_refused_by_everyone() {
    let mut s = sim(31);
    let first = s.add_node("node-1", 1, &[]);
    s.run_for(S(1));
    let other = s.add_node("node-2", 5, &[first]);
    s.run_for(S(1));
    // Same id, a better priority, started later: the newcomer.
    let dup = s.add_node("node-1", 0, &[first]);
    s.run_until(S(10), |s| s.converged())
        .expect("foca converges");
    s.run_for(S(20));
    assert_eq!(
        s.publishers(),
        vec![first],
        "only the id's holder publishes"
    );
    let dup_key = *s.nodes()[dup].key.as_bytes();
    for observer in [first, other] {
        let m = s.agent(observer).unwrap().membership_ref();
        let peer = m
            .peers()
            .into_iter()
            .find(|p| p.id.key == dup_key)
            .expect("still a SWIM member (so it is watched)");
        assert!(
            peer.duplicate_id,
            "observer {observer} refuses the duplicate"
        );
        assert!(m.counters().rejected_duplicate_id >= 1);
        let view = m.election_view();
        assert!(
            view.peers.iter().all(|p| p.priority != 0),
            "the duplicate (priority 0) is not in the election: {view:?}"
        );
    }
    let refused = s.agent(dup).unwrap();
    assert_eq!(refused.role(), Role::Standby);
    assert!(matches!(
        refused.decision().unwrap().reason,
        crate::election::Reason::DuplicateId { .. }
    ));
    assert!(refused.membership_ref().id_taken_by().is_some());
    assert!(s
        .agent(first)
        .unwrap()
        .membership_ref()
        .id_taken_by()
        .is_none());
    // The holder leaves: the id is free, the former duplicate is a normal member again and,
    // with the best priority, takes over.
    s.crash(first);
    s.run_for(S(30));
    assert_eq!(s.publishers(), vec![dup]);
    let m = s.agent(other).unwrap().membership_ref();
    assert!(m
        .peers()
        .iter()
        .all(|p| !p.duplicate_id || p.liveness == Liveness::Down));
}

/// An insider's gossip with numbers no honest member produces is refused whole and counted:
/// another member's key with a far-future boot (it would win every identity conflict and
/// redirect that member's endpoint), and a lease ending far beyond the lease duration (it would
/// hold the publisher role forever).
#[test]
fn gossip_with_a_future_boot_or_a_far_future_lease_is_refused() {
    use super::identity::MemberId;
    use super::wire::{self, Kind, StateMsg};
    use crate::election::Lease;
    use foca::Codec;

    let mut s = sim(41);
    let a = s.add_node("a", 1, &[]);
    let b = s.add_node("b", 2, &[a]);
    let c = s.add_node("c", 3, &[a]);
    s.run_until(S(10), |s| s.converged()).expect("converges");
    s.run_for(S(2));
    let view = |s: &Sim, of: usize| {
        let key = *s.nodes()[of].key.as_bytes();
        s.agent(a)
            .unwrap()
            .membership_ref()
            .peers()
            .into_iter()
            .find(|p| p.id.key == key)
            .unwrap()
    };
    let b_id = view(&s, b).id;
    let c_id = view(&s, c).id;
    let a_id = s.agent(a).unwrap().membership_ref().me().clone();
    let now = s.now_at(a);
    let b_key = s.nodes()[b].key;

    // b gossips c's key with a boot an hour ahead.
    let forged = MemberId {
        boot: now.as_millis() + 3_600_000,
        ..c_id.clone()
    };
    let header = foca::Header {
        src: b_id.clone(),
        src_incarnation: 0,
        dst: a_id,
        message: foca::Message::Gossip,
    };
    // A SWIM packet as foca lays it out: header, a u16 count, the updates.
    let gossip = |update: MemberId| {
        let mut body = Vec::new();
        foca::PostcardCodec
            .encode_header(&header, &mut body)
            .unwrap();
        body.extend_from_slice(&1u16.to_be_bytes());
        foca::PostcardCodec
            .encode_member(&foca::Member::alive(update), &mut body)
            .unwrap();
        wire::encode(Kind::Swim, now, &body).unwrap()
    };
    let datagram = gossip(forged);
    let before = s.agent(a).unwrap().membership_ref().counters();
    s.agent_mut(a)
        .unwrap()
        .membership()
        .handle_datagram(now, &b_key, &datagram);
    let after = s.agent(a).unwrap().membership_ref().counters();
    assert_eq!(after.rejected_malformed, before.rejected_malformed + 1);
    assert_eq!(view(&s, c).id.boot, c_id.boot, "c's identity untouched");

    // The same packet with an honest update is taken (the check is not refusing everything).
    let datagram = gossip(c_id.clone());
    s.agent_mut(a)
        .unwrap()
        .membership()
        .handle_datagram(now, &b_key, &datagram);
    let honest = s.agent(a).unwrap().membership_ref().counters();
    assert_eq!(honest.rejected_malformed, after.rejected_malformed);

    // b advertises a lease until an hour from now.
    let state = view(&s, b).state.unwrap();
    let msg = StateMsg {
        node_id: "b".into(),
        boot: b_id.boot,
        seq: 1_000_000,
        state: crate::membership::NodeState {
            lease: Some(Lease {
                holder: "b".into(),
                until: now.saturating_add(S(3600)),
                term: 99,
                yield_to: None,
            }),
            ..state.clone()
        },
        echo: None,
    };
    let datagram = wire::encode(Kind::State, now, &msg.encode().unwrap()).unwrap();
    s.agent_mut(a)
        .unwrap()
        .membership()
        .handle_datagram(now, &b_key, &datagram);
    let leased = s.agent(a).unwrap().membership_ref().counters();
    assert_eq!(leased.rejected_malformed, honest.rejected_malformed + 1);
    assert_eq!(view(&s, b).state.unwrap(), state, "b's state untouched");
    // A boot in the future on a state message is refused too.
    let msg = StateMsg {
        boot: now.as_millis() + 3_600_000,
        state: state.clone(),
        ..msg
    };
    let datagram = wire::encode(Kind::State, now, &msg.encode().unwrap()).unwrap();
    s.agent_mut(a)
        .unwrap()
        .membership()
        .handle_datagram(now, &b_key, &datagram);
    assert_eq!(
        s.agent(a)
            .unwrap()
            .membership_ref()
            .counters()
            .rejected_malformed,
        leased.rejected_malformed + 1
    );
    // The mesh carries on.
    s.run_for(S(10));
    assert!(s.converged());
    assert_eq!(s.publishers(), vec![a]);
}

/// The peer table holds what foca holds: members foca forgot (down, then removed) leave it.
#[test]
fn forgotten_members_leave_the_peer_table() {
    let mut s = sim(43);
    let a = s.add_node("a", 1, &[]);
    let b = s.add_node("b", 2, &[a]);
    s.run_until(S(10), |s| s.converged()).expect("converges");
    s.crash(b);
    // foca forgets down members after 10 minutes (our config); then the table prunes them.
    s.run_for(S(11 * 60));
    let m = s.agent(a).unwrap().membership_ref();
    assert!(m.peers().is_empty(), "foca forgot b");
    assert_eq!(m.peer_table_len(), 0, "and so did the peer table");
}
