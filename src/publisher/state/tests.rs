//! The publisher state machine under simulated time with fake HSDirs: the test decides every
//! upload's outcome and moves the clock.

use std::time::{Duration, Instant, SystemTime};

use tor_checkable::Timebound;
use tor_hscrypto::pk::HsIdKeypair;
use tor_netdoc::doc::hsdesc::HsDesc;

use super::*;
use crate::publisher::test_support::{identity, ipt, peer, period_at, view};

const S: fn(u64) -> Duration = Duration::from_secs;

const SETTINGS: Settings = Settings {
    min_gap: Duration::from_secs(1),
    refresh: Duration::from_secs(3600),
    lifetime: Duration::from_secs(3 * 3600),
    max_clock_skew: Duration::from_secs(300),
    weight: 1,
};

/// A master identity, one period, eight fake HSDirs, and a clock: `now` and the wall clock
/// move together.
struct World {
    id: HsIdKeypair,
    period: TimePeriod,
    t0: Instant,
    wall0: SystemTime,
    now: Instant,
    /// Seeded: the jittered retry delays are the same in every run.
    rng: rand::rngs::StdRng,
}

impl World {
    fn new() -> World {
        let wall0 = SystemTime::UNIX_EPOCH + S(1_800_000_000);
        let t0 = Instant::now();
        World {
            id: identity(),
            period: period_at(wall0),
            t0,
            wall0,
            now: t0,
            rng: rand::SeedableRng::seed_from_u64(7),
        }
    }

    fn wall(&self) -> SystemTime {
        self.wall0 + (self.now - self.t0)
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn publisher(&self) -> Publisher {
        Publisher::new(SETTINGS, HsIdKey::from(&self.id), "a")
    }

    fn view(&self, hsdirs: usize) -> NetworkView {
        view(&self.id, self.period, self.wall(), hsdirs)
    }

    fn poll(&mut self, p: &mut Publisher) -> Vec<UploadJob> {
        let (now, wall) = (self.now, self.wall());
        p.poll(now, wall, &mut self.rng)
    }

    /// Answers every job: the HSDirs in `fail` time out, the others accept.
    fn answer(&mut self, p: &mut Publisher, jobs: &[UploadJob], fail: &[&str]) {
        self.answer_with(p, jobs, fail, "circuit: timed out");
    }

    /// Like `answer`, with C tor's rejection for the HSDirs in `fail`.
    fn reject(&mut self, p: &mut Publisher, jobs: &[UploadJob], fail: &[&str]) {
        self.answer_with(
            p,
            jobs,
            fail,
            "HSDir answered: 400 Invalid HS descriptor. Rejected.",
        );
    }

    fn answer_with(&mut self, p: &mut Publisher, jobs: &[UploadJob], fail: &[&str], error: &str) {
        for j in jobs {
            let r = if fail.contains(&j.hsdir.as_str()) {
                Err(error.to_string())
            } else {
                Ok(())
            };
            p.on_outcome(self.now, j.id, r, &mut self.rng);
        }
    }

    /// The intro points' relay bytes listed by a job's descriptor.
    fn listed(&self, job: &UploadJob) -> Vec<u8> {
        let (blind_pk, _, subcred) = self.id.compute_blinded_key(self.period).unwrap();
        let desc = HsDesc::parse_decrypt_validate(&job.text, &blind_pk.id(), &subcred, None)
            .unwrap()
            .if_valid_at(&self.wall())
            .unwrap();
        let mut r: Vec<u8> = desc
            .intro_points()
            .iter()
            .map(|i| descriptor::intro_relay(i).unwrap().as_bytes()[0])
            .collect();
        r.sort();
        r
    }
}

/// A publisher with 8 HSDirs and one intro point of its own, nothing uploaded yet.
fn publishing() -> (World, Publisher) {
    let w = World::new();
    let mut p = w.publisher();
    p.set_network(w.view(8));
    p.set_role(true);
    p.set_own(vec![ipt(1)], true);
    (w, p)
}

/// A publisher that has published one intro point to 8 HSDirs, all accepted.
fn published() -> (World, Publisher) {
    let (mut w, mut p) = publishing();
    let jobs = w.poll(&mut p);
    w.answer(&mut p, &jobs, &[]);
    (w, p)
}

fn hsdirs(jobs: &[UploadJob]) -> Vec<String> {
    let mut v: Vec<String> = jobs.iter().map(|j| j.hsdir.clone()).collect();
    v.sort();
    v
}

#[test]
fn first_publication_as_soon_as_intro_points_exist_then_quiet_until_refresh() {
    let mut w = World::new();
    let mut p = w.publisher();
    p.set_network(w.view(8));
    p.set_role(true);
    assert!(w.poll(&mut p).is_empty(), "no intro points: nothing to do");
    assert_eq!(p.next_wakeup(w.now), None, "and no wake-up for it");
    assert!(p.status().periods.is_empty(), "not a failed round either");
    w.advance(Duration::from_millis(300));
    p.set_own(vec![ipt(1), ipt(2)], true);
    assert_eq!(p.next_wakeup(w.now), Some(w.now), "due at once");
    let jobs = w.poll(&mut p);
    assert_eq!(jobs.len(), 8, "every HSDir of the ring");
    assert_eq!(w.listed(&jobs[0]), vec![1, 2]);
    assert_eq!(p.in_flight(), 8);
    assert!(w.poll(&mut p).is_empty(), "nothing twice while in flight");
    w.advance(Duration::from_millis(800));
    w.answer(&mut p, &jobs, &[]);
    let st = p.status();
    assert_eq!(st.periods.len(), 1);
    assert_eq!(st.periods[0].hsdirs_ok(), 8);
    assert_eq!(st.periods[0].intro_points, 2);
    assert_eq!(st.periods[0].hsdirs[0].elapsed_ms, 800);
    assert!(w.poll(&mut p).is_empty());
    let refresh = p.next_wakeup(w.now).unwrap();
    assert_eq!(
        refresh - w.now,
        SETTINGS.refresh - Duration::from_millis(800)
    );
    w.advance(refresh - w.now);
    p.set_network(w.view(8)); // the consensus of the hour: same ring
    assert_eq!(w.poll(&mut p).len(), 8, "refreshed after the interval");
}

#[test]
fn changes_are_coalesced_into_one_upload_per_hsdir() {
    let (mut w, mut p) = published();
    // Three changes within the gap.
    for (k, relays) in [[1u8, 2], [1, 3], [1, 4]].iter().enumerate() {
        w.advance(Duration::from_millis(200));
        p.set_own(relays.iter().map(|r| ipt(*r)).collect(), true);
        assert!(w.poll(&mut p).is_empty(), "change {k} waits for the gap");
    }
    let at = p.next_wakeup(w.now).unwrap();
    assert_eq!(at, w.t0 + SETTINGS.min_gap);
    w.advance(at - w.now);
    let jobs = w.poll(&mut p);
    assert_eq!(jobs.len(), 8, "one upload per HSDir for all three changes");
    assert_eq!(w.listed(&jobs[0]), vec![1, 4], "the latest content");
    // Revision counters grow between batches.
    let r1 = p.status().periods[0].revision;
    w.answer(&mut p, &jobs, &[]);
    w.advance(S(2));
    p.set_own(vec![ipt(5)], true);
    let jobs = w.poll(&mut p);
    assert_eq!(jobs.len(), 8);
    assert!(p.status().periods[0].revision > r1);
}

#[test]
fn a_failing_hsdir_is_retried_alone_with_jittered_growing_backoff() {
    let (mut w, mut p) = publishing();
    let jobs = w.poll(&mut p);
    w.answer(&mut p, &jobs, &["h3"]);
    let st = p.status();
    assert_eq!(st.periods[0].hsdirs_ok(), 7);
    let h3 = st.periods[0]
        .hsdirs
        .iter()
        .find(|h| h.hsdir == "h3")
        .unwrap();
    assert_eq!(h3.error.as_deref(), Some("circuit: timed out"));
    assert!(w.poll(&mut p).is_empty());
    let mut delays = Vec::new();
    for _ in 0..12 {
        let at = p.next_wakeup(w.now).unwrap();
        let d = at - w.now;
        assert!(d >= FIRST_BACKOFF && d <= MAX_BACKOFF, "{d:?}");
        delays.push(d);
        w.advance(d - Duration::from_millis(1));
        p.set_network(w.view(8)); // consensuses keep coming: same ring
        assert!(w.poll(&mut p).is_empty(), "not before the delay");
        w.advance(Duration::from_millis(1));
        let jobs = w.poll(&mut p);
        assert_eq!(
            hsdirs(&jobs),
            vec!["h3"],
            "only the failing HSDir is retried"
        );
        w.answer(&mut p, &jobs, &["h3"]);
    }
    // Decorrelated jitter (Arti's RetryDelay): each delay is drawn from [5 s, 3 × the last),
    // capped at 5 min; over a dozen failures it moves well above the first.
    for w in delays.windows(2) {
        assert!(w[1] < w[0] * 3 || w[1] == MAX_BACKOFF, "{delays:?}");
    }
    assert!(
        delays.iter().any(|d| *d > FIRST_BACKOFF * 4),
        "the delay grows: {delays:?}"
    );
    assert!(
        delays.windows(2).any(|w| w[0] != w[1]),
        "jittered: {delays:?}"
    );
    // Success resets it: the next failure waits the short delay again.
    let at = p.next_wakeup(w.now).unwrap();
    w.advance(at - w.now);
    let jobs = w.poll(&mut p);
    w.answer(&mut p, &jobs, &[]);
    assert_eq!(p.status().periods[0].hsdirs_ok(), 8);
    w.advance(S(2));
    p.set_own(vec![ipt(2)], true);
    let jobs = w.poll(&mut p);
    w.answer(&mut p, &jobs, &["h5"]);
    let d = p.next_wakeup(w.now).unwrap() - w.now;
    assert!(d < FIRST_BACKOFF * 3, "reset after success: {d:?}");
}

#[test]
fn losing_the_role_abandons_uploads_in_flight_and_taking_it_publishes_at_once() {
    let mut w = World::new();
    let mut p = w.publisher();
    p.set_network(w.view(8));
    p.set_own(vec![ipt(1)], true);
    assert!(w.poll(&mut p).is_empty(), "a standby never uploads");
    assert_eq!(p.next_wakeup(w.now), None);
    p.set_role(true);
    let jobs = w.poll(&mut p);
    assert_eq!(jobs.len(), 8);
    assert!(p.set_role(false), "uploads were in flight");
    assert_eq!(p.in_flight(), 0);
    // Their late outcomes change nothing.
    w.answer(&mut p, &jobs, &[]);
    assert!(p.status().periods[0].hsdirs.is_empty());
    w.advance(S(10));
    assert!(w.poll(&mut p).is_empty(), "no new upload starts");
    assert!(!p.set_role(false), "nothing more to abandon");
    p.set_role(true);
    let again = w.poll(&mut p);
    assert_eq!(again.len(), 8, "taking over publishes at once");
    assert!(again.iter().all(|j| jobs.iter().all(|o| o.id != j.id)));
}

#[test]
fn merge_lists_healthy_nodes_only_unless_none_is() {
    let (mut w, mut p) = publishing();
    p.set_peers(vec![peer("b", false, &[2]), peer("c", true, &[3])]);
    let jobs = w.poll(&mut p);
    assert_eq!(w.listed(&jobs[0]), vec![1, 3], "b is unhealthy: left out");
    let merged = p.status().merged;
    let listed = |n: &str| merged.iter().find(|c| c.node_id == n).unwrap().listed;
    assert_eq!((listed("a"), listed("b"), listed("c")), (1, 0, 1));
    w.answer(&mut p, &jobs, &[]);
    // Nobody healthy: everybody listed (intro points that exist beat none).
    w.advance(S(2));
    p.set_own(p_own(), false);
    p.set_peers(vec![peer("b", false, &[2]), peer("c", false, &[3])]);
    let jobs = w.poll(&mut p);
    assert_eq!(w.listed(&jobs[0]), vec![1, 2, 3]);
    // Health alone changing the input republishes.
    w.answer(&mut p, &jobs, &[]);
    w.advance(S(2));
    p.set_peers(vec![peer("b", true, &[2]), peer("c", false, &[3])]);
    let jobs = w.poll(&mut p);
    assert_eq!(jobs.len(), 8);
    assert_eq!(w.listed(&jobs[0]), vec![2]);
}

fn p_own() -> Vec<IntroPointDesc> {
    vec![ipt(1)]
}

#[test]
fn over_twenty_intro_points_each_hsdir_gets_its_window() {
    let mut w = World::new();
    let mut p = w.publisher();
    p.set_network(w.view(4));
    p.set_role(true);
    p.set_own((0..10).map(|r| ipt(r + 1)).collect(), true);
    p.set_peers(vec![peer("b", true, &(11..=25).collect::<Vec<u8>>())]);
    let jobs = w.poll(&mut p);
    assert_eq!(jobs.len(), 4);
    let windows: std::collections::BTreeSet<Vec<u8>> = jobs.iter().map(|j| w.listed(j)).collect();
    assert!(windows.len() > 1, "distinct descriptors");
    assert!(windows.iter().all(|l| l.len() == 20));
    let st = p.status();
    assert_eq!(st.periods[0].descriptors, 4);
    assert_eq!(st.periods[0].intro_points, 25);
}

#[test]
fn a_clock_off_the_consensus_publishes_nothing_and_says_why() {
    let mut w = World::new();
    let mut p = w.publisher();
    let mut view = w.view(8);
    // The consensus ended 20 minutes ago by this node's clock: its clock runs ahead.
    view.valid_after = w.wall() - S(20 * 60 + 40);
    view.valid_until = w.wall() - S(20 * 60);
    p.set_network(view);
    p.set_role(true);
    p.set_own(vec![ipt(1)], true);
    assert!(w.poll(&mut p).is_empty());
    let st = p.status();
    assert!(st.clock_error.unwrap().contains("ahead of the network"));
    assert!(st.periods.is_empty());
    assert_eq!(p.next_wakeup(w.now), Some(w.now + CLOCK_RECHECK));
    // A fresh consensus that agrees: published.
    p.set_network(w.view(8));
    assert_eq!(w.poll(&mut p).len(), 8);
    assert_eq!(p.status().clock_error, None);
}

#[test]
fn ring_changes_reach_new_hsdirs_and_forget_old_ones() {
    let (mut w, mut p) = published();
    w.advance(S(5));
    let mut view = w.view(8);
    view.periods[0].hsdirs[0] = "h9".into();
    p.set_network(view);
    let jobs = w.poll(&mut p);
    assert!(hsdirs(&jobs).contains(&"h9".to_string()));
    assert!(!hsdirs(&jobs).contains(&"h0".to_string()));
    w.answer(&mut p, &jobs, &[]);
    let st = p.status();
    assert!(st.periods[0].hsdirs.iter().all(|h| h.hsdir != "h0"));
    assert_eq!(st.periods[0].hsdirs_ok(), 8);
    // A period without its blinded key is not published (and costs no wake-ups).
    let mut view = w.view(8);
    view.periods[0].blind = Err("no key".into());
    w.advance(S(5));
    p.set_network(view);
    p.set_own(vec![ipt(2)], true);
    assert!(w.poll(&mut p).is_empty());
    assert_eq!(p.next_wakeup(w.now), None);
}

/// The audit's aftermath: HSDirs hold a descriptor from a node whose clock ran 15 minutes
/// ahead, and reject ours ("Rejected"). The publisher asks them what they hold, then
/// publishes above that counter; later descriptors keep growing. Before, it retried with its
/// lower counter until wall time caught up, and the HSDirs served the skewed node's intro
/// points (a dead node's, once it was killed) all along.
#[test]
fn an_hsdir_holding_a_higher_revision_is_asked_and_published_above() {
    let mut w = World::new();
    let mut p = w.publisher();
    let view = w.view(8);
    let srv_start = view.periods[0].srv_start;
    let blind = view.periods[0].blind.clone().unwrap();
    p.set_network(view);
    p.set_role(true);
    p.set_own(vec![ipt(1)], true);
    let skewed_offset = w.wall().duration_since(srv_start).unwrap() + S(15 * 60);
    let held = u64::from(descriptor::revision_at_offset(&blind, skewed_offset));
    let jobs = w.poll(&mut p);
    assert!(
        p.status().periods[0].revision < held,
        "our clock's counter is lower"
    );
    // h2 and h5 hold the skewed descriptor.
    w.reject(&mut p, &jobs, &["h2", "h5"]);
    let checks = p.poll_checks();
    assert_eq!(
        checks.iter().map(|c| c.hsdir.as_str()).collect::<Vec<_>>(),
        vec!["h2", "h5"]
    );
    assert!(p.poll_checks().is_empty(), "asked once");
    assert!(w.poll(&mut p).is_empty(), "no upload while asking");
    let wall = w.wall();
    p.on_revision(w.now, wall, checks[0].id, Ok(held));
    p.on_revision(w.now, wall, checks[1].id, Ok(held));
    let jobs = w.poll(&mut p);
    assert_eq!(hsdirs(&jobs), vec!["h2", "h5"], "retried at once");
    let revision = p.status().periods[0].revision;
    assert!(
        revision > held,
        "above the held counter: {revision} > {held}"
    );
    w.answer(&mut p, &jobs, &[]);
    assert_eq!(p.status().periods[0].hsdirs_ok(), 8);
    // The next batch (new content, 2 s later) is higher still, for every HSDir.
    w.advance(S(2));
    p.set_own(vec![ipt(2)], true);
    let jobs = w.poll(&mut p);
    assert_eq!(jobs.len(), 8);
    assert!(p.status().periods[0].revision > revision);
    // A rejection that is not about the counter (the HSDir holds a lower one) changes
    // nothing but the usual retry.
    w.reject(&mut p, &jobs, &["h0"]);
    let c = p.poll_checks();
    assert_eq!(c.len(), 1);
    let before = p.status().periods[0].revision;
    p.on_revision(w.now, w.wall(), c[0].id, Ok(1));
    assert!(w.poll(&mut p).is_empty(), "the backoff stands");
    let at = p.next_wakeup(w.now).unwrap();
    assert!(at - w.now >= FIRST_BACKOFF);
    w.advance(at - w.now);
    let jobs = w.poll(&mut p);
    assert_eq!(hsdirs(&jobs), vec!["h0"]);
    assert!(p.status().periods[0].revision > before);
    // A counter more than a day ahead is not chased.
    w.reject(&mut p, &jobs, &["h0"]);
    let c = p.poll_checks();
    p.on_revision(w.now, w.wall(), c[0].id, Ok(u64::MAX));
    assert!(w.poll(&mut p).is_empty());
}
