//! The self-check's decisions: a pure state machine over probe results and time (tests drive
//! both by hand).
//!
//! - `fail_after` consecutive failed probes: the Tor side is broken → [`Action::Withdraw`]
//!   (the node advertises `tor_broken`: its intro points leave the descriptor, and it may not
//!   publish), and the first repair is due at once;
//! - while broken, repairs come on a jittered backoff (Arti's `RetryDelay`, between
//!   `backoff_min` and `backoff_max`): the first relaunches the onion service, every later
//!   one also retires every circuit (new circuits, new intro circuits);
//! - `recover_after` consecutive good probes: working again → [`Action::Restore`].

use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};
use tor_basic_utils::retry::RetryDelay;

use crate::config::RepairConfig;

/// What the node does about its Tor side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Advertise `tor_broken`: leave the descriptor, stop being eligible to publish.
    Withdraw,
    /// Advertise healthy again (if the target is up).
    Restore,
    /// Repair.
    Repair(RepairStep),
}

/// One repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairStep {
    /// Drop the onion service and launch it again (new intro-point circuits).
    RelaunchService,
    /// Retire every circuit of Arti's onion-service pool, then relaunch the service.
    RetireCircuitsAndRelaunch,
}

/// Whether this node's Tor side works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TorState {
    /// No probe has finished yet.
    Unknown,
    /// The last probes reached the intro-point relays.
    Working,
    /// `fail_after` probes in a row failed; withdrawn and repairing.
    Broken,
}

/// The self-check as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairStatus {
    /// Whether the self-check runs.
    pub enabled: bool,
    /// The Tor side's state.
    pub state: TorState,
    /// Seconds since the state began (broken: since the break).
    pub for_secs: u64,
    /// The last failed probe's error.
    pub last_error: Option<String>,
    /// Probes run, and how many failed.
    pub probes: u64,
    /// Probes that failed.
    pub probes_failed: u64,
    /// Repairs done since start.
    pub repairs: u64,
    /// The last repair done.
    pub last_repair: Option<RepairStep>,
    /// Seconds until the next repair (while broken).
    pub next_repair_in_secs: Option<u64>,
}

impl RepairStatus {
    /// The status of a node whose self-check is off.
    pub fn disabled() -> RepairStatus {
        RepairStatus {
            enabled: false,
            state: TorState::Unknown,
            for_secs: 0,
            last_error: None,
            probes: 0,
            probes_failed: 0,
            repairs: 0,
            last_repair: None,
            next_repair_in_secs: None,
        }
    }
}

/// The self-check's state.
#[derive(Debug)]
pub struct Monitor {
    fail_after: u32,
    recover_after: u32,
    backoff_max: Duration,
    backoff_min: Duration,
    state: TorState,
    since: Instant,
    /// Consecutive results against the current state.
    streak: u32,
    last_error: Option<String>,
    probes: u64,
    probes_failed: u64,
    repairs: u64,
    last_repair: Option<RepairStep>,
    /// Repairs in the current broken spell.
    spell_repairs: u32,
    next_repair: Option<Instant>,
    delay: RetryDelay,
}

impl Monitor {
    /// A monitor started at `now` (state unknown, which counts as working: a node is not
    /// withdrawn before its first failures).
    pub fn new(config: &RepairConfig, now: Instant) -> Monitor {
        Monitor {
            fail_after: config.fail_after.max(1),
            recover_after: config.recover_after.max(1),
            backoff_min: config.backoff_min,
            backoff_max: config.backoff_max.max(config.backoff_min),
            state: TorState::Unknown,
            since: now,
            streak: 0,
            last_error: None,
            probes: 0,
            probes_failed: 0,
            repairs: 0,
            last_repair: None,
            spell_repairs: 0,
            next_repair: None,
            delay: RetryDelay::from_duration(config.backoff_min),
        }
    }

    /// The current state.
    pub fn state(&self) -> TorState {
        self.state
    }

    /// Records one probe finished at `now`; returns the withdraw/restore it causes.
    pub fn record(&mut self, now: Instant, result: Result<(), String>) -> Option<Action> {
        self.record_with_traffic(now, result, 0)
    }

    /// Records one probe finished at `now`, with the rendezvous handshakes the node completed
    /// since the previous one. Any at all overrule a failed probe (it still counts in
    /// `probes_failed` and `last_error`): they prove what the probe tests (circuits get built
    /// through this node's guards, its intro points deliver), while a node under an
    /// introduction flood, its CPU saturated, builds probe circuits too slowly and serves real
    /// clients all the same. Withdrawing and relaunching it then would throw away its PoW
    /// queue and its effort measurement, just when they are needed.
    pub fn record_with_traffic(
        &mut self,
        now: Instant,
        result: Result<(), String>,
        rendezvous_since: u64,
    ) -> Option<Action> {
        self.probes += 1;
        let ok = result.is_ok() || rendezvous_since > 0;
        if let Err(e) = result {
            self.probes_failed += 1;
            self.last_error = Some(e);
        }
        match (self.state, ok) {
            (TorState::Unknown, true) => {
                self.enter(TorState::Working, now);
                None
            }
            (TorState::Working, true) | (TorState::Broken, false) => {
                self.streak = 0;
                None
            }
            (TorState::Unknown | TorState::Working, false) => {
                self.streak += 1;
                if self.streak < self.fail_after {
                    return None;
                }
                self.enter(TorState::Broken, now);
                self.spell_repairs = 0;
                self.delay.reset();
                self.next_repair = Some(now);
                Some(Action::Withdraw)
            }
            (TorState::Broken, true) => {
                self.streak += 1;
                if self.streak < self.recover_after {
                    return None;
                }
                self.enter(TorState::Working, now);
                self.next_repair = None;
                Some(Action::Restore)
            }
        }
    }

    fn enter(&mut self, state: TorState, now: Instant) {
        self.state = state;
        self.since = now;
        self.streak = 0;
    }

    /// The repair due at `now`, if any (while broken, on the backoff schedule).
    pub fn due<R: Rng>(&mut self, now: Instant, rng: &mut R) -> Option<RepairStep> {
        let at = self.next_repair?;
        if now < at {
            return None;
        }
        let step = if self.spell_repairs == 0 {
            RepairStep::RelaunchService
        } else {
            RepairStep::RetireCircuitsAndRelaunch
        };
        self.spell_repairs += 1;
        self.repairs += 1;
        self.last_repair = Some(step);
        let wait = self
            .delay
            .next_delay(rng)
            .clamp(self.backoff_min, self.backoff_max);
        self.next_repair = Some(now + wait);
        Some(step)
    }

    /// When the next repair is due (while broken).
    pub fn next_repair(&self) -> Option<Instant> {
        self.next_repair
    }

    /// The status page's view at `now`.
    pub fn status(&self, now: Instant) -> RepairStatus {
        RepairStatus {
            enabled: true,
            state: self.state,
            for_secs: now.saturating_duration_since(self.since).as_secs(),
            last_error: self.last_error.clone(),
            probes: self.probes,
            probes_failed: self.probes_failed,
            repairs: self.repairs,
            last_repair: self.last_repair,
            next_repair_in_secs: self
                .next_repair
                .map(|t| t.saturating_duration_since(now).as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn config() -> RepairConfig {
        RepairConfig {
            enabled: true,
            probe_interval: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(20),
            fail_after: 2,
            recover_after: 2,
            backoff_min: Duration::from_secs(30),
            backoff_max: Duration::from_secs(600),
        }
    }

    fn fail() -> Result<(), String> {
        Err("circuit: timed out".into())
    }

    #[test]
    fn completed_rendezvous_overrule_failed_probes_which_still_count_as_failed() {
        let t0 = Instant::now();
        let mut m = Monitor::new(&config(), t0);
        for i in 0..5u64 {
            let t = t0 + Duration::from_secs(30 * i);
            assert_eq!(m.record_with_traffic(t, fail(), 3), None);
        }
        assert_eq!(m.state(), TorState::Working);
        let s = m.status(t0 + Duration::from_secs(150));
        assert_eq!((s.probes, s.probes_failed), (5, 5));
        assert_eq!(s.last_error.as_deref(), Some("circuit: timed out"));
        // Without traffic the same failures break it.
        assert_eq!(
            m.record_with_traffic(t0 + Duration::from_secs(180), fail(), 0),
            None
        );
        assert_eq!(
            m.record_with_traffic(t0 + Duration::from_secs(210), fail(), 0),
            Some(Action::Withdraw)
        );
        // And traffic alone restores it.
        assert_eq!(
            m.record_with_traffic(t0 + Duration::from_secs(240), fail(), 1),
            None
        );
        assert_eq!(
            m.record_with_traffic(t0 + Duration::from_secs(270), fail(), 1),
            Some(Action::Restore)
        );
    }

    #[test]
    fn one_failure_is_not_a_break_and_a_success_resets_the_streak() {
        let t0 = Instant::now();
        let mut m = Monitor::new(&config(), t0);
        assert_eq!(m.record(t0, Ok(())), None);
        assert_eq!(m.state(), TorState::Working);
        assert_eq!(m.record(t0 + Duration::from_secs(30), fail()), None);
        assert_eq!(m.record(t0 + Duration::from_secs(60), Ok(())), None);
        assert_eq!(m.record(t0 + Duration::from_secs(90), fail()), None);
        assert_eq!(m.state(), TorState::Working);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(m.due(t0 + Duration::from_secs(90), &mut rng), None);
    }

    #[test]
    fn a_break_withdraws_and_repairs_at_once_then_on_a_growing_jittered_backoff() {
        let t0 = Instant::now();
        let mut m = Monitor::new(&config(), t0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        m.record(t0, Ok(()));
        assert_eq!(m.record(t0 + Duration::from_secs(30), fail()), None);
        let broke = t0 + Duration::from_secs(60);
        assert_eq!(m.record(broke, fail()), Some(Action::Withdraw));
        assert_eq!(m.state(), TorState::Broken);
        assert_eq!(
            m.status(broke).last_error.as_deref(),
            Some("circuit: timed out")
        );
        // First repair at once: relaunch the service.
        assert_eq!(m.due(broke, &mut rng), Some(RepairStep::RelaunchService));
        assert_eq!(m.due(broke, &mut rng), None, "not twice at one instant");
        // Later repairs: each after a wait within the bounds; every one retires circuits.
        let mut now = broke;
        let mut waits = Vec::new();
        for _ in 0..12 {
            let next = m.next_repair().unwrap();
            let wait = next - now;
            assert!(wait >= Duration::from_secs(30), "{wait:?}");
            assert!(wait <= Duration::from_secs(600), "{wait:?}");
            assert_eq!(m.due(next - Duration::from_millis(1), &mut rng), None);
            assert_eq!(
                m.due(next, &mut rng),
                Some(RepairStep::RetireCircuitsAndRelaunch)
            );
            waits.push(wait);
            now = next;
        }
        assert!(
            waits.iter().any(|w| *w > Duration::from_secs(120)),
            "the backoff grows: {waits:?}"
        );
        assert_eq!(m.status(now).repairs, 13);
        // Failures while broken change nothing.
        assert_eq!(m.record(now, fail()), None);
    }

    #[test]
    fn recovery_needs_recover_after_good_probes_and_stops_repairs() {
        let t0 = Instant::now();
        let mut m = Monitor::new(&config(), t0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        m.record(t0, fail());
        assert_eq!(
            m.record(t0, fail()),
            Some(Action::Withdraw),
            "unknown counts as working"
        );
        m.due(t0, &mut rng);
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(m.record(t1, Ok(())), None);
        assert_eq!(
            m.record(t1, fail()),
            None,
            "a failure resets the good streak"
        );
        assert_eq!(m.record(t1, Ok(())), None);
        assert_eq!(m.record(t1, Ok(())), Some(Action::Restore));
        assert_eq!(m.state(), TorState::Working);
        assert_eq!(m.next_repair(), None);
        assert_eq!(m.due(t1 + Duration::from_secs(3600), &mut rng), None);
        let s = m.status(t1 + Duration::from_secs(5));
        assert_eq!(s.for_secs, 5);
        assert_eq!((s.probes, s.probes_failed, s.repairs), (6, 3, 1));
        // A new break starts its repairs from the first step again.
        m.record(t1, fail());
        assert_eq!(m.record(t1, fail()), Some(Action::Withdraw));
        assert_eq!(m.due(t1, &mut rng), Some(RepairStep::RelaunchService));
        let next = m.next_repair().unwrap();
        assert!(
            next - t1 <= Duration::from_secs(90),
            "backoff reset: {:?}",
            next - t1
        );
    }
}
