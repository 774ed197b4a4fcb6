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
use crate::proxy::Proxy;
use crate::status::{self, HsDirUpload, IntroPointStatus, PeriodStatus, Role, Snapshot};
use crate::{descriptor, publisher};

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

/// Runs the publisher until shutdown, publishing status snapshots as it goes.
pub async fn publish_loop(
    client: Arc<TorClient<PreferredRuntime>>,
    config: Arc<Config>,
    mut key_source: KeySource,
    proxy: Proxy,
    cluster: &Cluster,
    snapshots: watch::Sender<Snapshot>,
    mut shutdown: watch::Receiver<bool>,
) {
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
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A role change is acted on at once, not at the next tick.
            _ = role.changed() => {}
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
            })
            .collect();
        let mut lids: Vec<String> = ipts.iter().map(|i| i.lid.clone()).collect();
        lids.sort();
        cluster.set_intro_points(&lids);
        let inputs = Inputs {
            ipts: lids,
            rings: rings(&netdir, &master),
        };
        let now = Instant::now();
        let due = if publisher {
            schedule.due(now, &inputs)
        } else {
            None
        };
        if let Some(reason) = due {
            tracing::info!(?reason, intro_points = ipts.len(), "publishing");
            let round = publish_round(&client, &netdir, &master, &key_source, &ipts, &config);
            let results = tokio::select! {
                r = round => r,
                _ = shutdown.wait_for(|s| *s) => break,
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

/// One round: a descriptor per period, uploaded to its HSDirs.
async fn publish_round(
    client: &TorClient<PreferredRuntime>,
    netdir: &NetDir,
    master: &OnionAddress,
    source: &KeySource,
    ipts: &[IptRecord],
    config: &Config,
) -> Vec<PeriodStatus> {
    let nick = hosting::nickname();
    let (Ok(keymgr), Ok(pool)) = (client.keymgr(), client.hs_circ_pool()) else {
        tracing::warn!("Arti is not ready to publish");
        return Vec::new();
    };
    let descs: Vec<_> = ipts
        .iter()
        .filter_map(
            |i| match hosting::intro_point_desc(keymgr, netdir, &nick, i) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, "intro point left out");
                    None
                }
            },
        )
        .take(descriptor::MAX_INTRO_POINTS)
        .collect();
    if descs.is_empty() {
        return Vec::new();
    }
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
        let built = match descriptor::build(
            master.public_key(),
            &blind,
            &params,
            &descs,
            config.publish.descriptor_lifetime,
            SystemTime::now(),
            &mut rand::rng(),
        ) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(period = %slug, error = %e, "descriptor not built");
                continue;
            }
        };
        let blind_id = HsBlindIdKey::from(&blind).id();
        let results = publisher::upload_to_hsdirs(
            client.runtime(),
            &pool,
            netdir,
            blind_id,
            tp,
            built.text.clone().into(),
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
            })
            .collect();
        let status = PeriodStatus {
            period: slug.clone(),
            published_at: status::unix_now(),
            revision: built.revision,
            intro_points: built.intro_points,
            bytes: built.text.len(),
            hsdirs,
        };
        tracing::info!(
            period = %slug,
            accepted = status.hsdirs_ok(),
            hsdirs = status.hsdirs.len(),
            revision = built.revision,
            intro_points = built.intro_points,
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
