//! RustBalance: several nodes serve one Tor onion service address through embedded Arti.
//!
//! Module map (dependencies point downward only): `cli` → `daemon` (wiring of one node) →
//! services `publisher` (the publisher reactor), `proxy` (streams to the target), `health`
//! (the target probe), `join` (joining over the master onion, key pushes), `membership`
//! (gossip, the agent), `status` (schema, endpoint, metrics), `notify` (systemd notifications) → core
//! `hosting` (Arti keystore discipline, intro points), `descriptor` (building one descriptor),
//! `election` (pure publisher election by lease and priority), `config` (validated
//! configuration), `keys` (master identity, onion addresses, key sources), `mesh` (WireGuard
//! transport between nodes: keys, framing, in-process endpoint). docs/ARCHITECTURE.md has the
//! full map.
#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod daemon;
pub mod descriptor;
pub mod election;
pub mod health;
pub mod hosting;
pub mod join;
pub mod keys;
pub mod membership;
pub mod mesh;
pub mod notify;
pub mod pow;
pub mod proxy;
pub mod publisher;
pub mod repair;
pub mod status;

/// Installs rustls's process-wide crypto provider (ring) for Arti's TLS channels; idempotent.
/// Every binary and test that builds an Arti client calls it first (rustls refuses to pick one
/// itself when more than one is compiled in).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
