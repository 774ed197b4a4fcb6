//! The node's status as plain data, the local HTTP/JSON endpoint that serves it, and the client
//! `rustbalance status` uses.
//!
//! This module owns the status schema ([`Snapshot`], versioned) and its transport. It never
//! shows secrets or the target's address. The daemon publishes snapshots through a
//! `tokio::sync::watch` channel; the endpoint serves the latest one to `GET /status`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::membership::MeshStatus;
use crate::proxy::ProxyStats;

/// Version of the status schema (2: `cluster` and the `standby` role; 3: `cluster.reason` as
/// data, `clock_error`, `members[].duplicate_id`).
pub const SCHEMA_VERSION: u32 = 3;

/// What this node does for the master address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Starting: Arti bootstrapping or the service not yet launched.
    Starting,
    /// Hosting the service and publishing the descriptor.
    Publisher,
    /// Hosting the service; another node publishes.
    Standby,
}

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
    /// What this node does.
    pub role: Role,
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
}

impl Snapshot {
    /// An empty snapshot for a starting node.
    pub fn starting(node_id: &str, master_address: &str) -> Snapshot {
        Snapshot {
            version: SCHEMA_VERSION,
            node_id: node_id.to_string(),
            master_address: master_address.to_string(),
            role: Role::Starting,
            started_at: unix_now(),
            intro_points: Vec::new(),
            periods: Vec::new(),
            proxy: ProxyStats::default(),
            target_up: true,
            merged: Vec::new(),
            cluster: None,
            clock_error: None,
        }
    }

    /// Human-readable lines for the terminal.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "node {}  role {:?}  master {}",
            self.node_id, self.role, self.master_address
        );
        if !self.target_up {
            let _ = writeln!(s, "target DOWN (health probe): intro points withdrawn");
        }
        if let Some(e) = &self.clock_error {
            let _ = writeln!(s, "CLOCK: {e}");
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
                p.period,
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
                "mesh: key {} at {}  election {:?} ({})  publisher {}",
                c.public_key,
                c.endpoint,
                c.role,
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
                    format!("{:?}", m.liveness).to_lowercase(),
                    m.endpoint,
                    m.priority.map_or("-".into(), |p| p.to_string()),
                    m.health
                        .map_or("-".into(), |h| format!("{h:?}").to_lowercase()),
                    m.role
                        .map_or("-".into(), |r| format!("{r:?}").to_lowercase()),
                    ms(m.last_seen_ms_ago),
                    ms(m.rtt_ms),
                    m.wireguard_handshake_age_ms
                        .map_or("no session".to_string(), |a| format!("{} s", a / 1000)),
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

/// Binds the endpoint (so a bad address fails at start-up, not later).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StatusError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StatusError::Bind { addr, source })
}

/// Serves `GET /status` with the latest snapshot (and the latest mesh status in its
/// `cluster` field) until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    snapshots: watch::Receiver<Snapshot>,
    cluster: watch::Receiver<Option<MeshStatus>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.changed() => return,
        };
        let Ok((mut stream, _)) = conn else { continue };
        let mut snapshot = snapshots.borrow().clone();
        snapshot.cluster = cluster.borrow().clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let head = String::from_utf8_lossy(&buf[..n]);
            let (code, body) = if head.starts_with("GET /status ") {
                (
                    "200 OK",
                    serde_json::to_string_pretty(&snapshot).unwrap_or_default(),
                )
            } else {
                (
                    "404 Not Found",
                    "{\"error\":\"try GET /status\"}".to_string(),
                )
            };
            let resp = format!(
                "HTTP/1.0 {code}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Asks a running daemon for its status.
pub async fn fetch(addr: SocketAddr) -> Result<Snapshot, StatusError> {
    let fail = |problem: String| StatusError::Fetch { addr, problem };
    let attempt = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| fail(e.to_string()))?;
        s.write_all(b"GET /status HTTP/1.0\r\n\r\n")
            .await
            .map_err(|e| fail(e.to_string()))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| fail("not an HTTP answer".into()))?;
        if !head.starts_with("HTTP/1.0 200") {
            return Err(fail(head.lines().next().unwrap_or_default().to_string()));
        }
        serde_json::from_str(body).map_err(|e| fail(format!("bad status JSON: {e}")))
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err(fail("timed out".into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoint_serves_the_latest_snapshot_and_stops() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = watch::channel(Snapshot::starting("n1", "x.onion"));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (_cluster_tx, cluster_rx) = watch::channel(None);
        let server = tokio::spawn(serve(listener, rx, cluster_rx, stop_rx));
        assert_eq!(fetch(addr).await.unwrap().role, Role::Starting);
        let mut next = Snapshot::starting("n1", "x.onion");
        next.role = Role::Publisher;
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
        tx.send(next.clone()).unwrap();
        let got = fetch(addr).await.unwrap();
        assert_eq!(got, next);
        assert!(got.render().contains("period 1_2_3: 1/1 HSDirs accepted"));
        stop_tx.send(true).unwrap();
        server.await.unwrap();
        let err = fetch(addr).await.unwrap_err().to_string();
        assert!(err.contains("is `rustbalance run` running"), "{err}");
    }
}
