//! The master onion service on the embedded Arti client: launching it (and checking that Arti
//! launched the master address, not an identity of its own), and the host task that owns it,
//! hands every rendezvous request to one channel, and relaunches it on request (self-repair)
//! without the stream task noticing. With `[pow]` it writes the cluster's PoW seeds into Arti's
//! state before every launch and relaunches when the next epoch's seeds are due
//! ([`crate::pow::Planner`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arti_client::TorClient;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tor_hscrypto::time::TimePeriod;
use tor_hsservice::config::OnionServiceConfigBuilder;
use tor_hsservice::{RendRequest, RunningOnionService};
use tor_rtcompat::Runtime;

use super::HostingError;
use crate::keys::OnionAddress;
use crate::pow::plan::Loaded;
use crate::pow::{Planner, PowKey};

/// How the master service is launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Intro points (Arti's `num_intro_points`).
    pub intro_points: u8,
    /// With PoW: the request queue's depth.
    pub pow_queue_depth: Option<usize>,
}

/// The PoW side of hosting: the seeds written before each launch, and when to relaunch.
pub struct PowHosting {
    /// The cluster's seed key.
    pub key: PowKey,
    /// The relaunch decisions.
    pub planner: Planner,
    /// Arti's PoW state file ([`super::pow_state_file`]).
    pub state_file: PathBuf,
    /// The periods whose blinded keys the keystore holds (the node task keeps it current).
    pub periods: watch::Receiver<Vec<TimePeriod>>,
    /// What the running service verifies, for `status`.
    pub loaded: watch::Sender<Option<Loaded>>,
}

impl PowHosting {
    /// Writes the seeds a launch now must load; the caller launches, then calls
    /// [`PowHosting::launched`] or [`Planner::failed`].
    fn prepare(&self, wanted: &Loaded) -> Result<(), HostingError> {
        crate::pow::arti_state::write(
            &self.state_file,
            &self.key,
            self.planner.schedule(),
            wanted.epoch,
            &wanted.periods,
        )
        .map_err(|e| HostingError::Launch(e.to_string()))
    }

    fn launched(&mut self, wanted: Loaded) {
        tracing::info!(
            epoch = wanted.epoch,
            periods = wanted.periods.len(),
            "PoW seeds loaded"
        );
        self.loaded.send_replace(Some(wanted.clone()));
        self.planner.launched(wanted);
    }
}

/// [`launch`], with PoW seeds written first when `pow` is given (the first launch).
pub fn launch_with<R: Runtime>(
    client: &TorClient<R>,
    master: &OnionAddress,
    options: Options,
    pow: Option<&mut PowHosting>,
) -> Result<Launched, HostingError> {
    match pow {
        None => launch(client, master, options),
        Some(pow) => {
            let periods = pow.periods.borrow().clone();
            let wanted = pow.planner.wanted(SystemTime::now(), &periods);
            pow.prepare(&wanted)?;
            let l = launch(client, master, options)?;
            pow.launched(wanted);
            Ok(l)
        }
    }
}

/// A launched master service and its rendezvous requests.
pub type Launched = (
    Arc<RunningOnionService>,
    std::pin::Pin<Box<dyn Stream<Item = RendRequest> + Send>>,
);

/// Launches the master service under [`super::nickname`] with `intro_points` intro points and
/// checks that Arti hosts `master`.
pub fn launch<R: Runtime>(
    client: &TorClient<R>,
    master: &OnionAddress,
    options: Options,
) -> Result<Launched, HostingError> {
    let mut builder = OnionServiceConfigBuilder::default();
    builder
        .nickname(super::nickname())
        .num_intro_points(options.intro_points);
    if let Some(depth) = options.pow_queue_depth {
        builder.enable_pow(true).pow_rend_queue_depth(depth);
    }
    let config = builder
        .build()
        .map_err(|e| HostingError::Launch(e.to_string()))?;
    let (service, requests) = client
        .launch_onion_service(config)
        .map_err(|e| HostingError::Launch(e.to_string()))?
        .ok_or_else(|| {
            HostingError::Launch("onion services are disabled in the Arti configuration".into())
        })?;
    if service.onion_address() != Some(master.hs_id()) {
        let found = service
            .onion_address()
            .and_then(|id| tor_hscrypto::pk::HsIdKey::try_from(id).ok())
            .map(|k| OnionAddress::from(&k).to_string())
            .unwrap_or_else(|| "no identity".into());
        return Err(HostingError::Launch(format!(
            "Arti launched {found}, not the master address {master}"
        )));
    }
    Ok((service, Box::pin(requests)))
}

/// A request to relaunch the service; the answer says whether the new one runs.
pub type Relaunch = oneshot::Sender<Result<(), String>>;

/// How long a relaunch keeps trying while the old service lets go of its state directory.
const RELAUNCH_FOR: Duration = Duration::from_secs(30);

/// How often the host task asks the PoW planner whether new seeds are due.
const POW_CHECK: Duration = Duration::from_secs(5);

/// Owns the running service until shutdown: forwards its rendezvous requests to `out`, and on
/// each [`Relaunch`] drops it and launches it again (retrying while Arti still holds the old
/// instance's state lock). A failed relaunch leaves no service running; the next relaunch
/// request tries again. With `pow`, every launch first writes the seeds due now, and the
/// service is relaunched when the planner says new seeds are due.
#[allow(clippy::too_many_arguments)]
pub async fn host<R: Runtime>(
    client: Arc<TorClient<R>>,
    master: OnionAddress,
    options: Options,
    first: Launched,
    out: mpsc::Sender<RendRequest>,
    mut relaunch: mpsc::Receiver<Relaunch>,
    mut pow: Option<PowHosting>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut current: Option<Launched> = Some(first);
    let mut stop = shutdown.clone();
    let mut pow_check = tokio::time::interval(POW_CHECK);
    loop {
        let next = async {
            match current.as_mut() {
                Some((_, requests)) => requests.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = next => match r {
                Some(r) => {
                    if out.send(r).await.is_err() {
                        break;
                    }
                }
                None => {
                    tracing::warn!("the onion service's request stream ended");
                    current = None;
                }
            },
            _ = pow_check.tick(), if pow.is_some() => {
                let Some(p) = pow.as_mut() else { continue };
                let periods = p.periods.borrow().clone();
                let Some(wanted) = p.planner.due(SystemTime::now(), &periods) else {
                    continue;
                };
                tracing::info!(epoch = wanted.epoch, "relaunching the master onion service to load new PoW seeds");
                current = None;
                let Some(result) =
                    relaunched(&client, &master, options, pow.as_mut(), &mut shutdown).await
                else {
                    return;
                };
                match result {
                    Ok(l) => current = Some(l),
                    Err(e) => {
                        tracing::warn!(error = %e, "relaunching the master onion service failed");
                    }
                }
            }
            Some(done) = relaunch.recv() => {
                // The old service must be gone (its state lock released) before the new one.
                current = None;
                let Some(result) =
                    relaunched(&client, &master, options, pow.as_mut(), &mut shutdown).await
                else {
                    return;
                };
                let answer = match result {
                    Ok(l) => {
                        tracing::info!("master onion service relaunched");
                        current = Some(l);
                        Ok(())
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "relaunching the master onion service failed");
                        Err(e)
                    }
                };
                let _ = done.send(answer);
            }
            _ = stopped(&mut stop) => break,
        }
    }
}

/// Launches the service again (PoW seeds first, with `pow`), retrying for [`RELAUNCH_FOR`]
/// while the old instance lets go; `None` on shutdown.
async fn relaunched<R: Runtime>(
    client: &TorClient<R>,
    master: &OnionAddress,
    options: Options,
    mut pow: Option<&mut PowHosting>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Result<Launched, String>> {
    let t0 = tokio::time::Instant::now();
    loop {
        match launch_with(client, master, options, pow.as_deref_mut()) {
            Ok(l) => return Some(Ok(l)),
            Err(e) if t0.elapsed() >= RELAUNCH_FOR => {
                if let Some(p) = pow.as_deref_mut() {
                    p.planner.failed(SystemTime::now());
                }
                return Some(Err(e.to_string()));
            }
            Err(e) => {
                tracing::debug!(error = %e, "relaunch not possible yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stopped(shutdown) => return None,
                }
            }
        }
    }
}

/// Resolves once `shutdown` says `true` or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
