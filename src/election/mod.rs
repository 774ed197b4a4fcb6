//! Publisher election: which node of the mesh uploads the descriptor.
//!
//! This module owns the election rules and nothing else. It is a pure state machine: no I/O, no
//! clock, no task. One [`Election`] runs on every node; the daemon calls [`Election::observe`]
//! with the current time and a [`MembershipView`] (plain data built from gossip and the failure
//! detector) whenever the view changes and at the latest at [`Decision::next_check`], then
//! gossips [`Decision::lease`] and publishes only while [`Decision::role`] is
//! [`Role::Publisher`]. It must never read a clock, decide liveness (the failure detector does)
//! or talk to the network.
//!
//! # Time
//!
//! Time is a [`WallTime`]: milliseconds since the Unix epoch, passed in by the caller (the
//! daemon converts `SystemTime::now()`; tests drive simulated time). Not `Instant`: a lease's
//! `until` is written by one machine and read by others, and an `Instant` means nothing outside
//! the process that took it and cannot be serialized. Wall clocks of different nodes differ; the
//! skew margin below absorbs that. Millisecond resolution is ample for timers of seconds.
//!
//! # Protocol
//!
//! Inputs, per observation: this node's id, priority (lower is better) and eligibility (healthy
//! enough to publish), and for every peer the failure detector holds live: id, priority,
//! eligibility and the lease it advertises (or none). A lease is
//! `{holder, until, term, yield_to}`; a peer's lease counts only if `holder` is that peer (a node
//! only ever advertises its own lease). After a restart a node advertises no lease.
//!
//! Definitions, as judged by the observing node at its time `now`:
//! - A peer's lease is **valid** if `now <= until + skew_margin`, else **stale**. A peer with a
//!   stale lease is live but not renewing (election task wedged, its gossip stuck): it is no
//!   longer a candidate.
//! - **Candidate**: among this node and the peers without a stale lease, the lowest
//!   `(not eligible, priority, id)`: eligible nodes first, then priority, ties by node id.
//!   If no node is eligible, the best priority is the candidate anyway: a descriptor that keeps
//!   the address resolvable and lists the intro points that exist beats none, and health
//!   recovers without a new election.
//! - A peer is **stable** since the first observation from which it has been continuously
//!   live, eligible, without a stale lease and with an unchanged priority.
//! - **Terms** are `u64`, never reused within a cluster's memory: a node taking a lease uses one
//!   more than the highest term it has seen in any lease (its own included).
//!
//! Rules, evaluated on every observation:
//! 1. **Own lease.** A holder renews its lease (`until = now + lease_duration`) every
//!    `lease_duration / 3`, and immediately when `yield_to` changes or its clock went back. If
//!    `now > until` (it was not observed in time), the lease has lapsed and is dropped.
//! 2. **Conflict.** A holder that sees another valid lease compares the two holders by, in
//!    order: the one advertising `yield_to` = the other loses; the candidate wins; an eligible
//!    holder wins; the higher term wins; the lower `(priority, id)` wins. The loser drops its
//!    lease at once (advertises none). Both sides evaluate the same order on the same gossiped
//!    data, so exactly one survives once their views agree.
//! 3. **Handback (break-before-make).** A holder that is not the candidate, once the candidate
//!    has been stable for `handback_after`, re-issues its lease with `yield_to = candidate` and
//!    stops publishing (role Standby) while still renewing the yielding lease, so no third node
//!    claims. The candidate, seeing a valid lease that yields to it, takes a lease with a higher
//!    term and publishes; the yielding holder sees it and drops its lease (rule 2). If the
//!    target has not taken over within `lease_duration` (or stops being the stable candidate),
//!    the holder withdraws `yield_to`, publishes again and restarts the target's stability
//!    clock, so an attempt happens at most once per `handback_after`. A node accepts a yield
//!    if it is eligible or no live node is.
//! 4. **Claim.** A node without a lease claims one (term + 1) only if it sees no valid lease,
//!    it is the candidate, and it has been running for `lease_duration` (startup hold: within
//!    that time any connected holder, renewing every `lease_duration / 3`, has been seen, so a
//!    restarted node does not steal the role before it has heard gossip).
//! 5. Otherwise the node is Standby.
//!
//! Consequences:
//! - **Failover.** When the failure detector removes the holder from the view, the next
//!   candidate claims at that very observation: takeover time = detection time. A holder that
//!   stays live but stops renewing is replaced after `lease_duration + skew_margin` (plus the
//!   observer's clock lag behind the holder, at most the gossip skew bound).
//! - **No flapping.** A standby never preempts a valid lease; a better node (rejoined, or whose
//!   priority improved, or which recovered its health) gets the role back exactly once, after
//!   being stable for `handback_after`. One that flaps faster never gets it.
//! - **Partitions.** Each side elects independently, so a side has at most one publisher (a
//!   side that lost the holder promotes its own candidate). On heal, the two holders see each
//!   other and rule 2 leaves one within one gossip round, well inside one lease period.
//!   Publishing twice is harmless: HSDirs keep the descriptor with the highest revision
//!   counter, and every merged descriptor lists only live intro points, so no quorum is needed.
//! - **Handback gap.** Between the yield and the takeover nobody publishes for one gossip
//!   round. The descriptor already on the HSDirs stays valid for its lifetime (hours), so the
//!   gap costs nothing, whereas overlap would break "one publisher" in a stable view.
//!
//! Safety condition for "no spurious takeover in a stable view": gossip delivers a renewal
//! within `lease_duration - lease_duration / 3` (4 s by default) and clocks of live nodes differ
//! by at most `skew_margin`. Gossip rejects messages whose timestamps are off by more than 5 s,
//! so live nodes' clocks differ by at most 5 s; the default margin is therefore 5 s, which
//! makes the condition hold for any admitted peer. A 2 s margin would let an observer 5 s ahead
//! see a healthy lease as stale whenever gossip takes over 1 s, and then flap. The price is 3 s
//! more for the rare case of a live but wedged holder (11 s, still inside the 15 s goal); a dead
//! holder's replacement does not depend on the margin.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// A node's id, as configured in `node.id` and gossiped.
pub type NodeId = String;

/// Wall-clock time: milliseconds since the Unix epoch (see the module doc for why not `Instant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WallTime(u64);

impl WallTime {
    /// The time `ms` milliseconds after the Unix epoch.
    pub const fn from_millis(ms: u64) -> WallTime {
        WallTime(ms)
    }

    /// The time `since_epoch` after the Unix epoch (saturating).
    pub fn from_unix(since_epoch: Duration) -> WallTime {
        WallTime(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }

    /// The given system time; times before the epoch map to the epoch.
    pub fn from_system_time(time: SystemTime) -> WallTime {
        WallTime::from_unix(time.duration_since(UNIX_EPOCH).unwrap_or_default())
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus `d` (whole milliseconds, saturating).
    pub fn saturating_add(self, d: Duration) -> WallTime {
        WallTime(
            self.0
                .saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: WallTime) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

/// A configuration value outside its rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElectionError {
    /// The lease must last long enough to be renewed three times per period.
    #[error("lease_duration = {0:?}: must be at least 3 ms (renewed every lease_duration / 3)")]
    LeaseTooShort(Duration),
    /// The skew margin must be shorter than the lease.
    #[error("skew_margin = {skew:?}: must be shorter than lease_duration ({lease:?})")]
    SkewNotBelowLease {
        /// The configured skew margin.
        skew: Duration,
        /// The configured lease duration.
        lease: Duration,
    },
}

/// Validated election timers. Build with [`ElectionConfig::new`] or take the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElectionConfig {
    lease_duration: Duration,
    skew_margin: Duration,
    handback_after: Duration,
}

impl ElectionConfig {
    /// Default lease: 6 s, renewed every 2 s.
    pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(6);
    /// Default skew margin: 5 s, the gossip layer's clock-skew bound (see the module doc).
    pub const DEFAULT_SKEW_MARGIN: Duration = Duration::from_secs(5);
    /// Default hysteresis before a better node gets the role back: 10 s.
    pub const DEFAULT_HANDBACK_AFTER: Duration = Duration::from_secs(10);

    /// Validates the timers: `lease_duration` ≥ 3 ms (so `lease_duration / 3` is at least 1 ms)
    /// and `skew_margin` < `lease_duration`. Any `handback_after` is accepted (zero disables
    /// the hysteresis).
    pub fn new(
        lease_duration: Duration,
        skew_margin: Duration,
        handback_after: Duration,
    ) -> Result<ElectionConfig, ElectionError> {
        if lease_duration < Duration::from_millis(3) {
            return Err(ElectionError::LeaseTooShort(lease_duration));
        }
        if skew_margin >= lease_duration {
            return Err(ElectionError::SkewNotBelowLease {
                skew: skew_margin,
                lease: lease_duration,
            });
        }
        Ok(ElectionConfig {
            lease_duration,
            skew_margin,
            handback_after,
        })
    }

    /// How long an advertised lease lasts after a renewal.
    pub fn lease_duration(&self) -> Duration {
        self.lease_duration
    }

    /// How far past `until` an observer still honours a lease.
    pub fn skew_margin(&self) -> Duration {
        self.skew_margin
    }

    /// How long a better node must be stable before the holder yields to it.
    pub fn handback_after(&self) -> Duration {
        self.handback_after
    }

    /// How often a holder renews: `lease_duration / 3`.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / 3
    }

    /// How long a freshly started node waits before claiming a free lease: `lease_duration`.
    pub fn startup_hold(&self) -> Duration {
        self.lease_duration
    }
}

impl Default for ElectionConfig {
    fn default() -> ElectionConfig {
        ElectionConfig {
            lease_duration: Self::DEFAULT_LEASE_DURATION,
            skew_margin: Self::DEFAULT_SKEW_MARGIN,
            handback_after: Self::DEFAULT_HANDBACK_AFTER,
        }
    }
}

/// A publisher lease as advertised through gossip.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// The node holding the lease; always the advertising node.
    pub holder: NodeId,
    /// End of validity on the holder's clock; observers add the skew margin.
    pub until: WallTime,
    /// Tenure number: higher is newer.
    pub term: u64,
    /// Set while the holder hands the role to this node and has stopped publishing.
    /// (Always serialized: the gossip encoding, postcard, is not self-describing, so a field
    /// must never be skipped.)
    pub yield_to: Option<NodeId>,
}

/// What this node does about descriptors: the one role type, which the election decides, the
/// gossip advertises (`NodeState.role`) and the status shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Hosts intro points only. (Variant order is the gossip's wire value: Standby 0,
    /// Publisher 1.)
    Standby,
    /// Builds and uploads the merged descriptor.
    Publisher,
}

/// Why the decision is what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// Publisher: no valid lease was seen and this node is the candidate; took a new term.
    Claimed,
    /// Publisher: `from` yielded to this node; took a new term.
    TookOver {
        /// The node that yielded.
        from: NodeId,
    },
    /// Publisher: holds the lease (renewed on schedule).
    Holding,
    /// Standby: holds the lease but hands the role to `to` and waits for it to take over.
    Yielding {
        /// The better node.
        to: NodeId,
    },
    /// Standby: dropped its lease because `winner` holds one that wins the conflict.
    SteppedDown {
        /// The holder that stays.
        winner: NodeId,
    },
    /// Standby: `holder` has a valid lease.
    LeaseHeld {
        /// The holder (the strongest, if several).
        holder: NodeId,
    },
    /// Standby: no valid lease, and `candidate` is the one to claim it.
    AwaitingCandidate {
        /// The better placed node.
        candidate: NodeId,
    },
    /// Standby: candidate without a visible lease, but started too recently to claim.
    StartupHold {
        /// When the hold ends.
        until: WallTime,
    },
    /// Standby: another node's key holds this node's id (the earlier claim); the cluster
    /// refuses this node until it gets an id of its own. Set by the membership agent.
    DuplicateId {
        /// The holder's WireGuard public key (base64).
        holder_key: String,
    },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Claimed => write!(f, "claimed: no valid lease seen"),
            Reason::TookOver { from } => write!(f, "took over from {from}"),
            Reason::Holding => write!(f, "holds the lease"),
            Reason::Yielding { to } => write!(f, "handing the role to {to}"),
            Reason::SteppedDown { winner } => write!(f, "stepped down: {winner} holds the lease"),
            Reason::LeaseHeld { holder } => write!(f, "{holder} holds the lease"),
            Reason::AwaitingCandidate { candidate } => {
                write!(f, "waiting for {candidate} to claim")
            }
            Reason::StartupHold { .. } => write!(f, "startup hold"),
            Reason::DuplicateId { holder_key } => write!(
                f,
                "refused: another node ({holder_key}) holds this node id; give this node its own node.id"
            ),
        }
    }
}

/// The outcome of one observation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether to publish.
    pub role: Role,
    /// The lease to advertise through gossip (`None`: advertise no lease). A yielding holder
    /// advertises a lease while its role is [`Role::Standby`].
    pub lease: Option<Lease>,
    /// Why.
    pub reason: Reason,
    /// Observe again at this time at the latest, even if the view does not change (renewal,
    /// a lease running out, hysteresis maturing, end of the startup hold).
    pub next_check: Option<WallTime>,
}

/// A live peer as seen through gossip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    /// The peer's node id.
    pub id: NodeId,
    /// Its priority (lower is better).
    pub priority: u32,
    /// Whether it is healthy enough to publish (target reachable, Arti healthy).
    pub eligible: bool,
    /// The lease it advertises, if any.
    pub lease: Option<Lease>,
}

/// What the election sees: this node plus the peers the failure detector holds live.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MembershipView {
    /// This node's id.
    pub self_id: NodeId,
    /// This node's priority.
    pub self_priority: u32,
    /// Whether this node is healthy enough to publish.
    pub self_eligible: bool,
    /// Live peers. Entries with this node's id are ignored; of duplicate ids the first counts.
    pub peers: Vec<PeerState>,
}

/// This node's own lease while it holds one.
#[derive(Debug, Clone)]
struct Own {
    lease: Lease,
    /// When the lease was last (re)issued, on this node's clock.
    issued: WallTime,
    /// When `yield_to` was set to its current value.
    yield_since: Option<WallTime>,
}

/// Since when a peer has been stable (live, eligible, not stale, same priority).
#[derive(Debug, Clone, Copy)]
struct Stable {
    since: WallTime,
    priority: u32,
}

/// Candidate order: eligible first, then priority, then id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank<'a> {
    unfit: bool,
    priority: u32,
    id: &'a str,
}

/// A lease holder in a conflict.
#[derive(Debug, Clone, Copy)]
struct Contender<'a> {
    id: &'a str,
    priority: u32,
    eligible: bool,
    lease: &'a Lease,
}

impl<'a> Contender<'a> {
    /// Smaller wins (rule 2 of the module doc).
    #[allow(clippy::type_complexity)]
    fn key(&self, other: &str, candidate: &str) -> (bool, bool, bool, Reverse<u64>, u32, &'a str) {
        (
            self.lease.yield_to.as_deref() == Some(other),
            self.id != candidate,
            !self.eligible,
            Reverse(self.lease.term),
            self.priority,
            self.id,
        )
    }

    fn beats(&self, other: &Contender<'_>, candidate: &str) -> bool {
        self.key(other.id, candidate) < other.key(self.id, candidate)
    }
}

/// A peer's advertised lease as judged now.
#[derive(Debug, Clone, Copy)]
enum PeerLease<'a> {
    None,
    Valid(&'a Lease),
    Stale,
}

/// The election state of one node.
#[derive(Debug, Clone)]
pub struct Election {
    config: ElectionConfig,
    started: Option<WallTime>,
    own: Option<Own>,
    max_term: u64,
    stable: HashMap<NodeId, Stable>,
}

impl Election {
    /// A node that has seen nothing yet; its first observation starts the startup hold.
    pub fn new(config: ElectionConfig) -> Election {
        Election {
            config,
            started: None,
            own: None,
            max_term: 0,
            stable: HashMap::new(),
        }
    }

    /// The timers in use.
    pub fn config(&self) -> &ElectionConfig {
        &self.config
    }

    /// The lease this node holds (also while yielding), as last decided.
    pub fn lease(&self) -> Option<&Lease> {
        self.own.as_ref().map(|o| &o.lease)
    }

    /// The highest term seen so far.
    pub fn max_term(&self) -> u64 {
        self.max_term
    }

    /// Applies the rules of the module doc to `view` at `now` and says what to do.
    pub fn observe(&mut self, now: WallTime, view: &MembershipView) -> Decision {
        let cfg = self.config;
        let started = *self.started.get_or_insert(now);
        let me = view.self_id.as_str();

        // Live peers, their leases judged now.
        let mut seen = HashSet::new();
        let peers: Vec<(&PeerState, PeerLease<'_>)> = view
            .peers
            .iter()
            .filter(|p| p.id != me && seen.insert(p.id.as_str()))
            .map(|p| {
                let lease = match &p.lease {
                    Some(l) if l.holder == p.id => {
                        self.max_term = self.max_term.max(l.term);
                        if now <= l.until.saturating_add(cfg.skew_margin) {
                            PeerLease::Valid(l)
                        } else {
                            PeerLease::Stale
                        }
                    }
                    _ => PeerLease::None,
                };
                (p, lease)
            })
            .collect();

        // Rule 1: a lease not renewed in time has lapsed.
        if self
            .own
            .as_ref()
            .is_some_and(|o| o.lease.holder != me || now > o.lease.until)
        {
            self.own = None;
        }
        if let Some(own) = &self.own {
            self.max_term = self.max_term.max(own.lease.term);
        }

        // Stability clocks.
        let good = |p: &PeerState, l: &PeerLease<'_>| p.eligible && !matches!(l, PeerLease::Stale);
        self.stable
            .retain(|id, _| peers.iter().any(|(p, l)| p.id == *id && good(p, l)));
        for (p, l) in &peers {
            if !good(p, l) {
                continue;
            }
            let entry = self.stable.entry(p.id.clone()).or_insert(Stable {
                since: now,
                priority: p.priority,
            });
            if entry.priority != p.priority {
                *entry = Stable {
                    since: now,
                    priority: p.priority,
                };
            }
        }

        // The candidate.
        let mut candidate = Rank {
            unfit: !view.self_eligible,
            priority: view.self_priority,
            id: me,
        };
        for (p, l) in &peers {
            if matches!(l, PeerLease::Stale) {
                continue;
            }
            let rank = Rank {
                unfit: !p.eligible,
                priority: p.priority,
                id: &p.id,
            };
            candidate = candidate.min(rank);
        }

        let holders: Vec<Contender<'_>> = peers
            .iter()
            .filter_map(|(p, l)| match l {
                PeerLease::Valid(lease) => Some(Contender {
                    id: &p.id,
                    priority: p.priority,
                    eligible: p.eligible,
                    lease,
                }),
                _ => None,
            })
            .collect();
        let expiries = holders
            .iter()
            .map(|h| {
                h.lease
                    .until
                    .saturating_add(cfg.skew_margin)
                    .saturating_add(Duration::from_millis(1))
            })
            .min();

        if let Some(own) = &self.own {
            // Rule 2: conflict with other holders.
            let mine = Contender {
                id: me,
                priority: view.self_priority,
                eligible: view.self_eligible,
                lease: &own.lease,
            };
            let winner = holders
                .iter()
                .filter(|h| h.beats(&mine, candidate.id))
                .min_by(|a, b| a.key(me, candidate.id).cmp(&b.key(me, candidate.id)));
            if let Some(w) = winner {
                let winner = w.id.to_owned();
                self.own = None;
                return Decision {
                    role: Role::Standby,
                    lease: None,
                    reason: Reason::SteppedDown { winner },
                    next_check: expiries,
                };
            }
            return self.hold(now, me, candidate.id);
        }

        // Rule 3, taker's side: a valid lease yields to this node.
        let fit = view.self_eligible || candidate.unfit;
        if let Some(from) = holders
            .iter()
            .find(|h| h.lease.yield_to.as_deref() == Some(me))
            .filter(|_| fit)
        {
            let from = from.id.to_owned();
            return self.claim(now, me, Reason::TookOver { from });
        }
        if let Some(h) = holders.iter().min_by_key(|c| {
            (
                c.lease.yield_to.is_some(),
                c.id != candidate.id,
                Reverse(c.lease.term),
                c.priority,
                c.id,
            )
        }) {
            return Decision {
                role: Role::Standby,
                lease: None,
                reason: Reason::LeaseHeld {
                    holder: h.id.to_owned(),
                },
                next_check: expiries,
            };
        }
        if candidate.id != me {
            return Decision {
                role: Role::Standby,
                lease: None,
                reason: Reason::AwaitingCandidate {
                    candidate: candidate.id.to_owned(),
                },
                next_check: None,
            };
        }
        // Rule 4: claim a free lease after the startup hold.
        let hold_end = started.saturating_add(cfg.startup_hold());
        if now < hold_end {
            return Decision {
                role: Role::Standby,
                lease: None,
                reason: Reason::StartupHold { until: hold_end },
                next_check: Some(hold_end),
            };
        }
        self.claim(now, me, Reason::Claimed)
    }

    /// Takes a new lease with a term above every term seen.
    fn claim(&mut self, now: WallTime, me: &str, reason: Reason) -> Decision {
        self.max_term = self.max_term.saturating_add(1);
        let lease = Lease {
            holder: me.to_owned(),
            until: now.saturating_add(self.config.lease_duration),
            term: self.max_term,
            yield_to: None,
        };
        self.own = Some(Own {
            lease: lease.clone(),
            issued: now,
            yield_since: None,
        });
        Decision {
            role: Role::Publisher,
            lease: Some(lease),
            reason,
            next_check: Some(now.saturating_add(self.config.renew_interval())),
        }
    }

    /// Rules 1 and 3 for a holder that won every conflict: renew, yield or take back a yield.
    fn hold(&mut self, now: WallTime, me: &str, candidate: &str) -> Decision {
        let cfg = self.config;
        let Some(own) = self.own.as_mut() else {
            // Unreachable: called only while holding; answer as a plain standby.
            return Decision {
                role: Role::Standby,
                lease: None,
                reason: Reason::AwaitingCandidate {
                    candidate: candidate.to_owned(),
                },
                next_check: None,
            };
        };
        let mut next = vec![];
        let mut target = None;
        if candidate != me {
            if let Some(stable) = self.stable.get_mut(candidate) {
                let ripe = stable.since.saturating_add(cfg.handback_after);
                if now >= ripe {
                    target = Some(candidate);
                } else {
                    next.push(ripe);
                }
                // A yield not taken within a lease is withdrawn; the hysteresis starts over.
                if target.is_some() && own.lease.yield_to.as_deref() == target {
                    if let Some(since) = own.yield_since {
                        if now >= since.saturating_add(cfg.lease_duration) {
                            stable.since = now;
                            target = None;
                            next.push(now.saturating_add(cfg.handback_after));
                        }
                    }
                }
            }
        }
        let yield_changed = own.lease.yield_to.as_deref() != target;
        if yield_changed
            || now < own.issued
            || now >= own.issued.saturating_add(cfg.renew_interval())
        {
            own.lease.until = now.saturating_add(cfg.lease_duration);
            own.issued = now;
            if yield_changed {
                own.lease.yield_to = target.map(str::to_owned);
                own.yield_since = target.map(|_| now);
            }
        }
        next.push(own.issued.saturating_add(cfg.renew_interval()));
        if let Some(since) = own.yield_since {
            next.push(since.saturating_add(cfg.lease_duration));
        }
        let (role, reason) = match &own.lease.yield_to {
            Some(to) => (Role::Standby, Reason::Yielding { to: to.clone() }),
            None => (Role::Publisher, Reason::Holding),
        };
        Decision {
            role,
            lease: Some(own.lease.clone()),
            reason,
            next_check: next.into_iter().min(),
        }
    }
}
