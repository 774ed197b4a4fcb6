//! The mesh: nodes of one onion service talking to each other over WireGuard.
//!
//! This module owns the node-to-node transport and its key material:
//! - [`keys`]: WireGuard x25519 node keys in `wg genkey`/`wg pubkey` form, the cluster token and
//!   the preshared key derived from it;
//! - [`frame`]: the minimal IPv4/UDP framing that carries each datagram inside WireGuard;
//! - [`transport`]: the in-process WireGuard endpoint (boringtun `noise::Tunn`, one UDP socket,
//!   no TUN device, no root), with runtime peer management, roaming and counters.
//!
//! What it must never do: decide membership or roles (services above it add and remove peers),
//! log secrets, or touch a system network interface.

pub mod frame;
pub mod keys;
pub mod transport;

pub use keys::{ClusterToken, MeshKeyError, MeshKeys, MeshPublicKey, PresharedKey};
pub use transport::{
    Datagram, Endpoint, EndpointConfig, EndpointConfigBuilder, EndpointHandle, EndpointStats,
    PeerStats, TransportError, MAX_PAYLOAD, MAX_PROVISIONAL, MAX_PROVISIONAL_PER_SOURCE,
    PROVISIONAL_TTL,
};
