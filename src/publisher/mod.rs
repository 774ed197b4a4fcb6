//! Publishing the master descriptor: every healthy node's intro points, built into the
//! descriptor(s) of each relevant time period and uploaded to the responsible HSDirs.
//!
//! This module owns publishing. It is the only publisher of the master address (Arti's own
//! cannot run: nodes never hold the identity secret).
//! - [`state`]: the decisions, a pure state machine (per period and HSDir: dirty/clean, in
//!   flight, jittered retries; coalescing; role loss);
//! - [`reactor`]: the task that runs it against typed inputs, one spawned task per upload;
//! - [`select`]: which nodes' intro points are listed, and each HSDir's window;
//! - [`network`]: the network view read from Arti's consensus;
//! - [`clock`]: no publishing while the local clock disagrees with the consensus;
//! - [`upload`]: uploads to HSDirs and fetching descriptors back.
//!
//! It must never publish while another role is elected, or from a clock the network does not
//! agree with.

pub mod clock;
pub mod network;
pub mod reactor;
pub mod select;
pub mod state;
#[cfg(test)]
mod test_support;
pub mod upload;

pub use upload::{fetch_from_hsdirs, upload_ring_len, upload_to_hsdirs, ArtiUploader, HsDirResult};
