//! The join protocol's wire format: one request, one reply, over one stream to the master
//! address's join port.
//!
//! ```text
//! frame := magic "RBJ" | version (1) | kind (1 = request, 2 = reply) | body length u32 BE
//!          | body (postcard) | mac (32 bytes)
//! ```
//!
//! - request body: [`JoinRequest`], at most [`MAX_REQUEST`] bytes; its mac (the proof) is
//!   BLAKE2s-MAC(invite secret, "rustbalance join request v1", header ‖ body), so it shows the
//!   joiner holds the invite secret without sending it, and binds every field.
//! - reply body: [`JoinReply`], at most [`MAX_REPLY`] bytes; a grant's mac is
//!   BLAKE2s-MAC(invite secret, "rustbalance join reply v1", header ‖ request proof ‖ body),
//!   so the joiner knows the answer comes from a token holder and is the answer to ITS request.
//!   A refusal carries 32 zero bytes (a node that refuses may not know the secret; a forged
//!   refusal only makes a join fail, never succeed).
//!
//! Decoding never panics and never allocates more than the bounded length; decoded values are
//! validated before anyone sees them.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use zeroize::Zeroize;

use crate::membership::identity::valid_node_id;

/// Frame magic.
pub const MAGIC: [u8; 3] = *b"RBJ";
/// The version this build speaks.
pub const VERSION: u8 = 1;
/// Header bytes.
pub const HEADER_LEN: usize = 8;
/// MAC bytes.
pub const MAC_LEN: usize = 32;
/// Largest request body.
pub const MAX_REQUEST: usize = 1024;
/// Largest reply body.
pub const MAX_REPLY: usize = 32 * 1024;
/// Most members listed in a grant.
pub const MAX_MEMBERS: usize = 64;
/// Most blinded keys in a grant.
pub const MAX_GRANT_KEYS: usize = 32;
/// Bytes of a C tor identity secret file.
pub const IDENTITY_LEN: usize = 96;

/// Label of the request proof.
pub const REQUEST_LABEL: &[u8] = b"rustbalance join request v1";
/// Label of the grant MAC.
pub const REPLY_LABEL: &[u8] = b"rustbalance join reply v1";

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A [`JoinRequest`].
    Request,
    /// A [`JoinReply`].
    Reply,
}

impl FrameKind {
    fn code(self) -> u8 {
        match self {
            FrameKind::Request => 1,
            FrameKind::Reply => 2,
        }
    }

    fn max(self) -> usize {
        match self {
            FrameKind::Request => MAX_REQUEST,
            FrameKind::Reply => MAX_REPLY,
        }
    }
}

/// Why bytes are not a valid frame or message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the header and MAC.
    #[error("truncated: {0} bytes")]
    Truncated(usize),
    /// Not a join frame (e.g. an HTTP client on the join port).
    #[error("not a join frame (bad magic)")]
    BadMagic,
    /// Another version.
    #[error("join protocol version {0} is not spoken here (this build speaks {VERSION})")]
    Version(u8),
    /// Not the frame kind expected.
    #[error("unexpected frame kind {0}")]
    Kind(u8),
    /// Longer than allowed.
    #[error("body of {len} bytes exceeds {max}")]
    TooLong {
        /// Declared length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// Bytes after the frame.
    #[error("{0} bytes after the frame")]
    Trailing(usize),
    /// The body does not decode.
    #[error("body does not decode: {0}")]
    Body(String),
    /// A field breaks a rule.
    #[error("invalid {field}: {problem}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule.
        problem: &'static str,
    },
    /// Reading the stream failed or timed out.
    #[error("reading: {0}")]
    Io(String),
}

/// A joining node's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The invite's id.
    pub invite: [u8; 8],
    /// The invite's expiry (Unix seconds), as the line says.
    pub expires: u64,
    /// The invite's uses, as the line says.
    pub uses: u8,
    /// The joiner's clock, Unix seconds (a replay window).
    pub timestamp: u64,
    /// Random; a request is redeemed at most once.
    pub nonce: [u8; 16],
    /// The joiner's WireGuard public key.
    pub mesh_key: [u8; 32],
    /// Where the joiner's WireGuard socket is reached.
    pub endpoint: SocketAddr,
    /// The node id it would like (the cluster picks another if taken).
    pub node_id: Option<String>,
}

/// A member the joiner should contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its node id.
    pub node_id: String,
    /// Its WireGuard public key.
    pub key: [u8; 32],
    /// Its endpoint.
    pub endpoint: SocketAddr,
}

/// The master key material handed out (cluster policy: `join.hand_out_identity`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyMaterial {
    /// The identity secret (C tor `hs_ed25519_secret_key` bytes).
    Identity(Vec<u8>),
    /// Blinded keys (the blinded key file format), the current period's and those ahead.
    Blinded(Vec<Vec<u8>>),
}

impl Drop for KeyMaterial {
    fn drop(&mut self) {
        match self {
            KeyMaterial::Identity(b) => b.zeroize(),
            KeyMaterial::Blinded(v) => v.iter_mut().for_each(|k| k.zeroize()),
        }
    }
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyMaterial::Identity(_) => f.write_str("Identity(<redacted>)"),
            KeyMaterial::Blinded(v) => write!(f, "Blinded({} keys)", v.len()),
        }
    }
}

/// The cluster's mesh timers, so the joiner's configuration matches (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshTimers {
    /// `mesh.max_clock_skew`.
    pub max_clock_skew: u64,
    /// `mesh.probe_period`.
    pub probe_period: u64,
    /// `mesh.probe_timeout`.
    pub probe_timeout: u64,
    /// `mesh.suspect_timeout`.
    pub suspect_timeout: u64,
    /// `mesh.state_interval`.
    pub state_interval: u64,
    /// `mesh.lease_duration`.
    pub lease_duration: u64,
    /// `mesh.handback_after`.
    pub handback_after: u64,
}

/// The cluster's `[pow]`, handed to a joiner so it verifies the same seeds and admits
/// requests the same way (its `pow` section is written from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowPolicy {
    /// `pow.queue_depth`.
    pub queue_depth: u32,
    /// `pow.seed_rotation`, in seconds.
    pub seed_rotation_secs: u32,
    /// `pow.min_effort`.
    pub min_effort: u32,
    /// `pow.max_effort`.
    pub max_effort: u32,
    /// `pow.rendezvous_concurrency`.
    pub rendezvous_concurrency: u32,
}

impl PowPolicy {
    /// Whether it is within the bounds the configuration accepts.
    pub fn valid(&self) -> bool {
        (1..=1_000_000).contains(&self.queue_depth)
            && (60..=86_400).contains(&self.seed_rotation_secs)
            && self.max_effort >= 1
            && self.min_effort <= self.max_effort
            && (1..=10_000).contains(&self.rendezvous_concurrency)
    }
}

/// A granted join: everything the new node needs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The node id it gets (unique among the members the answering node knows).
    pub node_id: String,
    /// The cluster token.
    pub token: Vec<u8>,
    /// Live members, the answering node first.
    pub members: Vec<Member>,
    /// Master key material.
    pub keys: KeyMaterial,
    /// Whether a node holding the identity secret is live (it pushes blinded keys ahead).
    pub holder_live: bool,
    /// `target.virtual_ports`, the same on every node.
    pub virtual_ports: Vec<u16>,
    /// `join.share_periods`.
    pub share_periods: u8,
    /// Mesh timers.
    pub mesh: MeshTimers,
    /// Restricted discovery: the authorized clients' x25519 public keys (`None`: public
    /// descriptor). The joiner writes them into its `master.authorized_clients`, so whichever
    /// node publishes encrypts for the same clients.
    pub authorized_clients: Option<Vec<[u8; 32]>>,
    /// Proof of work: the cluster's `[pow]` (`None`: off).
    pub pow: Option<PowPolicy>,
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.token.zeroize();
    }
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("node_id", &self.node_id)
            .field("token", &"<redacted>")
            .field("members", &self.members.len())
            .field("keys", &self.keys)
            .field("holder_live", &self.holder_live)
            .finish_non_exhaustive()
    }
}

/// Why a join was refused: the joiner shows it, the cluster counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// The request is not a valid join request.
    Malformed,
    /// The proof does not verify: wrong, tampered or foreign invite.
    BadInvite,
    /// The invite has expired.
    Expired,
    /// The invite's uses are spent.
    UsedUp,
    /// This exact request was redeemed before.
    Replayed,
    /// The joiner's clock is too far from the node's.
    ClockSkew,
    /// Too many join attempts: try again later.
    RateLimited,
    /// This node does not take joins (no mesh, or `join.enabled = false`).
    NotServing,
    /// The node cannot hand out master keys (none it may share cover the coming periods).
    NoKeys,
    /// The joiner's request is valid but cannot be honoured (endpoint or key already in use).
    Conflict,
}

impl RefusalCode {
    /// Every code, for counters.
    pub const ALL: [RefusalCode; 10] = [
        RefusalCode::Malformed,
        RefusalCode::BadInvite,
        RefusalCode::Expired,
        RefusalCode::UsedUp,
        RefusalCode::Replayed,
        RefusalCode::ClockSkew,
        RefusalCode::RateLimited,
        RefusalCode::NotServing,
        RefusalCode::NoKeys,
        RefusalCode::Conflict,
    ];

    /// What the joiner's operator reads.
    pub fn explain(self) -> &'static str {
        match self {
            RefusalCode::Malformed => "the request was not understood (a different version?)",
            RefusalCode::BadInvite => {
                "the invite is not valid for this cluster (wrong or altered line)"
            }
            RefusalCode::Expired => {
                "the invite has expired: ask for a new one (rustbalance invite)"
            }
            RefusalCode::UsedUp => {
                "the invite was already used: ask for a new one (rustbalance invite)"
            }
            RefusalCode::Replayed => "this request was already answered once",
            RefusalCode::ClockSkew => {
                "this machine's clock is too far from the cluster's: fix the time"
            }
            RefusalCode::RateLimited => "too many join attempts: try again in a minute",
            RefusalCode::NotServing => "the node reached does not take joins",
            RefusalCode::NoKeys => "the node reached has no master keys it may hand out",
            RefusalCode::Conflict => "the request conflicts with a member (same key or endpoint)",
        }
    }
}

/// A refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Why.
    pub code: RefusalCode,
    /// More detail (at most [`MAX_DETAIL`] bytes).
    pub detail: String,
}

/// Longest refusal detail.
pub const MAX_DETAIL: usize = 256;

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// One reply per join: its size does not matter, boxing would only add noise at every use.
#[allow(clippy::large_enum_variant)]
pub enum JoinReply {
    /// Welcome.
    Granted(Grant),
    /// No.
    Refused(Refusal),
}

/// A checked frame: its header, body and MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header bytes (MAC'd).
    pub header: [u8; HEADER_LEN],
    /// The body.
    pub body: &'a [u8],
    /// The MAC.
    pub mac: [u8; MAC_LEN],
}

/// The header of a `kind` frame with a `len`-byte body.
pub fn header(kind: FrameKind, len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..3].copy_from_slice(&MAGIC);
    h[3] = VERSION;
    h[4] = kind.code();
    // Callers bound `len` far below u32::MAX; saturate rather than wrap regardless.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    h[5..8].copy_from_slice(&len.to_be_bytes()[1..]);
    h
}

/// Checks a header: magic, version, kind, length bound. Returns the body length.
pub fn check_header(h: &[u8; HEADER_LEN], kind: FrameKind) -> Result<usize, WireError> {
    if h[..3] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if h[3] != VERSION {
        return Err(WireError::Version(h[3]));
    }
    if h[4] != kind.code() {
        return Err(WireError::Kind(h[4]));
    }
    let len = u32::from_be_bytes([0, h[5], h[6], h[7]]) as usize;
    if len > kind.max() {
        return Err(WireError::TooLong {
            len,
            max: kind.max(),
        });
    }
    Ok(len)
}

/// Splits a complete frame of `kind`. Never panics.
pub fn split(bytes: &[u8], kind: FrameKind) -> Result<Frame<'_>, WireError> {
    let Some((h, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(WireError::Truncated(bytes.len()));
    };
    let len = check_header(h, kind)?;
    if rest.len() < len + MAC_LEN {
        return Err(WireError::Truncated(bytes.len()));
    }
    let (body, rest) = rest.split_at(len);
    let (mac, rest) = rest.split_at(MAC_LEN);
    if !rest.is_empty() {
        return Err(WireError::Trailing(rest.len()));
    }
    let mut m = [0u8; MAC_LEN];
    m.copy_from_slice(mac);
    Ok(Frame {
        header: *h,
        body,
        mac: m,
    })
}

/// Reads one frame of `kind` from a stream (the caller bounds the time). The length is checked
/// before the body is read, so at most the bound is ever allocated.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    kind: FrameKind,
) -> Result<Vec<u8>, WireError> {
    let mut h = [0u8; HEADER_LEN];
    r.read_exact(&mut h)
        .await
        .map_err(|e| WireError::Io(e.kind().to_string()))?;
    let len = check_header(&h, kind)?;
    let mut out = vec![0u8; HEADER_LEN + len + MAC_LEN];
    out[..HEADER_LEN].copy_from_slice(&h);
    r.read_exact(&mut out[HEADER_LEN..])
        .await
        .map_err(|e| WireError::Io(e.kind().to_string()))?;
    Ok(out)
}

/// Encodes `msg` as a frame; `mac` computes the MAC from (header, body).
pub fn encode<T: Serialize>(
    kind: FrameKind,
    msg: &T,
    mac: impl FnOnce(&[u8; HEADER_LEN], &[u8]) -> [u8; MAC_LEN],
) -> Result<Vec<u8>, WireError> {
    let body = zeroize::Zeroizing::new(
        postcard::to_allocvec(msg).map_err(|e| WireError::Body(e.to_string()))?,
    );
    if body.len() > kind.max() {
        return Err(WireError::TooLong {
            len: body.len(),
            max: kind.max(),
        });
    }
    let h = header(kind, body.len());
    let tag = mac(&h, &body);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + MAC_LEN);
    out.extend_from_slice(&h);
    out.extend_from_slice(&body);
    out.extend_from_slice(&tag);
    Ok(out)
}

fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, WireError> {
    let (msg, rest): (T, _) =
        postcard::take_from_bytes(body).map_err(|e| WireError::Body(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Trailing(rest.len()));
    }
    Ok(msg)
}

fn endpoint_ok(e: &SocketAddr) -> bool {
    !e.ip().is_unspecified() && e.port() != 0 && !e.ip().is_multicast()
}

impl JoinRequest {
    /// Decodes and validates a request frame's body. Never panics.
    pub fn decode(body: &[u8]) -> Result<JoinRequest, WireError> {
        let req: JoinRequest = decode_body(body)?;
        if req.node_id.as_deref().is_some_and(|id| !valid_node_id(id)) {
            return Err(WireError::Invalid {
                field: "node_id",
                problem: "not 1-64 of A-Z a-z 0-9 . _ -",
            });
        }
        if !endpoint_ok(&req.endpoint) {
            return Err(WireError::Invalid {
                field: "endpoint",
                problem: "an unspecified or multicast address, or port 0",
            });
        }
        if crate::mesh::MeshPublicKey::from_bytes(req.mesh_key).is_err() {
            return Err(WireError::Invalid {
                field: "mesh_key",
                problem: "not a usable x25519 public key",
            });
        }
        Ok(req)
    }
}

impl JoinReply {
    /// Decodes and validates a reply frame's body. Never panics.
    pub fn decode(body: &[u8]) -> Result<JoinReply, WireError> {
        let reply: JoinReply = decode_body(body)?;
        let bad = |field, problem| Err(WireError::Invalid { field, problem });
        match &reply {
            JoinReply::Refused(r) => {
                if r.detail.len() > MAX_DETAIL {
                    return bad("detail", "longer than 256 bytes");
                }
            }
            JoinReply::Granted(g) => {
                if !valid_node_id(&g.node_id) {
                    return bad("node_id", "not 1-64 of A-Z a-z 0-9 . _ -");
                }
                if !(16..=1024).contains(&g.token.len()) {
                    return bad("token", "not 16 to 1024 bytes");
                }
                if g.members.is_empty() || g.members.len() > MAX_MEMBERS {
                    return bad("members", "not 1 to 64 members");
                }
                for m in &g.members {
                    if !valid_node_id(&m.node_id) || !endpoint_ok(&m.endpoint) {
                        return bad("members", "a member with a bad node id or endpoint");
                    }
                }
                match &g.keys {
                    KeyMaterial::Identity(b) if b.len() != IDENTITY_LEN => {
                        return bad("keys", "an identity secret that is not 96 bytes");
                    }
                    KeyMaterial::Blinded(v)
                        if v.is_empty()
                            || v.len() > MAX_GRANT_KEYS
                            || v.iter().any(|k| k.len() != crate::keys::BLINDED_FILE_LEN) =>
                    {
                        return bad("keys", "not 1 to 32 blinded keys of 144 bytes");
                    }
                    _ => {}
                }
                if g.virtual_ports.is_empty()
                    || g.virtual_ports.len() > 64
                    || g.virtual_ports.contains(&0)
                {
                    return bad("virtual_ports", "not 1 to 64 ports, none 0");
                }
                if g.authorized_clients
                    .as_ref()
                    .is_some_and(|c| c.len() > crate::keys::MAX_AUTHORIZED_CLIENTS)
                {
                    return bad("authorized_clients", "more than 160 clients");
                }
                if g.pow.is_some_and(|p| !p.valid()) {
                    return bad("pow", "settings out of the configuration's bounds");
                }
            }
        }
        Ok(reply)
    }
}

/// Fixtures for the join module's tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// The default mesh timers.
    pub fn timers() -> MeshTimers {
        MeshTimers {
            max_clock_skew: 5000,
            probe_period: 1000,
            probe_timeout: 500,
            suspect_timeout: 2000,
            state_interval: 1000,
            lease_duration: 6000,
            handback_after: 10000,
        }
    }

    /// A member `id` at 192.0.2.`n`, with a fresh key.
    pub fn member(id: &str, n: u8) -> Member {
        Member {
            node_id: id.into(),
            key: *crate::mesh::MeshKeys::generate().public_key().as_bytes(),
            endpoint: format!("192.0.2.{n}:51820").parse().unwrap(),
        }
    }

    /// A request from 192.0.2.`n`, with a fresh key.
    pub fn request(node_id: Option<&str>, n: u8) -> JoinRequest {
        JoinRequest {
            invite: [1; 8],
            expires: 1_800_000_000,
            uses: 1,
            timestamp: 1_799_999_000,
            nonce: [2; 16],
            mesh_key: *crate::mesh::MeshKeys::generate().public_key().as_bytes(),
            endpoint: format!("192.0.2.{n}:51820").parse().unwrap(),
            node_id: node_id.map(String::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> JoinRequest {
        fixtures::request(Some("node-b"), 7)
    }

    #[test]
    fn a_request_frame_round_trips_and_its_mac_covers_header_and_body() {
        let req = request();
        let bytes = encode(FrameKind::Request, &req, |h, b| {
            crate::join::invite::mac(&[7; 32], REQUEST_LABEL, &[h, b])
        })
        .unwrap();
        let f = split(&bytes, FrameKind::Request).unwrap();
        assert_eq!(JoinRequest::decode(f.body).unwrap(), req);
        assert!(crate::join::invite::verify_mac(
            &[7; 32],
            REQUEST_LABEL,
            &[&f.header, f.body],
            &f.mac
        ));
        // The wrong kind, a trailing byte, a truncation and an oversized length are refused.
        assert_eq!(
            split(&bytes, FrameKind::Reply).unwrap_err(),
            WireError::Kind(1)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            split(&longer, FrameKind::Request).unwrap_err(),
            WireError::Trailing(1)
        );
        assert!(matches!(
            split(&bytes[..bytes.len() - 1], FrameKind::Request),
            Err(WireError::Truncated(_))
        ));
        let mut huge = header(FrameKind::Request, MAX_REQUEST + 1).to_vec();
        huge.extend_from_slice(&[0; 40]);
        assert!(matches!(
            split(&huge, FrameKind::Request),
            Err(WireError::TooLong { .. })
        ));
        assert_eq!(
            split(
                b"GET / HTTP/1.1\r\n\r\n......................................",
                FrameKind::Request
            )
            .unwrap_err(),
            WireError::BadMagic
        );
    }

    #[test]
    fn invalid_fields_are_named() {
        let mut r = request();
        r.node_id = Some("bad id!".into());
        let body = postcard::to_allocvec(&r).unwrap();
        assert!(matches!(
            JoinRequest::decode(&body),
            Err(WireError::Invalid {
                field: "node_id",
                ..
            })
        ));
        let mut r = request();
        r.endpoint = "0.0.0.0:1".parse().unwrap();
        let body = postcard::to_allocvec(&r).unwrap();
        assert!(matches!(
            JoinRequest::decode(&body),
            Err(WireError::Invalid {
                field: "endpoint",
                ..
            })
        ));
        let reply = JoinReply::Refused(Refusal {
            code: RefusalCode::Expired,
            detail: "x".repeat(300),
        });
        let body = postcard::to_allocvec(&reply).unwrap();
        assert!(matches!(
            JoinReply::decode(&body),
            Err(WireError::Invalid {
                field: "detail",
                ..
            })
        ));
        let pow = PowPolicy {
            queue_depth: 100,
            seed_rotation_secs: 3600,
            min_effort: 0,
            max_effort: 100,
            rendezvous_concurrency: 8,
        };
        let grant = |pow: PowPolicy| {
            JoinReply::Granted(Grant {
                node_id: "node-b".into(),
                token: vec![7; 32],
                members: vec![fixtures::member("node-a", 1)],
                keys: KeyMaterial::Blinded(vec![vec![0; crate::keys::BLINDED_FILE_LEN]]),
                holder_live: true,
                virtual_ports: vec![80],
                share_periods: 8,
                mesh: fixtures::timers(),
                authorized_clients: None,
                pow: Some(pow),
            })
        };
        let body = postcard::to_allocvec(&grant(pow)).unwrap();
        assert!(JoinReply::decode(&body).is_ok());
        for bad in [
            PowPolicy {
                seed_rotation_secs: 5,
                ..pow
            },
            PowPolicy {
                min_effort: 101,
                ..pow
            },
            PowPolicy {
                queue_depth: 0,
                ..pow
            },
        ] {
            let body = postcard::to_allocvec(&grant(bad)).unwrap();
            assert!(
                matches!(
                    JoinReply::decode(&body),
                    Err(WireError::Invalid { field: "pow", .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn read_frame_stops_at_the_bound_before_reading_the_body() {
        let mut huge = header(FrameKind::Request, MAX_REQUEST + 1).to_vec();
        huge.extend_from_slice(&vec![0; MAX_REQUEST + 100]);
        let mut r: &[u8] = &huge;
        assert!(matches!(
            read_frame(&mut r, FrameKind::Request).await,
            Err(WireError::TooLong { .. })
        ));
        let mut short: &[u8] = &header(FrameKind::Request, 10)[..];
        assert!(matches!(
            read_frame(&mut short, FrameKind::Request).await,
            Err(WireError::Io(_))
        ));
    }
}
