//! The self-check task: probes on `repair.probe_interval`, feeds the [`Monitor`], tells the
//! node task whether its Tor side works, and runs repairs when the monitor says they are due.

use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;

use super::monitor::{Action, Monitor, RepairStatus, RepairStep};
use crate::config::RepairConfig;

/// The node's Tor side as the self-check sees it.
pub trait TorSide: Send + Sync + 'static {
    /// One probe; `Err` says why it failed.
    fn probe(&self) -> BoxFuture<'static, Result<(), String>>;
    /// One repair; `Err` says why it failed.
    fn repair(&self, step: RepairStep) -> BoxFuture<'static, Result<(), String>>;
    /// Rendezvous handshakes the service has completed so far (monotonic): real traffic.
    fn rendezvous_completed(&self) -> u64;
}

/// Longest time one repair may take.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the self-check until shutdown. `tor_ok` turns false when the monitor withdraws the
/// node and true when it restores it; `status` gets the monitor's view after every event.
pub async fn run(
    config: RepairConfig,
    tor: impl TorSide,
    tor_ok: watch::Sender<bool>,
    status: watch::Sender<RepairStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let now = || Instant::now().into_std();
    let mut monitor = Monitor::new(&config, now());
    let mut rng: rand::rngs::StdRng = rand::make_rng();
    let mut probes = tokio::time::interval(config.probe_interval);
    probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    status.send_replace(monitor.status(now()));
    let mut served_before = tor.rendezvous_completed();
    loop {
        let repair_at = monitor.next_repair().map(Instant::from_std);
        tokio::select! {
            _ = probes.tick() => {
                let result = tokio::time::timeout(config.probe_timeout, tor.probe())
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!("timed out after {} s", config.probe_timeout.as_secs()))
                    });
                let served = tor.rendezvous_completed();
                let since = served.saturating_sub(served_before);
                served_before = served;
                if let Err(e) = &result {
                    tracing::debug!(error = %e, rendezvous_since = since, "Tor self-check probe failed");
                }
                match monitor.record_with_traffic(now(), result, since) {
                    Some(Action::Withdraw) => {
                        let s = monitor.status(now());
                        tracing::warn!(
                            error = s.last_error.as_deref().unwrap_or(""),
                            failed = config.fail_after,
                            "this node's Tor side is broken: withdrawing its intro points and repairing"
                        );
                        tor_ok.send_replace(false);
                    }
                    Some(Action::Restore) => {
                        tracing::info!("this node's Tor side works again: its intro points return");
                        tor_ok.send_replace(true);
                    }
                    _ => {}
                }
            }
            _ = sleep_until(repair_at) => {}
            _ = stopped(&mut shutdown) => break,
        }
        if let Some(step) = monitor.due(now(), &mut rng) {
            tracing::info!(?step, "repairing the Tor side");
            let done = tokio::select! {
                r = tokio::time::timeout(REPAIR_TIMEOUT, tor.repair(step)) => r,
                _ = stopped(&mut shutdown) => break,
            };
            match done {
                Ok(Ok(())) => tracing::info!(?step, "repair done"),
                Ok(Err(e)) => tracing::warn!(?step, error = %e, "repair failed"),
                Err(_) => tracing::warn!(?step, "repair timed out"),
            }
        }
        status.send_replace(monitor.status(now()));
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves once `shutdown` says `true` or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    /// A Tor side whose probes fail while `broken`, recording the repairs asked of it.
    #[derive(Clone, Default)]
    struct Fake {
        broken: Arc<AtomicBool>,
        repairs: Arc<Mutex<Vec<(Duration, RepairStep)>>>,
        start: Arc<Mutex<Option<Instant>>>,
        served: Arc<AtomicU64>,
    }

    impl TorSide for Fake {
        fn probe(&self) -> BoxFuture<'static, Result<(), String>> {
            let broken = self.broken.load(Ordering::SeqCst);
            Box::pin(async move {
                if broken {
                    // A dead guard: the circuit never completes.
                    std::future::pending::<()>().await;
                }
                Ok(())
            })
        }
        fn repair(&self, step: RepairStep) -> BoxFuture<'static, Result<(), String>> {
            let t0 = self.start.lock().unwrap().unwrap();
            self.repairs.lock().unwrap().push((t0.elapsed(), step));
            Box::pin(async { Ok(()) })
        }
        fn rendezvous_completed(&self) -> u64 {
            self.served.load(Ordering::SeqCst)
        }
    }

    fn config() -> RepairConfig {
        RepairConfig {
            enabled: true,
            probe_interval: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(5),
            fail_after: 2,
            recover_after: 2,
            backoff_min: Duration::from_secs(30),
            backoff_max: Duration::from_secs(300),
        }
    }

    /// A node under an introduction flood: its probes time out, but it keeps completing
    /// rendezvous handshakes, so it is neither withdrawn nor relaunched; once the traffic stops
    /// too, the failed probes count and it is withdrawn.
    #[tokio::test(start_paused = true)]
    async fn a_node_serving_clients_is_not_withdrawn_for_slow_probes() {
        let fake = Fake::default();
        *fake.start.lock().unwrap() = Some(Instant::now());
        let (ok_tx, mut ok_rx) = watch::channel(true);
        let (status_tx, status_rx) = watch::channel(RepairStatus::disabled());
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(config(), fake.clone(), ok_tx, status_tx, stop_rx));
        tokio::time::sleep(Duration::from_secs(5)).await;
        fake.broken.store(true, Ordering::SeqCst);
        let traffic = {
            let served = Arc::clone(&fake.served);
            tokio::spawn(async move {
                for _ in 0..60 {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    served.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        tokio::time::sleep(Duration::from_secs(170)).await;
        assert!(*ok_rx.borrow_and_update(), "not withdrawn while serving");
        assert!(fake.repairs.lock().unwrap().is_empty(), "no repairs");
        assert!(
            status_rx.borrow().probes_failed >= 15,
            "the probes did fail"
        );
        traffic.await.unwrap();
        ok_rx.changed().await.unwrap();
        assert!(!*ok_rx.borrow(), "withdrawn once the traffic stopped too");
        let t = fake.start.lock().unwrap().unwrap().elapsed();
        assert!(t <= Duration::from_secs(216), "{t:?}");
        stop_tx.send_replace(true);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_tor_side_is_withdrawn_repaired_with_backoff_and_restored() {
        let config = config();
        let fake = Fake::default();
        *fake.start.lock().unwrap() = Some(Instant::now());
        let (ok_tx, mut ok_rx) = watch::channel(true);
        let (status_tx, status_rx) = watch::channel(RepairStatus::disabled());
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(config, fake.clone(), ok_tx, status_tx, stop_rx));

        tokio::time::sleep(Duration::from_secs(25)).await;
        assert!(*ok_rx.borrow_and_update(), "working while probes succeed");
        fake.broken.store(true, Ordering::SeqCst);
        // Probes at 30 s and 40 s time out at 35 s and 45 s: broken, withdrawn.
        ok_rx.changed().await.unwrap();
        assert!(!*ok_rx.borrow());
        let t_withdrawn = fake.start.lock().unwrap().unwrap().elapsed();
        assert!(
            (Duration::from_secs(44)..Duration::from_secs(47)).contains(&t_withdrawn),
            "{t_withdrawn:?}"
        );
        tokio::time::sleep(Duration::from_secs(200)).await;
        {
            let repairs = fake.repairs.lock().unwrap();
            assert!(repairs.len() >= 3, "{repairs:?}");
            assert_eq!(repairs[0].1, RepairStep::RelaunchService);
            assert!(repairs[0].0 - t_withdrawn < Duration::from_secs(1));
            assert!(repairs[1..]
                .iter()
                .all(|(_, s)| *s == RepairStep::RetireCircuitsAndRelaunch));
            for w in repairs.windows(2) {
                assert!(w[1].0 - w[0].0 >= Duration::from_secs(30), "{repairs:?}");
            }
        }
        assert_eq!(status_rx.borrow().state, super::super::TorState::Broken);
        fake.broken.store(false, Ordering::SeqCst);
        ok_rx.changed().await.unwrap();
        assert!(*ok_rx.borrow(), "restored after good probes");
        let n = fake.repairs.lock().unwrap().len();
        tokio::time::sleep(Duration::from_secs(1000)).await;
        assert_eq!(
            fake.repairs.lock().unwrap().len(),
            n,
            "no repairs once working"
        );
        stop_tx.send_replace(true);
        task.await.unwrap();
    }
}
