//! Wiring of one node (`rustbalance run`): configuration in, tasks out.
//!
//! Start-up order: status endpoint (fails fast on a taken port) → master keys (the configured
//! identity must be the master address) → embedded Arti (bootstrap with progress in the log) →
//! keystore prepared (public identity + blinded keys of the relevant periods; never the
//! identity secret) → master service launched and checked → the stream task (every rendezvous
//! stream to the [`Proxy`]) and the node task (`node::run`: the publisher's inputs, the publisher
//! reactor, the status snapshot). With `[mesh]` configured
//! the cluster link ([`Cluster`]: WireGuard mesh, membership, election) starts right after the
//! keys, before Arti, and the publisher publishes only while the election says so. Every task ends when the
//! shutdown channel turns true; the caller owns the signal handling.

mod cluster;
mod joining;
mod node;
mod streams;

use std::sync::Arc;
use std::time::Duration;

use arti_client::config::{CfgPath, TorClientConfigBuilder};
use arti_client::TorClient;
use tokio::sync::watch;
use tor_rtcompat::PreferredRuntime;

use crate::config::Config;
use crate::hosting::{self, HostingError};
use crate::keys::KeyError;
use crate::proxy::Proxy;
use crate::status::{self, Snapshot, StatusError};

pub use cluster::Cluster;

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The status endpoint.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// The master keys.
    #[error(transparent)]
    Keys(#[from] KeyError),
    /// The Arti configuration file.
    #[error("tor.arti_config {path}: {problem}")]
    ArtiConfig {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// The mesh transport could not start (its UDP socket).
    #[error("mesh: {0}")]
    Mesh(crate::mesh::TransportError),
    /// Arti failed.
    #[error("Arti: {what}: {source}")]
    Arti {
        /// What was being done.
        what: &'static str,
        /// Arti's error.
        source: arti_client::Error,
    },
    /// The keystore or intro points.
    #[error(transparent)]
    Hosting(#[from] HostingError),
}

/// How long a node with seeds waits to see a member before it says it is ready anyway (its
/// service runs; the mesh may form later).
const READY_WITHOUT_MESH_AFTER: Duration = Duration::from_secs(60);

/// Tells systemd the node is ready once it is in its mesh: at once for a node without seeds
/// (the first of a cluster, or a single node), else when a member is live, or after
/// [`READY_WITHOUT_MESH_AFTER`] with a warning.
async fn announce_ready(
    mut mesh: watch::Receiver<Option<crate::membership::MeshStatus>>,
    has_seeds: bool,
    mut shutdown: watch::Receiver<bool>,
) {
    if has_seeds {
        crate::notify::status("master onion service launched; joining the mesh");
        let joined = mesh.wait_for(|m| m.as_ref().is_some_and(|m| m.live_members().count() > 0));
        tokio::select! {
            r = tokio::time::timeout(READY_WITHOUT_MESH_AFTER, joined) => {
                if r.is_err() {
                    tracing::warn!("no mesh member reached yet; ready anyway (serving on this node's own intro points)");
                }
            }
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
    let members = mesh
        .borrow()
        .as_ref()
        .map_or(0, |m| m.live_members().count());
    crate::notify::ready(&format!(
        "serving the master address; {members} mesh members live"
    ));
}

fn arti(what: &'static str) -> impl FnOnce(arti_client::Error) -> DaemonError {
    move |source| DaemonError::Arti { what, source }
}

/// The embedded Arti client's configuration: the optional Arti file, then our storage paths.
pub fn arti_config(config: &Config) -> Result<arti_client::TorClientConfig, DaemonError> {
    arti_client_config(
        config.tor.arti_config.as_deref(),
        &config.tor.state_dir,
        &config.tor.cache_dir,
    )
}

/// An Arti client configuration from an optional Arti file and the storage paths (`run`, and
/// `join` before the node exists).
pub fn arti_client_config(
    file: Option<&std::path::Path>,
    state_dir: &std::path::Path,
    cache_dir: &std::path::Path,
) -> Result<arti_client::TorClientConfig, DaemonError> {
    let mut builder = match file {
        Some(path) => {
            let bad = |problem: String| DaemonError::ArtiConfig {
                path: path.display().to_string(),
                problem,
            };
            let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
            toml::from_str::<TorClientConfigBuilder>(&text).map_err(|e| bad(e.to_string()))?
        }
        None => TorClientConfigBuilder::default(),
    };
    builder
        .storage()
        .state_dir(CfgPath::new_literal(state_dir))
        .cache_dir(CfgPath::new_literal(cache_dir));
    // Trust no group for Arti's directories (group access counts as world access): stricter
    // than Arti's default, and it needs no user database, which a static binary in a scratch
    // image does not have (Arti's default looks up the user's self-named group).
    builder.storage().permissions().trust_no_group_id();
    builder.build().map_err(|e| DaemonError::ArtiConfig {
        path: file
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(defaults)".into()),
        problem: e.to_string(),
    })
}

/// What `rustbalance check-config` found: every file the configuration names loads and has
/// safe permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// This node's id.
    pub node_id: String,
    /// The master address.
    pub master: String,
    /// Where the master keys come from: "identity secret" or "N blinded keys in DIR".
    pub keys: String,
    /// This node's mesh public key, with `[mesh]`.
    pub mesh_public_key: Option<String>,
    /// How many authorized clients restricted discovery encrypts the descriptor for (`None`:
    /// public descriptor).
    pub authorized_clients: Option<usize>,
}

/// Loads every secret and key file `config` names, as `run` does at start (same checks, same
/// errors), without starting anything: the master keys (right master, permissions), the mesh
/// key and cluster token with `[mesh]`, the status access token if set. `run` calls it first.
pub fn preflight(config: &Config) -> Result<CheckReport, DaemonError> {
    let keys = match crate::keys::KeySource::load(&config.master)? {
        crate::keys::KeySource::Identity(_) => "identity secret".to_string(),
        crate::keys::KeySource::BlindedDir { dir, keys, .. } => {
            format!("{} blinded keys in {}", keys.len(), dir.display())
        }
    };
    let mesh_public_key = match &config.mesh {
        Some(mesh) => {
            let k = crate::keys::load_mesh_keys(&mesh.private_key_file)?;
            crate::keys::load_cluster_token(&mesh.cluster_token_file)?;
            Some(k.public_key().to_base64())
        }
        None => None,
    };
    if let Some(p) = &config.status.access_token_file {
        crate::keys::load_access_token(p)?;
    }
    let authorized_clients = authorized_clients(config)?.map(|c| c.len());
    Ok(CheckReport {
        node_id: config.node.id.clone(),
        master: config.master.onion_address.to_string(),
        keys,
        mesh_public_key,
        authorized_clients,
    })
}

/// The authorized clients restricted discovery encrypts the descriptor for, read from the
/// configuration's list and directory (`None`: restricted discovery is off).
pub fn authorized_clients(
    config: &Config,
) -> Result<Option<Vec<tor_llcrypto::pk::curve25519::PublicKey>>, KeyError> {
    config
        .master
        .restricted
        .as_ref()
        .map(|r| crate::keys::load_authorized_clients(r.dir.as_deref(), &r.list))
        .transpose()
}

/// The PoW seed key: the cluster's (from its token) with `[mesh]`, else this node's own secret
/// in its state directory.
fn pow_key(config: &Config) -> Result<crate::pow::PowKey, DaemonError> {
    Ok(match &config.mesh {
        Some(mesh) => crate::pow::PowKey::from_cluster(&crate::keys::load_cluster_token(
            &mesh.cluster_token_file,
        )?),
        None => crate::pow::PowKey::new(crate::keys::load_or_create_secret(
            &config
                .tor
                .state_dir
                .join("rustbalance")
                .join("pow-seed.key"),
        )?),
    })
}

/// Runs the node until `shutdown` turns true.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> Result<(), DaemonError> {
    preflight(&config)?;
    let config = Arc::new(config);
    let master = config.master.onion_address.clone();
    let listener = status::bind(config.status.listen).await?;
    let (snapshots, snapshot_rx) =
        watch::channel(Snapshot::starting(&config.node.id, &master.to_string()));
    tracing::info!(node = %config.node.id, master = %master, status = %config.status.listen, "starting");

    let key_source = crate::keys::KeySource::load(&config.master)?;
    // The mesh starts before Arti bootstraps, so the cluster forms meanwhile (this node is not
    // eligible to publish until its service runs).
    let mut cluster = Cluster::start(&config, shutdown.clone()).await?;
    let joining = joining::start(&config, &mut cluster, shutdown.clone())?;
    let live_metrics = status::metrics::Live::default();
    let access = status::Access {
        token: match &config.status.access_token_file {
            Some(p) => Some(Arc::new(crate::keys::load_access_token(p)?)),
            None => None,
        },
        metrics: live_metrics.clone(),
    };
    let status_task = tokio::spawn(status::serve(
        listener,
        snapshot_rx,
        cluster.status(),
        access,
        shutdown.clone(),
    ));
    let arti_config = arti_config(&config)?;
    let client = TorClient::builder()
        .config(arti_config)
        .create_unbootstrapped()
        .map_err(arti("create client"))?;
    let client: Arc<TorClient<PreferredRuntime>> = client;
    let mut stop = shutdown.clone();
    let bootstrap = hosting::bootstrap_reporting(&client, |now| {
        tracing::info!(progress = %now, "bootstrapping");
        crate::notify::status(&format!("Arti bootstrapping: {now}"));
    });
    tokio::select! {
        r = bootstrap => r.map_err(arti("bootstrap"))?,
        _ = stop.wait_for(|s| *s) => {
            cluster.stopped().await;
            return Ok(());
        }
    }
    tracing::info!("bootstrapped");

    let nick = hosting::nickname();
    let keymgr = client.keymgr().map_err(arti("key manager"))?;
    hosting::install_public_identity(keymgr, &nick, master.public_key())?;
    let periods = hosting::sync_for_netdir(&client, &key_source, &master)?;
    hosting::precheck(keymgr, &nick, &master)?;

    // PoW: Arti's counters go to our recorder (it must exist before the service launches),
    // and every launch first writes the cluster's seeds into Arti's state.
    crate::pow::counters::install();
    let (periods_tx, periods_rx) = watch::channel(periods);
    let (pow_loaded_tx, pow_loaded) = watch::channel(None);
    let mut pow = match config.pow.enabled {
        true => Some(hosting::service::PowHosting {
            key: pow_key(&config)?,
            planner: crate::pow::Planner::new(
                crate::pow::Schedule::new(config.pow.seed_rotation),
                &config.node.id,
            ),
            state_file: hosting::pow_state_file(&config.tor.state_dir, &nick),
            periods: periods_rx,
            loaded: pow_loaded_tx,
        }),
        false => None,
    };
    let options = hosting::service::Options {
        intro_points: config.publish.intro_points,
        pow_queue_depth: config.pow.enabled.then_some(config.pow.queue_depth),
    };
    let launched = hosting::service::launch_with(&client, &master, options, pow.as_mut())?;
    tracing::info!(address = %master, "master onion service launched");
    tracing::info!(
        "Arti's own descriptor publisher is off by design (its keystore holds no identity \
         secret); this node's publisher does all publishing"
    );
    cluster.set_health(crate::membership::Health::Healthy);
    tokio::spawn(announce_ready(
        cluster.status(),
        config.mesh.as_ref().is_some_and(|m| !m.seeds.is_empty()),
        shutdown.clone(),
    ));

    // The host task owns the service (the self-check may relaunch it); streams come through it.
    let (rend_tx, mut rend_rx) = tokio::sync::mpsc::channel(64);
    let (relaunch_tx, relaunch_rx) = tokio::sync::mpsc::channel(1);
    let pow_key = pow.as_ref().map(|p| p.key.clone());
    let host_task = tokio::spawn(hosting::service::host(
        Arc::clone(&client),
        master.clone(),
        options,
        launched,
        rend_tx,
        relaunch_rx,
        pow,
        shutdown.clone(),
    ));
    let requests = futures::stream::poll_fn(move |cx| rend_rx.poll_recv(cx));
    let (intro_relays_tx, intro_relays) = watch::channel(Vec::new());
    let (tor_ok_tx, tor_ok) = watch::channel(true);
    let (repair_tx, repair_status) = watch::channel(crate::repair::RepairStatus::disabled());
    let repair_task = config.repair.enabled.then(|| {
        tokio::spawn(crate::repair::task::run(
            config.repair.clone(),
            crate::repair::arti::ArtiTor::new(
                Arc::clone(&client),
                intro_relays,
                relaunch_tx,
                live_metrics.rend_circuits.clone(),
            ),
            tor_ok_tx,
            repair_tx,
            shutdown.clone(),
        ))
    });

    let proxy = Proxy::from_config(&config.target, &client, shutdown.clone());
    let (target_up_tx, target_up) = watch::channel(true);
    let health_task = tokio::spawn(crate::health::probe_loop(
        crate::proxy::TargetConnector::new(&config.target.address, &client),
        config.target.health.clone(),
        target_up_tx,
        shutdown.clone(),
    ));
    let streams_task = tokio::spawn(streams::serve(
        requests,
        proxy.clone(),
        config.target.virtual_ports.clone(),
        joining.server.clone(),
        live_metrics,
        config
            .pow
            .enabled
            .then_some(config.pow.rendezvous_concurrency),
        shutdown.clone(),
    ));
    node::run(
        node::NodeInputs {
            client: Arc::clone(&client),
            config: Arc::clone(&config),
            key_source,
            proxy,
            target_up,
            tor_ok,
            repair_status,
            intro_relays: intro_relays_tx,
            snapshots,
            joining,
            periods: periods_tx,
            pow: pow_key.map(|key| node::PowInputs {
                key,
                loaded: pow_loaded,
            }),
        },
        &cluster,
        shutdown,
    )
    .await;
    crate::notify::stopping();
    cluster.stopped().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), health_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), streams_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), status_task).await;
    if let Some(t) = repair_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    // The host task drops the service as it ends.
    let _ = tokio::time::timeout(Duration::from_secs(5), host_task).await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Onion circuits use vanguards (lite) unless the Arti file says otherwise: the arti-client
    /// `vanguards` feature is not a default one, and without it this does not even compile.
    #[test]
    fn the_embedded_client_uses_vanguards_lite_by_default() {
        use tor_circmgr::hspool::HsCircPoolConfig as _;
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            super::arti_client_config(None, &dir.path().join("state"), &dir.path().join("cache"))
                .unwrap();
        assert_eq!(format!("{:?}", cfg.vanguard_config().mode()), "Lite");

        let file = dir.path().join("arti.toml");
        std::fs::write(&file, "[vanguards]\nmode = \"full\"\n").unwrap();
        let cfg = super::arti_client_config(
            Some(&file),
            &dir.path().join("state"),
            &dir.path().join("cache"),
        )
        .unwrap();
        assert_eq!(format!("{:?}", cfg.vanguard_config().mode()), "Full");
    }
}
