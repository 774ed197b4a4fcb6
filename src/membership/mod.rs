//! Gossip membership: which nodes are in the mesh, whether they are alive, and what each one
//! advertises (priority, health, lease, intro points).
//!
//! This module owns the membership protocol and its wire format:
//! - [`identity`]: [`MemberId`], the identity foca gossips: node id, WireGuard public key and
//!   endpoint, boot number. Gossiping the key and endpoint is what heals a chain A–B–C into a
//!   full mesh: a node adds a WireGuard peer as soon as it learns a member.
//! - [`wire`]: the versioned, length-bounded envelope every mesh datagram uses, with the
//!   sender's timestamp, and the node-state message.
//! - [`core`]: [`Membership`], an I/O-free state machine around foca (SWIM failure detection and
//!   dissemination) plus node states, the clock-skew check, RTT echoes and counters.
//! - [`service`]: the task that runs a [`Membership`] over the WireGuard
//!   [`Endpoint`](crate::mesh::Endpoint) with real time.
//! - [`sim`]: a simulated network with simulated time, for tests and the convergence benchmark.
//!
//! Why foca (over chitchat): foca is I/O-free (we hand it datagrams and timer events), so it
//! runs over our WireGuard endpoint without an adapter that fakes socket addresses, and the
//! same code runs under simulated time in tests and the 1000-node benchmark. docs/ARCHITECTURE.md
//! has the comparison.
//!
//! What it must never do: decide roles (the election does), touch the network itself, trust an
//! identity that the WireGuard session does not authenticate, or log secrets.

pub mod agent;
pub mod core;
pub mod identity;
pub mod service;
pub mod sim;
pub mod wire;

pub use self::agent::Agent;
pub use self::core::{Action, Counters, Liveness, Membership, MembershipConfig, PeerView};
pub use self::identity::MemberId;
pub use self::service::{
    Lifecycle, LocalInputs, MemberStatus, MeshCommand, MeshHandle, MeshStatus, PeerIpts,
    ServiceConfig,
};
pub use self::wire::{ClusterMsg, Health, IptSummary, IptWire, KeyCoverage, NodeState};

#[cfg(test)]
mod tests;
