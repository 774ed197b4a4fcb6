//! Joining a cluster over the master onion address, and keeping blinded-only members keyed.
//!
//! - [`invite`]: the join line (stateless invite: any node holding the cluster token checks it);
//! - [`wire`]: the versioned, length-bounded request and reply;
//! - [`authority`]: the cluster side's checks as an I/O-free state machine (rate limit,
//!   proof, expiry, clock, replay, uses shared over the mesh);
//! - [`server`]: answering one join stream on the reserved [`JOIN_PORT`] (never proxied);
//! - [`client`]: the joining node's side, through its embedded Arti client;
//! - [`enrol`]: writing the joined node's files from a grant;
//! - [`keyshare`]: key holders push blinded keys to members over the mesh.
//!
//! What it must never do: log or print a token, invite secret or key; proxy the join port to
//! the target; change anything for a refused request.

pub mod authority;
pub mod client;
pub mod enrol;
pub mod invite;
pub mod keyshare;
pub mod server;
pub mod wire;

/// The master address's virtual port for joins: answered by the join service, never proxied
/// (configuration refuses it in `target.virtual_ports`).
pub const JOIN_PORT: u16 = 7841;

/// A node id no other node is likely to have: `node-` and 32 random bits in hex (`init`'s
/// default, and what a grant gives a joiner whose wanted id is taken). Two nodes with one id
/// are refused by the cluster (the later one), so ids must differ.
pub fn fresh_node_id() -> String {
    format!("node-{:08x}", rand::random::<u32>())
}
