//! The real Tor side of the self-check: the embedded Arti client.
//! - probe: a service introduction circuit (Arti's onion-service circuit pool, through this
//!   node's guards and vanguards) to one of this node's current intro-point relays, taken in
//!   turn; while it has none, to a relay picked as Arti picks intro points. Building it needs
//!   working guards, relays that answer and a fresh enough consensus: what the intro circuits
//!   need. The circuit is dropped at once.
//! - repairs: relaunching the master service through the host task
//!   (`hosting::service::host`), after retiring every circuit of the pool for the later steps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arti_client::TorClient;
use futures::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot, watch};
use tor_linkspec::{OwnedCircTarget, RelayIds};
use tor_netdir::WeightRole;
use tor_rtcompat::Runtime;

use super::monitor::RepairStep;
use super::task::TorSide;
use crate::hosting::service::Relaunch;

/// The embedded Arti client as the self-check's [`TorSide`].
pub struct ArtiTor<R: Runtime> {
    client: Arc<TorClient<R>>,
    intro_relays: watch::Receiver<Vec<RelayIds>>,
    relaunch: mpsc::Sender<Relaunch>,
    rendezvous: Counter,
    turn: AtomicUsize,
}

impl<R: Runtime> ArtiTor<R> {
    /// Probes through `client`, towards the relays `intro_relays` holds (this node's current
    /// intro points, kept by the node task); relaunches through `relaunch`; `rendezvous` counts
    /// the rendezvous handshakes the stream task completes.
    pub fn new(
        client: Arc<TorClient<R>>,
        intro_relays: watch::Receiver<Vec<RelayIds>>,
        relaunch: mpsc::Sender<Relaunch>,
        rendezvous: Counter,
    ) -> ArtiTor<R> {
        ArtiTor {
            client,
            intro_relays,
            relaunch,
            rendezvous,
            turn: AtomicUsize::new(0),
        }
    }
}

impl<R: Runtime> TorSide for ArtiTor<R> {
    fn probe(&self) -> BoxFuture<'static, Result<(), String>> {
        let client = Arc::clone(&self.client);
        let relays = self.intro_relays.borrow().clone();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let (netdir, pool) = crate::hosting::netdir_and_pool(&client)?;
            let own = (!relays.is_empty())
                .then(|| netdir.by_ids(&relays[turn % relays.len()]))
                .flatten();
            let relay = match own {
                Some(r) => r,
                None => netdir
                    .pick_relay(&mut rand::rng(), WeightRole::HsIntro, |r| {
                        r.low_level_details().is_hs_intro_point()
                    })
                    .ok_or("no relay to probe in the consensus")?,
            };
            let target = OwnedCircTarget::from_circ_target(&relay);
            let tunnel = pool
                .get_or_launch_svc_intro(&netdir, target)
                .await
                .map_err(|e| format!("circuit to an intro-point relay: {e}"))?;
            drop(tunnel);
            Ok(())
        })
    }

    fn repair(&self, step: RepairStep) -> BoxFuture<'static, Result<(), String>> {
        let client = Arc::clone(&self.client);
        let relaunch = self.relaunch.clone();
        Box::pin(async move {
            if step == RepairStep::RetireCircuitsAndRelaunch {
                client
                    .hs_circ_pool()
                    .map_err(|e| format!("circuit pool: {e}"))?
                    .retire_all_circuits()
                    .map_err(|e| format!("retiring circuits: {e}"))?;
            }
            let (done, answer) = oneshot::channel();
            relaunch
                .send(done)
                .await
                .map_err(|_| "the service host has stopped".to_string())?;
            answer
                .await
                .map_err(|_| "the service host has stopped".to_string())?
        })
    }

    fn rendezvous_completed(&self) -> u64 {
        self.rendezvous.get()
    }
}
