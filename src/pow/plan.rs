//! The decisions, pure and driven by the caller's clock: when a node relaunches its service to
//! load new seeds ([`Planner`]), and which suggested effort the descriptor advertises
//! ([`advertise`]).
//!
//! Seeds are loaded two epochs at a time (the current and the next). Epoch `e`'s seed is
//! advertised from `start(e)`; a node loads `[e, e+1]` at `start(e) + offset`, its own offset
//! (from its node id) within the stagger window `min(rotation / 2, 10 min)`. So from
//! `start(e-1) + offset` to `start(e+1) + offset` the node verifies `e`'s seed: the whole time
//! it is advertised, and while clients still hold it; and the nodes relaunch one after another,
//! not all at once. A period whose blinded key arrives later (the next time period) is loaded
//! the same way, `offset` after it was first seen.

use std::time::{Duration, SystemTime};

use blake2::digest::Digest as _;
use tor_hscrypto::time::TimePeriod;

use super::seeds::Schedule;

/// The longest stagger window.
const MAX_STAGGER: Duration = Duration::from_secs(10 * 60);

/// How long after a failed relaunch the next try is.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// What a node's running service verifies: the epoch (its seeds and the next epoch's) for
/// these periods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The epoch.
    pub epoch: u64,
    /// The periods, sorted.
    pub periods: Vec<TimePeriod>,
}

/// Decides when the service must be relaunched with new seeds.
#[derive(Debug, Clone)]
pub struct Planner {
    schedule: Schedule,
    offset: Duration,
    loaded: Option<Loaded>,
    new_periods_since: Option<SystemTime>,
    retry_at: Option<SystemTime>,
}

impl Planner {
    /// A planner for the node `node_id` (its offset comes from the id).
    pub fn new(schedule: Schedule, node_id: &str) -> Planner {
        let stagger = (schedule.rotation() / 2).min(MAX_STAGGER);
        let digest = blake2::Blake2s256::digest(node_id.as_bytes());
        let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        let offset = Duration::from_secs(n % stagger.as_secs().max(1));
        Planner {
            schedule,
            offset,
            loaded: None,
            new_periods_since: None,
            retry_at: None,
        }
    }

    /// The schedule.
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// This node's offset into each epoch.
    pub fn offset(&self) -> Duration {
        self.offset
    }

    /// What the service runs with (`None` before the first launch).
    pub fn loaded(&self) -> Option<&Loaded> {
        self.loaded.as_ref()
    }

    /// What a launch at `now` loads, for the periods whose blinded keys the keystore holds.
    pub fn wanted(&self, now: SystemTime, periods: &[TimePeriod]) -> Loaded {
        let mut periods = periods.to_vec();
        periods.sort_by_key(|p| (p.length().as_minutes(), p.interval_num()));
        periods.dedup();
        Loaded {
            epoch: self.schedule.epoch_at(now),
            periods,
        }
    }

    /// The seeds to relaunch with, if a relaunch is due at `now`.
    pub fn due(&mut self, now: SystemTime, periods: &[TimePeriod]) -> Option<Loaded> {
        let wanted = self.wanted(now, periods);
        let Some(loaded) = &self.loaded else {
            return Some(wanted);
        };
        if self.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        let missing = wanted.periods.iter().any(|p| !loaded.periods.contains(p));
        if !missing {
            self.new_periods_since = None;
        }
        let epoch_due = if wanted.epoch == loaded.epoch {
            false
        } else if wanted.epoch == loaded.epoch + 1 {
            now >= self.schedule.start(wanted.epoch) + self.offset
        } else {
            // An epoch skipped (a long failure) or the clock went back: reload at once.
            true
        };
        let periods_due = missing && {
            let since = *self.new_periods_since.get_or_insert(now);
            now >= since + self.offset
        };
        (epoch_due || periods_due).then_some(wanted)
    }

    /// The service now runs with `loaded`.
    pub fn launched(&mut self, loaded: Loaded) {
        self.loaded = Some(loaded);
        self.new_periods_since = None;
        self.retry_at = None;
    }

    /// A relaunch failed at `now`: the next try is [`RETRY_AFTER`] later.
    pub fn failed(&mut self, now: SystemTime) {
        self.retry_at = Some(now + RETRY_AFTER);
    }
}

/// The suggested effort to advertise after `last`, from every node's (healthy, own suggestion):
/// the highest of the healthy nodes' suggestions (0 when none is healthy), by [`advertise`].
pub fn advertise_for(
    last: u32,
    nodes: impl IntoIterator<Item = (bool, u32)>,
    min: u32,
    max: u32,
) -> u32 {
    let highest = nodes
        .into_iter()
        .filter(|(healthy, _)| *healthy)
        .map(|(_, e)| e)
        .max()
        .unwrap_or(0);
    advertise(last, highest, min, max)
}

/// The suggested effort to advertise, given the last advertised and the highest suggestion of
/// the healthy nodes: kept within `[min, max]`, and moved only when it changes by at least
/// 15 % (Arti's `SUGGESTED_EFFORT_DEADZONE`, from the PoW spec), so small wobbles do not
/// republish the descriptor.
pub fn advertise(last: u32, highest: u32, min: u32, max: u32) -> u32 {
    let target = highest.clamp(min, max.max(min));
    if last == target {
        return last;
    }
    let out_of_bounds = last < min || last > max.max(min);
    let change = (f64::from(target) - f64::from(last)).abs() / f64::from(last.max(1));
    if last == 0 || out_of_bounds || change >= 0.15 {
        target
    } else {
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const HOUR: Duration = Duration::from_secs(3600);

    fn tp(n: u64) -> TimePeriod {
        TimePeriod::from_parts(1440, n, 43200)
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_node_loads_the_next_epoch_at_its_own_offset_and_never_before() {
        let s = Schedule::new(2 * HOUR);
        let mut p = Planner::new(s, "node-a");
        assert!(p.offset() < Duration::from_secs(600));
        let start = 1_000 * 7200;
        // First launch: load at once.
        let first = p.due(at(start + 100), &[tp(1)]).unwrap();
        assert_eq!(first.epoch, 1_000);
        p.launched(first);
        assert_eq!(p.due(at(start + 5000), &[tp(1)]), None);
        let boundary = start + 7200;
        // Before the next epoch plus the offset: nothing.
        let just_before = boundary + p.offset().as_secs();
        if just_before > boundary {
            assert_eq!(p.due(at(just_before - 1), &[tp(1)]), None);
        }
        let next = p.due(at(just_before), &[tp(1)]).unwrap();
        assert_eq!(next.epoch, 1_001);
        // Not launched yet: still due.
        assert!(p.due(at(just_before + 1), &[tp(1)]).is_some());
        p.launched(next);
        assert_eq!(p.due(at(just_before + 2), &[tp(1)]), None);
    }

    #[test]
    fn nodes_spread_their_relaunches_over_the_window() {
        let s = Schedule::new(2 * HOUR);
        let offsets: std::collections::BTreeSet<u64> = (0..20)
            .map(|i| Planner::new(s, &format!("n{i}")).offset().as_secs())
            .collect();
        assert!(offsets.len() >= 15, "{offsets:?}");
        assert!(offsets.iter().all(|&o| o < 600));
        // A short rotation narrows the window to half of it.
        assert!(
            Planner::new(Schedule::new(Duration::from_secs(120)), "n1").offset()
                < Duration::from_secs(60)
        );
    }

    #[test]
    fn a_new_period_is_loaded_one_offset_after_it_appears_and_a_dropped_one_needs_nothing() {
        let s = Schedule::new(2 * HOUR);
        let mut p = Planner::new(s, "node-b");
        let t0 = 1_000 * 7200 + 10;
        let l = p.due(at(t0), &[tp(1), tp(2)]).unwrap();
        p.launched(l);
        // tp(1) leaves: no relaunch.
        assert_eq!(p.due(at(t0 + 60), &[tp(2)]), None);
        // tp(3) arrives at t0+100: due offset later.
        let seen = t0 + 100;
        let off = p.offset().as_secs();
        let r = p.due(at(seen), &[tp(2), tp(3)]);
        assert_eq!(r.is_some(), off == 0);
        if off > 0 {
            assert_eq!(p.due(at(seen + off - 1), &[tp(2), tp(3)]), None);
        }
        let r = p.due(at(seen + off), &[tp(3), tp(2)]).unwrap();
        assert_eq!(r.periods, vec![tp(2), tp(3)]);
        p.launched(r);
        assert_eq!(p.due(at(seen + off + 1), &[tp(2), tp(3)]), None);
    }

    #[test]
    fn a_failed_relaunch_is_retried_later_and_a_skipped_epoch_at_once() {
        let s = Schedule::new(HOUR);
        let mut p = Planner::new(s, "node-c");
        let t0 = 500 * 3600;
        let l = p.due(at(t0), &[tp(1)]).unwrap();
        p.launched(l);
        let due_at = t0 + 3600 + p.offset().as_secs();
        assert!(p.due(at(due_at), &[tp(1)]).is_some());
        p.failed(at(due_at));
        assert_eq!(p.due(at(due_at + 29), &[tp(1)]), None);
        assert!(p.due(at(due_at + 30), &[tp(1)]).is_some());
        // Two epochs later (the failure lasted): due at once, not at the offset.
        let later = t0 + 2 * 3600;
        assert_eq!(p.due(at(later), &[tp(1)]).unwrap().epoch, 502);
        // The clock went back an epoch: due at once too.
        p.launched(Loaded {
            epoch: 502,
            periods: vec![tp(1)],
        });
        assert_eq!(p.due(at(t0), &[tp(1)]).unwrap().epoch, 500);
    }

    #[test]
    fn the_advertised_effort_moves_by_arti_s_rule_within_bounds() {
        assert_eq!(advertise(0, 0, 0, 10_000), 0);
        assert_eq!(advertise(0, 5, 0, 10_000), 5);
        assert_eq!(
            advertise(100, 110, 0, 10_000),
            100,
            "10 % is inside the dead zone"
        );
        assert_eq!(advertise(100, 115, 0, 10_000), 115);
        assert_eq!(advertise(100, 86, 0, 10_000), 100);
        assert_eq!(advertise(100, 85, 0, 10_000), 85);
        assert_eq!(advertise(100, 0, 0, 10_000), 0);
        assert_eq!(advertise(100, 50_000, 0, 10_000), 10_000, "capped");
        assert_eq!(advertise(0, 0, 20, 10_000), 20, "the floor");
        assert_eq!(advertise(20, 21, 20, 10_000), 20);
        assert_eq!(
            advertise(5, 5, 20, 10_000),
            20,
            "a floor raised later applies at once"
        );
    }

    #[test]
    fn the_busiest_healthy_node_sets_the_effort_and_unhealthy_ones_do_not() {
        let nodes = [(true, 40), (false, 900), (true, 120)];
        assert_eq!(advertise_for(0, nodes, 0, 10_000), 120);
        assert_eq!(advertise_for(0, [(false, 900)], 0, 10_000), 0);
        assert_eq!(advertise_for(0, [(false, 900)], 16, 10_000), 16);
        assert_eq!(
            advertise_for(100, [(true, 110), (true, 90)], 0, 10_000),
            100
        );
    }
}
