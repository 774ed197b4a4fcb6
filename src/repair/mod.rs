//! Self-repair: a node whose Tor side breaks while its mesh link stays up (guards unreachable,
//! intro circuits gone) must not stay in the descriptor with intro points that deliver
//! nothing.
//!
//! Arti's own service status cannot tell (its publisher component never runs on a node, so
//! the overall state stays `Shutdown`, docs/arti-hosting.md), and Arti's connectivity status
//! never falls back once it was online. So the node checks itself: every
//! `repair.probe_interval` it builds a service introduction circuit, through its own guards,
//! to one of its own intro-point relays (an HSDir while it has none), within
//! `repair.probe_timeout`.
//! - [`monitor`]: the decisions, pure (withdraw, restore, which repair when);
//! - [`task`]: the task that runs probes and repairs against a [`task::TorSide`];
//! - [`arti`]: the real Tor side: the probe circuit, retiring circuits, relaunching the
//!   service through the host task (`hosting::service::host`).

pub mod arti;
pub mod monitor;
pub mod task;

pub use monitor::{Action, Monitor, RepairStatus, RepairStep, TorState};
