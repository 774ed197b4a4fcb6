//! The publisher's decisions as a pure state machine: what to upload to which HSDir, when.
//! No I/O and no clocks: the [reactor](super::reactor) feeds it typed inputs (role, this
//! node's and peers' intro points, health, the network view), upload outcomes and the time,
//! and carries out the [`UploadJob`]s it returns. Tests drive it with simulated time and fake
//! HSDirs.
//!
//! Per period and per HSDir it keeps what the HSDir holds (the content version it accepted),
//! the upload in flight, and a jittered retry schedule (Arti's `RetryDelay`), like Arti's own
//! publisher (`tor-hsservice` `publish/reactor.rs`):
//! - the merged input or the period's HSDir ring changing makes every HSDir of the period
//!   dirty; a dirty HSDir is uploaded to once `min_gap` has passed since its last upload
//!   (coalescing), at once the first time;
//! - a failed upload is retried for that HSDir alone, after a jittered delay that grows from
//!   [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`] and resets on success;
//! - a clean HSDir is uploaded to again after `refresh`;
//! - no intro points anywhere is nothing to publish (not a failure);
//! - a clock that disagrees with the consensus ([`clock`](super::clock)) publishes nothing;
//! - losing the role drops every upload in flight (their outcomes are ignored); gaining it
//!   makes every HSDir dirty, whatever the previous holder did;
//! - an HSDir that rejects the descriptor may hold one with a higher revision counter (from a
//!   node whose clock ran ahead): the publisher asks it ([`RevisionCheck`]), and if so
//!   publishes above that counter, at most [`MAX_REVISION_JUMP`] ahead of its own clock; the
//!   counters of a period only ever grow.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::Rng;
use tor_basic_utils::retry::RetryDelay;
use tor_hscrypto::pk::{HsBlindIdKeypair, HsIdKey};
use tor_hscrypto::time::TimePeriod;
use tor_netdoc::doc::hsdesc::IntroPointDesc;

use super::clock;
use super::select::{self, NodeIntroPoints};
use crate::descriptor::{self, Capabilities};
use crate::status::{HsDirUpload, NodeContribution, PeriodStatus};

/// Lowest retry delay after a failed upload (jittered upwards from here).
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The farthest ahead of this node's clock a revision counter may be chosen to get past one
/// an HSDir holds.
pub const MAX_REVISION_JUMP: Duration = Duration::from_secs(24 * 3600);

/// How often a clock that disagrees with the consensus is checked again.
pub const CLOCK_RECHECK: Duration = Duration::from_secs(10);

/// The publisher's timers and descriptor settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Uploads of new content to one HSDir are at least this far apart.
    pub min_gap: Duration,
    /// An HSDir holding the current content gets it again after this long.
    pub refresh: Duration,
    /// The descriptor lifetime.
    pub lifetime: Duration,
    /// How far the clock may be outside the consensus's validity.
    pub max_clock_skew: Duration,
    /// This node's `node.weight`.
    pub weight: u32,
}

/// One period the network publishes for, as the publisher needs it.
#[derive(Debug, Clone)]
pub struct PeriodPlan {
    /// The time period.
    pub period: TimePeriod,
    /// Start of its shared-random period (the revision counter counts from here).
    pub srv_start: SystemTime,
    /// Its blinded keypair, or why there is none (then the period is not published).
    pub blind: Result<Arc<HsBlindIdKeypair>, String>,
    /// The upload ring: the responsible HSDirs' RSA identities (hex), in ring order.
    pub hsdirs: Vec<String>,
}

/// What the publisher needs of the network: the periods, the consensus's validity (network
/// time) and the declared capabilities.
#[derive(Debug, Clone)]
pub struct NetworkView {
    /// The periods to publish for.
    pub periods: Vec<PeriodPlan>,
    /// The consensus's `valid-after`.
    pub valid_after: SystemTime,
    /// The consensus's `valid-until`.
    pub valid_until: SystemTime,
    /// Flow control and protocols to declare, and the authorized clients (restricted
    /// discovery); a change republishes every period.
    pub caps: Capabilities,
}

/// One upload for the reactor to carry out.
#[derive(Debug, Clone)]
pub struct UploadJob {
    /// Its id, for the outcome.
    pub id: u64,
    /// The period.
    pub period: TimePeriod,
    /// The HSDir's RSA identity (hex).
    pub hsdir: String,
    /// The descriptor.
    pub text: Arc<str>,
}

/// Asks one HSDir which revision counter it holds for a period (after it rejected ours).
#[derive(Debug, Clone)]
pub struct RevisionCheck {
    /// Its id, for the outcome.
    pub id: u64,
    /// The period.
    pub period: TimePeriod,
    /// The HSDir's RSA identity (hex).
    pub hsdir: String,
    /// The period's blinded identity (what the HSDir files the descriptor under).
    pub blind_id: tor_hscrypto::pk::HsBlindId,
    /// To decrypt and verify what it serves.
    pub subcredential: tor_hscrypto::Subcredential,
}

/// What the publisher reports for `status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublisherStatus {
    /// Per period: the last batch and each HSDir's last answer.
    pub periods: Vec<PeriodStatus>,
    /// The merged descriptor's sources, per node (empty before the first batch).
    pub merged: Vec<NodeContribution>,
    /// Why nothing is published: the clock disagrees with the consensus.
    pub clock_error: Option<String>,
}

#[derive(Debug, Clone)]
struct InFlight {
    id: u64,
    version: u64,
    intro_points: usize,
    started: Instant,
    revision: u64,
}

#[derive(Debug, Clone)]
struct HsDirState {
    id: String,
    /// The content version it accepted last.
    holds: Option<u64>,
    in_flight: Option<InFlight>,
    last_start: Option<Instant>,
    retry_at: Option<Instant>,
    delay: RetryDelay,
    last: Option<HsDirUpload>,
    check: Check,
    /// The revision counter of the descriptor it rejected last.
    rejected: Option<u64>,
}

/// Whether an HSDir's held revision needs asking about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    None,
    Needed,
    InFlight(u64),
}

impl HsDirState {
    fn new(id: String) -> HsDirState {
        HsDirState {
            id,
            holds: None,
            in_flight: None,
            last_start: None,
            retry_at: None,
            delay: RetryDelay::from_duration(FIRST_BACKOFF),
            last: None,
            check: Check::None,
            rejected: None,
        }
    }

    /// When this HSDir next needs an upload of `version`, if idle (`None`: nothing to do
    /// until an upload in flight ends); `now` if it never had one.
    fn due_at(&self, version: u64, settings: &Settings, now: Instant) -> Option<Instant> {
        if self.in_flight.is_some() || self.check != Check::None {
            return None;
        }
        let Some(last) = self.last_start else {
            return Some(now);
        };
        if self.holds == Some(version) {
            return Some(last + settings.refresh);
        }
        Some(self.retry_at.unwrap_or(last + settings.min_gap))
    }
}

#[derive(Debug)]
struct PeriodState {
    plan: PeriodPlan,
    /// Bumped when the merged input, the ring or the capabilities change.
    version: u64,
    hsdirs: Vec<HsDirState>,
    status: Option<PeriodStatus>,
    /// Whether the batch in `status` still has uploads in flight (logged when done).
    batch_open: bool,
    /// The smallest SRV-period offset the next descriptor may use: one past the last used, or
    /// past a counter an HSDir was found holding. Counters of a period only grow.
    min_offset: u32,
}

/// The publisher.
#[derive(Debug)]
pub struct Publisher {
    settings: Settings,
    master: HsIdKey,
    node_id: String,
    publishing: bool,
    own: Vec<IntroPointDesc>,
    own_healthy: bool,
    peers: Vec<NodeIntroPoints>,
    network: Option<(SystemTime, SystemTime, Capabilities)>,
    periods: Vec<PeriodState>,
    input: select::MergeInput,
    input_print: Vec<(String, u32, Vec<[u8; 32]>)>,
    merged: Vec<NodeContribution>,
    clock_error: Option<String>,
    next_id: u64,
}

impl Publisher {
    /// A publisher for `master` on the node `node_id`, standing by until told otherwise.
    pub fn new(settings: Settings, master: HsIdKey, node_id: &str) -> Publisher {
        Publisher {
            settings,
            master,
            node_id: node_id.to_string(),
            publishing: false,
            own: Vec::new(),
            own_healthy: true,
            peers: Vec::new(),
            network: None,
            periods: Vec::new(),
            input: select::MergeInput::default(),
            input_print: Vec::new(),
            merged: Vec::new(),
            clock_error: None,
            next_id: 1,
        }
    }

    /// Whether this node publishes.
    pub fn publishing(&self) -> bool {
        self.publishing
    }

    /// Sets the role. Returns whether uploads were in flight and are now abandoned (the
    /// reactor cancels them). Taking over makes every HSDir dirty: publish at once.
    pub fn set_role(&mut self, publishing: bool) -> bool {
        if publishing == self.publishing {
            return false;
        }
        self.publishing = publishing;
        let mut abandoned = false;
        for p in &mut self.periods {
            for h in &mut p.hsdirs {
                abandoned |= h.in_flight.take().is_some();
                if let Check::InFlight(_) = h.check {
                    abandoned = true;
                    h.check = Check::Needed;
                }
                if publishing {
                    *h = HsDirState::new(std::mem::take(&mut h.id));
                }
            }
            p.batch_open = false;
        }
        abandoned
    }

    /// This node's intro points and health.
    pub fn set_own(&mut self, descs: Vec<IntroPointDesc>, healthy: bool) {
        self.own = descs;
        self.own_healthy = healthy;
        self.remerge();
    }

    /// The other nodes' intro points (live, complete sets, not refused by membership).
    pub fn set_peers(&mut self, peers: Vec<NodeIntroPoints>) {
        self.peers = peers;
        self.remerge();
    }

    fn remerge(&mut self) {
        let mut sets = vec![NodeIntroPoints {
            node_id: self.node_id.clone(),
            healthy: self.own_healthy,
            descs: self.own.clone(),
            weight: self.settings.weight,
        }];
        sets.extend(self.peers.iter().cloned());
        let input = select::eligible(&sets);
        let print = select::fingerprint(&input);
        // Contributions change with health and counts even when the input does not.
        let widest = self.periods.iter().map(|p| p.plan.hsdirs.len()).max();
        let chosen = select::in_use(&select::windows(&input, widest.unwrap_or(1)));
        self.merged = select::contributions(&sets, &chosen);
        if print != self.input_print {
            self.input = input;
            self.input_print = print;
            for p in &mut self.periods {
                p.version += 1;
            }
        }
    }

    /// A new network view (new consensus, or blinded keys reloaded).
    pub fn set_network(&mut self, view: NetworkView) {
        let caps_changed = self
            .network
            .as_ref()
            .is_none_or(|(_, _, c)| *c != view.caps);
        self.network = Some((view.valid_after, view.valid_until, view.caps));
        let mut old = std::mem::take(&mut self.periods);
        for plan in view.periods {
            let period = match old.iter().position(|p| p.plan.period == plan.period) {
                Some(i) => {
                    let mut p = old.swap_remove(i);
                    if p.plan.hsdirs != plan.hsdirs || caps_changed {
                        p.version += 1;
                        let mut states = std::mem::take(&mut p.hsdirs);
                        p.hsdirs = plan
                            .hsdirs
                            .iter()
                            .map(|id| match states.iter().position(|h| h.id == *id) {
                                Some(j) => states.swap_remove(j),
                                None => HsDirState::new(id.clone()),
                            })
                            .collect();
                    }
                    p.plan = plan;
                    p
                }
                None => PeriodState {
                    hsdirs: plan.hsdirs.iter().cloned().map(HsDirState::new).collect(),
                    plan,
                    version: 1,
                    status: None,
                    batch_open: false,
                    min_offset: 0,
                },
            };
            self.periods.push(period);
        }
        // The widest ring may have changed the contributions.
        self.remerge();
    }

    /// Starts what is due at `now` (`wall` for the clock check and revision counters):
    /// returns the uploads to carry out.
    pub fn poll<R: Rng + rand::CryptoRng>(
        &mut self,
        now: Instant,
        wall: SystemTime,
        rng: &mut R,
    ) -> Vec<UploadJob> {
        let Some((valid_after, valid_until, caps)) = self.network.clone() else {
            return Vec::new();
        };
        let clock = clock::check(wall, valid_after, valid_until, self.settings.max_clock_skew);
        let clock_error = clock.err().map(|e| e.to_string());
        if clock_error != self.clock_error {
            match &clock_error {
                Some(e) => tracing::error!("{e}"),
                None if self.clock_error.is_some() => {
                    tracing::info!("the local clock agrees with the consensus again")
                }
                None => {}
            }
            self.clock_error = clock_error;
        }
        if !self.publishing || self.clock_error.is_some() {
            return Vec::new();
        }
        if self.input.sets.iter().all(|(_, d)| d.is_empty()) {
            return Vec::new();
        }
        let mut jobs = Vec::new();
        for i in 0..self.periods.len() {
            jobs.extend(self.poll_period(i, now, wall, &caps, rng));
        }
        jobs
    }

    fn poll_period<R: Rng + rand::CryptoRng>(
        &mut self,
        i: usize,
        now: Instant,
        wall: SystemTime,
        caps: &Capabilities,
        rng: &mut R,
    ) -> Vec<UploadJob> {
        let settings = self.settings;
        let p = &self.periods[i];
        let Ok(blind) = p.plan.blind.clone() else {
            return Vec::new();
        };
        let due: Vec<usize> = p
            .hsdirs
            .iter()
            .enumerate()
            .filter(|(_, h)| {
                h.due_at(p.version, &settings, now)
                    .is_some_and(|t| t <= now)
            })
            .map(|(j, _)| j)
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        let period = p.plan.period;
        let ring = p.hsdirs.len().max(1);
        let slug = crate::hosting::period_slug(period);
        let Ok(offset) = wall.duration_since(p.plan.srv_start) else {
            tracing::warn!(period = %slug, "the clock is before this period's shared-random period: not published");
            return Vec::new();
        };
        let offset = u32::try_from(offset.as_secs())
            .unwrap_or(u32::MAX)
            .max(p.min_offset);
        let revision = descriptor::revision_at_offset(&blind, Duration::from_secs(offset.into()));
        let windows = select::windows(&self.input, ring);
        let in_use = select::in_use(&windows).len();
        // Build each window a due HSDir needs, once.
        let mut texts: Vec<Option<(Arc<str>, usize)>> = vec![None; windows.len()];
        let mut jobs = Vec::new();
        let mut bytes = 0;
        for &j in &due {
            let w = j % windows.len();
            if texts[w].is_none() {
                let descs: Vec<IntroPointDesc> =
                    windows[w].iter().map(|(_, d)| d.clone()).collect();
                let spec = descriptor::Spec {
                    master: &self.master,
                    blind: &blind,
                    period,
                    revision,
                    intro_points: &descs,
                    caps,
                    lifetime: settings.lifetime,
                };
                match descriptor::build_fitting(&spec, wall, rng) {
                    Ok(b) => {
                        bytes = bytes.max(b.text.len());
                        texts[w] = Some((b.text.into(), b.intro_points));
                    }
                    Err(e) => {
                        tracing::warn!(period = %slug, error = %e, "descriptor not built");
                        return Vec::new();
                    }
                }
            }
            let (text, intro_points) = texts[w].clone().expect("built above");
            let id = self.next_id;
            self.next_id += 1;
            let p = &mut self.periods[i];
            let h = &mut p.hsdirs[j];
            h.in_flight = Some(InFlight {
                id,
                version: p.version,
                intro_points,
                started: now,
                revision: u64::from(revision),
            });
            h.last_start = Some(now);
            h.retry_at = None;
            jobs.push(UploadJob {
                id,
                period: p.plan.period,
                hsdir: h.id.clone(),
                text,
            });
        }
        let p = &mut self.periods[i];
        p.min_offset = offset.saturating_add(1);
        let hsdirs = p
            .status
            .as_ref()
            .map(|s| s.hsdirs.clone())
            .unwrap_or_default();
        p.status = Some(PeriodStatus {
            period: slug.clone(),
            published_at: unix(wall),
            revision: u64::from(revision),
            intro_points: in_use,
            descriptors: windows.len(),
            bytes,
            hsdirs,
        });
        p.batch_open = true;
        tracing::info!(
            period = %slug,
            hsdirs = jobs.len(),
            intro_points = in_use,
            descriptors = windows.len(),
            nodes = self.merged.iter().filter(|c| c.listed > 0).count(),
            "publishing"
        );
        jobs
    }

    /// An upload's outcome. Outcomes of abandoned uploads (role lost, HSDir left the ring)
    /// are ignored.
    pub fn on_outcome<R: Rng>(
        &mut self,
        now: Instant,
        id: u64,
        result: Result<(), String>,
        rng: &mut R,
    ) {
        for p in &mut self.periods {
            let Some(h) = p
                .hsdirs
                .iter_mut()
                .find(|h| h.in_flight.as_ref().is_some_and(|f| f.id == id))
            else {
                continue;
            };
            let f = h.in_flight.take().expect("found in flight");
            let ok = result.is_ok();
            if ok {
                h.holds = Some(f.version);
                h.delay.reset();
                h.retry_at = None;
            } else {
                let d = h.delay.next_delay(rng).min(MAX_BACKOFF);
                h.retry_at = Some(now + d);
                // C tor answers "Invalid HS descriptor. Rejected." both for a bad descriptor
                // and for a revision counter not above the one it holds: ask which.
                if result
                    .as_ref()
                    .err()
                    .is_some_and(|e| e.contains("Rejected"))
                {
                    h.check = Check::Needed;
                    h.rejected = Some(f.revision);
                }
            }
            let upload = HsDirUpload {
                hsdir: h.id.clone(),
                ok,
                error: result.err(),
                elapsed_ms: now.saturating_duration_since(f.started).as_millis() as u64,
                intro_points: f.intro_points,
            };
            h.last = Some(upload.clone());
            if let Some(s) = p.status.as_mut() {
                match s.hsdirs.iter_mut().find(|u| u.hsdir == upload.hsdir) {
                    Some(u) => *u = upload,
                    None => s.hsdirs.push(upload),
                }
                // Only HSDirs still in the ring.
                s.hsdirs
                    .retain(|u| p.hsdirs.iter().any(|h| h.id == u.hsdir));
            }
            if p.batch_open && p.hsdirs.iter().all(|h| h.in_flight.is_none()) {
                p.batch_open = false;
                if let Some(s) = &p.status {
                    tracing::info!(
                        period = %s.period,
                        accepted = s.hsdirs_ok(),
                        hsdirs = p.hsdirs.len(),
                        revision = s.revision,
                        intro_points = s.intro_points,
                        descriptors = s.descriptors,
                        "descriptor uploaded"
                    );
                }
            }
            return;
        }
    }

    /// The revision checks to start: HSDirs that rejected a descriptor are asked what they
    /// hold.
    pub fn poll_checks(&mut self) -> Vec<RevisionCheck> {
        if !self.publishing {
            return Vec::new();
        }
        let mut out = Vec::new();
        for p in &mut self.periods {
            let Ok(blind) = &p.plan.blind else { continue };
            let blind_pk = tor_hscrypto::pk::HsBlindIdKey::from(&**blind);
            let subcredential = self.master.compute_subcredential(&blind_pk, p.plan.period);
            for h in &mut p.hsdirs {
                if h.check == Check::Needed && h.in_flight.is_none() {
                    let id = self.next_id;
                    self.next_id += 1;
                    h.check = Check::InFlight(id);
                    out.push(RevisionCheck {
                        id,
                        period: p.plan.period,
                        hsdir: h.id.clone(),
                        blind_id: blind_pk.id(),
                        subcredential,
                    });
                }
            }
        }
        out
    }

    /// A revision check's outcome: the counter the HSDir holds. If it is not below what this
    /// node would publish, the period's next descriptors go above it (within
    /// [`MAX_REVISION_JUMP`] of `wall`), and the HSDir is retried at once.
    pub fn on_revision(
        &mut self,
        now: Instant,
        wall: SystemTime,
        id: u64,
        held: Result<u64, String>,
    ) {
        for p in &mut self.periods {
            let Some(h) = p.hsdirs.iter_mut().find(|h| h.check == Check::InFlight(id)) else {
                continue;
            };
            h.check = Check::None;
            let held = match held {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(hsdir = %h.id, error = %e, "could not read the HSDir's revision");
                    return;
                }
            };
            let (Ok(blind), Ok(since)) = (&p.plan.blind, wall.duration_since(p.plan.srv_start))
            else {
                return;
            };
            let from = u32::try_from(since.as_secs())
                .unwrap_or(u32::MAX)
                .max(p.min_offset);
            let slug = crate::hosting::period_slug(p.plan.period);
            if h.rejected.take().is_none_or(|r| held < r) {
                // It holds a lower counter than the one it rejected: not a counter problem;
                // the normal retry stands.
                return;
            }
            let mine = u64::from(descriptor::revision_at_offset(
                blind,
                Duration::from_secs(from.into()),
            ));
            if held < mine {
                // Already above it (another HSDir's answer moved the counters on).
                h.retry_at = Some(now);
                return;
            }
            let limit = from.saturating_add(MAX_REVISION_JUMP.as_secs() as u32);
            match descriptor::offset_above(blind, held, from, limit) {
                Some(offset) => {
                    tracing::warn!(
                        period = %slug,
                        hsdir = %h.id,
                        held,
                        ahead_s = offset - from,
                        "an HSDir holds a descriptor with a higher revision counter (a node's \
                         clock ran ahead?): publishing above it"
                    );
                    p.min_offset = offset;
                    h.retry_at = Some(now);
                }
                None => tracing::error!(
                    period = %slug,
                    hsdir = %h.id,
                    held,
                    "an HSDir holds a revision counter more than a day ahead of this clock: \
                     it keeps its descriptor until that one expires"
                ),
            }
            return;
        }
    }

    /// When [`Publisher::poll`] next has something to do, `now` at the earliest (`None`: only
    /// an input or an outcome can change that).
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        if !self.publishing || self.network.is_none() {
            return None;
        }
        if self.clock_error.is_some() {
            // The clock may be fixed (NTP) before the next consensus arrives.
            return Some(now + CLOCK_RECHECK);
        }
        if self.input.sets.iter().all(|(_, d)| d.is_empty()) {
            return None;
        }
        self.periods
            .iter()
            .filter(|p| p.plan.blind.is_ok())
            .flat_map(|p| {
                p.hsdirs
                    .iter()
                    .filter_map(|h| h.due_at(p.version, &self.settings, now))
            })
            .min()
            .map(|t| t.max(now))
    }

    /// Whether uploads are in flight.
    pub fn in_flight(&self) -> usize {
        self.periods
            .iter()
            .flat_map(|p| &p.hsdirs)
            .filter(|h| h.in_flight.is_some())
            .count()
    }

    /// What `status` shows.
    pub fn status(&self) -> PublisherStatus {
        PublisherStatus {
            periods: self
                .periods
                .iter()
                .filter_map(|p| p.status.clone())
                .collect(),
            merged: self.merged.clone(),
            clock_error: self.clock_error.clone(),
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
