//! The node's link to the cluster: with `[mesh]` configured, the membership service (WireGuard
//! mesh, gossip, election) decides the role; without it the node is alone and always the
//! publisher. Either way the publisher reads the role from the same watch channel, so
//! publishing has one code path.

use std::hash::{Hash, Hasher};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::election::Role;
use crate::keys;
use crate::membership::{self, Health, IptSummary, LocalInputs, MembershipConfig, MeshStatus};

use super::DaemonError;

/// The role source, the mesh status, and where to report this node's health and intro points.
pub struct Cluster {
    role: watch::Receiver<Role>,
    status: watch::Receiver<Option<MeshStatus>>,
    inputs: Option<watch::Sender<LocalInputs>>,
    task: Option<JoinHandle<()>>,
    // Single-node mode: the senders live here so the receivers never see a closed channel.
    _fixed: Option<(watch::Sender<Role>, watch::Sender<Option<MeshStatus>>)>,
}

impl Cluster {
    /// Starts the mesh if configured (keys loaded and checked, UDP socket bound), else a fixed
    /// Publisher role.
    pub async fn start(
        config: &Config,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Cluster, DaemonError> {
        let Some(mesh) = &config.mesh else {
            let (role_tx, role) = watch::channel(Role::Publisher);
            let (status_tx, status) = watch::channel(None);
            return Ok(Cluster {
                role,
                status,
                inputs: None,
                task: None,
                _fixed: Some((role_tx, status_tx)),
            });
        };
        let keys = keys::load_mesh_keys(&mesh.private_key_file)?;
        let token = keys::load_cluster_token(&mesh.cluster_token_file)?;
        if let Some(own) = mesh
            .seeds
            .iter()
            .find(|s| s.public_key == keys.public_key())
        {
            tracing::info!(endpoint = %own.endpoint, "mesh.seeds lists this node itself; ignored");
        }
        let service = membership::ServiceConfig {
            node_id: config.node.id.clone(),
            priority: config.node.priority,
            keys,
            psk: token.preshared_key(),
            listen: mesh.listen,
            endpoint: mesh.endpoint,
            seeds: mesh
                .seeds
                .iter()
                .map(|s| (s.public_key, s.endpoint))
                .collect(),
            membership: MembershipConfig {
                max_clock_skew: mesh.max_clock_skew,
                probe_period: mesh.probe_period,
                probe_timeout: mesh.probe_timeout,
                suspect_timeout: mesh.suspect_timeout,
                state_interval: mesh.state_interval,
                announce_interval: MembershipConfig::default().announce_interval,
            },
            election: mesh.election,
        };
        let initial = LocalInputs {
            health: Health::Starting,
            intro_points: IptSummary::default(),
        };
        let handle = membership::service::start(service, initial, shutdown)
            .await
            .map_err(DaemonError::Mesh)?;
        Ok(Cluster {
            role: handle.role,
            status: handle.status,
            inputs: Some(handle.inputs),
            task: Some(handle.task),
            _fixed: None,
        })
    }

    /// The role channel the publisher obeys.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// The mesh status channel (always `None` in single-node mode).
    pub fn status(&self) -> watch::Receiver<Option<MeshStatus>> {
        self.status.clone()
    }

    /// Reports this node's health.
    pub fn set_health(&self, health: Health) {
        if let Some(tx) = &self.inputs {
            tx.send_if_modified(|i| std::mem::replace(&mut i.health, health) != health);
        }
    }

    /// Reports this node's intro points by their local ids (any order).
    pub fn set_intro_points(&self, lids: &[String]) {
        let Some(tx) = &self.inputs else { return };
        let mut sorted: Vec<&String> = lids.iter().collect();
        sorted.sort();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        sorted.hash(&mut h);
        let summary = IptSummary {
            generation: h.finish(),
            count: u16::try_from(lids.len()).unwrap_or(u16::MAX),
        };
        tx.send_if_modified(|i| std::mem::replace(&mut i.intro_points, summary) != summary);
    }

    /// Waits for the mesh task to finish (after shutdown).
    pub async fn stopped(self) {
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}
