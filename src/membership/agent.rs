//! One node's cluster logic without I/O: membership plus the publisher election, stepped with
//! the node's clock. The daemon's membership task and the simulator run the same [`Agent`], so
//! what the simulation shows is what a node does.

use crate::election::{Decision, Election, ElectionConfig, Role, WallTime};

use super::core::Membership;
use super::wire::{AdvertisedRole, Health, IptSummary};

/// Membership and election of one node.
pub struct Agent {
    membership: Membership,
    election: Election,
    decision: Option<Decision>,
    role_changes: u64,
}

impl Agent {
    /// An agent around `membership`, electing with `election`.
    pub fn new(membership: Membership, election: ElectionConfig) -> Agent {
        Agent {
            membership,
            election: Election::new(election),
            decision: None,
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
        let view = self.membership.election_view();
        let decision = self.election.observe(now, &view);
        let mut local = self.membership.local().clone();
        local.lease = decision.lease.clone();
        local.role = match decision.role {
            Role::Publisher => AdvertisedRole::Publisher,
            Role::Standby => AdvertisedRole::Standby,
        };
        self.membership.set_local(now, local);
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

    /// Sets this node's intro-point summary (advertised at once if it changed).
    pub fn set_intro_points(&mut self, now: WallTime, ipts: IptSummary) {
        let mut local = self.membership.local().clone();
        local.intro_points = ipts;
        self.membership.set_local(now, local);
    }
}
