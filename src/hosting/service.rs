//! The master onion service on the embedded Arti client: launching it (and checking that Arti
//! launched the master address, not an identity of its own), and the host task that owns it,
//! hands every rendezvous request to one channel, and relaunches it on request (self-repair)
//! without the stream task noticing.

use std::sync::Arc;
use std::time::Duration;

use arti_client::TorClient;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tor_hsservice::config::OnionServiceConfigBuilder;
use tor_hsservice::{RendRequest, RunningOnionService};
use tor_rtcompat::Runtime;

use super::HostingError;
use crate::keys::OnionAddress;

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
    intro_points: u8,
) -> Result<Launched, HostingError> {
    let config = OnionServiceConfigBuilder::default()
        .nickname(super::nickname())
        .num_intro_points(intro_points)
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

/// Owns the running service until shutdown: forwards its rendezvous requests to `out`, and on
/// each [`Relaunch`] drops it and launches it again (retrying while Arti still holds the old
/// instance's state lock). A failed relaunch leaves no service running; the next relaunch
/// request tries again.
pub async fn host<R: Runtime>(
    client: Arc<TorClient<R>>,
    master: OnionAddress,
    intro_points: u8,
    first: Launched,
    out: mpsc::Sender<RendRequest>,
    mut relaunch: mpsc::Receiver<Relaunch>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut current: Option<Launched> = Some(first);
    let mut stop = shutdown.clone();
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
            Some(done) = relaunch.recv() => {
                // The old service must be gone (its state lock released) before the new one.
                current = None;
                let Some(result) = relaunched(&client, &master, intro_points, &mut shutdown).await
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

/// Launches the service again, retrying for [`RELAUNCH_FOR`] while the old instance lets go;
/// `None` on shutdown.
async fn relaunched<R: Runtime>(
    client: &TorClient<R>,
    master: &OnionAddress,
    intro_points: u8,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Result<Launched, String>> {
    let t0 = tokio::time::Instant::now();
    loop {
        match launch(client, master, intro_points) {
            Ok(l) => return Some(Ok(l)),
            Err(e) if t0.elapsed() < RELAUNCH_FOR => {
                tracing::debug!(error = %e, "relaunch not possible yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stopped(shutdown) => return None,
                }
            }
            Err(e) => return Some(Err(e.to_string())),
        }
    }
}

/// Resolves once `shutdown` says `true` or its sender is gone.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
