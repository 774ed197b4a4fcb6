//! Which intro points the merged descriptor(s) list: the nodes that count (healthy ones, or all
//! when none is), then `descriptor::merged_windows` for each period's HSDir ring. Pure.

use tor_netdoc::doc::hsdesc::IntroPointDesc;

use crate::descriptor;
use crate::status::NodeContribution;

/// One node's intro points for the merged descriptor.
#[derive(Debug, Clone)]
pub struct NodeIntroPoints {
    /// The node.
    pub node_id: String,
    /// Whether it advertises itself healthy.
    pub healthy: bool,
    /// Its intro points as descriptor entries.
    pub descs: Vec<IntroPointDesc>,
    /// `node.weight`: its share of the slots beyond 20 intro points.
    pub weight: u32,
}

/// The merge input: each eligible node's intro points, and the nodes' weights in that order.
#[derive(Debug, Clone, Default)]
pub struct MergeInput {
    /// Per node: its id and intro points.
    pub sets: Vec<(String, Vec<IntroPointDesc>)>,
    /// Per node, in the same order: its weight.
    pub weights: Vec<u32>,
}

/// The nodes whose intro points go into the merged descriptor(s): healthy nodes only; if no
/// node is healthy, every node (a descriptor that lists intro points that exist beats none).
/// `descriptor::merged_windows` then picks each descriptor's at most 20, one per relay.
pub fn eligible(sets: &[NodeIntroPoints]) -> MergeInput {
    let any_healthy = sets.iter().any(|s| s.healthy && !s.descs.is_empty());
    let chosen: Vec<&NodeIntroPoints> = sets.iter().filter(|s| s.healthy || !any_healthy).collect();
    MergeInput {
        sets: chosen
            .iter()
            .map(|s| (s.node_id.clone(), s.descs.clone()))
            .collect(),
        weights: chosen.iter().map(|s| s.weight).collect(),
    }
}

/// The descriptors of a period with an HSDir ring of `ring`: each window's intro points, by
/// node. The HSDir at ring position `i` gets window `i % windows.len()`.
pub fn windows(input: &MergeInput, ring: usize) -> Vec<Vec<(String, IntroPointDesc)>> {
    descriptor::merged_windows_weighted(
        &input.sets,
        &input.weights,
        descriptor::intro_relay,
        descriptor::MAX_INTRO_POINTS,
        ring,
    )
}

/// The distinct intro points in use across `windows`, by node.
pub fn in_use(windows: &[Vec<(String, IntroPointDesc)>]) -> Vec<(String, IntroPointDesc)> {
    let mut out: Vec<(String, IntroPointDesc)> = Vec::new();
    for (node, d) in windows.iter().flatten() {
        if !out.iter().any(|(_, x)| x.ipt_sid_key() == d.ipt_sid_key()) {
            out.push((node.clone(), d.clone()));
        }
    }
    out
}

/// Per node: how many intro points it has and how many the descriptors list.
pub fn contributions(
    sets: &[NodeIntroPoints],
    chosen: &[(String, IntroPointDesc)],
) -> Vec<NodeContribution> {
    sets.iter()
        .map(|s| NodeContribution {
            node_id: s.node_id.clone(),
            healthy: s.healthy,
            intro_points: s.descs.len(),
            listed: chosen.iter().filter(|(n, _)| *n == s.node_id).count(),
        })
        .collect()
}

/// A comparable fingerprint of a merge input: node ids with their weights and their intro
/// points' auth keys.
pub fn fingerprint(input: &MergeInput) -> Vec<(String, u32, Vec<[u8; 32]>)> {
    input
        .sets
        .iter()
        .zip(&input.weights)
        .map(|((node, descs), weight)| {
            let keys = descs
                .iter()
                .map(|d| {
                    let k: &tor_llcrypto::pk::ed25519::PublicKey = d.ipt_sid_key().as_ref();
                    k.to_bytes()
                })
                .collect();
            (node.clone(), *weight, keys)
        })
        .collect()
}
