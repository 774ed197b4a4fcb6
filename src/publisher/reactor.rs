//! The publisher task: runs a [`Publisher`] state machine against its typed inputs, carries
//! out its uploads as spawned tasks that report back, and sleeps until the state machine's next
//! wake-up (modelled on Arti's `tor-hsservice` `publish/reactor.rs`). Role loss cancels every
//! upload in flight at once; shutdown ends the loop.
//!
//! HSDirs are reached through an [`Uploader`] (the real one is
//! [`ArtiUploader`](super::upload::ArtiUploader)); time comes from tokio's clock (paused in
//! tests) and a [`WallClock`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tor_netdoc::doc::hsdesc::IntroPointDesc;

use super::select::NodeIntroPoints;
use super::state::{NetworkView, Publisher, PublisherStatus, RevisionCheck, UploadJob};
use crate::election::Role;

/// Reaches the HSDirs: uploads one descriptor to one HSDir, or asks one which revision
/// counter it holds.
pub trait Uploader: Send + Sync + 'static {
    /// Carries out `job`; `Err` says what went wrong.
    fn upload(&self, job: UploadJob) -> BoxFuture<'static, Result<(), String>>;
    /// The revision counter of the descriptor the HSDir serves for the check's period
    /// (verified with the blinded identity and subcredential).
    fn held_revision(&self, check: RevisionCheck) -> BoxFuture<'static, Result<u64, String>>;
}

/// What a finished task reports.
enum Done {
    Upload(u64, Result<(), String>),
    Revision(u64, Result<u64, String>),
}

/// The wall clock (revision counters, the clock check).
pub trait WallClock: Send + Sync + 'static {
    /// Now.
    fn wall(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// This node's intro points and whether it is healthy.
#[derive(Debug, Clone, Default)]
pub struct OwnIntroPoints {
    /// Its intro points as descriptor entries.
    pub descs: Vec<IntroPointDesc>,
    /// Whether the target answers the health probe.
    pub healthy: bool,
}

/// The publisher's inputs.
pub struct Inputs {
    /// The election's verdict.
    pub role: watch::Receiver<Role>,
    /// This node's intro points and health.
    pub own: watch::Receiver<OwnIntroPoints>,
    /// The other nodes' intro points.
    pub peers: watch::Receiver<Vec<NodeIntroPoints>>,
    /// The network (periods, rings, consensus times); `None` until there is a consensus.
    pub network: watch::Receiver<Option<NetworkView>>,
}

/// Runs `publisher` until `shutdown` turns true (or its inputs are gone), reporting its status
/// after every change.
pub async fn run<U: Uploader, C: WallClock>(
    mut publisher: Publisher,
    mut inputs: Inputs,
    uploader: Arc<U>,
    clock: C,
    status: watch::Sender<PublisherStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    // A sendable RNG (the thread-local one cannot be held across awaits in a spawned task).
    let mut rng: rand::rngs::StdRng = rand::make_rng();
    let mut tasks: JoinSet<Done> = JoinSet::new();
    publisher.set_role(*inputs.role.borrow_and_update() == Role::Publisher);
    let own = inputs.own.borrow_and_update().clone();
    publisher.set_own(own.descs, own.healthy);
    publisher.set_peers(inputs.peers.borrow_and_update().clone());
    if let Some(view) = inputs.network.borrow_and_update().clone() {
        publisher.set_network(view);
    }
    loop {
        let now = tokio::time::Instant::now();
        for check in publisher.poll_checks() {
            let id = check.id;
            let fut = uploader.held_revision(check);
            tasks.spawn(async move { Done::Revision(id, fut.await) });
        }
        for job in publisher.poll(now.into_std(), clock.wall(), &mut rng) {
            let id = job.id;
            let fut = uploader.upload(job);
            tasks.spawn(async move { Done::Upload(id, fut.await) });
        }
        let snapshot = publisher.status();
        status.send_if_modified(|s| {
            let changed = *s != snapshot;
            if changed {
                *s = snapshot;
            }
            changed
        });
        let wake = publisher
            .next_wakeup(now.into_std())
            .map(tokio::time::Instant::from_std);
        let sleep = async move {
            match wake {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            r = inputs.role.changed() => {
                if r.is_err() {
                    break;
                }
                let publishing = *inputs.role.borrow_and_update() == Role::Publisher;
                tracing::info!(publisher = publishing, "role changed");
                if publisher.set_role(publishing) {
                    tasks.abort_all();
                    tracing::info!("role lost: uploads in flight cancelled");
                }
            }
            r = inputs.own.changed() => {
                if r.is_err() {
                    break;
                }
                let own = inputs.own.borrow_and_update().clone();
                publisher.set_own(own.descs, own.healthy);
            }
            r = inputs.peers.changed() => {
                if r.is_err() {
                    break;
                }
                publisher.set_peers(inputs.peers.borrow_and_update().clone());
            }
            r = inputs.network.changed() => {
                if r.is_err() {
                    break;
                }
                if let Some(view) = inputs.network.borrow_and_update().clone() {
                    publisher.set_network(view);
                }
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                // A cancelled task (role lost) reports nothing; its upload was abandoned.
                let at = tokio::time::Instant::now().into_std();
                match done {
                    Ok(Done::Upload(id, result)) => publisher.on_outcome(at, id, result, &mut rng),
                    Ok(Done::Revision(id, held)) => {
                        publisher.on_revision(at, clock.wall(), id, held)
                    }
                    Err(_) => {}
                }
            }
            _ = sleep => {}
        }
    }
    tasks.abort_all();
    // Give cancelled uploads a moment to unwind (they hold circuits).
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

#[cfg(test)]
mod tests;
