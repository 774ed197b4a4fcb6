//! The node's link to the cluster: with `[mesh]` configured, the membership service (WireGuard
//! mesh, gossip, election) decides the role; without it the node is alone and always the
//! publisher. Either way the publisher reads the role from the same watch channel, so
//! publishing has one code path.

use std::hash::{Hash, Hasher};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::election::Role;
use crate::keys;
use crate::membership::{
    self, ClusterMsg, Health, IptWire, KeyCoverage, LocalInputs, MembershipConfig, MeshCommand,
    MeshStatus, PeerIpts,
};

use super::DaemonError;

/// The role source, the mesh status, and where to report this node's health and intro points.
pub struct Cluster {
    role: watch::Receiver<Role>,
    status: watch::Receiver<Option<MeshStatus>>,
    inputs: Option<watch::Sender<LocalInputs>>,
    peer_ipts: watch::Receiver<Vec<PeerIpts>>,
    cluster_msgs: Option<mpsc::Receiver<(String, ClusterMsg)>>,
    commands: Option<mpsc::Sender<MeshCommand>>,
    task: Option<JoinHandle<()>>,
    // Single-node mode: the senders live here so the receivers never see a closed channel.
    _fixed: Option<Fixed>,
}

struct Fixed {
    _role: watch::Sender<Role>,
    _status: watch::Sender<Option<MeshStatus>>,
    _peer_ipts: watch::Sender<Vec<PeerIpts>>,
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
            let (ipts_tx, peer_ipts) = watch::channel(Vec::new());
            return Ok(Cluster {
                role,
                status,
                inputs: None,
                peer_ipts,
                cluster_msgs: None,
                commands: None,
                task: None,
                _fixed: Some(Fixed {
                    _role: role_tx,
                    _status: status_tx,
                    _peer_ipts: ipts_tx,
                }),
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
            weight: config.node.weight,
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
                max_lease_ahead: mesh.election.lease_duration() + mesh.max_clock_skew,
            },
            election: mesh.election,
        };
        let initial = LocalInputs {
            health: Health::Starting,
            ipt_generation: 0,
            ipts: Vec::new(),
            keys: Default::default(),
            pow_effort: 0,
        };
        let handle = membership::service::start(service, initial, shutdown)
            .await
            .map_err(DaemonError::Mesh)?;
        Ok(Cluster {
            role: handle.role,
            status: handle.status,
            inputs: Some(handle.inputs),
            peer_ipts: handle.peer_ipts,
            cluster_msgs: Some(handle.cluster_msgs),
            commands: Some(handle.commands),
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

    /// Reports this node's own suggested PoW effort.
    pub fn set_pow_effort(&self, effort: u32) {
        if let Some(tx) = &self.inputs {
            tx.send_if_modified(|i| std::mem::replace(&mut i.pow_effort, effort) != effort);
        }
    }

    /// Reports this node's master key coverage.
    pub fn set_keys(&self, keys: KeyCoverage) {
        if let Some(tx) = &self.inputs {
            tx.send_if_modified(|i| std::mem::replace(&mut i.keys, keys) != keys);
        }
    }

    /// Requests to the mesh (`None` in single-node mode).
    pub fn commands(&self) -> Option<mpsc::Sender<MeshCommand>> {
        self.commands.clone()
    }

    /// Cluster messages from members (once; `None` in single-node mode or when taken).
    pub fn take_cluster_msgs(&mut self) -> Option<mpsc::Receiver<(String, ClusterMsg)>> {
        self.cluster_msgs.take()
    }

    /// Reports this node's intro points (their public parts, as the descriptor lists them).
    pub fn set_intro_points(&self, ipts: &[IptWire]) {
        let Some(tx) = &self.inputs else { return };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ipts.hash(&mut h);
        let generation = h.finish();
        tx.send_if_modified(|i| {
            if i.ipt_generation == generation && i.ipts == ipts {
                return false;
            }
            i.ipt_generation = generation;
            i.ipts = ipts.to_vec();
            true
        });
    }

    /// Live members' intro points (always empty in single-node mode).
    pub fn peer_ipts(&self) -> watch::Receiver<Vec<PeerIpts>> {
        self.peer_ipts.clone()
    }

    /// Waits for the mesh task to finish (after shutdown).
    pub async fn stopped(self) {
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}
