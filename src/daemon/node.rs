//! The node task: turns what Arti and the mesh know into the publisher's typed inputs (this
//! node's intro points and health, the peers' intro points, the network view), keeps the
//! blinded keys in Arti's keystore in step with the periods, runs the publisher reactor
//! (`publisher::reactor`) beside it, and assembles the status snapshot. It decides nothing about
//! publishing: the reactor does.

use std::sync::Arc;
use std::time::Duration;

use arti_client::TorClient;
use tokio::sync::watch;
use tor_hscrypto::time::TimePeriod;
use tor_linkspec::HasRelayIds;
use tor_netdir::NetDir;
use tor_netdoc::doc::hsdesc::IntroPointDesc;
use tor_rtcompat::PreferredRuntime;

use super::cluster::Cluster;
use crate::config::Config;
use crate::descriptor;
use crate::hosting::{self, IptRecord};
use crate::keys::KeySource;
use crate::membership::{Health, PeerIpts};
use crate::proxy::Proxy;
use crate::publisher::reactor::{self, OwnIntroPoints, SystemClock};
use crate::publisher::select::NodeIntroPoints;
use crate::publisher::state::{Publisher, PublisherStatus, Settings};
use crate::publisher::{network, ArtiUploader};
use crate::status::{IntroPointStatus, Snapshot};

/// How often restricted discovery's client directory is re-read.
const CLIENTS_RELOAD: Duration = Duration::from_secs(5);

/// How often this node's own suggested PoW effort is read from Arti's state.
const POW_EFFORT_READ: Duration = Duration::from_secs(5);

/// Time allowed for one upload to one HSDir.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// What the node task works with.
pub struct NodeInputs {
    /// The embedded Arti client.
    pub client: Arc<TorClient<PreferredRuntime>>,
    /// The configuration.
    pub config: Arc<Config>,
    /// The master keys.
    pub key_source: KeySource,
    /// The proxy (for its counters).
    pub proxy: Proxy,
    /// The health probe's verdict on the target.
    pub target_up: watch::Receiver<bool>,
    /// The self-check's verdict on this node's Tor side.
    pub tor_ok: watch::Receiver<bool>,
    /// The self-check's status.
    pub repair_status: watch::Receiver<crate::repair::RepairStatus>,
    /// Where this node's current intro-point relays go (the self-check probes them).
    pub intro_relays: watch::Sender<Vec<tor_linkspec::RelayIds>>,
    /// Where status snapshots go.
    pub snapshots: watch::Sender<Snapshot>,
    /// The join service and pushed keys.
    pub joining: super::joining::Joining,
    /// Where the periods whose blinded keys the keystore holds go (the host task loads PoW
    /// seeds for them).
    pub periods: watch::Sender<Vec<TimePeriod>>,
    /// Proof of work, when `[pow]` is on.
    pub pow: Option<PowInputs>,
}

/// The node task's PoW inputs.
pub struct PowInputs {
    /// The cluster's seed key.
    pub key: crate::pow::PowKey,
    /// What the running service verifies (the host task's).
    pub loaded: watch::Receiver<Option<crate::pow::plan::Loaded>>,
}

/// The node task's PoW state: its own effort as Arti last stored it, and what the descriptor
/// advertises.
struct PowSide {
    inputs: PowInputs,
    schedule: crate::pow::Schedule,
    offset: Duration,
    state_file: std::path::PathBuf,
    own: u32,
    advertised: u32,
    read_at: Option<std::time::Instant>,
    error: Option<String>,
}

impl PowSide {
    /// Re-reads this node's own effort when due; the offer for the descriptor, given whether
    /// this node is healthy and the peers' (healthy, effort).
    fn offer(
        &mut self,
        config: &crate::config::PowConfig,
        healthy: bool,
        peers: impl Iterator<Item = (bool, u32)>,
    ) -> descriptor::PowOffer {
        if self.read_at.is_none_or(|t| t.elapsed() >= POW_EFFORT_READ) {
            self.read_at = Some(std::time::Instant::now());
            match crate::pow::arti_state::read_effort(&self.state_file) {
                Ok(e) => {
                    self.own = e.unwrap_or(0);
                    self.error = None;
                }
                Err(e) => {
                    let e = e.to_string();
                    if self.error.as_ref() != Some(&e) {
                        tracing::warn!(error = %e, "PoW effort not read; keeping the last");
                    }
                    self.error = Some(e);
                }
            }
        }
        let next = crate::pow::advertise_for(
            self.advertised,
            std::iter::once((healthy, self.own)).chain(peers),
            config.min_effort,
            config.max_effort,
        );
        if next != self.advertised {
            tracing::info!(
                from = self.advertised,
                to = next,
                "advertised PoW effort changes"
            );
            self.advertised = next;
        }
        let epoch = self.schedule.epoch_at(std::time::SystemTime::now());
        descriptor::PowOffer {
            key: self.inputs.key.clone(),
            epoch,
            expires: self.schedule.expires(epoch),
            effort: self.advertised,
        }
    }

    fn status(
        &self,
        config: &crate::config::PowConfig,
        offer: &descriptor::PowOffer,
        periods: &[TimePeriod],
    ) -> crate::status::PowStatus {
        use crate::pow::seeds::head_hex;
        let loaded = self.inputs.loaded.borrow().clone();
        let secs = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        };
        crate::status::PowStatus {
            seed_rotation_secs: self.schedule.rotation().as_secs(),
            epoch: offer.epoch,
            expires_at: secs(offer.expires),
            advertised: periods
                .iter()
                .map(|&tp| crate::status::PowSeedHead {
                    period: hosting::period_slug(tp),
                    heads: vec![head_hex(&offer.key.seed(tp, offer.epoch))],
                })
                .collect(),
            loaded_epoch: loaded.as_ref().map(|l| l.epoch),
            loaded: loaded
                .as_ref()
                .map(|l| {
                    crate::pow::arti_state::loaded_heads(&offer.key, l.epoch, &l.periods)
                        .into_iter()
                        .map(|(tp, heads)| crate::status::PowSeedHead {
                            period: hosting::period_slug(tp),
                            heads: heads.to_vec(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            relaunch_offset_secs: self.offset.as_secs(),
            own_effort: self.own,
            advertised_effort: self.advertised,
            effort_bounds: (config.min_effort, config.max_effort),
            queue_depth: config.queue_depth,
            counters: crate::pow::counters::snapshot(),
            state_error: self.error.clone(),
        }
    }
}

/// Runs the node task and the publisher until shutdown.
pub async fn run(inputs: NodeInputs, cluster: &Cluster, mut shutdown: watch::Receiver<bool>) {
    let NodeInputs {
        client,
        config,
        mut key_source,
        proxy,
        mut target_up,
        mut tor_ok,
        repair_status,
        intro_relays,
        snapshots,
        joining,
        periods: periods_tx,
        pow,
    } = inputs;
    let mut pow = pow.map(|inputs| {
        let schedule = crate::pow::Schedule::new(config.pow.seed_rotation);
        PowSide {
            inputs,
            schedule,
            offset: crate::pow::Planner::new(schedule, &config.node.id).offset(),
            state_file: hosting::pow_state_file(&config.tor.state_dir, &hosting::nickname()),
            own: 0,
            advertised: config.pow.min_effort,
            read_at: None,
            error: None,
        }
    });
    let mut last_offer: Option<descriptor::PowOffer> = None;
    let super::joining::Joining {
        server: join_server,
        keys_changed: mut pushed_keys,
        period: period_tx,
    } = joining;
    let commands = cluster.commands();
    let mut pusher = crate::join::keyshare::Pusher::default();
    let master = config.master.onion_address.clone();
    let nick = hosting::nickname();
    let settings = Settings {
        min_gap: config.publish.min_republish_gap,
        refresh: config.publish.republish_interval,
        lifetime: config.publish.descriptor_lifetime,
        max_clock_skew: config.publish.max_clock_skew,
        weight: config.node.weight,
    };
    let (own_tx, own_rx) = watch::channel(OwnIntroPoints {
        descs: Vec::new(),
        healthy: *target_up.borrow(),
    });
    let (peers_tx, peers_rx) = watch::channel(Vec::new());
    let (network_tx, network_rx) = watch::channel(None);
    let (publisher_tx, mut publisher_status) = watch::channel(PublisherStatus::default());
    let mut role = cluster.role();
    let reactor_task = tokio::spawn(reactor::run(
        Publisher::new(settings, master.public_key().clone(), &config.node.id),
        reactor::Inputs {
            role: cluster.role(),
            own: own_rx,
            peers: peers_rx,
            network: network_rx,
        },
        Arc::new(ArtiUploader::new(Arc::clone(&client), UPLOAD_TIMEOUT)),
        SystemClock,
        publisher_tx,
        shutdown.clone(),
    ));

    // The wanted periods the keystore was last synced for: re-sync (and, offline, re-read the
    // key directory) only when they change, not every tick while a neighbour's key is missing.
    let mut synced_for: Vec<TimePeriod> = Vec::new();
    let mut last_netdir: Option<Arc<NetDir>> = None;
    let mut snapshot = Snapshot::starting(&config.node.id, &master.to_string());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut own_lids: Vec<String> = Vec::new();
    let mut own_auth: Vec<(String, [u8; 32])> = Vec::new();
    let mut peer_ipts = cluster.peer_ipts();
    let mut ipts_error: Option<String> = None;
    // Restricted discovery: the clients' directory is re-read every CLIENTS_RELOAD; a change
    // republishes, an unreadable directory keeps the last good set.
    let mut auth_clients = super::authorized_clients(&config).unwrap_or_default();
    let mut clients_read = std::time::Instant::now();
    let mut clients_error: Option<String> = None;
    loop {
        // A watch whose sender is gone (no mesh: nobody pushes keys; self-check off) never
        // wakes the loop again: `changed` pends instead of failing at once (a busy loop).
        tokio::select! {
            _ = tick.tick() => {}
            _ = changed(&mut role) => {}
            _ = changed(&mut target_up) => {}
            _ = changed(&mut tor_ok) => {}
            _ = changed(&mut publisher_status) => {}
            _ = changed(&mut pushed_keys) => {
                // Pushed keys were stored: re-read them and re-sync the keystore now.
                synced_for.clear();
            }
            _ = changed(&mut peer_ipts) => {
                let peers = peer_sets(&peer_ipts.borrow_and_update());
                peers_tx.send_replace(peers);
            }
            _ = shutdown.wait_for(|s| *s) => break,
        }
        crate::notify::watchdog();
        snapshot.role = Some(*role.borrow_and_update());
        snapshot.proxy = proxy.stats();
        let target_is_up = *target_up.borrow_and_update();
        let tor_works = *tor_ok.borrow_and_update();
        let health = match (tor_works, target_is_up) {
            (false, _) => Health::TorBroken,
            (true, false) => Health::TargetDown,
            (true, true) => Health::Healthy,
        };
        cluster.set_health(health);
        let healthy = health == Health::Healthy;
        snapshot.target_up = target_is_up;
        snapshot.repair = repair_status.borrow().clone();
        {
            let p = publisher_status.borrow_and_update();
            snapshot.periods = p.periods.clone();
            snapshot.merged = p.merged.clone();
            snapshot.clock_error = p.clock_error.clone();
        }
        let netdir = match client.dirmgr().map(|d| d.timely_netdir()) {
            Ok(Ok(n)) => n,
            _ => {
                snapshots.send_replace(snapshot.clone());
                continue;
            }
        };
        let wanted = hosting::wanted_periods(&netdir);
        let current = netdir.hs_time_period();
        period_tx.send_if_modified(|p| p.replace(current) != Some(current));
        let mut clients_changed = false;
        if config.master.restricted.is_some() && clients_read.elapsed() >= CLIENTS_RELOAD {
            clients_read = std::time::Instant::now();
            match super::authorized_clients(&config) {
                Ok(now) => {
                    if now != auth_clients {
                        tracing::info!(
                            clients = now.as_ref().map_or(0, Vec::len),
                            "authorized clients changed: republishing"
                        );
                        auth_clients = now;
                        clients_changed = true;
                    }
                    clients_error = None;
                }
                Err(e) => {
                    let e = e.to_string();
                    if clients_error.as_ref() != Some(&e) {
                        tracing::warn!(error = %e, "authorized clients not re-read; keeping the last ones");
                    }
                    clients_error = Some(e);
                }
            }
        }
        snapshot.authorized_clients = auth_clients.as_ref().map(Vec::len);
        snapshot.authorized_clients_error = clients_error.clone();
        let keys_changed = wanted != synced_for;
        if keys_changed {
            key_source.reload();
            match hosting::sync_for_netdir(&client, &key_source, &master) {
                Ok(p) => {
                    synced_for = wanted;
                    periods_tx.send_if_modified(|old| (*old != p).then(|| *old = p).is_some());
                }
                Err(e) => tracing::warn!(error = %e, "could not update blinded keys"),
            }
        }
        let coverage = crate::join::keyshare::coverage(&key_source, Some(current));
        cluster.set_keys(coverage);
        snapshot.keys = coverage;
        snapshot.join = join_server.as_ref().map(|s| s.counters());
        if let Some(commands) = &commands {
            let members = cluster
                .status()
                .borrow()
                .as_ref()
                .map(|m| m.members.clone())
                .unwrap_or_default();
            let msgs = pusher.due(
                std::time::Instant::now(),
                &key_source,
                current,
                config.join.share_periods,
                &members,
            );
            if !msgs.is_empty() {
                tracing::info!(
                    messages = msgs.len(),
                    "pushing blinded keys to members that lack them"
                );
            }
            for m in msgs {
                let _ = commands.try_send(crate::membership::MeshCommand::Broadcast(m));
            }
        }
        // PoW: the seed of the epoch now, the healthy nodes' highest effort.
        let offer = pow.as_mut().map(|p| {
            let peers: Vec<(bool, u32)> = peer_ipts
                .borrow()
                .iter()
                .map(|p| (p.healthy, p.pow_effort))
                .collect();
            let offer = p.offer(&config.pow, healthy, peers.into_iter());
            cluster.set_pow_effort(p.own);
            snapshot.pow = Some(p.status(&config.pow, &offer, &periods_tx.borrow()));
            offer
        });
        let pow_changed = offer != last_offer;
        // A new consensus (or reloaded keys): a new network view for the publisher.
        if keys_changed
            || clients_changed
            || pow_changed
            || last_netdir
                .as_ref()
                .is_none_or(|n| !Arc::ptr_eq(n, &netdir))
        {
            let mut view = network::view(&netdir, &master, |tp| {
                key_source.blinded(tp).map_err(|e| e.to_string())
            });
            view.caps.auth_clients = auth_clients.clone();
            view.caps.pow = offer.clone();
            last_offer = offer;
            network_tx.send_replace(Some(view));
            last_netdir = Some(Arc::clone(&netdir));
        }
        // A read error is not "no intro points": the last set stays advertised (dropping it
        // would take this node out of the descriptor over a transient file problem).
        let ipts = match hosting::read_current_ipts(&config.tor.state_dir, &nick) {
            Ok(i) => {
                ipts_error = None;
                i
            }
            Err(e) => {
                let e = e.to_string();
                if ipts_error.as_ref() != Some(&e) {
                    tracing::warn!(error = %e, "could not read intro points; keeping the last ones");
                    ipts_error = Some(e);
                }
                snapshots.send_replace(snapshot.clone());
                continue;
            }
        };
        intro_relays.send_if_modified(|r| {
            let now: Vec<_> = ipts.iter().map(|i| i.relay.clone()).collect();
            (*r != now).then(|| *r = now).is_some()
        });
        let mut lids: Vec<String> = ipts.iter().map(|i| i.lid.clone()).collect();
        lids.sort();
        // This node's intro points as descriptor entries, rebuilt when they change; their
        // public parts go to the mesh for whoever publishes, and to our own publisher.
        if lids != own_lids || own_auth.len() != lids.len() {
            let pairs = own_intro_points(&client, &netdir, &ipts);
            own_auth = pairs
                .iter()
                .map(|(lid, d)| (lid.clone(), descriptor::ipt_to_wire(d).auth_key))
                .collect();
            let descs: Vec<IntroPointDesc> = pairs.into_iter().map(|(_, d)| d).collect();
            let wire: Vec<_> = descs.iter().map(descriptor::ipt_to_wire).collect();
            cluster.set_intro_points(&wire);
            own_tx.send_replace(OwnIntroPoints { descs, healthy });
            own_lids = lids;
        } else if own_tx.borrow().healthy != healthy {
            own_tx.send_modify(|o| o.healthy = healthy);
        }
        snapshot.intro_points = ipts
            .iter()
            .map(|i| IntroPointStatus {
                relay: i
                    .relay
                    .rsa_identity()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "?".into()),
                lid: i.lid.chars().take(8).collect(),
                auth_key: own_auth
                    .iter()
                    .find(|(lid, _)| *lid == i.lid)
                    .map(|(_, k)| hex(k))
                    .unwrap_or_default(),
            })
            .collect();
        snapshots.send_replace(snapshot.clone());
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), reactor_task).await;
}

/// Resolves when `rx` sees a new value; never, once its sender is gone.
async fn changed<T>(rx: &mut watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The peers' intro points as descriptor entries (an unusable one is logged and left out).
fn peer_sets(peers: &[PeerIpts]) -> Vec<NodeIntroPoints> {
    peers
        .iter()
        .map(|p| NodeIntroPoints {
            node_id: p.node_id.clone(),
            healthy: p.healthy,
            weight: p.weight,
            descs: p
                .ipts
                .iter()
                .filter_map(|w| match descriptor::ipt_from_wire(w) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::warn!(node = %p.node_id, error = %e, "intro point from the mesh left out");
                        None
                    }
                })
                .collect(),
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// This node's intro points as descriptor entries (an unusable one is logged and left out).
fn own_intro_points(
    client: &TorClient<PreferredRuntime>,
    netdir: &NetDir,
    ipts: &[IptRecord],
) -> Vec<(String, IntroPointDesc)> {
    let nick = hosting::nickname();
    let Ok(keymgr) = client.keymgr() else {
        return Vec::new();
    };
    ipts.iter()
        .filter_map(
            |i| match hosting::intro_point_desc(keymgr, netdir, &nick, i) {
                Ok(d) => Some((i.lid.clone(), d)),
                Err(e) => {
                    tracing::warn!(error = %e, "intro point left out");
                    None
                }
            },
        )
        .collect()
}
