//! The joining node's side: build the proved request, send it to the master address's join
//! port through the embedded Arti client, check the reply.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use arti_client::TorClient;
use tokio::io::AsyncWriteExt;
use tor_basic_utils::retry::RetryDelay;
use tor_rtcompat::PreferredRuntime;

use super::invite::{mac, unix_secs, verify_mac, Invite};
use super::wire::{
    self, FrameKind, Grant, JoinReply, JoinRequest, RefusalCode, WireError, REPLY_LABEL,
    REQUEST_LABEL,
};
use super::JOIN_PORT;
use crate::mesh::MeshPublicKey;

/// Time allowed for Arti to bootstrap.
pub const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(180);
/// Time allowed for one attempt to reach the master address (descriptor, intro, rendezvous,
/// stream).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the joiner keeps starting attempts to reach the master address (a freshly
/// deployed cluster's descriptor may still be reaching its HSDirs).
pub const REACH_WINDOW: Duration = Duration::from_secs(300);
/// The first delay between attempts; later ones grow by decorrelated jitter.
pub const RETRY_MIN: Duration = Duration::from_secs(2);
/// The longest delay between attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// Time allowed for the answer once the request is sent.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a join failed, as the joiner's operator reads it.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The cluster said no.
    #[error("the cluster refused the join: {}{}", .code.explain(), if .detail.is_empty() { String::new() } else { format!(" ({})", .detail) })]
    Refused {
        /// Why.
        code: RefusalCode,
        /// The node's detail.
        detail: String,
    },
    /// The reply is not a valid answer to our request.
    #[error("the reply is not valid: {0}")]
    BadReply(String),
    /// A step took too long.
    #[error("{step} timed out after {after:?}")]
    Timeout {
        /// The step.
        step: &'static str,
        /// Its bound.
        after: Duration,
    },
    /// Arti failed.
    #[error("Arti: {what}: {reason}")]
    Arti {
        /// The step.
        what: &'static str,
        /// Arti's error.
        reason: String,
    },
    /// The wire format.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// The request frame for `invite` (and the request itself), stamped `now`.
pub fn request_frame(
    invite: &Invite,
    mesh_key: MeshPublicKey,
    endpoint: SocketAddr,
    node_id: Option<String>,
    now: SystemTime,
) -> Result<(Vec<u8>, JoinRequest), WireError> {
    let request = JoinRequest {
        invite: invite.terms.id,
        expires: invite.terms.expires,
        uses: invite.terms.uses,
        timestamp: unix_secs(now),
        nonce: rand::random(),
        mesh_key: *mesh_key.as_bytes(),
        endpoint,
        node_id,
    };
    let frame = wire::encode(FrameKind::Request, &request, |h, b| {
        mac(invite.secret(), REQUEST_LABEL, &[h, b])
    })?;
    Ok((frame, request))
}

/// Checks a reply frame to the request whose frame was `request_frame`: a refusal becomes
/// [`JoinError::Refused`], a grant must carry a valid MAC under the invite secret.
pub fn check_reply(
    invite: &Invite,
    request_frame: &[u8],
    reply: &[u8],
) -> Result<Grant, JoinError> {
    let req = wire::split(request_frame, FrameKind::Request)?;
    let f = wire::split(reply, FrameKind::Reply)?;
    let decoded = JoinReply::decode(f.body)?;
    match decoded {
        JoinReply::Refused(r) => Err(JoinError::Refused {
            code: r.code,
            detail: r.detail.chars().filter(|c| !c.is_control()).collect(),
        }),
        JoinReply::Granted(g) => {
            if !verify_mac(
                invite.secret(),
                REPLY_LABEL,
                &[&f.header, &req.mac, f.body],
                &f.mac,
            ) {
                return Err(JoinError::BadReply(
                    "its MAC does not verify (not from a node of this cluster, or not the answer to this request)".into(),
                ));
            }
            Ok(g)
        }
    }
}

/// Bootstraps `client` (progress on stderr), with a timeout.
pub async fn bootstrap(client: &TorClient<PreferredRuntime>) -> Result<(), JoinError> {
    let r = tokio::time::timeout(
        BOOTSTRAP_TIMEOUT,
        crate::hosting::bootstrap_reporting(client, |now| eprintln!("bootstrapping Tor: {now}")),
    )
    .await;
    match r {
        Err(_) => Err(JoinError::Timeout {
            step: "bootstrapping Tor",
            after: BOOTSTRAP_TIMEOUT,
        }),
        Ok(Err(e)) => Err(JoinError::Arti {
            what: "bootstrap",
            reason: e.to_string(),
        }),
        Ok(Ok(())) => Ok(()),
    }
}

/// Sends `frame` to the master address's join port and returns the reply frame.
///
/// Reaching the master address is retried (see [`reach`]): a cluster deployed a minute ago may
/// have its descriptor on one HSDir only. Once the request is sent it is not sent again (the
/// cluster refuses a replayed nonce); the answer has [`REPLY_TIMEOUT`].
pub async fn exchange(
    client: &TorClient<PreferredRuntime>,
    invite: &Invite,
    frame: &[u8],
) -> Result<Vec<u8>, JoinError> {
    let host = invite.master.to_string();
    let mut stream = reach(
        REACH_WINDOW,
        |attempt| {
            eprintln!(
                "reaching {host} (join port {JOIN_PORT}), attempt {attempt} (trying for up to {} s)",
                REACH_WINDOW.as_secs()
            );
            client.connect((host.as_str(), JOIN_PORT))
        },
        &mut rand::rng(),
    )
    .await?;
    let io = async {
        stream
            .write_all(frame)
            .await
            .map_err(|e| WireError::Io(e.to_string()))?;
        stream
            .flush()
            .await
            .map_err(|e| WireError::Io(e.to_string()))?;
        wire::read_frame(&mut stream, FrameKind::Reply).await
    };
    match tokio::time::timeout(REPLY_TIMEOUT, io).await {
        Err(_) => Err(JoinError::Timeout {
            step: "waiting for the cluster's answer",
            after: REPLY_TIMEOUT,
        }),
        Ok(r) => Ok(r?),
    }
}

/// Calls `connect` until it gives a stream. Each attempt has [`CONNECT_TIMEOUT`]; after a
/// failed one the next comes after a jittered delay (Arti's `RetryDelay`, decorrelated jitter
/// from [`RETRY_MIN`], at most [`RETRY_MAX`]); no attempt starts once `window` has passed since
/// the first, so the whole takes at most `window` + [`CONNECT_TIMEOUT`]. The last failure is
/// the error. Time is tokio's, so tests drive it.
pub async fn reach<S, E, F, Fut, R>(
    window: Duration,
    mut connect: F,
    rng: &mut R,
) -> Result<S, JoinError>
where
    E: std::fmt::Display,
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<S, E>>,
    R: rand::Rng,
{
    let start = tokio::time::Instant::now();
    let mut delay = RetryDelay::from_duration(RETRY_MIN);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let failure = match tokio::time::timeout(CONNECT_TIMEOUT, connect(attempt)).await {
            Ok(Ok(s)) => return Ok(s),
            Err(_) => JoinError::Timeout {
                step: "reaching the master address",
                after: CONNECT_TIMEOUT,
            },
            Ok(Err(e)) => JoinError::Arti {
                what: "connecting to the master address",
                reason: e.to_string(),
            },
        };
        let wait = delay.next_delay(rng).clamp(RETRY_MIN, RETRY_MAX);
        if start.elapsed() + wait >= window {
            return Err(failure);
        }
        eprintln!(
            "  attempt {attempt} failed: {failure}; next in {:.0} s",
            wait.as_secs_f64()
        );
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::wire::{KeyMaterial, Refusal};
    use crate::mesh::ClusterToken;

    fn grant() -> Grant {
        Grant {
            node_id: "node-b".into(),
            token: vec![1; 32],
            members: vec![crate::join::wire::fixtures::member("node-a", 1)],
            keys: KeyMaterial::Blinded(vec![vec![0; crate::keys::BLINDED_FILE_LEN]]),
            holder_live: true,
            virtual_ports: vec![80],
            share_periods: 8,
            mesh: crate::join::wire::fixtures::timers(),
            authorized_clients: None,
            pow: None,
        }
    }

    #[test]
    fn a_grant_is_accepted_only_with_the_mac_bound_to_our_request() {
        let token = ClusterToken::new(vec![3u8; 32]).unwrap();
        let master = crate::keys::MasterIdentity::generate(&mut rand::rng()).onion_address();
        let now = SystemTime::now();
        let inv = Invite::mint(&token, &master, Duration::from_secs(60), 1, now).unwrap();
        let key = crate::mesh::MeshKeys::generate().public_key();
        let ep: SocketAddr = "192.0.2.2:51820".parse().unwrap();
        let (req, _) = request_frame(&inv, key, ep, None, now).unwrap();
        let proof = wire::split(&req, FrameKind::Request).unwrap().mac;
        let reply = |key: &[u8; 32], proof: [u8; 32]| {
            wire::encode(FrameKind::Reply, &JoinReply::Granted(grant()), |h, b| {
                mac(key, REPLY_LABEL, &[h, &proof, b])
            })
            .unwrap()
        };
        let good = reply(inv.secret(), proof);
        assert_eq!(check_reply(&inv, &req, &good).unwrap().node_id, "node-b");
        // Made without the secret, or for another request: refused.
        assert!(matches!(
            check_reply(&inv, &req, &reply(&[0; 32], proof)),
            Err(JoinError::BadReply(_))
        ));
        assert!(matches!(
            check_reply(&inv, &req, &reply(inv.secret(), [9; 32])),
            Err(JoinError::BadReply(_))
        ));
        // A refusal is shown with its reason.
        let refused = wire::encode(
            FrameKind::Reply,
            &JoinReply::Refused(Refusal {
                code: RefusalCode::UsedUp,
                detail: "invite 0102 used 1 of 1".into(),
            }),
            |_, _| [0; 32],
        )
        .unwrap();
        let e = check_reply(&inv, &req, &refused).unwrap_err().to_string();
        assert!(
            e.contains("already used") && e.contains("invite 0102"),
            "{e}"
        );
    }

    /// A freshly deployed cluster: the first attempts find no descriptor, a later one gets in.
    #[tokio::test(start_paused = true)]
    async fn reaching_retries_with_jittered_delays_until_the_master_answers() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut starts = Vec::new();
        let t0 = tokio::time::Instant::now();
        let r = reach(
            REACH_WINDOW,
            |n| {
                starts.push(t0.elapsed());
                async move {
                    if n < 5 {
                        Err("Onion Service not found")
                    } else {
                        Ok(n)
                    }
                }
            },
            &mut rng,
        )
        .await;
        assert_eq!(r.unwrap(), 5, "the fifth attempt got in");
        assert_eq!(starts.len(), 5);
        let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        for g in &gaps {
            assert!((RETRY_MIN..=RETRY_MAX).contains(g), "{gaps:?}");
        }
        assert!(
            gaps.windows(2).any(|w| w[0] != w[1]),
            "jittered, not fixed: {gaps:?}"
        );
    }

    /// A master that never answers: attempts start for `REACH_WINDOW`, then the last failure
    /// (with Arti's reason) is the error; a hanging attempt is cut at `CONNECT_TIMEOUT`.
    #[tokio::test(start_paused = true)]
    async fn reaching_gives_up_after_the_window_with_the_last_reason() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let t0 = tokio::time::Instant::now();
        let mut last_start = Duration::ZERO;
        let mut n_attempts = 0;
        let r: Result<(), _> = reach(
            REACH_WINDOW,
            |n| {
                n_attempts = n;
                last_start = t0.elapsed();
                async { Err::<(), _>("Onion Service not found") }
            },
            &mut rng,
        )
        .await;
        let e = r.unwrap_err().to_string();
        assert!(e.contains("Onion Service not found"), "{e}");
        assert!(last_start < REACH_WINDOW);
        assert!(t0.elapsed() <= REACH_WINDOW, "{:?}", t0.elapsed());
        assert!(
            t0.elapsed() + RETRY_MAX >= REACH_WINDOW,
            "tried for the whole window: {:?}",
            t0.elapsed()
        );
        // At least window / RETRY_MAX attempts, at most window / RETRY_MIN.
        assert!((10..=150).contains(&n_attempts), "{n_attempts}");

        let t0 = tokio::time::Instant::now();
        let r: Result<(), _> = reach(
            Duration::from_secs(200),
            |_| std::future::pending::<Result<(), &str>>(),
            &mut rng,
        )
        .await;
        assert!(
            matches!(r, Err(JoinError::Timeout { after, .. }) if after == CONNECT_TIMEOUT),
            "{r:?}"
        );
        // Two attempts of 120 s each fit (the second starts before 200 s).
        assert!(t0.elapsed() >= 2 * CONNECT_TIMEOUT, "{:?}", t0.elapsed());
        assert!(t0.elapsed() <= 200 * Duration::from_secs(1) + CONNECT_TIMEOUT);
    }
}
