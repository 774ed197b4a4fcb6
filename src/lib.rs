//! RustBalance: several nodes serve one Tor onion service address through embedded Arti.
//!
//! Module map (dependencies point downward only): `cli` → `daemon` (wiring of one node) → services `publisher` (uploads) and `proxy`
//! (streams to the target) → core `hosting` (Arti keystore discipline, intro points),
//! `descriptor` (building one descriptor), `election` (pure publisher election by lease and
//! priority), `config` (validated configuration), `keys` (master identity, onion addresses),
//! `mesh` (WireGuard transport between nodes: keys, framing, in-process endpoint).
#![deny(missing_docs)]

pub mod cli;
pub mod config;
pub mod daemon;
pub mod descriptor;
pub mod election;
pub mod hosting;
pub mod keys;
pub mod membership;
pub mod mesh;
pub mod proxy;
pub mod publisher;
pub mod status;
