//! The membership wire format: every mesh datagram is one versioned, length-bounded envelope.
//!
//! ```text
//! offset  size  field
//! 0       2     magic "RB"
//! 2       1     version (1)
//! 3       1     kind: 1 = SWIM (foca's packet), 2 = node state, 3 = intro points,
//!               4 = cluster message (blinded keys pushed by a key holder, invite redemptions)
//! 4       8     timestamp: sender's wall clock, ms since the Unix epoch, big endian
//! 12      ..    body (the whole envelope is at most MAX_PAYLOAD = 1200 bytes)
//! ```
//!
//! The state body is a postcard-encoded [`StateMsg`], the intro-points body an [`IptsMsg`]; the SWIM body is foca's own postcard
//! encoding. Decoding never panics and never allocates more than the datagram's size: the
//! envelope is checked first, postcard reads length-prefixed fields from a bounded slice, and
//! the decoded values are validated (node ids, lease holder) before anyone sees them.

use serde::{Deserialize, Serialize};

use crate::election::{Lease, Role, WallTime};
use crate::mesh::MAX_PAYLOAD;

use super::identity::valid_node_id;

/// The envelope magic.
pub const MAGIC: [u8; 2] = *b"RB";
/// The only version this build speaks.
pub const VERSION: u8 = 1;
/// Envelope header length.
pub const HEADER_LEN: usize = 12;
/// Largest body that fits a mesh datagram.
pub const MAX_BODY: usize = MAX_PAYLOAD - HEADER_LEN;

/// What an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A SWIM packet for foca (probes, acks, membership updates).
    Swim,
    /// A [`StateMsg`].
    State,
    /// An [`IptsMsg`].
    Ipts,
    /// A [`ClusterMsg`].
    Cluster,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Swim => 1,
            Kind::State => 2,
            Kind::Ipts => 3,
            Kind::Cluster => 4,
        }
    }
}

/// Why a datagram was refused. Every variant is counted by the receiver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the header.
    #[error("datagram of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    Truncated {
        /// Its length.
        len: usize,
    },
    /// Longer than a mesh datagram may be.
    #[error("datagram of {len} bytes exceeds {MAX_PAYLOAD}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Not a RustBalance membership datagram.
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 2]),
    /// A version this build does not speak.
    #[error("unsupported version {found} (this build speaks {VERSION})")]
    UnsupportedVersion {
        /// The version in the datagram.
        found: u8,
    },
    /// A kind this version does not define.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The body does not decode.
    #[error("{kind:?} body does not decode: {reason}")]
    Body {
        /// The envelope kind.
        kind: Kind,
        /// What went wrong.
        reason: String,
    },
    /// The body decodes but breaks a rule.
    #[error("invalid {field}: {problem}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule broken.
        problem: &'static str,
    },
}

/// A decoded envelope; the body borrows from the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// What the body is.
    pub kind: Kind,
    /// The sender's clock when it sent the datagram.
    pub timestamp: WallTime,
    /// The body.
    pub body: &'a [u8],
}

/// Frames `body` as a `kind` envelope stamped `timestamp`.
pub fn encode(kind: Kind, timestamp: WallTime, body: &[u8]) -> Result<Vec<u8>, WireError> {
    let len = HEADER_LEN + body.len();
    if len > MAX_PAYLOAD {
        return Err(WireError::TooLong { len });
    }
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind.code());
    out.extend_from_slice(&timestamp.as_millis().to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Checks and splits an envelope. Never panics, for any input.
pub fn decode(datagram: &[u8]) -> Result<Envelope<'_>, WireError> {
    if datagram.len() > MAX_PAYLOAD {
        return Err(WireError::TooLong {
            len: datagram.len(),
        });
    }
    let Some((header, body)) = datagram.split_first_chunk::<HEADER_LEN>() else {
        return Err(WireError::Truncated {
            len: datagram.len(),
        });
    };
    let magic = [header[0], header[1]];
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    if header[2] != VERSION {
        return Err(WireError::UnsupportedVersion { found: header[2] });
    }
    let kind = match header[3] {
        1 => Kind::Swim,
        2 => Kind::State,
        3 => Kind::Ipts,
        4 => Kind::Cluster,
        other => return Err(WireError::UnknownKind(other)),
    };
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&header[4..12]);
    Ok(Envelope {
        kind,
        timestamp: WallTime::from_millis(u64::from_be_bytes(ts)),
        body,
    })
}

/// Encodes a postcard body of `kind`, refusing one that would not fit a datagram.
fn encode_body<T: Serialize>(kind: Kind, msg: &T) -> Result<Vec<u8>, WireError> {
    let body = postcard::to_allocvec(msg).map_err(|e| WireError::Body {
        kind,
        reason: e.to_string(),
    })?;
    if body.len() > MAX_BODY {
        return Err(WireError::TooLong {
            len: body.len() + HEADER_LEN,
        });
    }
    Ok(body)
}

/// Decodes a whole postcard body of `kind` (bounded, no trailing bytes). Never panics.
fn decode_body<T: serde::de::DeserializeOwned>(
    kind: Kind,
    field: &'static str,
    body: &[u8],
) -> Result<T, WireError> {
    if body.len() > MAX_BODY {
        return Err(WireError::TooLong {
            len: body.len() + HEADER_LEN,
        });
    }
    let (msg, rest): (T, _) = postcard::take_from_bytes(body).map_err(|e| WireError::Body {
        kind,
        reason: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(WireError::Invalid {
            field,
            problem: "trailing bytes after the message",
        });
    }
    Ok(msg)
}

/// A node's health as it advertises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Arti bootstrapping or the service not launched yet.
    Starting,
    /// Serving: the master service runs and the target answers.
    Healthy,
    /// The target does not answer the health probe.
    TargetDown,
    /// This node's own Tor side is broken (its self-check cannot reach its intro-point
    /// relays); it is repairing itself. Appended last: the variant index is the wire value.
    TorBroken,
}

impl Health {
    /// Whether a node in this state may publish and should have its intro points listed.
    pub fn eligible(self) -> bool {
        matches!(self, Health::Healthy)
    }
}

/// A summary of a node's intro points: which generation, how many.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IptSummary {
    /// Bumped whenever the set changes.
    pub generation: u64,
    /// How many there are.
    pub count: u16,
}

/// What a node advertises about itself to every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// Publisher preference (lower is better).
    pub priority: u32,
    /// Health.
    pub health: Health,
    /// Its role.
    pub role: Role,
    /// Its publisher lease, if it holds one.
    pub lease: Option<Lease>,
    /// Its intro points.
    pub intro_points: IptSummary,
    /// Which master keys it has.
    pub keys: KeyCoverage,
    /// Its own suggested PoW effort (Arti's, from its queue; 0 without PoW).
    pub pow_effort: u32,
    /// `node.weight`: its share of intro-point slots, relative to the others'.
    pub weight: u32,
}

/// A node's master key coverage, as it advertises it (`status` shows it per member).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyCoverage {
    /// It holds the identity secret (it can blind keys for any period, and pushes them to the
    /// members that cannot).
    pub holder: bool,
    /// Without the secret: the last time period (interval number) its blinded keys cover, 0 for
    /// none.
    pub until_period: u64,
}

/// The echo of the last timestamp received from the message's recipient, for RTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Echo {
    /// The recipient's timestamp being echoed (its own clock).
    pub timestamp: u64,
    /// How long the sender held it before this message, in ms.
    pub held_ms: u32,
}

/// The body of a [`Kind::State`] envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMsg {
    /// Sender's node id (must match its gossiped identity).
    pub node_id: String,
    /// Sender's boot number (its identity's).
    pub boot: u64,
    /// Bumped by the sender whenever `state` changes; resends repeat it.
    pub seq: u64,
    /// The state.
    pub state: NodeState,
    /// RTT echo for the recipient.
    pub echo: Option<Echo>,
}

impl StateMsg {
    /// Encodes the body.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        encode_body(Kind::State, self)
    }

    /// Decodes and validates a body. Never panics.
    pub fn decode(body: &[u8]) -> Result<StateMsg, WireError> {
        let msg: StateMsg = decode_body(Kind::State, "state", body)?;
        if !valid_node_id(&msg.node_id) {
            return Err(WireError::Invalid {
                field: "node_id",
                problem: "not 1-64 of A-Z a-z 0-9 . _ -",
            });
        }
        if let Some(lease) = &msg.state.lease {
            if lease.holder != msg.node_id {
                return Err(WireError::Invalid {
                    field: "lease.holder",
                    problem: "a node may only advertise its own lease",
                });
            }
            if lease.yield_to.as_deref().is_some_and(|y| !valid_node_id(y)) {
                return Err(WireError::Invalid {
                    field: "lease.yield_to",
                    problem: "not a node id",
                });
            }
        }
        Ok(msg)
    }
}

/// Most intro points one node may advertise (Arti's own maximum per service is 20).
pub const MAX_NODE_IPTS: usize = 20;
/// Most intro points in one [`IptsMsg`] part (each is about 200 bytes encoded).
pub const IPTS_PER_PART: usize = 4;
/// Most link-specifier bytes of one intro point.
pub const MAX_LINKSPEC_BYTES: usize = 256;

pub use crate::descriptor::IptWire;

/// The body of a [`Kind::Ipts`] envelope: one part of a node's intro-point set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IptsMsg {
    /// Sender's node id.
    pub node_id: String,
    /// Sender's boot number.
    pub boot: u64,
    /// The set's generation (the sender's [`IptSummary::generation`]).
    pub generation: u64,
    /// This part's index.
    pub part: u8,
    /// How many parts the set has (at least 1; an empty set is one empty part).
    pub parts: u8,
    /// The intro points in this part.
    pub ipts: Vec<IptWire>,
}

impl IptsMsg {
    /// Splits a node's intro points into parts (at most [`MAX_NODE_IPTS`] are sent).
    pub fn split(node_id: &str, boot: u64, generation: u64, ipts: &[IptWire]) -> Vec<IptsMsg> {
        let ipts = &ipts[..ipts.len().min(MAX_NODE_IPTS)];
        let chunks: Vec<&[IptWire]> = if ipts.is_empty() {
            vec![&[]]
        } else {
            ipts.chunks(IPTS_PER_PART).collect()
        };
        let parts = chunks.len() as u8;
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, c)| IptsMsg {
                node_id: node_id.to_string(),
                boot,
                generation,
                part: i as u8,
                parts,
                ipts: c.to_vec(),
            })
            .collect()
    }

    /// Encodes the body.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        encode_body(Kind::Ipts, self)
    }

    /// Decodes and validates a body. Never panics.
    pub fn decode(body: &[u8]) -> Result<IptsMsg, WireError> {
        let msg: IptsMsg = decode_body(Kind::Ipts, "ipts", body)?;
        let invalid = |field, problem| Err(WireError::Invalid { field, problem });
        if !valid_node_id(&msg.node_id) {
            return invalid("node_id", "not 1-64 of A-Z a-z 0-9 . _ -");
        }
        let max_parts = MAX_NODE_IPTS.div_ceil(IPTS_PER_PART);
        if msg.parts == 0 || usize::from(msg.parts) > max_parts || msg.part >= msg.parts {
            return invalid("part", "outside 0 <= part < parts <= 5");
        }
        if msg.ipts.len() > IPTS_PER_PART {
            return invalid("ipts", "more than 4 intro points in one part");
        }
        if msg
            .ipts
            .iter()
            .any(|i| i.link_specifiers.is_empty() || i.link_specifiers.len() > MAX_LINKSPEC_BYTES)
        {
            return invalid("link_specifiers", "empty or longer than 256 bytes");
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StateMsg {
        StateMsg {
            node_id: "node-a".into(),
            boot: 1_700_000_000_000,
            seq: 7,
            state: NodeState {
                priority: 10,
                health: Health::Healthy,
                role: Role::Publisher,
                lease: Some(Lease {
                    holder: "node-a".into(),
                    until: WallTime::from_millis(1_700_000_006_000),
                    term: 3,
                    yield_to: Some("node-b".into()),
                }),
                intro_points: IptSummary {
                    generation: 4,
                    count: 3,
                },
                keys: KeyCoverage {
                    holder: false,
                    until_period: 4_989_300,
                },
                pow_effort: 120,
                weight: 3,
            },
            echo: Some(Echo {
                timestamp: 1_699_999_999_000,
                held_ms: 12,
            }),
        }
    }

    #[test]
    fn envelope_round_trips() {
        let ts = WallTime::from_millis(0x0102_0304_0506_0708);
        let bytes = encode(Kind::State, ts, b"body").unwrap();
        assert_eq!(&bytes[..4], b"RB\x01\x02");
        assert_eq!(&bytes[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let env = decode(&bytes).unwrap();
        assert_eq!(env.kind, Kind::State);
        assert_eq!(env.timestamp, ts);
        assert_eq!(env.body, b"body");
    }

    #[test]
    fn envelope_refusals_name_the_problem() {
        let ok = encode(Kind::Swim, WallTime::from_millis(1), b"x").unwrap();
        assert_eq!(
            decode(&ok[..11]),
            Err(WireError::Truncated { len: 11 }),
            "short"
        );
        let mut bad = ok.clone();
        bad[0] = b'X';
        assert!(matches!(decode(&bad), Err(WireError::BadMagic(_))));
        let mut bad = ok.clone();
        bad[2] = 2;
        let err = decode(&bad).unwrap_err();
        assert_eq!(err, WireError::UnsupportedVersion { found: 2 });
        assert!(err.to_string().contains("unsupported version 2"));
        let mut bad = ok.clone();
        bad[3] = 9;
        assert_eq!(decode(&bad), Err(WireError::UnknownKind(9)));
        let long = vec![0u8; MAX_PAYLOAD + 1];
        assert_eq!(
            decode(&long),
            Err(WireError::TooLong {
                len: MAX_PAYLOAD + 1
            })
        );
        assert!(encode(Kind::Swim, WallTime::from_millis(1), &[0; MAX_BODY + 1]).is_err());
        assert!(encode(Kind::Swim, WallTime::from_millis(1), &[0; MAX_BODY]).is_ok());
    }

    #[test]
    fn state_round_trips_and_fits() {
        let msg = sample();
        let body = msg.encode().unwrap();
        assert!(body.len() < 200, "state is small: {} bytes", body.len());
        assert_eq!(StateMsg::decode(&body).unwrap(), msg);
        // Every optional field absent, too (postcard must not meet a skipped field).
        let mut bare = sample();
        bare.state.lease.as_mut().unwrap().yield_to = None;
        bare.echo = None;
        assert_eq!(StateMsg::decode(&bare.encode().unwrap()).unwrap(), bare);
        bare.state.lease = None;
        assert_eq!(StateMsg::decode(&bare.encode().unwrap()).unwrap(), bare);
    }

    #[test]
    fn state_rules_are_enforced() {
        let mut m = sample();
        m.node_id = "bad id!".into();
        let err = StateMsg::decode(&postcard::to_allocvec(&m).unwrap()).unwrap_err();
        assert!(err.to_string().contains("node_id"), "{err}");

        let mut m = sample();
        m.state.lease.as_mut().unwrap().holder = "node-b".into();
        let err = StateMsg::decode(&postcard::to_allocvec(&m).unwrap()).unwrap_err();
        assert!(err.to_string().contains("lease.holder"), "{err}");

        let mut body = sample().encode().unwrap();
        body.push(0);
        assert!(StateMsg::decode(&body).is_err(), "trailing byte");
        for cut in 0..body.len() - 1 {
            assert!(StateMsg::decode(&body[..cut]).is_err(), "cut at {cut}");
        }
    }

    fn ipt(n: u8) -> IptWire {
        IptWire {
            // An IPv4 (type 0, 6 bytes), an RSA id (type 2, 20) and an ed25519 id (type 3, 32).
            link_specifiers: [
                &[0u8, 6][..],
                &[127, 0, 0, 1, 0x3e, 0x80],
                &[2, 20],
                &[n; 20],
                &[3, 32],
                &[n; 32],
            ]
            .concat(),
            onion_key: [n; 32],
            auth_key: [n.wrapping_add(1); 32],
            enc_key: [n.wrapping_add(2); 32],
        }
    }

    #[test]
    fn intro_points_split_into_parts_that_fit_and_round_trip() {
        let ipts: Vec<IptWire> = (0..20).map(ipt).collect();
        let parts = IptsMsg::split("node-a", 9, 77, &ipts);
        assert_eq!(parts.len(), 5);
        let mut back = Vec::new();
        for p in &parts {
            let body = p.encode().expect("a full part fits a datagram");
            assert!(body.len() + HEADER_LEN <= MAX_PAYLOAD, "{}", body.len());
            let d = IptsMsg::decode(&body).unwrap();
            assert_eq!(&d, p);
            back.extend(d.ipts);
        }
        assert_eq!(back, ipts);
        let empty = IptsMsg::split("node-a", 9, 78, &[]);
        assert_eq!(empty.len(), 1);
        assert_eq!(
            IptsMsg::decode(&empty[0].encode().unwrap()).unwrap().parts,
            1
        );
        // More than the maximum: the rest is not sent.
        let many: Vec<IptWire> = (0..30).map(ipt).collect();
        let n: usize = IptsMsg::split("n", 1, 1, &many)
            .iter()
            .map(|p| p.ipts.len())
            .sum();
        assert_eq!(n, MAX_NODE_IPTS);
    }

    #[test]
    fn intro_point_rules_are_enforced() {
        let mut m = IptsMsg::split("node-a", 1, 1, &[ipt(1)]).remove(0);
        m.part = 1;
        let e = IptsMsg::decode(&postcard::to_allocvec(&m).unwrap()).unwrap_err();
        assert!(e.to_string().contains("part"), "{e}");
        let mut m = IptsMsg::split("node-a", 1, 1, &[ipt(1)]).remove(0);
        m.ipts[0].link_specifiers.clear();
        let e = IptsMsg::decode(&postcard::to_allocvec(&m).unwrap()).unwrap_err();
        assert!(e.to_string().contains("link_specifiers"), "{e}");
        let mut m = IptsMsg::split("node-a", 1, 1, &[ipt(1)]).remove(0);
        m.ipts = (0..5).map(ipt).collect();
        assert!(IptsMsg::decode(&postcard::to_allocvec(&m).unwrap()).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        // The fuzz target (fuzz/fuzz_targets/membership_wire.rs) explores this properly; this
        // keeps a cheap deterministic sweep in every test run.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let valid = sample().encode().unwrap();
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 300) as usize;
            let mut buf: Vec<u8> = (0..len).map(|j| (x >> (j % 56)) as u8).collect();
            if i % 2 == 0 && !buf.is_empty() {
                // Mutate a valid body instead: deeper into the decoder.
                buf = valid.clone();
                let at = (x as usize) % buf.len();
                buf[at] ^= (x >> 8) as u8 | 1;
            }
            let _ = decode(&buf);
            let _ = StateMsg::decode(&buf);
            let _ = IptsMsg::decode(&buf);
        }
    }
}

/// Most blinded keys in one [`ClusterMsg::BlindedKeys`] (each is 144 bytes; seven fit a
/// datagram).
pub const KEYS_PER_MSG: usize = 7;

/// The body of a [`Kind::Cluster`] envelope: what nodes tell each other beyond membership.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterMsg {
    /// Blinded keys of the master identity (the blinded key file format, each
    /// [`BLINDED_FILE_LEN`](crate::keys::BLINDED_FILE_LEN) bytes), pushed by a node that holds
    /// the identity secret to the members that do not. Receivers verify each key against the
    /// master's public identity before storing it.
    BlindedKeys {
        /// The keys.
        keys: Vec<Vec<u8>>,
    },
    /// A join invite was redeemed (so every node counts its uses, and refuses a replay).
    InviteRedeemed {
        /// The invite's id.
        invite: [u8; 8],
        /// The redeeming request's nonce.
        nonce: [u8; 16],
        /// The invite's expiry (Unix seconds), so receivers know how long to remember it.
        expires: u64,
    },
}

impl std::fmt::Debug for ClusterMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterMsg::BlindedKeys { keys } => {
                write!(f, "BlindedKeys {{ {} keys }}", keys.len())
            }
            ClusterMsg::InviteRedeemed { invite, .. } => {
                write!(f, "InviteRedeemed {{ invite: {invite:02x?} }}")
            }
        }
    }
}

impl Drop for ClusterMsg {
    fn drop(&mut self) {
        if let ClusterMsg::BlindedKeys { keys } = self {
            for k in keys.iter_mut() {
                zeroize::Zeroize::zeroize(k);
            }
        }
    }
}

impl ClusterMsg {
    /// Encodes the body.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        encode_body(Kind::Cluster, self)
    }

    /// Decodes and validates a body. Never panics.
    pub fn decode(body: &[u8]) -> Result<ClusterMsg, WireError> {
        let msg: ClusterMsg = decode_body(Kind::Cluster, "cluster", body)?;
        if let ClusterMsg::BlindedKeys { keys } = &msg {
            if keys.is_empty() || keys.len() > KEYS_PER_MSG {
                return Err(WireError::Invalid {
                    field: "cluster.keys",
                    problem: "1 to 7 keys per message",
                });
            }
            if keys
                .iter()
                .any(|k| k.len() != crate::keys::BLINDED_FILE_LEN)
            {
                return Err(WireError::Invalid {
                    field: "cluster.keys",
                    problem: "a key is not a 144-byte blinded key",
                });
            }
        }
        Ok(msg)
    }
}
