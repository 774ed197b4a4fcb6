//! The cluster side of a join: one stream on the master address's join port, one request, one
//! reply. Every step has a timeout; the rate limit is taken before the request is read; a
//! refusal is counted and answered with its reason (a plain client gets a `malformed`
//! refusal and nothing else; the target never sees the stream).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tor_hscrypto::time::TimePeriod;

use super::authority::{Authority, Checked, JoinCounters, RateLimit};
use super::invite::mac;
use super::wire::{
    self, FrameKind, Grant, JoinReply, JoinRequest, KeyMaterial, Member, MeshTimers, Refusal,
    RefusalCode, REPLY_LABEL,
};
use crate::config::MasterConfig;
use crate::keys::{KeySource, OnionAddress};
use crate::membership::{ClusterMsg, KeyCoverage, Liveness, MeshCommand, MeshStatus};
use crate::mesh::{ClusterToken, MeshPublicKey};

/// Time allowed for the request to arrive once the stream is open.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Time allowed to write the reply.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// Join streams allowed per rendezvous circuit.
pub const STREAMS_PER_CIRCUIT: u32 = 1;

/// What this node hands out, from its configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Hand out the identity secret (if this node holds it) instead of blinded keys.
    pub hand_out_identity: bool,
    /// Periods ahead covered by the blinded keys handed out.
    pub share_periods: u8,
    /// `target.virtual_ports`.
    pub virtual_ports: Vec<u16>,
    /// Mesh timers.
    pub timers: MeshTimers,
    /// The rate limit.
    pub limit: RateLimit,
    /// `[pow]`, when on.
    pub pow: Option<super::wire::PowPolicy>,
}

/// The join service of one node.
pub struct JoinServer {
    authority: Mutex<Authority>,
    token: ClusterToken,
    master: OnionAddress,
    master_keys: MasterConfig,
    policy: Policy,
    node_id: String,
    mesh: watch::Receiver<Option<MeshStatus>>,
    period: watch::Receiver<Option<TimePeriod>>,
    commands: mpsc::Sender<MeshCommand>,
    last_warning: Mutex<Option<Instant>>,
}

/// What a grant is built from (a snapshot, so building is a pure function).
pub struct GrantInputs<'a> {
    /// This node, first in the member list.
    pub me: Member,
    /// Live members and their key coverage.
    pub members: Vec<(Member, Option<KeyCoverage>)>,
    /// Whether this node holds the identity secret.
    pub me_holder: bool,
    /// The cluster token.
    pub token: &'a [u8],
    /// Key material.
    pub keys: KeyMaterial,
    /// Policy.
    pub policy: &'a Policy,
    /// Restricted discovery's clients now (`None`: public).
    pub authorized_clients: Option<Vec<[u8; 32]>>,
}

/// Builds the grant for `req`: a unique node id (the one asked for if free), the members, the
/// keys. Refuses a joiner whose key or endpoint is already a member's.
pub fn build_grant(inputs: GrantInputs<'_>, req: &JoinRequest) -> Result<Grant, Refusal> {
    let all: Vec<&Member> = std::iter::once(&inputs.me)
        .chain(inputs.members.iter().map(|(m, _)| m))
        .collect();
    if all.iter().any(|m| m.key == req.mesh_key) {
        return Err(Refusal {
            code: RefusalCode::Conflict,
            detail: "this WireGuard key is already a member's".into(),
        });
    }
    if all.iter().any(|m| m.endpoint == req.endpoint) {
        return Err(Refusal {
            code: RefusalCode::Conflict,
            detail: format!("endpoint {} is already a member's", req.endpoint),
        });
    }
    let taken: BTreeSet<&str> = all.iter().map(|m| m.node_id.as_str()).collect();
    let node_id = match req.node_id.as_deref() {
        Some(id) if !taken.contains(id) => id.to_string(),
        _ => loop {
            let id = super::fresh_node_id();
            if !taken.contains(id.as_str()) {
                break id;
            }
        },
    };
    let holder_live = inputs.me_holder
        || inputs
            .members
            .iter()
            .any(|(_, k)| k.is_some_and(|k| k.holder));
    let mut members = vec![inputs.me.clone()];
    members.extend(
        inputs
            .members
            .iter()
            .map(|(m, _)| m.clone())
            .take(wire::MAX_MEMBERS - 1),
    );
    Ok(Grant {
        node_id,
        token: inputs.token.to_vec(),
        members,
        keys: inputs.keys,
        holder_live,
        virtual_ports: inputs.policy.virtual_ports.clone(),
        share_periods: inputs.policy.share_periods,
        mesh: inputs.policy.timers,
        authorized_clients: inputs.authorized_clients,
        pow: inputs.policy.pow,
    })
}

/// The key material this node may hand out at `current`: the identity secret if the policy
/// allows and this node has it; else blinded keys from the previous period to
/// `share_periods` ahead (computed, or the ones this node holds). `None` if it has none for
/// the current period.
pub fn key_material(
    source: &KeySource,
    master: &OnionAddress,
    current: TimePeriod,
    policy: &Policy,
) -> Option<KeyMaterial> {
    let first = current.prev().unwrap_or(current);
    match source {
        KeySource::Identity(id) if policy.hand_out_identity => {
            Some(KeyMaterial::Identity(id.to_ctor_bytes().to_vec()))
        }
        KeySource::Identity(id) => {
            let mut keys = Vec::new();
            let mut tp = first;
            for _ in 0..(usize::from(policy.share_periods) + 2).min(wire::MAX_GRANT_KEYS) {
                keys.push(crate::keys::blinded_key_bytes(id, tp).ok()?.to_vec());
                tp = tp.next()?;
            }
            Some(KeyMaterial::Blinded(keys))
        }
        KeySource::BlindedDir { keys, .. } => {
            let same_kind = |p: &TimePeriod| {
                p.length() == current.length()
                    && p.epoch_offset_in_sec() == current.epoch_offset_in_sec()
            };
            if !keys.iter().any(|k| k.period == current) {
                return None;
            }
            let out: Vec<Vec<u8>> = keys
                .iter()
                .filter(|k| same_kind(&k.period) && k.period.interval_num() >= first.interval_num())
                .take(wire::MAX_GRANT_KEYS)
                .map(|k| k.to_bytes(master).to_vec())
                .collect();
            Some(KeyMaterial::Blinded(out))
        }
    }
}

/// Everything the join server needs.
pub struct ServerConfig {
    /// The cluster token.
    pub token: ClusterToken,
    /// The master address.
    pub master: OnionAddress,
    /// Where the master keys are (loaded per grant, so fresh blinded keys are handed out).
    pub master_keys: MasterConfig,
    /// Policy.
    pub policy: Policy,
    /// This node's id.
    pub node_id: String,
    /// The mesh status (members).
    pub mesh: watch::Receiver<Option<MeshStatus>>,
    /// The current time period (from the consensus).
    pub period: watch::Receiver<Option<TimePeriod>>,
    /// Requests to the mesh.
    pub commands: mpsc::Sender<MeshCommand>,
}

impl JoinServer {
    /// A join server.
    pub fn new(c: ServerConfig) -> JoinServer {
        JoinServer {
            authority: Mutex::new(Authority::new(
                c.token.clone(),
                c.master.clone(),
                c.policy.limit,
            )),
            token: c.token,
            master: c.master,
            master_keys: c.master_keys,
            policy: c.policy,
            node_id: c.node_id,
            mesh: c.mesh,
            period: c.period,
            commands: c.commands,
            last_warning: Mutex::new(None),
        }
    }

    fn auth(&self) -> std::sync::MutexGuard<'_, Authority> {
        self.authority.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The counters.
    pub fn counters(&self) -> JoinCounters {
        self.auth().counters().clone()
    }

    /// A redemption another node reported over the mesh.
    pub fn redeemed_elsewhere(&self, invite: [u8; 8], nonce: [u8; 16], expires: u64) {
        self.auth()
            .redeemed(invite, nonce, expires, SystemTime::now());
    }

    /// A join stream refused before it was read (too many on one circuit): counted.
    pub fn refuse_stream(&self) {
        self.auth().refuse(RefusalCode::RateLimited);
        self.warn("join stream refused: more than one on a circuit");
    }

    fn warn(&self, what: &str) {
        let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            let refused: u64 = self.auth().counters().refused.values().sum();
            tracing::warn!(refused_total = refused, "{what}");
        }
    }

    /// Answers one join stream (already accepted) to the end.
    pub async fn handle<S>(&self, mut stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let reply = self.answer(&mut stream).await;
        let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
            stream.write_all(&reply).await?;
            stream.flush().await?;
            stream.shutdown().await
        })
        .await;
    }

    async fn answer<S>(&self, stream: &mut S) -> Vec<u8>
    where
        S: tokio::io::AsyncRead + Unpin,
    {
        let admitted = self.auth().admit(Instant::now());
        if let Err(code) = admitted {
            self.warn("join attempt refused: rate limit");
            return refusal(code, "");
        }
        let frame = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            wire::read_frame(stream, FrameKind::Request),
        )
        .await
        {
            Err(_) => {
                self.auth().refuse(RefusalCode::Malformed);
                self.warn("join attempt refused: no request in time");
                return refusal(RefusalCode::Malformed, "no request in time");
            }
            Ok(Err(e)) => {
                self.auth().refuse(RefusalCode::Malformed);
                self.warn("join attempt refused: not a join request");
                return refusal(RefusalCode::Malformed, &e.to_string());
            }
            Ok(Ok(f)) => f,
        };
        let now = SystemTime::now();
        let checked = self.auth().check(&frame, now);
        let checked = match checked {
            Ok(c) => c,
            Err(code) => {
                self.warn(&format!("join attempt refused: {}", code.explain()));
                return refusal(code, "");
            }
        };
        match self.grant(&checked) {
            Ok(grant) => {
                let bytes = wire::encode(
                    FrameKind::Reply,
                    &JoinReply::Granted(grant.clone()),
                    |h, b| mac(&checked.secret, REPLY_LABEL, &[h, &checked.proof, b]),
                );
                let bytes = match bytes {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(error = %e, "join grant does not fit the reply bound");
                        return refusal(RefusalCode::NoKeys, "the grant is too large");
                    }
                };
                self.auth()
                    .granted(&checked.terms, checked.request.nonce, now);
                let _ =
                    self.commands
                        .try_send(MeshCommand::Broadcast(ClusterMsg::InviteRedeemed {
                            invite: checked.terms.id,
                            nonce: checked.request.nonce,
                            expires: checked.terms.expires,
                        }));
                if let Ok(key) = MeshPublicKey::from_bytes(checked.request.mesh_key) {
                    let _ = self.commands.try_send(MeshCommand::ExpectPeer {
                        key,
                        endpoint: checked.request.endpoint,
                    });
                    tracing::info!(
                        node = %grant.node_id,
                        peer = %key.short(),
                        endpoint = %checked.request.endpoint,
                        invite = %checked.terms.id_hex(),
                        keys = ?grant.keys,
                        "join granted"
                    );
                }
                bytes
            }
            Err(r) => {
                self.auth().refuse(r.code);
                self.warn(&format!("join refused: {}", r.code.explain()));
                refusal(r.code, &r.detail)
            }
        }
    }

    fn grant(&self, checked: &Checked) -> Result<Grant, Refusal> {
        let no_keys = |detail: &str| Refusal {
            code: RefusalCode::NoKeys,
            detail: detail.into(),
        };
        let Some(current) = *self.period.borrow() else {
            return Err(no_keys("this node has no consensus yet"));
        };
        let mesh = self.mesh.borrow().clone();
        let Some(mesh) = mesh else {
            return Err(Refusal {
                code: RefusalCode::NotServing,
                detail: "this node's mesh is not running".into(),
            });
        };
        let source =
            KeySource::load(&self.master_keys).map_err(|_| no_keys("master keys unreadable"))?;
        let keys = key_material(&source, &self.master, current, &self.policy)
            .ok_or_else(|| no_keys("no blinded key for the current period"))?;
        let me = Member {
            node_id: self.node_id.clone(),
            key: MeshPublicKey::from_base64(&mesh.public_key)
                .map(|k| *k.as_bytes())
                .map_err(|_| no_keys("own mesh key unreadable"))?,
            endpoint: mesh
                .endpoint
                .parse()
                .map_err(|_| no_keys("own endpoint unreadable"))?,
        };
        let members = mesh
            .members
            .iter()
            .filter(|m| m.liveness != Liveness::Down && !m.duplicate_id)
            .filter_map(|m| {
                Some((
                    Member {
                        node_id: m.node_id.clone(),
                        key: *MeshPublicKey::from_base64(&m.public_key).ok()?.as_bytes(),
                        endpoint: m.endpoint.parse().ok()?,
                    },
                    m.keys,
                ))
            })
            .collect();
        // The clients as this node reads them now (a joiner must never publish for another set,
        // least of all a public one).
        let authorized_clients = match &self.master_keys.restricted {
            Some(r) => Some(
                crate::keys::load_authorized_clients(r.dir.as_deref(), &r.list)
                    .map_err(|_| Refusal {
                        code: RefusalCode::NotServing,
                        detail: "this node cannot read its authorized clients".into(),
                    })?
                    .iter()
                    .map(|k| k.to_bytes())
                    .collect(),
            ),
            None => None,
        };
        build_grant(
            GrantInputs {
                me,
                members,
                me_holder: matches!(source, KeySource::Identity(_)),
                token: self.token.secret_bytes(),
                keys,
                policy: &self.policy,
                authorized_clients,
            },
            &checked.request,
        )
    }
}

/// A refusal frame (its MAC is zeros: see the wire module).
pub fn refusal(code: RefusalCode, detail: &str) -> Vec<u8> {
    let detail: String = detail.chars().take(wire::MAX_DETAIL / 4).collect();
    wire::encode(
        FrameKind::Reply,
        &JoinReply::Refused(Refusal { code, detail }),
        |_, _| [0; 32],
    )
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MasterIdentity;

    fn policy() -> Policy {
        Policy {
            hand_out_identity: false,
            share_periods: 3,
            virtual_ports: vec![80],
            timers: crate::join::wire::fixtures::timers(),
            limit: RateLimit {
                per_minute: 6,
                burst: 3,
            },
            pow: None,
        }
    }

    use crate::join::wire::fixtures::{member, request};

    #[test]
    fn a_grant_gives_a_unique_id_and_refuses_a_members_key_or_endpoint() {
        let p = policy();
        let inputs = |me_holder| GrantInputs {
            me: member("node-a", 1),
            members: vec![(
                member("node-b", 2),
                Some(KeyCoverage {
                    holder: false,
                    until_period: 9,
                }),
            )],
            me_holder,
            token: &[7; 32],
            authorized_clients: None,
            keys: KeyMaterial::Blinded(vec![vec![0; 144]]),
            policy: &p,
        };
        let g = build_grant(inputs(true), &request(Some("node-c"), 3)).unwrap();
        assert_eq!(g.node_id, "node-c");
        assert_eq!(g.members.len(), 2);
        assert_eq!(g.members[0].node_id, "node-a");
        assert!(g.holder_live);
        // An id that is taken is replaced by a fresh one.
        let g = build_grant(inputs(false), &request(Some("node-b"), 3)).unwrap();
        assert!(g.node_id.starts_with("node-") && g.node_id != "node-b" && g.node_id != "node-a");
        assert!(!g.holder_live, "no member holds the identity");
        // A member's endpoint.
        let e = build_grant(inputs(false), &request(None, 2)).unwrap_err();
        assert_eq!(e.code, RefusalCode::Conflict);
    }

    #[test]
    fn key_material_follows_policy_and_covers_the_periods_ahead() {
        let id = MasterIdentity::generate(&mut rand::rng());
        let master = id.onion_address();
        let current = TimePeriod::from_parts(6, 5_000_000, 180);
        let mut p = policy();
        let src = KeySource::Identity(id);
        let material = key_material(&src, &master, current, &p);
        let Some(KeyMaterial::Blinded(keys)) = &material else {
            panic!("blinded keys expected");
        };
        // previous, current, and 3 ahead
        assert_eq!(keys.len(), 5);
        let periods: Vec<u64> = keys
            .iter()
            .map(|k| {
                crate::keys::decode_blinded_key(k, &master, "test")
                    .unwrap()
                    .period
                    .interval_num()
            })
            .collect();
        assert_eq!(periods, (4_999_999..=5_000_003).collect::<Vec<_>>());
        p.hand_out_identity = true;
        let material = key_material(&src, &master, current, &p);
        let Some(KeyMaterial::Identity(bytes)) = &material else {
            panic!("identity expected");
        };
        assert_eq!(bytes.len(), wire::IDENTITY_LEN);
        // A blinded-only node without the current period's key has nothing to give.
        let src = KeySource::BlindedDir {
            dir: "/nonexistent".into(),
            master: master.clone(),
            keys: Vec::new(),
        };
        assert!(key_material(&src, &master, current, &p).is_none());
    }

    #[tokio::test]
    async fn a_plain_client_gets_a_refusal_and_nothing_else() {
        let token = ClusterToken::new(vec![5u8; 32]).unwrap();
        let id = MasterIdentity::generate(&mut rand::rng());
        let (_mesh_tx, mesh) = watch::channel(None);
        let (_period_tx, period) = watch::channel(None);
        let (commands, mut cmd_rx) = mpsc::channel(4);
        let server = JoinServer::new(ServerConfig {
            token,
            master: id.onion_address(),
            master_keys: MasterConfig {
                onion_address: id.onion_address(),
                restricted: None,
                keys: crate::config::MasterKeys::Identity("/nonexistent".into()),
            },
            policy: policy(),
            node_id: "node-a".into(),
            mesh,
            period,
            commands,
        });
        let (mut client, srv) = tokio::io::duplex(4096);
        let task = tokio::spawn(async move {
            server.handle(srv).await;
            server
        });
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x.onion\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut client, &mut out)
            .await
            .unwrap();
        let server = task.await.unwrap();
        let f = wire::split(&out, FrameKind::Reply).unwrap();
        let JoinReply::Refused(r) = JoinReply::decode(f.body).unwrap() else {
            panic!("a refusal expected");
        };
        assert_eq!(r.code, RefusalCode::Malformed);
        assert_eq!(server.counters().refused[&RefusalCode::Malformed], 1);
        assert!(cmd_rx.try_recv().is_err(), "nothing changed in the mesh");
    }
}
