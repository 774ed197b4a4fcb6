//! The joining node's side: build the proved request, send it to the master address's join
//! port through the embedded Arti client, check the reply.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use arti_client::TorClient;
use tokio::io::AsyncWriteExt;
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
/// Time allowed to reach the master address (descriptor, intro, rendezvous) and stream.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);
/// Time allowed for the answer once the request is sent.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Connection attempts (a fresh service's descriptor may not be everywhere yet).
pub const ATTEMPTS: u32 = 3;

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
pub async fn exchange(
    client: &TorClient<PreferredRuntime>,
    invite: &Invite,
    frame: &[u8],
) -> Result<Vec<u8>, JoinError> {
    let host = invite.master.to_string();
    let mut last: Option<JoinError> = None;
    for attempt in 1..=ATTEMPTS {
        eprintln!("reaching {host} (join port {JOIN_PORT}), attempt {attempt} of {ATTEMPTS}");
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, client.connect((host.as_str(), JOIN_PORT)))
                .await
            {
                Err(_) => {
                    last = Some(JoinError::Timeout {
                        step: "reaching the master address",
                        after: CONNECT_TIMEOUT,
                    });
                    continue;
                }
                Ok(Err(e)) => {
                    last = Some(JoinError::Arti {
                        what: "connecting to the master address",
                        reason: e.to_string(),
                    });
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
                Ok(Ok(s)) => s,
            };
        let mut stream = stream;
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
        return match tokio::time::timeout(REPLY_TIMEOUT, io).await {
            Err(_) => Err(JoinError::Timeout {
                step: "waiting for the cluster's answer",
                after: REPLY_TIMEOUT,
            }),
            Ok(r) => Ok(r?),
        };
    }
    Err(last.unwrap_or(JoinError::Timeout {
        step: "reaching the master address",
        after: CONNECT_TIMEOUT,
    }))
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
}
