//! A private Tor network on 127.0.0.1 for RustBalance's end-to-end tests and benchmarks.
//!
//! Debian's `tor` provides the processes: directory authorities, relays (some exits that may
//! only reach 127.0.0.0/8), one C-tor client (SocksPort + ControlPort) and one C-tor onion
//! service in front of a small HTTP server with known content. [`network::start`] blocks until
//! the network is usable and writes a JSON [`network::Description`] and an Arti configuration
//! fragment; [`network::stop`] kills exactly the PIDs it started. [`fixture::shared`] gives tests
//! one network per run. This crate never touches any address outside 127.0.0.1.
#![deny(missing_docs)]

pub mod client;
pub mod consensus;
mod error;
pub mod fixture;
pub mod network;
pub mod plan;
pub mod process;
pub mod target;

pub use error::TestnetError;
pub use network::{Description, StartOptions};

/// Default network directory: `target/testnet` in this workspace.
pub fn default_dir() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .join("target")
        .join("testnet")
}
