//! The publisher task: keeps the blinded keys in step with the network's periods, watches this
//! node's intro points and the HSDir rings, and publishes when the [`Schedule`] says so.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arti_client::TorClient;
use tokio::sync::watch;
use tor_hscrypto::pk::HsBlindIdKey;
use tor_hscrypto::time::TimePeriod;
use tor_linkspec::HasRelayIds;
use tor_netdir::NetDir;
use tor_rtcompat::PreferredRuntime;

use super::cluster::Cluster;
use super::keys::{self, KeySource};
use crate::config::Config;
use crate::election;
use crate::hosting::{self, IptRecord};
use crate::keys::OnionAddress;
use crate::membership::Health;
use crate::proxy::Proxy;
use crate::status::{
    self, HsDirUpload, IntroPointStatus, NodeContribution, PeriodStatus, Role, Snapshot,
};
use crate::{descriptor, publisher};
use tor_netdoc::doc::hsdesc::IntroPointDesc;

/// First retry delay after a round with failed uploads; doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Time allowed for one upload to one HSDir.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// What a publication depends on: the intro points and, per period, the responsible HSDirs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    /// Local ids of the intro points, sorted.
    pub ipts: Vec<String>,
    /// Per period slug, the responsible HSDirs' ids, sorted.
    pub rings: Vec<(String, Vec<String>)>,
}

/// Why a round is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Nothing was published yet.
    First,
    /// Intro points or HSDir rings changed.
    Changed,
    /// The republish interval elapsed.
    Refresh,
    /// The last round had failed uploads.
    Retry,
}

/// When to publish. Pure: time is an argument.
#[derive(Debug, Clone)]
pub struct Schedule {
    min_gap: Duration,
    refresh: Duration,
    last_round: Option<Instant>,
    last_inputs: Option<Inputs>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Schedule {
    /// A schedule with the configured gap and republish interval.
    pub fn new(min_gap: Duration, refresh: Duration) -> Schedule {
        Schedule {
            min_gap,
            refresh,
            last_round: None,
            last_inputs: None,
            retry_at: None,
            backoff: FIRST_BACKOFF,
        }
    }

    /// Whether a round is due at `now` for `inputs`. Never with no intro points; changes wait
    /// for the minimum gap; retries after failures follow their own backoff.
    pub fn due(&self, now: Instant, inputs: &Inputs) -> Option<Reason> {
        if inputs.ipts.is_empty() {
            return None;
        }
        let Some(last) = self.last_round else {
            return Some(Reason::First);
        };
        let since = now.saturating_duration_since(last);
        if self.retry_at.is_some_and(|t| now >= t) {
            return Some(Reason::Retry);
        }
        if self.last_inputs.as_ref() != Some(inputs) && since >= self.min_gap {
            return Some(Reason::Changed);
        }
        if since >= self.refresh {
            return Some(Reason::Refresh);
        }
        None
    }

    /// Records a round at `now`; `all_ok` says whether every upload succeeded.
    pub fn record(&mut self, now: Instant, inputs: Inputs, all_ok: bool) {
        self.last_round = Some(now);
        self.last_inputs = Some(inputs);
        if all_ok {
            self.retry_at = None;
            self.backoff = FIRST_BACKOFF;
        } else {
            self.retry_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// The responsible HSDirs of every period the network publishes for.
fn rings(netdir: &NetDir, master: &OnionAddress) -> Vec<(String, Vec<String>)> {
    netdir
        .hs_all_time_periods()
        .iter()
        .filter_map(|params| {
            let tp = params.time_period();
            let (blind, _) = master.public_key().compute_blinded_key(tp).ok()?;
            let mut ids: Vec<String> = netdir
                .hs_dirs_upload(blind.id(), tp)
                .ok()?
                .filter_map(|r| r.rsa_identity().map(|i| i.to_string()))
                .collect();
            ids.sort();
            Some((hosting::period_slug(tp), ids))
        })
        .collect()
}

/// What the publisher task works with.
pub struct PublishInputs {
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
    /// Where status snapshots go.
    pub snapshots: watch::Sender<Snapshot>,
}

/// Runs the publisher until shutdown, publishing status snapshots as it goes.
pub async fn publish_loop(
    inputs: PublishInputs,
    cluster: &Cluster,
    mut shutdown: watch::Receiver<bool>,
) {
    let PublishInputs {
        client,
        config,
        mut key_source,
        proxy,
        target_up,
        snapshots,
    } = inputs;
    let mut role = cluster.role();
    let master = config.master.onion_address.clone();
    let nick = hosting::nickname();
    let mut schedule = Schedule::new(
        config.publish.min_republish_gap,
        config.publish.republish_interval,
    );
    // The wanted periods the keystore was last synced for: re-sync (and, offline, re-read the
    // key directory) only when they change, not every tick while a neighbour's key is missing.
    let mut synced_for: Vec<TimePeriod> = Vec::new();
    let mut periods: BTreeMap<String, PeriodStatus> = BTreeMap::new();
    let mut snapshot = Snapshot::starting(&config.node.id, &master.to_string());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut was_publisher = false;
    let mut own_lids: Vec<String> = Vec::new();
    let mut own_descs: Vec<IntroPointDesc> = Vec::new();
    let mut own_auth: BTreeMap<String, [u8; 32]> = BTreeMap::new();
    let mut peer_ipts = cluster.peer_ipts();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A role change, or other nodes' intro points changing, is acted on at once.
            _ = role.changed() => {}
            _ = peer_ipts.changed() => {}
            _ = shutdown.wait_for(|s| *s) => break,
        }
        let publisher = *role.borrow_and_update() == election::Role::Publisher;
        if publisher != was_publisher {
            tracing::info!(publisher, "role changed");
            if publisher {
                // Taking over: publish at once, whatever the previous holder did.
                schedule = Schedule::new(
                    config.publish.min_republish_gap,
                    config.publish.republish_interval,
                );
            }
            was_publisher = publisher;
        }
        snapshot.role = if publisher {
            Role::Publisher
        } else {
            Role::Standby
        };
        snapshot.proxy = proxy.stats();
        let healthy = *target_up.borrow();
        cluster.set_health(if healthy {
            Health::Healthy
        } else {
            Health::TargetDown
        });
        snapshot.target_up = healthy;
        let netdir = match client.dirmgr().map(|d| d.timely_netdir()) {
            Ok(Ok(n)) => n,
            _ => {
                snapshots.send_replace(snapshot.clone());
                continue;
            }
        };
        let wanted = keys::wanted_periods(&netdir);
        if wanted != synced_for {
            key_source.reload();
            match keys::sync_for_netdir(&client, &key_source, &master) {
                Ok(_) => synced_for = wanted,
                Err(e) => tracing::warn!(error = %e, "could not update blinded keys"),
            }
        }
        let ipts = match hosting::read_current_ipts(&config.tor.state_dir, &nick) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "could not read intro points");
                Vec::new()
            }
        };
        snapshot.intro_points = ipts
            .iter()
            .map(|i| IntroPointStatus {
                relay: i
                    .relay
                    .rsa_identity()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "?".into()),
                lid: i.lid.chars().take(8).collect(),
                auth_key: String::new(),
            })
            .collect();
        let mut lids: Vec<String> = ipts.iter().map(|i| i.lid.clone()).collect();
        lids.sort();
        // This node's intro points as descriptor entries, rebuilt when they change; their
        // public parts go to the mesh for whoever publishes.
        if lids != own_lids || own_descs.len() != lids.len() {
            let pairs = own_intro_points(&client, &netdir, &ipts);
            own_auth = pairs
                .iter()
                .map(|(lid, d)| (lid.clone(), descriptor::ipt_to_wire(d).auth_key))
                .collect();
            own_descs = pairs.into_iter().map(|(_, d)| d).collect();
            own_lids = lids.clone();
            let wire: Vec<_> = own_descs.iter().map(descriptor::ipt_to_wire).collect();
            cluster.set_intro_points(&wire);
        }
        // The merged view: this node first, then every live member that sent a complete set.
        for status in snapshot.intro_points.iter_mut() {
            if let Some((_, key)) = own_auth
                .iter()
                .find(|(lid, _)| lid.starts_with(&status.lid))
            {
                status.auth_key = hex(key);
            }
        }
        let peers = cluster.peer_ipts().borrow().clone();
        let mut sets: Vec<NodeIntroPoints> = vec![NodeIntroPoints {
            node_id: config.node.id.clone(),
            healthy,
            descs: own_descs.clone(),
        }];
        for p in &peers {
            let descs: Vec<IntroPointDesc> = p
                .ipts
                .iter()
                .filter_map(|w| match descriptor::ipt_from_wire(w) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::warn!(node = %p.node_id, error = %e, "intro point from the mesh left out");
                        None
                    }
                })
                .collect();
            sets.push(NodeIntroPoints {
                node_id: p.node_id.clone(),
                healthy: p.healthy,
                descs,
            });
        }
        let inputs = Inputs {
            ipts: merge_keys(&sets, &lids, healthy, &peers),
            rings: rings(&netdir, &master),
        };
        // Network time: a clock that disagrees with the consensus never publishes (its
        // revision counters would lock the real publisher out of the HSDirs).
        let lifetime = netdir.lifetime();
        let clock = publisher::clock::check(
            SystemTime::now(),
            lifetime.valid_after(),
            lifetime.valid_until(),
            config.publish.max_clock_skew,
        );
        let clock_error = clock.err().map(|e| e.to_string());
        if clock_error != snapshot.clock_error {
            match &clock_error {
                Some(e) => tracing::error!("{e}"),
                None => tracing::info!("the local clock agrees with the consensus again"),
            }
            snapshot.clock_error = clock_error;
        }
        let now = Instant::now();
        let due = if publisher && snapshot.clock_error.is_none() {
            schedule.due(now, &inputs)
        } else {
            None
        };
        if let Some(reason) = due {
            let input = eligible(&sets);
            let widest = inputs.rings.iter().map(|(_, r)| r.len()).max().unwrap_or(1);
            let chosen = in_use(&windows(&input, widest));
            snapshot.merged = contributions(&sets, &chosen);
            tracing::info!(
                ?reason,
                intro_points = chosen.len(),
                nodes = snapshot.merged.iter().filter(|c| c.listed > 0).count(),
                "publishing"
            );
            let round = publish_round(&client, &netdir, &master, &key_source, &input, &config);
            let results = tokio::select! {
                r = round => r,
                _ = shutdown.wait_for(|s| *s) => break,
                // Deposed mid-round: the uploads still in flight are dropped (cancelled) at
                // once and no further one starts; the round is not recorded.
                _ = role.wait_for(|r| *r != election::Role::Publisher) => {
                    tracing::info!("role lost during a publication round: uploads cancelled");
                    snapshots.send_replace(snapshot.clone());
                    continue;
                }
            };
            let all_ok =
                !results.is_empty() && results.iter().all(|p| p.hsdirs_ok() == p.hsdirs.len());
            for p in results {
                periods.insert(p.period.clone(), p);
            }
            // Forget periods the network no longer publishes for.
            let live: Vec<String> = inputs.rings.iter().map(|(s, _)| s.clone()).collect();
            periods.retain(|k, _| live.contains(k));
            schedule.record(now, inputs, all_ok);
        }
        snapshot.periods = periods.values().cloned().collect();
        snapshots.send_replace(snapshot.clone());
    }
}

/// What the merged descriptor depends on, for change detection: every listed node's intro
/// points (this node's by local id, peers' by generation) and health. Empty when no node has
/// an intro point, so [`Schedule::due`] waits instead of recording an empty round as a failed
/// one (health flags alone made it look like there was something to publish, and the failed
/// "rounds" inflated the backoff before the first real publication).
fn merge_keys(
    sets: &[NodeIntroPoints],
    own_lids: &[String],
    healthy: bool,
    peers: &[crate::membership::PeerIpts],
) -> Vec<String> {
    if sets.iter().all(|s| s.descs.is_empty()) {
        return Vec::new();
    }
    let mut keys: Vec<String> = own_lids.to_vec();
    keys.push(format!("self-healthy:{healthy}"));
    keys.extend(
        peers
            .iter()
            .map(|p| format!("{}:{:x}:{}", p.node_id, p.generation, p.healthy)),
    );
    keys.sort();
    keys
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One node's intro points for the merged descriptor.
struct NodeIntroPoints {
    node_id: String,
    healthy: bool,
    descs: Vec<IntroPointDesc>,
}

/// The nodes whose intro points go into the merged descriptor(s): healthy nodes only; if no
/// node is healthy, every node (a descriptor that lists intro points that exist beats none).
/// `descriptor::merged_windows` then picks each descriptor's at most 20, one per relay.
fn eligible(sets: &[NodeIntroPoints]) -> Vec<(String, Vec<IntroPointDesc>)> {
    let any_healthy = sets.iter().any(|s| s.healthy && !s.descs.is_empty());
    sets.iter()
        .filter(|s| s.healthy || !any_healthy)
        .map(|s| (s.node_id.clone(), s.descs.clone()))
        .collect()
}

/// The descriptors of a period with an HSDir ring of `ring`: each window's intro points, by
/// node.
fn windows(
    input: &[(String, Vec<IntroPointDesc>)],
    ring: usize,
) -> Vec<Vec<(String, IntroPointDesc)>> {
    descriptor::merged_windows(
        input,
        descriptor::intro_relay,
        descriptor::MAX_INTRO_POINTS,
        ring,
    )
}

/// The distinct intro points in use across `windows`, by node.
fn in_use(windows: &[Vec<(String, IntroPointDesc)>]) -> Vec<(String, IntroPointDesc)> {
    let mut out: Vec<(String, IntroPointDesc)> = Vec::new();
    for (node, d) in windows.iter().flatten() {
        if !out.iter().any(|(_, x)| x.ipt_sid_key() == d.ipt_sid_key()) {
            out.push((node.clone(), d.clone()));
        }
    }
    out
}

/// Per node: how many intro points it has and how many the descriptor lists.
fn contributions(
    sets: &[NodeIntroPoints],
    chosen: &[(String, IntroPointDesc)],
) -> Vec<NodeContribution> {
    sets.iter()
        .map(|s| NodeContribution {
            node_id: s.node_id.clone(),
            healthy: s.healthy,
            intro_points: s.descs.len(),
            listed: chosen.iter().filter(|(n, _)| *n == s.node_id).count(),
        })
        .collect()
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

/// One round: a descriptor per period, uploaded to its HSDirs.
async fn publish_round(
    client: &TorClient<PreferredRuntime>,
    netdir: &NetDir,
    master: &OnionAddress,
    source: &KeySource,
    input: &[(String, Vec<IntroPointDesc>)],
    config: &Config,
) -> Vec<PeriodStatus> {
    let Ok(pool) = client.hs_circ_pool() else {
        tracing::warn!("Arti is not ready to publish");
        return Vec::new();
    };
    if input.iter().all(|(_, d)| d.is_empty()) {
        return Vec::new();
    }
    let caps = descriptor::Capabilities::declared(netdir.params());
    let mut out = Vec::new();
    for params in netdir.hs_all_time_periods() {
        let tp = params.time_period();
        let slug = hosting::period_slug(tp);
        let blind = match source.blinded(tp) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(period = %slug, error = %e, "no blinded key: not published");
                continue;
            }
        };
        let blind_id = HsBlindIdKey::from(&blind).id();
        // Up to 20 intro points: one descriptor for every HSDir. More: distinct windows of 20,
        // one per HSDir of the ring, so up to HSDirs x 20 intro points are in use.
        let ring = publisher::upload_ring_len(netdir, blind_id, tp).unwrap_or(1);
        let picked = windows(input, ring);
        let windows: Vec<Vec<IntroPointDesc>> = picked
            .iter()
            .map(|w| w.iter().map(|(_, d)| d.clone()).collect())
            .collect();
        let mut texts: Vec<Arc<str>> = Vec::new();
        let mut built_all = Vec::new();
        for w in &windows {
            let now = SystemTime::now();
            let built = descriptor::revision_counter(&blind, &params, now).and_then(|revision| {
                let spec = descriptor::Spec {
                    master: master.public_key(),
                    blind: &blind,
                    period: tp,
                    revision,
                    intro_points: w,
                    caps: &caps,
                    lifetime: config.publish.descriptor_lifetime,
                };
                descriptor::build(&spec, now, &mut rand::rng())
            });
            match built {
                Ok(b) => {
                    texts.push(b.text.clone().into());
                    built_all.push(b);
                }
                Err(e) => {
                    tracing::warn!(period = %slug, error = %e, "descriptor not built");
                }
            }
        }
        if built_all.len() != windows.len() {
            continue;
        }
        let results = publisher::upload_to_hsdirs(
            client.runtime(),
            &pool,
            netdir,
            blind_id,
            tp,
            &texts,
            UPLOAD_TIMEOUT,
        )
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(period = %slug, error = %e, "no HSDirs");
            Vec::new()
        });
        let hsdirs: Vec<HsDirUpload> = results
            .into_iter()
            .map(|r| HsDirUpload {
                hsdir: r.hsdir,
                ok: r.error.is_none(),
                error: r.error,
                elapsed_ms: r.elapsed.as_millis() as u64,
                intro_points: built_all[r.text_index].intro_points,
            })
            .collect();
        let in_use = in_use(&picked).len();
        let status = PeriodStatus {
            period: slug.clone(),
            published_at: status::unix_now(),
            revision: built_all[0].revision,
            intro_points: in_use,
            descriptors: built_all.len(),
            bytes: built_all.iter().map(|b| b.text.len()).max().unwrap_or(0),
            hsdirs,
        };
        tracing::info!(
            period = %slug,
            accepted = status.hsdirs_ok(),
            hsdirs = status.hsdirs.len(),
            revision = status.revision,
            intro_points = in_use,
            descriptors = status.descriptors,
            "descriptor uploaded"
        );
        out.push(status);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(ipts: &[&str], ring: &[&str]) -> Inputs {
        Inputs {
            ipts: ipts.iter().map(|s| s.to_string()).collect(),
            rings: vec![(
                "1_6_180".into(),
                ring.iter().map(|s| s.to_string()).collect(),
            )],
        }
    }

    const GAP: Duration = Duration::from_secs(60);
    const REFRESH: Duration = Duration::from_secs(3600);

    #[test]
    fn no_intro_points_anywhere_is_nothing_to_publish_not_a_failure() {
        let empty = |node: &str, healthy| NodeIntroPoints {
            node_id: node.into(),
            healthy,
            descs: Vec::new(),
        };
        let peer = crate::membership::PeerIpts {
            node_id: "b".into(),
            healthy: true,
            generation: 7,
            ipts: Vec::new(),
        };
        let sets = [empty("a", true), empty("b", true)];
        let keys = merge_keys(&sets, &[], true, std::slice::from_ref(&peer));
        assert!(keys.is_empty(), "{keys:?}");
        let s = Schedule::new(GAP, REFRESH);
        let i = Inputs {
            ipts: keys,
            rings: inputs(&[], &["h1"]).rings,
        };
        assert_eq!(s.due(Instant::now(), &i), None, "no round, so no failure");
        assert_eq!(s.backoff, FIRST_BACKOFF);
        // With one intro point somewhere, health and generations are inputs.
        let auth = tor_llcrypto::pk::ed25519::Keypair::generate(&mut rand::rng()).verifying_key();
        let one = descriptor::ipt_from_wire(&crate::membership::IptWire {
            link_specifiers: [&[2u8, 20][..], &[7; 20]].concat(),
            onion_key: [1; 32],
            auth_key: auth.to_bytes(),
            enc_key: [3; 32],
        })
        .unwrap();
        let sets = [
            NodeIntroPoints {
                node_id: "a".into(),
                healthy: true,
                descs: vec![one],
            },
            empty("b", true),
        ];
        let keys = merge_keys(&sets, &["lid1".into()], false, &[peer]);
        assert_eq!(keys, vec!["b:7:true", "lid1", "self-healthy:false"]);
    }

    #[test]
    fn first_publication_waits_for_intro_points_only() {
        let s = Schedule::new(GAP, REFRESH);
        let t = Instant::now();
        assert_eq!(s.due(t, &inputs(&[], &["h1"])), None);
        assert_eq!(s.due(t, &inputs(&["a"], &["h1"])), Some(Reason::First));
    }

    #[test]
    fn changes_wait_for_the_gap_then_publish_once() {
        let mut s = Schedule::new(GAP, REFRESH);
        let t0 = Instant::now();
        s.record(t0, inputs(&["a"], &["h1"]), true);
        assert_eq!(
            s.due(t0 + Duration::from_secs(1), &inputs(&["a"], &["h1"])),
            None
        );
        let changed = inputs(&["a", "b"], &["h1"]);
        assert_eq!(
            s.due(t0 + Duration::from_secs(30), &changed),
            None,
            "within the gap"
        );
        assert_eq!(s.due(t0 + GAP, &changed), Some(Reason::Changed));
        s.record(t0 + GAP, changed.clone(), true);
        assert_eq!(s.due(t0 + GAP * 3, &changed), None, "nothing new");
        // A ring change counts as a change too.
        assert_eq!(
            s.due(t0 + GAP * 3, &inputs(&["a", "b"], &["h2"])),
            Some(Reason::Changed)
        );
    }

    #[test]
    fn refresh_after_the_interval() {
        let mut s = Schedule::new(GAP, REFRESH);
        let t0 = Instant::now();
        let i = inputs(&["a"], &["h1"]);
        s.record(t0, i.clone(), true);
        assert_eq!(s.due(t0 + REFRESH - Duration::from_secs(1), &i), None);
        assert_eq!(s.due(t0 + REFRESH, &i), Some(Reason::Refresh));
    }

    #[test]
    fn failures_retry_with_doubling_backoff_that_resets_on_success() {
        let mut s = Schedule::new(GAP, REFRESH);
        let t0 = Instant::now();
        let i = inputs(&["a"], &["h1"]);
        s.record(t0, i.clone(), false);
        assert_eq!(s.due(t0 + Duration::from_secs(4), &i), None);
        assert_eq!(
            s.due(t0 + FIRST_BACKOFF, &i),
            Some(Reason::Retry),
            "retries ignore the gap"
        );
        let t1 = t0 + FIRST_BACKOFF;
        s.record(t1, i.clone(), false);
        assert_eq!(s.due(t1 + FIRST_BACKOFF, &i), None);
        assert_eq!(s.due(t1 + FIRST_BACKOFF * 2, &i), Some(Reason::Retry));
        let mut t = t1;
        for _ in 0..10 {
            s.record(t, i.clone(), false);
            t += MAX_BACKOFF;
        }
        assert_eq!(s.backoff, MAX_BACKOFF);
        s.record(t, i.clone(), true);
        assert_eq!(s.backoff, FIRST_BACKOFF);
        assert_eq!(s.due(t + MAX_BACKOFF, &i), None, "no retry after success");
    }
}
