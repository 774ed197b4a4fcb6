//! Wiring of the join service and key sharing: the [`JoinServer`] (with `[mesh]` and
//! `join.enabled`), and the task that hands cluster messages from members to it (invite
//! redemptions) and to the blinded-key directory (keys a holder pushed).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tor_hscrypto::time::TimePeriod;

use super::cluster::Cluster;
use super::DaemonError;
use crate::config::{Config, MasterKeys};
use crate::join::authority::RateLimit;
use crate::join::keyshare;
use crate::join::server::{JoinServer, Policy, ServerConfig};
use crate::join::wire::MeshTimers;
use crate::membership::ClusterMsg;

/// The join side of a node.
pub struct Joining {
    /// The join service (none without `[mesh]`, or with `join.enabled = false`).
    pub server: Option<Arc<JoinServer>>,
    /// Bumped whenever pushed blinded keys were stored (the node re-reads its keys).
    pub keys_changed: watch::Receiver<u64>,
    /// Where the node task posts the current time period.
    pub period: watch::Sender<Option<TimePeriod>>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Starts the join service and the cluster-message task.
pub fn start(
    config: &Config,
    cluster: &mut Cluster,
    shutdown: watch::Receiver<bool>,
) -> Result<Joining, DaemonError> {
    let (period, period_rx) = watch::channel(None);
    let (keys_tx, keys_changed) = watch::channel(0u64);
    let server = match (&config.mesh, cluster.commands()) {
        (Some(mesh), Some(commands)) if config.join.enabled => {
            let token = crate::keys::load_cluster_token(&mesh.cluster_token_file)?;
            let j = &config.join;
            Some(Arc::new(JoinServer::new(ServerConfig {
                token,
                master: config.master.onion_address.clone(),
                master_keys: config.master.clone(),
                policy: Policy {
                    hand_out_identity: j.hand_out_identity,
                    share_periods: j.share_periods,
                    virtual_ports: config.target.virtual_ports.clone(),
                    timers: MeshTimers {
                        max_clock_skew: millis(mesh.max_clock_skew),
                        probe_period: millis(mesh.probe_period),
                        probe_timeout: millis(mesh.probe_timeout),
                        suspect_timeout: millis(mesh.suspect_timeout),
                        state_interval: millis(mesh.state_interval),
                        lease_duration: millis(mesh.election.lease_duration()),
                        handback_after: millis(mesh.election.handback_after()),
                    },
                    limit: RateLimit {
                        per_minute: j.max_per_minute,
                        burst: j.max_per_minute.clamp(1, 10),
                    },
                    pow: config.pow.enabled.then(|| crate::join::wire::PowPolicy {
                        queue_depth: u32::try_from(config.pow.queue_depth).unwrap_or(u32::MAX),
                        seed_rotation_secs: u32::try_from(config.pow.seed_rotation.as_secs())
                            .unwrap_or(u32::MAX),
                        min_effort: config.pow.min_effort,
                        max_effort: config.pow.max_effort,
                        rendezvous_concurrency: u32::try_from(config.pow.rendezvous_concurrency)
                            .unwrap_or(u32::MAX),
                    }),
                },
                node_id: config.node.id.clone(),
                mesh: cluster.status(),
                period: period_rx,
                commands,
            })))
        }
        _ => None,
    };
    if let Some(inbox) = cluster.take_cluster_msgs() {
        let blinded_dir = match &config.master.keys {
            MasterKeys::BlindedDir(d) => Some(d.clone()),
            MasterKeys::Identity(_) => None,
        };
        tokio::spawn(inbox_task(
            inbox,
            server.clone(),
            blinded_dir,
            config.master.onion_address.clone(),
            keys_tx,
            shutdown,
        ));
    }
    Ok(Joining {
        server,
        keys_changed,
        period,
    })
}

async fn inbox_task(
    mut inbox: mpsc::Receiver<(String, ClusterMsg)>,
    server: Option<Arc<JoinServer>>,
    blinded_dir: Option<std::path::PathBuf>,
    master: crate::keys::OnionAddress,
    keys_changed: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (from, msg) = tokio::select! {
            m = inbox.recv() => match m { Some(m) => m, None => break },
            _ = shutdown.wait_for(|s| *s) => break,
        };
        match &msg {
            ClusterMsg::InviteRedeemed {
                invite,
                nonce,
                expires,
            } => {
                if let Some(s) = &server {
                    s.redeemed_elsewhere(*invite, *nonce, *expires);
                }
            }
            ClusterMsg::BlindedKeys { keys } => {
                let Some(dir) = &blinded_dir else { continue };
                match keyshare::store_pushed(dir, &master, keys, &from) {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(from = %from, new = n, "blinded keys received from a key holder");
                        keys_changed.send_modify(|v| *v += 1);
                    }
                    Err(e) => {
                        tracing::warn!(from = %from, error = %e, "pushed blinded keys refused")
                    }
                }
            }
        }
    }
}
