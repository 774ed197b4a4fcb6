//! Proof of work (proposal 327, `pow-params v1`) across the whole cluster.
//!
//! A merged descriptor carries ONE `pow-params` seed, and a client may send its solved
//! INTRODUCE1 through any listed intro point: so every node must verify that same seed. Arti's
//! PoW manager makes random seeds of its own and has no API to take one (`PowManager` is
//! crate-private); it does load its seeds from its state file (`pow_manager.json` in the
//! service's state directory) when the service launches. So (design note `pow.md`, option 1):
//! - [`seeds`]: every seed is derived from a cluster secret, the time period and an epoch
//!   number (`unix time / pow.seed_rotation`): every node computes the same seeds, nobody
//!   without the secret can compute future ones;
//! - [`arti_state`]: before the service (re)launches, its state file is written with, for each
//!   period whose blinded key the keystore holds, the current epoch's seed and the next's, so
//!   a node verifies the advertised seed from before it is advertised until after it expires;
//! - [`plan`]: when a node relaunches its service to load the next epoch's seeds (staggered by
//!   node, so the nodes never all relaunch at once), and the suggested effort the publisher
//!   advertises: the highest of the healthy nodes' own suggestions (Arti computes each node's,
//!   the mesh gossips them), moved only by Arti's 15 % rule, within the operator's bounds.
//! - [`counters`]: Arti's PoW counters (verified solves, failures, queue drops), from the
//!   `metrics` facade Arti reports them to.

pub mod arti_state;
pub mod counters;
pub mod plan;
pub mod seeds;

pub use plan::{advertise, advertise_for, Planner};
pub use seeds::{PowKey, Schedule};

/// Why PoW state could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum PowError {
    /// Arti's PoW state file.
    #[error("PoW state file {path}: {problem}")]
    StateFile {
        /// The file.
        path: String,
        /// What went wrong.
        problem: String,
    },
}
