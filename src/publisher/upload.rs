//! Uploading descriptors to the responsible HSDirs through Arti's onion-service circuits, and
//! fetching them back to check what the network serves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arti_client::TorClient;
use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use tor_circmgr::hspool::HsCircPool;
use tor_dirclient::request::{HsDescDownloadRequest, HsDescUploadRequest};
use tor_hscrypto::pk::HsBlindId;
use tor_hscrypto::time::TimePeriod;
use tor_linkspec::{HasRelayIds, OwnedCircTarget};
use tor_llcrypto::pk::rsa::RsaIdentity;
use tor_netdir::NetDir;
use tor_rtcompat::Runtime;

use super::reactor::Uploader;
use super::state::{RevisionCheck, UploadJob};

/// Concurrent uploads at most (Arti's value).
const MAX_CONCURRENT: usize = 16;

/// The outcome of one upload to one HSDir.
#[derive(Debug, Clone)]
pub struct HsDirResult {
    /// The HSDir's RSA identity (hex).
    pub hsdir: String,
    /// `None` on success, else what went wrong.
    pub error: Option<String>,
    /// How long the attempt took.
    pub elapsed: Duration,
    /// Which of the texts it was given (its index in `texts`).
    pub text_index: usize,
}

/// How many HSDirs are responsible for `blind_id` in `period` (the upload ring).
pub fn upload_ring_len(
    netdir: &NetDir,
    blind_id: HsBlindId,
    period: TimePeriod,
) -> Result<usize, String> {
    Ok(netdir
        .hs_dirs_upload(blind_id, period)
        .map_err(|e| format!("HSDir ring: {e}"))?
        .count())
}

/// Uploads to every HSDir responsible for `blind_id` in `period`, each within `timeout`: the
/// HSDir at position `i` of the upload ring gets `texts[i % texts.len()]` (one text: every
/// HSDir gets the same descriptor; several: distinct descriptors).
pub async fn upload_to_hsdirs<R: Runtime>(
    runtime: &R,
    pool: &Arc<HsCircPool<R>>,
    netdir: &NetDir,
    blind_id: HsBlindId,
    period: TimePeriod,
    texts: &[Arc<str>],
    timeout: Duration,
) -> Result<Vec<HsDirResult>, String> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let hsdirs: Vec<OwnedCircTarget> = netdir
        .hs_dirs_upload(blind_id, period)
        .map_err(|e| format!("HSDir ring: {e}"))?
        .map(|r| OwnedCircTarget::from_circ_target(&r))
        .collect();
    let results = stream::iter(hsdirs.into_iter().enumerate())
        .map(|(i, target)| {
            let text_index = i % texts.len();
            let text = Arc::clone(&texts[text_index]);
            async move {
                let hsdir = hsdir_name(&target);
                let start = Instant::now();
                let attempt = async {
                    let tunnel = pool
                        .get_or_launch_svc_dir(netdir, target)
                        .await
                        .map_err(|e| format!("circuit: {e}"))?;
                    let stream = tunnel
                        .begin_dir_stream()
                        .await
                        .map_err(|e| format!("dir stream: {e}"))?;
                    exchange(runtime, stream, &HsDescUploadRequest::new(text), "upload")
                        .await
                        .map(drop)
                };
                let error = match tokio::time::timeout(timeout, attempt).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e),
                    Err(_) => Some(format!("timed out after {} s", timeout.as_secs())),
                };
                HsDirResult {
                    hsdir,
                    error,
                    elapsed: start.elapsed(),
                    text_index,
                }
            }
        })
        .buffer_unordered(MAX_CONCURRENT)
        .collect()
        .await;
    Ok(results)
}

/// The publisher's HSDirs, reached through the embedded Arti client: each job's HSDir is
/// looked up in the current consensus, reached over an onion-service directory circuit, and
/// given the descriptor within `timeout`; at most [`MAX_CONCURRENT`] at once.
pub struct ArtiUploader<R: Runtime> {
    client: Arc<TorClient<R>>,
    timeout: Duration,
    slots: Arc<tokio::sync::Semaphore>,
}

impl<R: Runtime> ArtiUploader<R> {
    /// Uploads through `client`, each attempt within `timeout`.
    pub fn new(client: Arc<TorClient<R>>, timeout: Duration) -> ArtiUploader<R> {
        ArtiUploader {
            client,
            timeout,
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT)),
        }
    }
}

impl<R: Runtime> ArtiUploader<R> {
    /// One directory request to the HSDir `hsdir` (RSA identity, hex): waits for a slot,
    /// finds the HSDir in the current consensus, opens a directory stream over an
    /// onion-service circuit (`upload`) or a client one, sends `req` and returns the answer,
    /// all within the timeout.
    fn ask<Q>(
        &self,
        hsdir: String,
        upload: bool,
        req: Q,
        what: &'static str,
    ) -> BoxFuture<'static, Result<String, String>>
    where
        Q: tor_dirclient::request::Requestable + Send + Sync + 'static,
    {
        let client = Arc::clone(&self.client);
        let slots = Arc::clone(&self.slots);
        let timeout = self.timeout;
        Box::pin(async move {
            let _slot = slots.acquire_owned().await.map_err(|e| e.to_string())?;
            let (netdir, pool) = crate::hosting::netdir_and_pool(&client)?;
            let id = RsaIdentity::from_hex(hsdir.trim_start_matches('$'))
                .ok_or_else(|| format!("not an RSA identity: {hsdir}"))?;
            let relay = netdir
                .by_id(&id)
                .ok_or_else(|| "the HSDir is no longer in the consensus".to_string())?;
            let target = OwnedCircTarget::from_circ_target(&relay);
            let attempt = async {
                let circuit = |e: tor_circmgr::Error| format!("circuit: {e}");
                let dir_stream = |e: tor_circmgr::Error| format!("dir stream: {e}");
                let stream = if upload {
                    let tunnel = pool.get_or_launch_svc_dir(&netdir, target).await;
                    tunnel.map_err(circuit)?.begin_dir_stream().await
                } else {
                    let tunnel = pool.get_or_launch_client_dir(&netdir, target).await;
                    tunnel.map_err(circuit)?.begin_dir_stream().await
                }
                .map_err(dir_stream)?;
                exchange(client.runtime(), stream, &req, what).await
            };
            match tokio::time::timeout(timeout, attempt).await {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {} s", timeout.as_secs())),
            }
        })
    }
}

impl<R: Runtime> Uploader for ArtiUploader<R> {
    fn upload(&self, job: UploadJob) -> BoxFuture<'static, Result<(), String>> {
        let answer = self.ask(
            job.hsdir,
            true,
            HsDescUploadRequest::new(job.text),
            "upload",
        );
        Box::pin(async move { answer.await.map(drop) })
    }

    fn held_revision(&self, check: RevisionCheck) -> BoxFuture<'static, Result<u64, String>> {
        let answer = self.ask(
            check.hsdir,
            false,
            HsDescDownloadRequest::new(check.blind_id),
            "fetch",
        );
        Box::pin(async move {
            let text = answer.await?;
            // Only a descriptor signed under this period's blinded key counts (an HSDir cannot
            // make one up); its time bounds do not matter here. The revision counter is in the
            // signed outer layer, so restricted descriptors (which we cannot decrypt) count too.
            held_revision(&text, &check.blind_id)
        })
    }
}

/// The revision counter of the descriptor `text` if its outer layer is signed under
/// `blind_id` (the outer layer only: it opens without the inner layer's client keys).
pub fn held_revision(text: &str, blind_id: &HsBlindId) -> Result<u64, String> {
    use tor_checkable::{SelfSigned as _, Timebound as _};
    tor_netdoc::doc::hsdesc::HsDesc::parse(text, blind_id)
        .map_err(|e| format!("the HSDir's descriptor does not parse: {e}"))?
        .check_signature()
        .map_err(|e| format!("the HSDir's descriptor does not verify: {e}"))?
        .dangerously_assume_timely();
    text.lines()
        .find_map(|l| l.strip_prefix("revision-counter "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .ok_or_else(|| "the HSDir's descriptor has no revision-counter".to_string())
}

/// Fetches the descriptor for `blind_id` from every HSDir a client would ask in `period`,
/// returning each one's text (or error).
pub async fn fetch_from_hsdirs<R: Runtime>(
    runtime: &R,
    pool: &Arc<HsCircPool<R>>,
    netdir: &NetDir,
    blind_id: HsBlindId,
    period: TimePeriod,
) -> Result<Vec<(String, Result<String, String>)>, String> {
    let hsdirs: Vec<OwnedCircTarget> = netdir
        .hs_dirs_download(blind_id, period, &mut rand::rng())
        .map_err(|e| format!("HSDir ring: {e}"))?
        .iter()
        .map(OwnedCircTarget::from_circ_target)
        .collect();
    let mut out = Vec::new();
    for target in hsdirs {
        let hsdir = hsdir_name(&target);
        let attempt = async {
            let tunnel = pool
                .get_or_launch_client_dir(netdir, target)
                .await
                .map_err(|e| format!("circuit: {e}"))?;
            let stream = tunnel
                .begin_dir_stream()
                .await
                .map_err(|e| format!("dir stream: {e}"))?;
            exchange(
                runtime,
                stream,
                &HsDescDownloadRequest::new(blind_id),
                "fetch",
            )
            .await
        };
        let r = tokio::time::timeout(Duration::from_secs(60), attempt)
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        out.push((hsdir, r));
    }
    Ok(out)
}

/// An HSDir's name for results and logs: its RSA identity, or `?`.
fn hsdir_name(target: &OwnedCircTarget) -> String {
    target
        .rsa_identity()
        .map(|id| id.to_string())
        .unwrap_or_else(|| "?".into())
}

/// Sends one directory request on an open dir stream and returns the HSDir's answer body;
/// a non-200 answer is an error naming `what` was attempted.
async fn exchange<R, Q, S>(
    runtime: &R,
    mut stream: S,
    req: &Q,
    what: &str,
) -> Result<String, String>
where
    R: Runtime,
    Q: tor_dirclient::request::Requestable + ?Sized,
    S: futures::AsyncRead + futures::AsyncWrite + Send + Unpin,
{
    tor_dirclient::send_request(runtime, req, &mut stream, None)
        .await
        .map_err(|e| format!("{what}: {e}"))?
        .into_output_string()
        .map_err(|e| format!("HSDir answered: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::{self, Capabilities, Spec};
    use std::time::{Duration, SystemTime};
    use tor_hscrypto::pk::{HsIdKey, HsIdKeypair};
    use tor_llcrypto::pk::{curve25519, ed25519};

    #[test]
    fn the_held_revision_is_read_from_restricted_descriptors_too_and_only_if_signed() {
        let kp = ed25519::Keypair::from_bytes(&[9; 32]);
        let id = HsIdKeypair::from(ed25519::ExpandedKeypair::from(&kp));
        let hsid = HsIdKey::from(&id);
        let now = SystemTime::now();
        let tp =
            TimePeriod::new(Duration::from_secs(86400), now, Duration::from_secs(43200)).unwrap();
        let (blind_pk, blind, _) = id.compute_blinded_key(tp).unwrap();
        let caps = Capabilities {
            auth_clients: Some(vec![curve25519::PublicKey::from([4u8; 32])]),
            ..Default::default()
        };
        let ipts = [descriptor::ipt_from_wire(&descriptor::test_ipt_wire(1)).unwrap()];
        let revision = descriptor::revision_at_offset(&blind, Duration::from_secs(500));
        let spec = Spec {
            master: &hsid,
            blind: &blind,
            period: tp,
            revision,
            intro_points: &ipts,
            caps: &caps,
            lifetime: Duration::from_secs(3 * 3600),
        };
        let text = descriptor::build(&spec, now, &mut rand::rng())
            .unwrap()
            .text;
        assert_eq!(
            held_revision(&text, &blind_pk.id()),
            Ok(u64::from(revision))
        );
        // Another revision written in: the signature no longer holds.
        let forged = text.replace(
            &format!("revision-counter {}", u64::from(revision)),
            "revision-counter 18446744073709551615",
        );
        assert!(held_revision(&forged, &blind_pk.id()).is_err());
        // Another service's blinded id: refused.
        let other = HsIdKeypair::from(ed25519::ExpandedKeypair::from(
            &ed25519::Keypair::from_bytes(&[8; 32]),
        ));
        let (other_blind, _, _) = other.compute_blinded_key(tp).unwrap();
        assert!(held_revision(&text, &other_blind.id()).is_err());
        assert!(held_revision("garbage", &blind_pk.id()).is_err());
    }
}
