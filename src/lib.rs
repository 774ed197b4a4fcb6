//! RustBalance: several nodes serve one Tor onion service address through embedded Arti.
//!
//! Module map (dependencies point downward only): `keys` (master identity, onion addresses).
#![deny(missing_docs)]

pub mod keys;
