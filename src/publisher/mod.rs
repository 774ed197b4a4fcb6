//! Publishing the master descriptor: this node's (later: every healthy node's) intro points,
//! built into one descriptor per relevant time period and uploaded to the responsible HSDirs.
//!
//! This module owns uploads and their per-HSDir results. It is the only publisher of the
//! master address (Arti's own cannot run: nodes never hold the identity secret), and it
//! refuses to publish while the local clock disagrees with the consensus ([`clock`]).

pub mod clock;
pub mod upload;

pub use upload::{fetch_from_hsdirs, upload_ring_len, upload_to_hsdirs, HsDirResult};
