//! RustBalance: several nodes serve one Tor onion service address through embedded Arti.
//!
//! Module map (dependencies point downward only): `config` (the node's validated configuration)
//! → `keys` (master identity, onion addresses).
#![deny(missing_docs)]

pub mod config;
pub mod keys;
