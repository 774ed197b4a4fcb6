//! `GET /metrics`: the status snapshot in Prometheus text format (prometheus-client). Names
//! follow C tor's MetricsPort where the meaning is the same (`tor_hs_*`), ours are
//! `rustbalance_*`. Each scrape renders the latest snapshot: counters are the node's totals
//! since start, gauges its current state.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{Role, Snapshot};
use crate::membership::Liveness;

type Labels = Vec<(String, String)>;

/// C tor's buckets for onion-service circuit build times, in milliseconds.
pub const CIRC_BUILD_BUCKETS_MS: [f64; 5] = [1000.0, 5000.0, 10000.0, 30000.0, 60000.0];

/// Metrics observed as they happen (not in the snapshot): shared by the stream task, which
/// records, and the status endpoint, which renders. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    /// Time to accept a rendezvous request: building the circuit to the client's rendezvous
    /// point (C tor's `tor_hs_rend_circ_build_time`), in ms.
    pub rend_circ_build: Histogram,
    /// Rendezvous handshakes completed (the histogram's count, readable): the self-check takes
    /// them as evidence that the Tor side works.
    pub rend_circuits: Counter,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            rend_circ_build: Histogram::new(CIRC_BUILD_BUCKETS_MS),
            rend_circuits: Counter::default(),
        }
    }
}

impl Live {
    /// Records one rendezvous circuit built in `took`.
    pub fn rend_circuit_built(&self, took: std::time::Duration) {
        self.rend_circ_build.observe(took.as_secs_f64() * 1000.0);
        self.rend_circuits.inc();
    }
}

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g: Gauge = Gauge::default();
    g.set(v);
    reg.register(name, help, g);
}

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sat(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The snapshot and the live metrics as Prometheus text.
pub fn render(s: &Snapshot, live: &Live) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();
    reg.register(
        "tor_hs_rend_circ_build_time",
        "Time to build the circuit to a client's rendezvous point, in milliseconds",
        live.rend_circ_build.clone(),
    );
    let p = &s.proxy;
    // C tor's MetricsPort names (onion service side).
    counter(
        &mut reg,
        "tor_hs_rdv_num",
        "Rendezvous requests received for the master address on this node",
        p.rendezvous,
    );
    counter(
        &mut reg,
        "tor_hs_app_write_bytes",
        "Bytes written to clients (target to client)",
        p.bytes_down,
    );
    counter(
        &mut reg,
        "tor_hs_app_read_bytes",
        "Bytes read from clients (client to target)",
        p.bytes_up,
    );
    counter(
        &mut reg,
        "rustbalance_streams",
        "Streams proxied to the target",
        p.total,
    );
    gauge(
        &mut reg,
        "rustbalance_streams_active",
        "Streams open now",
        sat(p.active),
    );
    counter(
        &mut reg,
        "rustbalance_streams_refused",
        "Streams refused (connection limit or shutting down)",
        p.refused,
    );
    counter(
        &mut reg,
        "rustbalance_target_connect_failures",
        "Streams whose target could not be reached",
        p.failed_connects,
    );
    gauge(
        &mut reg,
        "rustbalance_target_up",
        "1 while the target answers the health probe",
        i64::from(s.target_up),
    );
    gauge(
        &mut reg,
        "rustbalance_authorized_clients",
        "Restricted discovery: clients the descriptor is encrypted for (-1: public descriptor)",
        s.authorized_clients.map_or(-1, |n| sat(n as u64)),
    );
    gauge(
        &mut reg,
        "rustbalance_tor_ok",
        "0 while this node's Tor self-check finds its Tor side broken (withdrawn, repairing)",
        i64::from(s.repair.state != crate::repair::TorState::Broken),
    );
    counter(
        &mut reg,
        "rustbalance_tor_probes_failed",
        "Tor self-check probes that failed",
        s.repair.probes_failed,
    );
    counter(
        &mut reg,
        "rustbalance_tor_repairs",
        "Repairs of this node's Tor side (service relaunches)",
        s.repair.repairs,
    );
    gauge(
        &mut reg,
        "rustbalance_pow_enabled",
        "1 when this node verifies proof of work and its descriptor carries pow-params",
        i64::from(s.pow.is_some()),
    );
    if let Some(p) = &s.pow {
        let effort: Family<Labels, Gauge> = Family::default();
        effort
            .get_or_create(&l(&[("which", "own")]))
            .set(i64::from(p.own_effort));
        effort
            .get_or_create(&l(&[("which", "advertised")]))
            .set(i64::from(p.advertised_effort));
        reg.register(
            "rustbalance_pow_effort",
            "Suggested PoW effort: this node's own (Arti's), and the one the descriptor carries",
            effort,
        );
        gauge(
            &mut reg,
            "rustbalance_pow_seed_epoch",
            "The epoch whose PoW seed the descriptor advertises",
            sat(p.epoch),
        );
        gauge(
            &mut reg,
            "rustbalance_pow_queue_depth",
            "pow.queue_depth: introduction requests that may wait",
            sat(p.queue_depth as u64),
        );
        counter(
            &mut reg,
            "rustbalance_pow_verified",
            "Introduction requests whose PoW solution verified",
            p.counters.verified,
        );
        counter(
            &mut reg,
            "rustbalance_pow_failed",
            "Introduction requests whose PoW solution did not verify (dropped)",
            p.counters.failed,
        );
        counter(
            &mut reg,
            "rustbalance_pow_enqueued",
            "Introduction requests queued by effort",
            p.counters.enqueued,
        );
        let dropped: Family<Labels, Counter> = Family::default();
        dropped
            .get_or_create(&l(&[("reason", "queue_full")]))
            .inc_by(p.counters.dropped);
        dropped
            .get_or_create(&l(&[("reason", "expired")]))
            .inc_by(p.counters.expired);
        reg.register(
            "rustbalance_pow_dropped",
            "Queued introduction requests dropped: the queue was full (lowest effort first) or they waited too long",
            dropped,
        );
    }
    let role: Family<Labels, Gauge> = Family::default();
    for r in [None, Some(Role::Standby), Some(Role::Publisher)] {
        role.get_or_create(&l(&[("role", super::role_name(r))]))
            .set(i64::from(r == s.role));
    }
    reg.register(
        "rustbalance_role",
        "This node's role (1 for the current one)",
        role,
    );
    gauge(
        &mut reg,
        "rustbalance_intro_points",
        "This node's own intro points",
        sat(s.intro_points.len() as u64),
    );
    gauge(
        &mut reg,
        "rustbalance_clock_error",
        "1 while the publisher refuses to publish because the clock disagrees with the consensus",
        i64::from(s.clock_error.is_some()),
    );
    gauge(
        &mut reg,
        "rustbalance_key_holder",
        "1 if this node holds the identity secret",
        i64::from(s.keys.holder),
    );
    gauge(
        &mut reg,
        "rustbalance_blinded_keys_until_period",
        "The last time period this node's blinded keys cover (0 for a key holder)",
        sat(s.keys.until_period),
    );
    // Publishing (publisher only).
    let hsdirs: Family<Labels, Gauge> = Family::default();
    let revision: Family<Labels, Gauge> = Family::default();
    let published: Family<Labels, Gauge> = Family::default();
    for period in &s.periods {
        let ok = period.hsdirs_ok() as u64;
        let failed = period.hsdirs.len() as u64 - ok;
        hsdirs
            .get_or_create(&l(&[("period", &period.period), ("result", "ok")]))
            .set(sat(ok));
        hsdirs
            .get_or_create(&l(&[("period", &period.period), ("result", "failed")]))
            .set(sat(failed));
        revision
            .get_or_create(&l(&[("period", &period.period)]))
            .set(sat(period.revision));
        published
            .get_or_create(&l(&[("period", &period.period)]))
            .set(sat(period.published_at));
    }
    reg.register(
        "rustbalance_publish_hsdirs",
        "HSDirs of the last upload round per time period, by result",
        hsdirs,
    );
    reg.register(
        "rustbalance_descriptor_revision",
        "Revision counter of the last descriptor published per time period",
        revision,
    );
    reg.register(
        "rustbalance_publish_last_unixtime",
        "When the last upload round per time period ended (Unix seconds)",
        published,
    );
    let listed: Family<Labels, Gauge> = Family::default();
    for c in &s.merged {
        listed
            .get_or_create(&l(&[("node", &c.node_id)]))
            .set(sat(c.listed as u64));
    }
    reg.register(
        "rustbalance_descriptor_intro_points",
        "Intro points of each node listed in the merged descriptor (publisher only)",
        listed,
    );
    // The mesh.
    if let Some(c) = &s.cluster {
        let members: Family<Labels, Gauge> = Family::default();
        for live in [Liveness::Alive, Liveness::Suspect, Liveness::Down] {
            let n = c.members.iter().filter(|m| m.liveness == live).count();
            let name = format!("{live:?}").to_lowercase();
            members
                .get_or_create(&l(&[("liveness", &name)]))
                .set(sat(n as u64));
        }
        reg.register("rustbalance_members", "Mesh members by liveness", members);
        let k = &c.counters;
        let rejected: Family<Labels, Counter> = Family::default();
        for (reason, v) in [
            ("skew", k.rejected_skew),
            ("malformed", k.rejected_malformed),
            ("spoofed", k.rejected_spoofed),
            ("duplicate_id", k.rejected_duplicate_id),
            ("swim", k.swim_errors),
        ] {
            rejected.get_or_create(&l(&[("reason", reason)])).inc_by(v);
        }
        reg.register(
            "rustbalance_mesh_rejected",
            "Gossip datagrams refused, by reason",
            rejected,
        );
        counter(
            &mut reg,
            "rustbalance_mesh_received",
            "Gossip datagrams accepted",
            k.received,
        );
        counter(
            &mut reg,
            "rustbalance_mesh_sent",
            "Gossip datagrams sent",
            k.sent,
        );
        counter(
            &mut reg,
            "rustbalance_members_up",
            "Members that came up",
            k.members_up,
        );
        counter(
            &mut reg,
            "rustbalance_members_down",
            "Members declared down",
            k.members_down,
        );
        counter(
            &mut reg,
            "rustbalance_role_changes",
            "Election role changes since start",
            c.role_changes,
        );
        let t = &c.transport;
        let handshakes: u64 = t.peers.iter().map(|p| p.handshakes).sum();
        counter(
            &mut reg,
            "rustbalance_wireguard_handshakes",
            "WireGuard handshakes completed with peers",
            handshakes,
        );
        let dropped: Family<Labels, Counter> = Family::default();
        for (reason, v) in [
            ("unknown_peer", t.dropped_unknown_peer),
            ("bad_packet", t.dropped_bad_packet),
            ("queue_full", t.dropped_queue_full),
            ("no_route", t.dropped_no_route),
        ] {
            dropped.get_or_create(&l(&[("reason", reason)])).inc_by(v);
        }
        reg.register(
            "rustbalance_wireguard_dropped",
            "WireGuard packets dropped, by reason",
            dropped,
        );
    }
    // Joins.
    if let Some(j) = &s.join {
        counter(
            &mut reg,
            "rustbalance_join_granted",
            "Joins granted by this node",
            j.granted,
        );
        let refused: Family<Labels, Counter> = Family::default();
        for code in crate::join::wire::RefusalCode::ALL {
            let name = serde_json::to_string(&code).unwrap_or_default();
            let v = j.refused.get(&code).copied().unwrap_or(0);
            refused
                .get_or_create(&l(&[("reason", name.trim_matches('"'))]))
                .inc_by(v);
        }
        reg.register(
            "rustbalance_join_refused",
            "Join attempts refused by this node, by reason",
            refused,
        );
    }
    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_renders_as_prometheus_text_with_its_values() {
        let mut s = Snapshot::starting("node-a", "x.onion");
        s.proxy.rendezvous = 7;
        s.proxy.bytes_down = 1234;
        s.role = Some(Role::Publisher);
        s.target_up = false;
        let mut j = crate::join::authority::JoinCounters {
            granted: 2,
            ..Default::default()
        };
        j.refused.insert(crate::join::wire::RefusalCode::UsedUp, 3);
        s.join = Some(j);
        s.pow = Some(crate::status::PowStatus::example());
        let live = Live::default();
        live.rend_circuit_built(std::time::Duration::from_millis(1500));
        let text = render(&s, &live).unwrap();
        for line in [
            "tor_hs_rdv_num_total 7",
            "tor_hs_app_write_bytes_total 1234",
            "rustbalance_role{role=\"publisher\"} 1",
            "rustbalance_role{role=\"standby\"} 0",
            "rustbalance_target_up 0",
            "rustbalance_join_granted_total 2",
            "rustbalance_join_refused_total{reason=\"used_up\"} 3",
            "rustbalance_join_refused_total{reason=\"bad_invite\"} 0",
            "tor_hs_rend_circ_build_time_count 1",
            "tor_hs_rend_circ_build_time_bucket{le=\"1000.0\"} 0",
            "tor_hs_rend_circ_build_time_bucket{le=\"5000.0\"} 1",
            "rustbalance_pow_enabled 1",
            "rustbalance_pow_effort{which=\"own\"} 12",
            "rustbalance_pow_effort{which=\"advertised\"} 30",
            "rustbalance_pow_verified_total 5",
            "rustbalance_pow_dropped_total{reason=\"queue_full\"} 2",
            "rustbalance_pow_dropped_total{reason=\"expired\"} 1",
            "rustbalance_pow_seed_epoch 250001",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
