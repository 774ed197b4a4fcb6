//! Who a member is: the identity foca gossips, carrying what a peer needs to reach the member
//! directly over WireGuard.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::mesh::MeshPublicKey;

/// Longest node id accepted from the wire (the config allows the same).
pub const MAX_NODE_ID_LEN: usize = 64;

/// A member's identity as gossiped by foca: node id, WireGuard public key and endpoint, and the
/// boot number that tells a restarted process from its previous life.
///
/// Foca's unique address ([`foca::Identity::addr`]) is the WireGuard public key: the transport
/// authenticates it, so a datagram's sender and the identity it claims are checked against each
/// other. A newer `boot` of the same key wins the conflict (a restart or a rejoin after being
/// declared dead).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberId {
    /// The configured `node.id`.
    pub node_id: String,
    /// The node's WireGuard public key (raw bytes).
    pub key: [u8; 32],
    /// Where its WireGuard socket is reached.
    pub endpoint: SocketAddr,
    /// Start time in ms since the epoch at launch, bumped on every rejoin.
    pub boot: u64,
}

impl MemberId {
    /// The public key as the transport's type (`None` for the all-zero key nobody can hold).
    pub fn public_key(&self) -> Option<MeshPublicKey> {
        MeshPublicKey::from_bytes(self.key).ok()
    }

    /// A stand-in for a seed known only by key and endpoint: foca accepts an announce addressed
    /// to any identity with the receiver's key, and the answer carries the real identity.
    pub fn seed(key: &MeshPublicKey, endpoint: SocketAddr) -> MemberId {
        MemberId {
            node_id: String::new(),
            key: *key.as_bytes(),
            endpoint,
            boot: 0,
        }
    }

    /// Whether this identity is well formed: a node id of 1–64 of `A–Z a–z 0–9 . _ -`, a
    /// usable endpoint (not unspecified, port not 0). Identities from the wire that are not are
    /// refused.
    pub fn is_valid(&self) -> bool {
        valid_node_id(&self.node_id)
            && !self.endpoint.ip().is_unspecified()
            && self.endpoint.port() != 0
            && self.public_key().is_some()
    }

    /// Short form for logs: `node-id@key-prefix`.
    pub fn short(&self) -> String {
        match self.public_key() {
            Some(k) => format!("{}@{}", self.node_id, k.short()),
            None => format!("{}@?", self.node_id),
        }
    }
}

/// The node id rules shared with the configuration: 1–64 of `A–Z a–z 0–9 . _ -`.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl foca::Identity for MemberId {
    type Addr = [u8; 32];

    fn renew(&self) -> Option<Self> {
        Some(MemberId {
            boot: self.boot.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> [u8; 32] {
        self.key
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        // The newer life of the same key wins; on equal boots (never produced by one process)
        // fall back to a total order so every member keeps the same one.
        (self.boot, &self.node_id, self.endpoint.to_string())
            > (
                adversary.boot,
                &adversary.node_id,
                adversary.endpoint.to_string(),
            )
    }
}
