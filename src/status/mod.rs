//! The node's status as plain data, the local HTTP/JSON endpoint that serves it, and the client
//! `rustbalance status` uses.
//!
//! This module owns the status schema ([`Snapshot`], versioned) and its transport. It never
//! shows secrets or the target's address. The daemon publishes snapshots through a
//! `tokio::sync::watch` channel; the endpoint serves the latest one to `GET /status`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::membership::MeshStatus;
use crate::proxy::ProxyStats;

/// Version of the status schema (2: `cluster` and the `standby` role; 3: `cluster.reason` as
/// data, `clock_error`, `members[].duplicate_id`; 5: `role` is `null` while starting (one role
/// type for election, gossip and status), `repair`; 6: `pow`, `cluster.members[].pow_effort`).
pub const SCHEMA_VERSION: u32 = 6;

pub use crate::election::Role;

/// One of this node's intro points (public facts only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntroPointStatus {
    /// The intro point relay's RSA identity (hex), or `?`.
    pub relay: String,
    /// The first 8 characters of Arti's local id for it.
    pub lid: String,
    /// Its auth key (`KP_hs_ipt_sid`, hex): how the descriptor names it.
    #[serde(default)]
    pub auth_key: String,
}

/// One node's part in the merged descriptor (as the publisher last built it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeContribution {
    /// The node.
    pub node_id: String,
    /// Whether it advertised itself healthy.
    pub healthy: bool,
    /// How many intro points it has.
    pub intro_points: usize,
    /// How many of them the descriptor lists.
    pub listed: usize,
}

/// One HSDir's answer to an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HsDirUpload {
    /// The HSDir's RSA identity (hex).
    pub hsdir: String,
    /// Whether it accepted the descriptor.
    pub ok: bool,
    /// The error, if not.
    pub error: Option<String>,
    /// How long the attempt took, in milliseconds.
    pub elapsed_ms: u64,
    /// Intro points in the descriptor it was given.
    #[serde(default)]
    pub intro_points: usize,
}

/// The last publication for one time period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodStatus {
    /// The period, as `<interval>_<length min>_<offset s>`.
    pub period: String,
    /// Unix time of the last upload round.
    pub published_at: u64,
    /// Revision counter of that descriptor.
    pub revision: u64,
    /// Intro points in use: listed by at least one HSDir's descriptor.
    pub intro_points: usize,
    /// Distinct descriptors uploaded (1, or one per HSDir when more than 20 intro points).
    #[serde(default = "one")]
    pub descriptors: usize,
    /// Descriptor size in bytes.
    pub bytes: usize,
    /// Per-HSDir results of that round.
    pub hsdirs: Vec<HsDirUpload>,
}

impl PeriodStatus {
    /// How many HSDirs accepted the descriptor.
    pub fn hsdirs_ok(&self) -> usize {
        self.hsdirs.iter().filter(|h| h.ok).count()
    }
}

/// Everything `rustbalance status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SCHEMA_VERSION`].
    pub version: u32,
    /// This node's id.
    pub node_id: String,
    /// The master onion address.
    pub master_address: String,
    /// What this node does: `null` while it starts (Arti bootstrapping, the service not yet
    /// launched), then the election's role.
    pub role: Option<Role>,
    /// Unix time the daemon started.
    pub started_at: u64,
    /// This node's current intro points.
    pub intro_points: Vec<IntroPointStatus>,
    /// The last publication per time period.
    pub periods: Vec<PeriodStatus>,
    /// Streams proxied to the target.
    pub proxy: ProxyStats,
    /// Whether the target answers the health probe.
    #[serde(default = "yes")]
    pub target_up: bool,
    /// The merged descriptor's sources, per node (publisher only; empty before a round).
    #[serde(default)]
    pub merged: Vec<NodeContribution>,
    /// The mesh: members, roles, per-peer last-seen/RTT (absent in single-node mode).
    #[serde(default)]
    pub cluster: Option<MeshStatus>,
    /// Why this node refuses to publish: its clock disagrees with the consensus (absent when
    /// the clock is fine).
    #[serde(default)]
    pub clock_error: Option<String>,
    /// This node's master keys: the identity secret, or blinded keys up to a period.
    #[serde(default)]
    pub keys: crate::membership::KeyCoverage,
    /// The join service's counters (absent when this node takes no joins).
    #[serde(default)]
    pub join: Option<crate::join::authority::JoinCounters>,
    /// Restricted discovery: how many clients the descriptor is encrypted for (absent: public
    /// descriptor).
    #[serde(default)]
    pub authorized_clients: Option<usize>,
    /// Why the authorized clients could not be re-read (the last good set stays in use).
    #[serde(default)]
    pub authorized_clients_error: Option<String>,
    /// The self-check of this node's Tor side, and its repairs.
    #[serde(default = "crate::repair::RepairStatus::disabled")]
    pub repair: crate::repair::RepairStatus,
    /// Proof of work (absent when `[pow]` is off).
    #[serde(default)]
    pub pow: Option<PowStatus>,
}

/// Proof of work on this node: the seeds (their heads only), the efforts, Arti's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowStatus {
    /// The seed rotation interval, in seconds.
    pub seed_rotation_secs: u64,
    /// The epoch whose seed the descriptor advertises now.
    pub epoch: u64,
    /// Unix time that seed expires (the next rotation).
    pub expires_at: u64,
    /// The advertised seed's head (hex) per period slug.
    pub advertised: Vec<PowSeedHead>,
    /// The epoch the running service loaded (its seeds and the next epoch's); `None` before
    /// the first launch.
    pub loaded_epoch: Option<u64>,
    /// The seed heads the running service verifies, per period slug.
    pub loaded: Vec<PowSeedHead>,
    /// This node's offset into each epoch for loading the next seeds, in seconds.
    pub relaunch_offset_secs: u64,
    /// This node's own suggested effort (Arti's, from its queue).
    pub own_effort: u32,
    /// The suggested effort the descriptor carries (the healthy nodes' highest, in bounds).
    pub advertised_effort: u32,
    /// `pow.min_effort` and `pow.max_effort`.
    pub effort_bounds: (u32, u32),
    /// `pow.queue_depth`.
    pub queue_depth: usize,
    /// Arti's counters: verified, failed, enqueued, dropped, expired.
    pub counters: crate::pow::counters::PowCounts,
    /// Why Arti's PoW state could not be read (the last effort stays in use).
    pub state_error: Option<String>,
}

#[cfg(test)]
impl PowStatus {
    /// A PoW status with every field set: for the text view's and the metrics' tests.
    pub(crate) fn example() -> PowStatus {
        PowStatus {
            seed_rotation_secs: 7200,
            epoch: 250_001,
            expires_at: 0,
            advertised: vec![PowSeedHead {
                period: "4989240_6_180".into(),
                heads: vec!["5e44575c".into()],
            }],
            loaded_epoch: Some(250_001),
            loaded: Vec::new(),
            relaunch_offset_secs: 40,
            own_effort: 12,
            advertised_effort: 30,
            effort_bounds: (0, 10_000),
            queue_depth: 8192,
            counters: crate::pow::counters::PowCounts {
                verified: 5,
                verified_effort: 150,
                failed: 1,
                enqueued: 9,
                dropped: 2,
                expired: 1,
            },
            state_error: Some("pow_manager.json: bad".into()),
        }
    }
}

/// A seed head for one period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowSeedHead {
    /// The period's slug.
    pub period: String,
    /// The seed heads (hex), current first.
    pub heads: Vec<String>,
}

/// A unit enum value as the JSON status names it (`tor_broken`, `alive`, …), for the text view.
fn wire_name<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v)
        .unwrap_or_default()
        .trim_matches('"')
        .to_string()
}

/// A role as the status shows it: `starting`, `standby` or `publisher`.
pub fn role_name(role: Option<Role>) -> &'static str {
    match role {
        None => "starting",
        Some(Role::Standby) => "standby",
        Some(Role::Publisher) => "publisher",
    }
}

/// A period slug (`<interval>_<length min>_<offset s>`) as the time range it covers, e.g.
/// `2026-12-01 12:00–12:06 UTC (#4989240)`; an unparsable slug as it is.
pub fn period_range(slug: &str) -> String {
    let parts: Vec<&str> = slug.split('_').collect();
    let parsed = match parts[..] {
        [i, l, o] => i
            .parse::<u64>()
            .ok()
            .zip(l.parse::<u32>().ok())
            .zip(o.parse::<u32>().ok()),
        _ => None,
    };
    let Some(((interval, length), offset)) = parsed.filter(|((_, l), _)| *l > 0) else {
        return slug.to_string();
    };
    let tp = tor_hscrypto::time::TimePeriod::from_parts(length, interval, offset);
    let Ok(range) = tp.range() else {
        return slug.to_string();
    };
    let fmt = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    let (start, end) = (fmt(range.start), fmt(range.end));
    // "2026-12-01T12:00:00Z" → date "2026-12-01", time "12:00".
    let end_time = if end[..10] == start[..10] {
        end[11..16].to_string()
    } else {
        format!("{} {}", &end[..10], &end[11..16])
    };
    format!(
        "{} {}–{} UTC (#{interval})",
        &start[..10],
        &start[11..16],
        end_time
    )
}

/// A key coverage for the terminal.
fn keys_text(k: Option<crate::membership::KeyCoverage>) -> String {
    match k {
        None => "-".into(),
        Some(k) if k.holder => "identity secret (key holder)".into(),
        Some(k) if k.until_period == 0 => "NONE".into(),
        Some(k) => format!("blinded, up to period #{}", k.until_period),
    }
}

impl Snapshot {
    /// An empty snapshot for a starting node.
    pub fn starting(node_id: &str, master_address: &str) -> Snapshot {
        Snapshot {
            version: SCHEMA_VERSION,
            node_id: node_id.to_string(),
            master_address: master_address.to_string(),
            role: None,
            started_at: unix_now(),
            intro_points: Vec::new(),
            periods: Vec::new(),
            proxy: ProxyStats::default(),
            target_up: true,
            merged: Vec::new(),
            cluster: None,
            clock_error: None,
            keys: Default::default(),
            join: None,
            authorized_clients: None,
            authorized_clients_error: None,
            repair: crate::repair::RepairStatus::disabled(),
            pow: None,
        }
    }

    /// Human-readable lines for the terminal.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "node {}  role {}  master {}",
            self.node_id,
            role_name(self.role),
            self.master_address
        );
        if !self.target_up {
            let _ = writeln!(s, "target DOWN (health probe): intro points withdrawn");
        }
        if let Some(e) = &self.clock_error {
            let _ = writeln!(s, "CLOCK: {e}");
        }
        if let Some(n) = self.authorized_clients {
            let _ = writeln!(s, "restricted discovery: {n} authorized clients");
        }
        if let Some(e) = &self.authorized_clients_error {
            let _ = writeln!(s, "AUTHORIZED CLIENTS not re-read (last set kept): {e}");
        }
        let r = &self.repair;
        if r.state == crate::repair::TorState::Broken {
            let _ = writeln!(
                s,
                "TOR BROKEN for {} s (self-check: {}): intro points withdrawn; {} repairs, next in {} s",
                r.for_secs,
                r.last_error.as_deref().unwrap_or("?"),
                r.repairs,
                r.next_repair_in_secs.unwrap_or(0)
            );
        } else if r.enabled {
            let _ = writeln!(
                s,
                "tor self-check: {} ({} probes, {} failed, {} repairs)",
                if r.state == crate::repair::TorState::Working {
                    "working"
                } else {
                    "no probe yet"
                },
                r.probes,
                r.probes_failed,
                r.repairs
            );
        }
        if let Some(p) = &self.pow {
            let heads: Vec<&str> = p
                .advertised
                .iter()
                .filter_map(|h| h.heads.first().map(String::as_str))
                .collect();
            let _ =
                writeln!(
                s,
                "pow: on, seed epoch {} (heads {}), effort {} advertised / {} own (bounds {}-{}), \
                 {} verified, {} failed, {} dropped of {} queued (depth {})",
                p.epoch,
                if heads.is_empty() { "-".into() } else { heads.join(",") },
                p.advertised_effort,
                p.own_effort,
                p.effort_bounds.0,
                p.effort_bounds.1,
                p.counters.verified,
                p.counters.failed,
                p.counters.dropped + p.counters.expired,
                p.counters.enqueued,
                p.queue_depth
            );
            if let Some(e) = &p.state_error {
                let _ = writeln!(s, "pow state not readable: {e}");
            }
        }
        let _ = writeln!(s, "keys: {}", keys_text(Some(self.keys)));
        if let Some(j) = &self.join {
            let refused: Vec<String> = j
                .refused
                .iter()
                .map(|(c, n)| format!("{n} {}", wire_name(c)))
                .collect();
            let _ = writeln!(
                s,
                "joins: {} granted here, refused: {}; {} invites redeemed in the cluster",
                j.granted,
                if refused.is_empty() {
                    "none".to_string()
                } else {
                    refused.join(", ")
                },
                j.invites_redeemed
            );
        }
        let _ = writeln!(s, "intro points ({}):", self.intro_points.len());
        for i in &self.intro_points {
            let _ = writeln!(s, "  relay {}  lid {}", i.relay, i.lid);
        }
        if !self.merged.is_empty() {
            let _ = writeln!(s, "merged descriptor:");
            for c in &self.merged {
                let _ = writeln!(
                    s,
                    "  {:<16} {} intro points, {} listed{}",
                    c.node_id,
                    c.intro_points,
                    c.listed,
                    if c.healthy { "" } else { " (unhealthy)" }
                );
            }
        }
        let _ = writeln!(s, "publications:");
        if self.periods.is_empty() {
            let _ = writeln!(s, "  none yet");
        }
        for p in &self.periods {
            let age = unix_now().saturating_sub(p.published_at);
            let _ = writeln!(
                s,
                "  period {}: {}/{} HSDirs accepted, {} intro points in {} descriptor(s), {} bytes, revision {}, {} s ago",
                period_range(&p.period),
                p.hsdirs_ok(),
                p.hsdirs.len(),
                p.intro_points,
                p.descriptors,
                p.bytes,
                p.revision,
                age
            );
            for h in p.hsdirs.iter().filter(|h| !h.ok) {
                let _ = writeln!(
                    s,
                    "    {} failed: {}",
                    h.hsdir,
                    h.error.as_deref().unwrap_or("?")
                );
            }
        }
        let p = &self.proxy;
        let _ = writeln!(
            s,
            "proxy: {} rendezvous, {} active, {} total, {} refused, {} failed connects, {} B up, \
             {} B down",
            p.rendezvous, p.active, p.total, p.refused, p.failed_connects, p.bytes_up, p.bytes_down
        );
        if let Some(c) = &self.cluster {
            let _ = writeln!(
                s,
                "mesh: key {} at {}  election {} ({})  publisher {}",
                c.public_key,
                c.endpoint,
                wire_name(&c.role),
                c.reason.as_ref().map_or("-".to_string(), |r| r.to_string()),
                c.publisher.as_deref().unwrap_or("none seen")
            );
            let _ = writeln!(s, "members ({} live):", c.live_members().count());
            for m in &c.members {
                let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
                let _ = writeln!(
                    s,
                    "  {:<16} {:<8} {:<22} prio {:<4} {:<11} {:<9} seen {} ago  rtt {}  wg {}",
                    m.node_id,
                    wire_name(&m.liveness),
                    m.endpoint,
                    m.priority.map_or("-".into(), |p| p.to_string()),
                    m.health.map_or("-".into(), |h| wire_name(&h)),
                    m.role.map_or("-".into(), |r| wire_name(&r)),
                    ms(m.last_seen_ms_ago),
                    ms(m.rtt_ms),
                    m.wireguard_handshake_age_ms
                        .map_or("no session".to_string(), |a| format!("{} s", a / 1000)),
                );
                let _ = writeln!(
                    s,
                    "    {:<12} keys: {}",
                    wire_name(&m.lifecycle),
                    keys_text(m.keys)
                );
                if m.duplicate_id {
                    let _ = writeln!(
                        s,
                        "    REFUSED: another key holds node id {:?} (its state and intro points are not used)",
                        m.node_id
                    );
                }
            }
            let k = &c.counters;
            let _ = writeln!(
                s,
                "  gossip: {} received, {} rejected for skew, {} malformed, {} spoofed, {} duplicate ids; {} up, {} down events",
                k.received, k.rejected_skew, k.rejected_malformed, k.rejected_spoofed, k.rejected_duplicate_id, k.members_up, k.members_down
            );
            let t = &c.transport;
            let _ = writeln!(
                s,
                "  wireguard: {} unknown-key and {} bad packets dropped, {} provisional peers expired",
                t.dropped_unknown_peer, t.dropped_bad_packet, t.provisional_expired
            );
        }
        s
    }
}

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Status endpoint and client failures.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The endpoint could not listen.
    #[error("status endpoint: cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The daemon could not be reached or answered badly.
    #[error("status of the daemon at {addr}: {problem} (is `rustbalance run` running with this config?)")]
    Fetch {
        /// The endpoint.
        addr: SocketAddr,
        /// What went wrong.
        problem: String,
    },
}

mod client;
pub mod metrics;
mod server;

pub use client::fetch;
pub use server::{bind, serve, serve_stream, Access, MAX_CONNECTIONS};

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn periods_are_shown_as_time_ranges() {
        // Period 4989240 of 6 minutes, offset 180 s (the test network).
        let start = 4_989_240u64 * 360 + 180;
        let t =
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(start))
                .to_string();
        let want = format!("{} {}–", &t[..10], &t[11..16]);
        let shown = period_range("4989240_6_180");
        assert!(
            shown.starts_with(&want) && shown.ends_with("UTC (#4989240)"),
            "{shown}"
        );
        // The public network's day-long period crosses midnight: the end shows its date.
        let day = period_range("20573_1440_43200");
        assert!(
            day.contains("2026-") && day.matches('-').count() >= 4,
            "{day}"
        );
        assert_eq!(period_range("not a slug"), "not a slug");
        assert_eq!(period_range("1_0_0"), "1_0_0");
    }

    #[test]
    fn the_text_view_shows_pow_heads_efforts_and_counters() {
        let mut s = Snapshot::starting("n1", "x.onion");
        assert!(!s.render().contains("pow:"), "nothing while PoW is off");
        s.pow = Some(PowStatus::example());
        let text = s.render();
        for want in [
            "pow: on, seed epoch 250001 (heads 5e44575c), effort 30 advertised / 12 own",
            "5 verified, 1 failed, 3 dropped of 9 queued (depth 8192)",
            "pow state not readable: pow_manager.json: bad",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
        // The JSON carries the same, and reads back.
        let json = serde_json::to_string(&s).unwrap();
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back.pow, s.pow);
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::watch;

    struct Endpoint {
        addr: SocketAddr,
        tx: watch::Sender<Snapshot>,
        stop: watch::Sender<bool>,
        server: tokio::task::JoinHandle<()>,
        _cluster: watch::Sender<Option<MeshStatus>>,
    }

    async fn endpoint(access: Access) -> Endpoint {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(Snapshot::starting("n1", "x.onion"));
        let (stop, stop_rx) = watch::channel(false);
        let (cluster, cluster_rx) = watch::channel(None);
        let server = tokio::spawn(serve(listener, rx, cluster_rx, access, stop_rx));
        Endpoint {
            addr,
            tx,
            stop,
            server,
            _cluster: cluster,
        }
    }

    /// Sends raw bytes, returns the answer's status line.
    async fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    #[tokio::test]
    async fn endpoint_serves_the_latest_snapshot_and_stops() {
        let e = endpoint(Access::default()).await;
        assert_eq!(fetch(e.addr, None).await.unwrap().role, None);
        let mut next = Snapshot::starting("n1", "x.onion");
        next.role = Some(Role::Publisher);
        next.periods.push(PeriodStatus {
            period: "1_2_3".into(),
            published_at: unix_now(),
            revision: 7,
            intro_points: 3,
            descriptors: 1,
            bytes: 100,
            hsdirs: vec![HsDirUpload {
                hsdir: "AB".into(),
                ok: true,
                error: None,
                elapsed_ms: 5,
                intro_points: 3,
            }],
        });
        e.tx.send(next.clone()).unwrap();
        let got = fetch(e.addr, None).await.unwrap();
        assert_eq!(got, next);
        assert!(
            got.render().contains("UTC (#1): 1/1 HSDirs accepted"),
            "{}",
            got.render()
        );
        e.stop.send(true).unwrap();
        e.server.await.unwrap();
        let err = fetch(e.addr, None).await.unwrap_err().to_string();
        assert!(err.contains("is `rustbalance run` running"), "{err}");
    }

    #[tokio::test]
    async fn bad_requests_get_clear_refusals() {
        let e = endpoint(Access::default()).await;
        let line = raw(
            e.addr,
            b"GET /status HTTP/1.1\r\nHost: evil.example:9191\r\n\r\n",
        )
        .await;
        assert!(line.contains("421"), "DNS rebinding refused: {line}");
        let line = raw(
            e.addr,
            b"GET /status HTTP/1.1\r\nHost: 127.0.0.1:9191\r\n\r\n",
        )
        .await;
        assert!(line.contains("200"), "{line}");
        let line = raw(e.addr, b"GET /status HTTP/1.0\r\n\r\n").await;
        assert!(
            line.contains("200"),
            "no Host (HTTP/1.0 tools) is fine: {line}"
        );
        let line = raw(e.addr, b"POST /status HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
        assert!(line.contains("405"), "{line}");
        let line = raw(e.addr, b"GET /secrets HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
        assert!(line.contains("404"), "{line}");
        let mut huge = b"GET /status HTTP/1.1\r\nHost: localhost\r\nX-Junk: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
        huge.extend_from_slice(b"\r\n\r\n");
        let line = raw(e.addr, &huge).await;
        assert!(
            line.is_empty() || line.contains("431") || line.contains("400"),
            "an oversized head is refused: {line}"
        );
        let line = raw(e.addr, b"\x00\x01garbage\r\n\r\n").await;
        assert!(line.is_empty() || line.contains("400"), "{line}");
        // Still serving.
        assert!(fetch(e.addr, None).await.is_ok());
    }

    #[tokio::test]
    async fn with_a_token_every_request_must_send_it() {
        let token = "0123456789abcdef-token";
        let e = endpoint(Access {
            token: Some(Arc::new(zeroize::Zeroizing::new(token.to_string()))),
            ..Access::default()
        })
        .await;
        let err = fetch(e.addr, None).await.unwrap_err().to_string();
        assert!(err.contains("401"), "{err}");
        let err = fetch(e.addr, Some("wrong-token-wrong-token"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("401"));
        assert!(fetch(e.addr, Some(token)).await.is_ok());
        // Remote host names are fine with the token (the token is the check).
        let req = format!(
            "GET /status HTTP/1.1\r\nHost: node1.example:9191\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        assert!(raw(e.addr, req.as_bytes()).await.contains("200"));
    }

    #[tokio::test]
    async fn thousands_of_idle_connections_leave_it_serving() {
        let e = endpoint(Access::default()).await;
        let mut idle = Vec::new();
        for _ in 0..2000 {
            idle.push(tokio::net::TcpStream::connect(e.addr).await.unwrap());
        }
        let t0 = std::time::Instant::now();
        let got = fetch(e.addr, None).await;
        assert!(got.is_ok(), "served during the flood: {got:?}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        // Beyond the limit, new connections are closed at once (no fd exhaustion).
        for _ in 0..(MAX_CONNECTIONS + 50 - idle.len()) {
            idle.push(tokio::net::TcpStream::connect(e.addr).await.unwrap());
        }
        let mut extra = tokio::net::TcpStream::connect(e.addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(3), extra.read(&mut buf))
            .await
            .expect("closed at once, not held")
            .unwrap_or(0);
        assert_eq!(n, 0);
        // Idle ones are dropped after the header timeout, and it serves again.
        let mut first = idle.remove(0);
        let n = tokio::time::timeout(server::HEADER_TIMEOUT * 2, first.read(&mut buf))
            .await
            .expect("an idle connection is closed after the header timeout")
            .unwrap_or(0);
        assert_eq!(n, 0);
        drop(idle);
        let t1 = std::time::Instant::now();
        loop {
            if fetch(e.addr, None).await.is_ok() {
                break;
            }
            assert!(t1.elapsed() < Duration::from_secs(10), "serving again");
        }
    }
}
