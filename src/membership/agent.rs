//! One node's cluster logic without I/O: membership plus the publisher election, stepped with
//! the node's clock. The daemon's membership task and the simulator run the same [`Agent`], so
//! what the simulation shows is what a node does.

use crate::election::{Decision, Election, ElectionConfig, Reason, Role, WallTime};

use super::core::Membership;
use super::wire::{Health, IptWire, KeyCoverage};

/// Membership and election of one node.
pub struct Agent {
    membership: Membership,
    election: Election,
    decision: Option<Decision>,
    last_observed: Option<WallTime>,
    role_changes: u64,
}

/// The election is observed at least this often.
const MAX_OBSERVE_GAP: std::time::Duration = std::time::Duration::from_secs(1);

impl Agent {
    /// An agent around `membership`, electing with `election`.
    pub fn new(membership: Membership, election: ElectionConfig) -> Agent {
        Agent {
            membership,
            election: Election::new(election),
            decision: None,
            last_observed: None,
            role_changes: 0,
        }
    }

    /// The membership state machine (to feed datagrams and timers, read views).
    pub fn membership(&mut self) -> &mut Membership {
        &mut self.membership
    }

    /// Read-only access to the membership.
    pub fn membership_ref(&self) -> &Membership {
        &self.membership
    }

    /// Periodic step, at least every 100 ms and after inputs: membership duties, then the
    /// election on the current view; the decision's lease and role go into the advertised
    /// state (sent at once when they change). Returns the role.
    pub fn step(&mut self, now: WallTime) -> Role {
        self.membership.tick(now);
        // The election runs when its inputs changed, when it asked to be asked again, and at
        // least every second; not on every step (a 1000-member view costs).
        let due = self.membership.take_changed()
            || self.decision.is_none()
            || self
                .decision
                .as_ref()
                .is_some_and(|d| d.next_check.is_some_and(|t| now >= t))
            || self
                .last_observed
                .is_none_or(|t| now.saturating_duration_since(t) >= MAX_OBSERVE_GAP)
            || self.last_observed.is_some_and(|t| now < t);
        if !due {
            return self.role();
        }
        self.last_observed = Some(now);
        let view = self.membership.election_view();
        let mut decision = self.election.observe(now, &view);
        if let Some(holder) = self.membership.id_taken_by() {
            // Another key holds this node's id: the cluster refuses this node, so it never
            // publishes nor holds a lease, whatever its own view says.
            decision.role = Role::Standby;
            decision.lease = None;
            decision.reason = Reason::DuplicateId {
                holder_key: holder
                    .public_key()
                    .map(|k| k.to_base64())
                    .unwrap_or_default(),
            };
        }
        let mut local = self.membership.local().clone();
        local.lease = decision.lease.clone();
        local.role = decision.role;
        self.membership.set_local(now, local);
        // Our own state change is not news for the election.
        let _ = self.membership.take_changed();
        let before = self.decision.as_ref().map(|d| d.role);
        if before != Some(decision.role) {
            if before.is_some() {
                self.role_changes += 1;
            }
            tracing::info!(role = ?decision.role, reason = ?decision.reason, "election");
        }
        let role = decision.role;
        self.decision = Some(decision);
        role
    }

    /// The last decision.
    pub fn decision(&self) -> Option<&Decision> {
        self.decision.as_ref()
    }

    /// The current role (Standby before the first step).
    pub fn role(&self) -> Role {
        self.decision.as_ref().map_or(Role::Standby, |d| d.role)
    }

    /// How often the role changed after the first decision.
    pub fn role_changes(&self) -> u64 {
        self.role_changes
    }

    /// Sets this node's health (advertised at once if it changed).
    pub fn set_health(&mut self, now: WallTime, health: Health) {
        let mut local = self.membership.local().clone();
        local.health = health;
        self.membership.set_local(now, local);
    }

    /// Sets this node's master key coverage (advertised at once if it changed).
    pub fn set_keys(&mut self, now: WallTime, keys: KeyCoverage) {
        let mut local = self.membership.local().clone();
        local.keys = keys;
        self.membership.set_local(now, local);
    }

    /// Sets this node's own suggested PoW effort (advertised at once if it changed).
    pub fn set_pow_effort(&mut self, now: WallTime, effort: u32) {
        let mut local = self.membership.local().clone();
        local.pow_effort = effort;
        self.membership.set_local(now, local);
    }

    /// Sets this node's intro points (advertised at once if they changed).
    pub fn set_intro_points(&mut self, now: WallTime, generation: u64, ipts: Vec<IptWire>) {
        self.membership.set_local_ipts(now, generation, ipts);
    }
}
