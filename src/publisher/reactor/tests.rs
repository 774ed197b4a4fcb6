//! The reactor under tokio's paused clock with fake HSDirs: uploads run as tasks that report
//! back, and losing the role cancels the ones in flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tor_hscrypto::pk::HsIdKey;

use super::*;
use crate::publisher::state::Settings;
use crate::publisher::test_support::{identity, ipt, period_at, view};

const SETTINGS: Settings = Settings {
    min_gap: Duration::from_secs(1),
    refresh: Duration::from_secs(3600),
    lifetime: Duration::from_secs(3 * 3600),
    max_clock_skew: Duration::from_secs(300),
    weight: 1,
};

/// HSDirs that answer after 200 ms, or never (`hang`); they count uploads started and
/// uploads dropped unfinished (cancelled).
#[derive(Default)]
struct FakeHsDirs {
    hang: bool,
    started: Mutex<Vec<String>>,
    cancelled: Arc<AtomicUsize>,
}

/// Counts itself cancelled when dropped before `done`.
struct Unfinished {
    cancelled: Arc<AtomicUsize>,
    done: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.done {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Uploader for FakeHsDirs {
    fn held_revision(&self, _check: RevisionCheck) -> BoxFuture<'static, Result<u64, String>> {
        Box::pin(async { Err("not asked in these tests".to_string()) })
    }

    fn upload(&self, job: UploadJob) -> BoxFuture<'static, Result<(), String>> {
        self.started.lock().unwrap().push(job.hsdir);
        let hang = self.hang;
        let mut guard = Unfinished {
            cancelled: Arc::clone(&self.cancelled),
            done: false,
        };
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            // The HSDir's answer takes 200 ms of the (paused, simulated) clock.
            tokio::time::sleep(Duration::from_millis(200)).await;
            guard.done = true;
            drop(guard);
            Ok(())
        })
    }
}

/// Wall time that follows tokio's (paused) clock.
struct TestClock {
    wall0: SystemTime,
    t0: tokio::time::Instant,
}

impl WallClock for TestClock {
    fn wall(&self) -> SystemTime {
        self.wall0 + self.t0.elapsed()
    }
}

struct Harness {
    role: watch::Sender<Role>,
    _own: watch::Sender<OwnIntroPoints>,
    _peers: watch::Sender<Vec<NodeIntroPoints>>,
    _network: watch::Sender<Option<NetworkView>>,
    status: watch::Receiver<PublisherStatus>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    hsdirs: Arc<FakeHsDirs>,
}

fn start(hang: bool) -> Harness {
    let id = identity();
    let wall0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let (role, role_rx) = watch::channel(Role::Publisher);
    let (own, own_rx) = watch::channel(OwnIntroPoints {
        descs: vec![ipt(1), ipt(2)],
        healthy: true,
    });
    let (peers, peers_rx) = watch::channel(Vec::new());
    let (network, network_rx) = watch::channel(Some(view(&id, period_at(wall0), wall0, 8)));
    let (status_tx, status) = watch::channel(PublisherStatus::default());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let hsdirs = Arc::new(FakeHsDirs {
        hang,
        ..FakeHsDirs::default()
    });
    let task = tokio::spawn(run(
        Publisher::new(SETTINGS, HsIdKey::from(&id), "a"),
        Inputs {
            role: role_rx,
            own: own_rx,
            peers: peers_rx,
            network: network_rx,
        },
        Arc::clone(&hsdirs),
        TestClock {
            wall0,
            t0: tokio::time::Instant::now(),
        },
        status_tx,
        shutdown_rx,
    ));
    Harness {
        role,
        _own: own,
        _peers: peers,
        _network: network,
        status,
        shutdown,
        task,
        hsdirs,
    }
}

/// Moves the paused clock on by `d`, in 10 ms steps, letting every task run at each step.
async fn advance(d: Duration) {
    let step = Duration::from_millis(10);
    let mut left = d;
    while !left.is_zero() {
        let s = step.min(left);
        tokio::time::advance(s).await;
        tokio::task::yield_now().await;
        left -= s;
    }
}

/// Advances the paused clock until `ok`, at most 10 s of simulated time.
async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if ok() {
            return;
        }
        advance(Duration::from_millis(10)).await;
    }
    panic!("not within 10 s: {what}");
}

#[tokio::test(start_paused = true)]
async fn uploads_run_as_tasks_and_report_back() {
    let h = start(false);
    let status = h.status.clone();
    wait_until("every HSDir accepted", || {
        status
            .borrow()
            .periods
            .first()
            .is_some_and(|p| p.hsdirs_ok() == 8)
    })
    .await;
    assert_eq!(h.hsdirs.started.lock().unwrap().len(), 8);
    let p = &h.status.borrow().periods[0];
    assert!(p.hsdirs.iter().all(|u| u.elapsed_ms == 200));
    h.shutdown.send_replace(true);
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn losing_the_role_cancels_uploads_in_flight_within_a_second() {
    let h = start(true);
    let hsdirs = Arc::clone(&h.hsdirs);
    wait_until("8 uploads in flight", || {
        hsdirs.started.lock().unwrap().len() == 8
    })
    .await;
    assert_eq!(h.hsdirs.cancelled.load(Ordering::SeqCst), 0);
    h.role.send_replace(Role::Standby);
    advance(Duration::from_secs(1)).await;
    assert_eq!(
        h.hsdirs.cancelled.load(Ordering::SeqCst),
        8,
        "every upload in flight cancelled within 1 s"
    );
    // And no new upload starts while standing by.
    advance(Duration::from_secs(600)).await;
    assert_eq!(h.hsdirs.started.lock().unwrap().len(), 8);
    assert!(
        h.status.borrow().periods[0].hsdirs.is_empty(),
        "no outcome recorded"
    );
    h.shutdown.send_replace(true);
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_the_loop_and_its_uploads() {
    let h = start(true);
    let hsdirs = Arc::clone(&h.hsdirs);
    wait_until("uploads in flight", || {
        hsdirs.started.lock().unwrap().len() == 8
    })
    .await;
    h.shutdown.send_replace(true);
    tokio::time::timeout(Duration::from_secs(2), h.task)
        .await
        .expect("the reactor stops")
        .unwrap();
    assert_eq!(h.hsdirs.cancelled.load(Ordering::SeqCst), 8);
}
