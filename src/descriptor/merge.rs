//! The merged descriptor's inputs: intro points carried between nodes ([`IptWire`], the form
//! the mesh gossips; defined here so the descriptor depends on nothing above it) and the
//! choice of each descriptor's at most 20: one per relay, every node first, then a fair share.

use tor_bytes::{Reader, Writer};
use tor_hscrypto::pk::{HsIntroPtSessionIdKey, HsSvcNtorKey};
use tor_linkspec::EncodedLinkSpec;
use tor_llcrypto::pk::{curve25519, ed25519};
use tor_netdoc::doc::hsdesc::IntroPointDesc;

use super::DescriptorError;

/// One intro point as the descriptor needs it: the relay's link specifiers (encoded as in
/// the descriptor: type, length, body, repeated) and the three public keys. No secrets: the
/// descriptor publisher re-certifies the keys with its own signing key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct IptWire {
    /// Encoded link specifiers.
    pub link_specifiers: Vec<u8>,
    /// The relay's ntor onion key (`KP_ntor`).
    pub onion_key: [u8; 32],
    /// The intro point's auth key (`KP_hs_ipt_sid`, ed25519).
    pub auth_key: [u8; 32],
    /// The intro point's encryption key (`KP_hss_ntor`, x25519).
    pub enc_key: [u8; 32],
}

/// The public parts of an intro point, for the mesh.
pub fn ipt_to_wire(d: &IntroPointDesc) -> IptWire {
    let mut link_specifiers: Vec<u8> = Vec::new();
    for ls in d.link_specifiers() {
        // Writing to a Vec cannot fail except for a body over 255 bytes, which the netdir
        // never produces; such a specifier is left out.
        let mut one: Vec<u8> = Vec::new();
        if one.write(ls).is_ok() {
            link_specifiers.extend(one);
        }
    }
    let auth: &ed25519::PublicKey = d.ipt_sid_key().as_ref();
    let enc: &curve25519::PublicKey = d.svc_ntor_key().as_ref();
    IptWire {
        link_specifiers,
        onion_key: *d.ipt_ntor_key().as_bytes(),
        auth_key: *auth.as_bytes(),
        enc_key: *enc.as_bytes(),
    }
}

/// Rebuilds the descriptor entry of an intro point received from the mesh.
pub fn ipt_from_wire(w: &IptWire) -> Result<IntroPointDesc, DescriptorError> {
    let bad = |what: &str| DescriptorError::BadIntroPoint(what.to_string());
    let mut r = Reader::from_slice(&w.link_specifiers);
    let mut specs = Vec::new();
    while r.remaining() > 0 {
        let ls: EncodedLinkSpec = r.extract().map_err(|_| bad("malformed link specifiers"))?;
        specs.push(ls);
    }
    if specs.is_empty() {
        return Err(bad("no link specifiers"));
    }
    let auth = ed25519::PublicKey::from_bytes(&w.auth_key).map_err(|_| bad("bad auth key"))?;
    IntroPointDesc::builder()
        .link_specifiers(specs)
        .ipt_kp_ntor(curve25519::PublicKey::from(w.onion_key))
        .kp_hs_ipt_sid(HsIntroPtSessionIdKey::from(auth))
        .kp_hss_ntor(HsSvcNtorKey::from(curve25519::PublicKey::from(w.enc_key)))
        .build()
        .map_err(|e| bad(&e.to_string()))
}

/// The relay an intro point sits on, as C tor clients identify it: the RSA identity from its
/// link specifiers (`None` if it has none, which the netdir never produces).
pub fn intro_relay(d: &IntroPointDesc) -> Option<tor_llcrypto::pk::rsa::RsaIdentity> {
    d.link_specifiers().iter().find_map(|ls| match ls.parse() {
        Ok(tor_linkspec::LinkSpec::RsaId(id)) => Some(id),
        _ => None,
    })
}

/// One descriptor's intro points from per-node lists: at most `cap`, no two with the same
/// `key` (relay), as many nodes as the keys allow, then a fair round-robin share each
/// ([`pick_window_weighted`] with equal weights).
///
/// Why no relay twice: a C tor client matches the intro circuit it built back to the
/// descriptor entry by the relay's RSA identity (`find_desc_intro_point_by_legacy_id` in
/// `hs_client.c`), so of two entries on one relay it only ever uses the FIRST. A node whose
/// intro points all sit on relays listed earlier for other nodes would get no clients at all.
///
/// First every node gets one item, by a maximum matching of nodes to keys (so a node is only
/// left out when the keys cannot cover every node); then round-robin, each node adds its next
/// item with a fresh key, each node's items taken in the order given. `rotate` rotates the
/// node order (who comes first when the cap or the keys run out).
pub fn pick_window<T: Clone, K: PartialEq>(
    sets: &[(String, Vec<T>)],
    key: impl Fn(&T) -> K,
    cap: usize,
    rotate: usize,
) -> Vec<(String, T)> {
    pick_window_weighted(sets, &vec![1; sets.len()], key, cap, rotate)
}

/// [`pick_window`] where node `i` gets `weights[i]` shares of the slots after the first round:
/// each next slot goes to the node furthest below its weighted share (items / weight) that
/// still has an item on a free key, ties in the rotated order. Equal weights are round-robin.
/// A missing weight counts as 1, a zero weight as 1.
pub fn pick_window_weighted<T: Clone, K: PartialEq>(
    sets: &[(String, Vec<T>)],
    weights: &[u32],
    key: impl Fn(&T) -> K,
    cap: usize,
    rotate: usize,
) -> Vec<(String, T)> {
    let weight = |u: usize| u64::from(weights.get(u).copied().unwrap_or(1).max(1));
    let n = sets.len();
    if n == 0 || cap == 0 {
        return Vec::new();
    }
    // Distinct keys, and each item's key index.
    let mut all_keys: Vec<K> = Vec::new();
    let key_of: Vec<Vec<usize>> = sets
        .iter()
        .map(|(_, items)| {
            items
                .iter()
                .map(|item| {
                    let k = key(item);
                    match all_keys.iter().position(|x| *x == k) {
                        Some(i) => i,
                        None => {
                            all_keys.push(k);
                            all_keys.len() - 1
                        }
                    }
                })
                .collect()
        })
        .collect();
    // Node order and each node's candidate items, rotated.
    let order: Vec<usize> = (0..n).map(|k| (k + rotate) % n).collect();
    let cands: Vec<Vec<usize>> = sets
        .iter()
        .map(|(_, items)| (0..items.len()).collect())
        .collect();

    // Maximum matching node -> key (Kuhn's augmenting paths; the sets are small).
    fn augment(
        u: usize,
        cands: &[Vec<usize>],
        key_of: &[Vec<usize>],
        owner: &mut [Option<(usize, usize)>],
        seen: &mut [bool],
    ) -> bool {
        for &j in &cands[u] {
            let k = key_of[u][j];
            if seen[k] {
                continue;
            }
            seen[k] = true;
            let free = match owner[k] {
                None => true,
                Some((v, _)) => augment(v, cands, key_of, owner, seen),
            };
            if free {
                owner[k] = Some((u, j));
                return true;
            }
        }
        false
    }
    let mut owner: Vec<Option<(usize, usize)>> = vec![None; all_keys.len()];
    for &u in &order {
        let mut seen = vec![false; all_keys.len()];
        augment(u, &cands, &key_of, &mut owner, &mut seen);
    }
    let mut used = vec![false; all_keys.len()];
    let mut taken: Vec<Vec<bool>> = sets.iter().map(|(_, v)| vec![false; v.len()]).collect();
    let mut count = vec![0u64; n];
    let mut out = Vec::new();
    for &u in &order {
        if let Some(k) = owner.iter().position(|o| o.is_some_and(|(v, _)| v == u)) {
            let (_, j) = owner[k].expect("position found it");
            used[k] = true;
            taken[u][j] = true;
            if out.len() < cap {
                out.push((sets[u].0.clone(), sets[u].1[j].clone()));
                count[u] += 1;
            }
        }
    }
    // Weighted fill: the node furthest below its share next (round-robin for equal weights).
    while out.len() < cap {
        let mut best: Option<(usize, usize)> = None;
        for &u in &order {
            let Some(j) = cands[u]
                .iter()
                .copied()
                .find(|&j| !taken[u][j] && !used[key_of[u][j]])
            else {
                continue;
            };
            let below = match best {
                None => true,
                // count[u] / w[u] < count[b] / w[b], without division.
                Some((b, _)) => count[u] * weight(b) < count[b] * weight(u),
            };
            if below {
                best = Some((u, j));
            }
        }
        let Some((u, j)) = best else { break };
        taken[u][j] = true;
        used[key_of[u][j]] = true;
        count[u] += 1;
        out.push((sets[u].0.clone(), sets[u].1[j].clone()));
    }
    out
}

/// An item with its set and its position in that set.
type Placed<T> = (usize, usize, T);

/// The descriptors of one period: one [`pick_window`] of at most `size` when the nodes have
/// no more than `size` items in all; otherwise `count` windows (one per HSDir of the ring),
/// the i-th rotated by i, so different HSDirs get different subsets.
pub fn merged_windows<T: Clone, K: PartialEq>(
    sets: &[(String, Vec<T>)],
    key: impl Fn(&T) -> K + Copy,
    size: usize,
    count: usize,
) -> Vec<Vec<(String, T)>> {
    merged_windows_weighted(sets, &vec![1; sets.len()], key, size, count)
}

/// [`merged_windows`] with each window picked by [`pick_window_weighted`]: beyond `size`
/// intro points, node `i`'s share of every window follows `weights[i]`.
pub fn merged_windows_weighted<T: Clone, K: PartialEq>(
    sets: &[(String, Vec<T>)],
    weights: &[u32],
    key: impl Fn(&T) -> K + Copy,
    size: usize,
    count: usize,
) -> Vec<Vec<(String, T)>> {
    let total: usize = sets.iter().map(|(_, v)| v.len()).sum();
    let count = if total <= size { 1 } else { count.max(1) };
    // Each window prefers the items earlier windows used least (then the rotated order), so
    // together they put as many intro points in use as the relays allow.
    let mut uses: Vec<Vec<usize>> = sets.iter().map(|(_, v)| vec![0; v.len()]).collect();
    let mut out = Vec::new();
    for i in 0..count {
        // Items carry their set and position, so uses are counted by set, never by node id
        // (two sets may carry one id; counting by id indexed one set with another's positions).
        let ordered: Vec<(String, Vec<Placed<T>>)> = sets
            .iter()
            .zip(&uses)
            .enumerate()
            .map(|(n, ((node, items), u))| {
                let len = items.len();
                let mut idx: Vec<usize> = (0..len).map(|j| (j + i) % len).collect();
                idx.sort_by_key(|&j| u[j]);
                (
                    node.clone(),
                    idx.into_iter().map(|j| (n, j, items[j].clone())).collect(),
                )
            })
            .collect();
        let mut picked = pick_window_weighted(&ordered, weights, |(_, _, t)| key(t), size, i);
        if count == 1 {
            // One descriptor for every HSDir: no other window evens out a share that shared
            // relays skewed, so the surplus is left out instead.
            picked = balance_window(picked, sets.len(), weights);
        }
        let mut window = Vec::new();
        for (node, (n, j, item)) in picked {
            uses[n][j] += 1;
            window.push((node, item));
        }
        out.push(window);
    }
    out
}

/// How far a node's share of one descriptor's intro points may stray from its weighted share
/// before the surplus of the nodes above theirs is left out: 1/10 of that share.
pub const SHARE_TOLERANCE: (u64, u64) = (1, 10);

/// How many of its listed intro points each node keeps in a descriptor that every HSDir
/// serves: `have[i]` listed, `weights[i]` its weight (0 counts as 1). Clients pick an intro
/// point uniformly, so a node's share of the clients is its share of the listed intro points.
///
/// Every node with at least one keeps at least one. The largest total `X` for which every
/// such node can be within [`SHARE_TOLERANCE`] of its weighted share (among those nodes):
/// for a given `X` each node's count has its own interval, so `X` is reachable when the
/// intervals' bounds bracket it; the counts start at the lower bounds and each next one goes
/// to the node furthest below its share. If no `X` is, the least skewed of a family of
/// candidates (each node's `clamp(floor(t x weight), 1, have)` for every level `t` a count
/// reaches). Equal weights and equal counts are kept as they are; 3/3/2 (two nodes' intro
/// points on one relay) becomes 2/2/2; 2:1:1 with 3 each becomes 2/1/1.
pub fn balanced_counts(have: &[usize], weights: &[u32]) -> Vec<usize> {
    let weight = |i: usize| u64::from(weights.get(i).copied().unwrap_or(1).max(1));
    let listed: Vec<usize> = (0..have.len()).filter(|&i| have[i] > 0).collect();
    if listed.len() < 2 {
        return have.to_vec();
    }
    let w_sum: u64 = listed.iter().map(|&i| weight(i)).sum();
    let (tn, td) = SHARE_TOLERANCE;
    let most: u64 = listed.iter().map(|&i| have[i] as u64).sum();
    for x_total in (listed.len() as u64..=most).rev() {
        // |c * W - w * X| <= (tn / td) * w * X, as an interval for c.
        let bounds: Vec<(u64, u64)> = listed
            .iter()
            .map(|&i| {
                let want = weight(i) * x_total;
                let lo = ((td - tn) * want).div_ceil(td * w_sum).max(1);
                let hi = ((td + tn) * want / (td * w_sum)).min(have[i] as u64);
                (lo, hi)
            })
            .collect();
        let (lo_sum, hi_sum) = bounds
            .iter()
            .fold((0, 0), |(l, h), (lo, hi)| (l + lo, h + hi));
        if bounds.iter().any(|(lo, hi)| lo > hi) || !(lo_sum..=hi_sum).contains(&x_total) {
            continue;
        }
        let mut x: Vec<u64> = bounds.iter().map(|b| b.0).collect();
        for _ in lo_sum..x_total {
            // The node furthest below its share with room left (x / w smallest).
            let next = (0..listed.len())
                .filter(|&k| x[k] < bounds[k].1)
                .min_by(|&a, &b| (x[a] * weight(listed[b])).cmp(&(x[b] * weight(listed[a]))))
                .expect("the upper bounds sum to at least the total");
            x[next] += 1;
        }
        let mut out = vec![0; have.len()];
        for (k, &i) in listed.iter().enumerate() {
            out[i] = x[k] as usize;
        }
        return out;
    }
    // No total keeps every node within the tolerance: the least skewed candidate.
    let worst = |x: &[usize]| -> f64 {
        let x_sum: u64 = listed.iter().map(|&i| x[i] as u64).sum();
        listed
            .iter()
            .map(|&i| {
                let (got, want) = (x[i] as u64 * w_sum, weight(i) * x_sum);
                got.abs_diff(want) as f64 / want as f64
            })
            .fold(0f64, f64::max)
    };
    let mut best = have.to_vec();
    let mut best_worst = worst(&best);
    for &i in &listed {
        for k in 1..=have[i] as u64 {
            // t = k / weight(i): node j gets floor(k * weight(j) / weight(i)).
            let x: Vec<usize> = (0..have.len())
                .map(|j| match have[j] {
                    0 => 0,
                    h => ((k * weight(j) / weight(i)).max(1) as usize).min(h),
                })
                .collect();
            let x_worst = worst(&x);
            let better = x_worst
                .total_cmp(&best_worst)
                .then_with(|| best.iter().sum::<usize>().cmp(&x.iter().sum::<usize>()));
            if better.is_lt() {
                best = x;
                best_worst = x_worst;
            }
        }
    }
    best
}

/// `window` with each set's items cut to its [`balanced_counts`] (a set's first items kept:
/// the matching's and the earliest fill's).
fn balance_window<T>(
    window: Vec<(String, Placed<T>)>,
    sets: usize,
    weights: &[u32],
) -> Vec<(String, Placed<T>)> {
    let mut have = vec![0; sets];
    for (_, (n, _, _)) in &window {
        have[*n] += 1;
    }
    let mut keep = balanced_counts(&have, weights);
    window
        .into_iter()
        .filter(|(_, (n, _, _))| {
            let left = &mut keep[*n];
            let kept = *left > 0;
            *left = left.saturating_sub(1);
            kept
        })
        .collect()
}

/// The wire form of an intro point on relay `relay` (RSA identity: 20 times that byte), with
/// real, random keys: for tests here and above.
#[cfg(test)]
pub(crate) fn test_ipt_wire(relay: u8) -> IptWire {
    let auth = ed25519::Keypair::generate(&mut rand::rng()).verifying_key();
    IptWire {
        link_specifiers: [
            &[0u8, 6][..],
            &[127, 0, 0, 1, 0x3e, 0x80],
            &[2, 20],
            &[relay; 20],
        ]
        .concat(),
        onion_key: [1; 32],
        auth_key: auth.to_bytes(),
        // A real x25519 key: descriptor building converts it to ed25519 for a certificate.
        enc_key: curve25519::PublicKey::from(&curve25519::StaticSecret::from([relay; 32]))
            .to_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_node<T>(picked: &[(String, T)]) -> Vec<usize> {
        let mut counts = std::collections::BTreeMap::new();
        for (n, _) in picked {
            *counts.entry(n.clone()).or_insert(0) += 1;
        }
        counts.into_values().collect()
    }

    fn relays_of<T>(w: &[(String, T)], key: impl Fn(&T) -> u32) -> Vec<u32> {
        let mut r: Vec<u32> = w.iter().map(|(_, t)| key(t)).collect();
        let n = r.len();
        r.sort();
        r.dedup();
        assert_eq!(r.len(), n, "no relay twice");
        r
    }

    #[test]
    fn shared_relays_never_hide_a_node() {
        // Items are relays. Every relay c uses is also used by a or b, listed first by plain
        // round-robin; a C tor client (matching by relay) would never reach c.
        let sets = vec![
            ("a".to_string(), vec![1, 2, 3]),
            ("b".to_string(), vec![2, 4, 3]),
            ("c".to_string(), vec![1, 2, 4]),
        ];
        let w = pick_window(&sets, |r: &u32| *r, 20, 0);
        assert_eq!(relays_of(&w, |r| *r), vec![1, 2, 3, 4], "every relay, once");
        for node in ["a", "b", "c"] {
            assert!(w.iter().any(|(n, _)| n == node), "{node} listed: {w:?}");
        }
    }

    #[test]
    fn matching_finds_a_relay_for_every_node_when_one_exists() {
        // Greedy in order would give a relay 1 and leave b (only relay 1) out.
        let sets = vec![("a".to_string(), vec![1, 2]), ("b".to_string(), vec![1])];
        let w = pick_window(&sets, |r: &u32| *r, 20, 0);
        assert_eq!(w.len(), 2);
        assert!(w.contains(&("b".to_string(), 1)) && w.contains(&("a".to_string(), 2)));
    }

    #[test]
    fn windows_per_hsdir_differ_without_repeating_a_relay() {
        // 8 nodes x 3 intro points over 24 relays, 4 HSDirs: windows of 20, every node in
        // each, and together more than 20 intro points in use.
        let sets: Vec<(String, Vec<u32>)> = (0..8u32)
            .map(|n| (format!("n{n}"), (0..3).map(|k| n * 3 + k).collect()))
            .collect();
        let ws = merged_windows(&sets, |r: &u32| *r, 20, 4);
        assert_eq!(ws.len(), 4);
        let mut in_use = std::collections::BTreeSet::new();
        for w in &ws {
            assert_eq!(w.len(), 20);
            in_use.extend(relays_of(w, |r| *r));
            let nodes: std::collections::BTreeSet<&String> = w.iter().map(|(n, _)| n).collect();
            assert_eq!(nodes.len(), 8, "every node in every window");
        }
        assert_ne!(ws[0], ws[1]);
        assert_eq!(in_use.len(), 24, "every intro point in some window");
        // Only 10 relays for the same 24 intro points: windows shrink to 10, still no repeat.
        let sets: Vec<(String, Vec<u32>)> = (0..8u32)
            .map(|n| (format!("n{n}"), (0..3).map(|k| (n * 3 + k) % 10).collect()))
            .collect();
        for w in merged_windows(&sets, |r: &u32| *r, 20, 4) {
            assert_eq!(relays_of(&w, |r| *r).len(), 10);
        }
        // At most 20 in all: one window.
        assert_eq!(merged_windows(&sets[..2], |r: &u32| *r, 20, 4).len(), 1);
    }

    /// Per-node lists whose items are all distinct (every intro point on its own relay).
    fn uniq(sizes: &[usize]) -> Vec<(String, Vec<usize>)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("n{i}"), (0..n).map(|k| i * 1000 + k).collect()))
            .collect()
    }

    fn id(x: &usize) -> usize {
        *x
    }

    #[test]
    fn under_the_cap_everything_is_listed() {
        let p = pick_window(&uniq(&[3, 3, 3]), id, 20, 0);
        assert_eq!(p.len(), 9);
    }

    #[test]
    fn over_the_cap_every_node_gets_its_share() {
        let p = pick_window(&uniq(&[3; 8]), id, 20, 0);
        assert_eq!(p.len(), 20);
        assert_eq!(per_node(&p), vec![3, 3, 3, 3, 2, 2, 2, 2]);
        // One node with many intro points does not crowd out the others.
        let p = pick_window(&uniq(&[20, 1, 1]), id, 20, 0);
        assert_eq!(per_node(&p), vec![18, 1, 1]);
        // Rotation changes who gets the remainder.
        let p = pick_window(&uniq(&[3; 8]), id, 20, 4);
        assert_eq!(per_node(&p), vec![2, 2, 2, 2, 3, 3, 3, 3]);
    }

    #[test]
    fn distinct_windows_use_more_than_twenty_and_keep_every_node() {
        // 8 nodes x 3 intro points = 24 > 20, and 8 HSDirs.
        let w = merged_windows(&uniq(&[3; 8]), id, 20, 8);
        assert_eq!(w.len(), 8);
        let used: std::collections::BTreeSet<(String, usize)> =
            w.iter().flatten().cloned().collect();
        assert_eq!(used.len(), 24, "every intro point is in use somewhere");
        for win in &w {
            assert_eq!(win.len(), 20);
            let nodes: std::collections::BTreeSet<&String> = win.iter().map(|(n, _)| n).collect();
            assert_eq!(nodes.len(), 8, "every node in every descriptor");
        }
        // Up to HSDirs x 20 distinct intro points.
        let used: std::collections::BTreeSet<(String, usize)> =
            merged_windows(&uniq(&[20; 8]), id, 20, 8)
                .into_iter()
                .flatten()
                .collect();
        assert_eq!(used.len(), 160);
        // Twenty or fewer: one descriptor for all.
        let one = merged_windows(&uniq(&[3]), id, 20, 8);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].len(), 3);
    }

    #[test]
    fn two_sets_with_one_node_id_are_merged_by_set_not_by_id() {
        // Regression: uses were looked up by node id, so the second "node-1" set's positions
        // indexed the first's (out of bounds when it is shorter) and the publisher panicked.
        let sets = vec![
            ("node-1".to_string(), vec![1usize]),
            ("node-1".to_string(), (100..110).collect()),
            ("node-2".to_string(), (200..215).collect()),
        ];
        let ws = merged_windows(&sets, id, 20, 4);
        assert_eq!(ws.len(), 4, "26 items over 20: one window per HSDir");
        for w in &ws {
            assert_eq!(w.len(), 20);
            relays_of(w, |r| *r as u32);
        }
        let used: std::collections::BTreeSet<usize> =
            ws.iter().flatten().map(|(_, x)| *x).collect();
        assert!(used.contains(&1) && used.contains(&109) && used.contains(&214));
    }

    #[test]
    fn empty_inputs() {
        assert!(pick_window::<u8, u8>(&[], |x| *x, 20, 0).is_empty());
        assert!(pick_window(&uniq(&[0, 0]), id, 20, 1).is_empty());
        assert!(pick_window(&uniq(&[5]), id, 0, 0).is_empty());
    }

    #[test]
    fn wire_form_round_trips_and_bad_input_is_refused() {
        let w = test_ipt_wire(7);
        let d = ipt_from_wire(&w).unwrap();
        assert_eq!(d.link_specifiers().len(), 2);
        assert_eq!(ipt_to_wire(&d), w);
        let mut bad = w.clone();
        bad.link_specifiers.truncate(5);
        assert!(ipt_from_wire(&bad).is_err());
        let mut bad = w.clone();
        bad.link_specifiers.clear();
        assert!(ipt_from_wire(&bad).is_err());
    }

    #[test]
    fn beyond_the_cap_shares_follow_the_weights() {
        // Three nodes with 20 intro points each on relays of their own: 60 > 20.
        let sets: Vec<(String, Vec<u32>)> = (0..3u32)
            .map(|n| (format!("n{n}"), (0..20).map(|i| n * 100 + i).collect()))
            .collect();
        let shares = |weights: &[u32]| -> Vec<usize> {
            let windows = merged_windows_weighted(&sets, weights, |r: &u32| *r, 20, 8);
            let mut total = vec![0; 3];
            for w in &windows {
                assert_eq!(w.len(), 20);
                relays_of(w, |r| *r);
                for (node, _) in w {
                    total[node[1..].parse::<usize>().unwrap()] += 1;
                }
            }
            total
        };
        // Equal: 7/7/6 per window, the 6 rotating.
        let equal = shares(&[1, 1, 1]);
        assert_eq!(equal.iter().sum::<usize>(), 160);
        assert!(equal.iter().all(|&s| (53..=54).contains(&s)), "{equal:?}");
        // 2:1:1 is 10/5/5 of every window, 3:1:1 12/4/4 (a weight of 0 counts as 1).
        assert_eq!(shares(&[2, 1, 1]), vec![80, 40, 40], "2:1:1");
        assert_eq!(shares(&[3, 1, 0]), vec![96, 32, 32], "3:1:1");
        // Below the cap, one descriptor whose shares follow the weights: 2:1:1 with three
        // intro points each lists 2/1/1.
        let few: Vec<(String, Vec<u32>)> = (0..3u32)
            .map(|n| (format!("n{n}"), (0..3).map(|i| n * 100 + i).collect()))
            .collect();
        let w = merged_windows_weighted(&few, &[2, 1, 1], |r: &u32| *r, 20, 8);
        assert_eq!(w.len(), 1);
        assert_eq!(per_node(&w[0]), vec![2, 1, 1]);
        let w = merged_windows_weighted(&few, &[1, 1, 1], |r: &u32| *r, 20, 8);
        assert_eq!(
            per_node(&w[0]),
            vec![3, 3, 3],
            "equal weights: every one listed"
        );
    }

    #[test]
    fn one_descriptor_keeps_shares_within_a_tenth_of_the_weights() {
        // Equal counts and weights are kept; a 12.5 % / 25 % skew is not.
        assert_eq!(balanced_counts(&[3, 3, 3], &[1, 1, 1]), vec![3, 3, 3]);
        assert_eq!(balanced_counts(&[3, 3, 2], &[1, 1, 1]), vec![2, 2, 2]);
        assert_eq!(balanced_counts(&[4, 4, 3], &[1, 1, 1]), vec![3, 3, 3]);
        // 9 of 29 is 6.9 % below a third: within the tolerance, all kept.
        assert_eq!(balanced_counts(&[10, 10, 9], &[1, 1, 1]), vec![10, 10, 9]);
        // Weights: exact when the counts allow it, and as many as possible.
        assert_eq!(balanced_counts(&[3, 3, 3], &[2, 1, 1]), vec![2, 1, 1]);
        assert_eq!(balanced_counts(&[6, 3, 3], &[2, 1, 1]), vec![6, 3, 3]);
        // 10/6/6 (45 / 27 / 27 %) is within a tenth of 50 / 25 / 25 and lists more than 10/5/5.
        assert_eq!(balanced_counts(&[10, 10, 10], &[2, 1, 1]), vec![10, 6, 6]);
        assert_eq!(balanced_counts(&[3, 3, 3], &[3, 1, 0]), vec![3, 1, 1]);
        // A node with none listed stays out; the others are balanced among themselves.
        assert_eq!(balanced_counts(&[0, 3, 2], &[1, 1, 1]), vec![0, 2, 2]);
        // One node, or none: nothing to balance.
        assert_eq!(balanced_counts(&[5], &[1]), vec![5]);
        assert_eq!(balanced_counts(&[], &[]), Vec::<usize>::new());
        // Unreachable shares: every node keeps one at least, the least skewed is chosen.
        assert_eq!(balanced_counts(&[3, 3, 3], &[100, 1, 1]), vec![3, 1, 1]);
        // Equal weights: equal counts, none above what the node has, none below one.
        for have in [[1, 2, 3], [5, 2, 7], [20, 1, 1], [4, 4, 1]] {
            let x = balanced_counts(&have, &[1, 1, 1]);
            let (lo, hi) = (x.iter().min().unwrap(), x.iter().max().unwrap());
            assert!(x.iter().zip(&have).all(|(k, h)| k <= h && *k >= 1), "{x:?}");
            assert_eq!(lo, hi, "{have:?} -> {x:?}");
        }
    }

    #[test]
    fn balanced_counts_lists_the_most_a_brute_force_finds_within_the_tolerance() {
        // Every count vector up to `have` (each listed node keeping one at least), judged
        // directly: none within the tolerance lists more than balanced_counts does.
        let within = |x: &[usize], w: &[u32]| {
            let w_sum: u64 = (0..x.len()).map(|i| u64::from(w[i])).sum();
            let x_sum = x.iter().sum::<usize>() as u64;
            (0..x.len()).all(|i| {
                let (got, want) = (x[i] as u64 * w_sum, u64::from(w[i]) * x_sum);
                got.abs_diff(want) * SHARE_TOLERANCE.1 <= want * SHARE_TOLERANCE.0
            })
        };
        let mut checked = 0;
        for have in (0..6 * 6 * 6).map(|n| [n / 36 + 1, n / 6 % 6 + 1, n % 6]) {
            for w in (0..27).map(|n| [n / 9 + 1, n / 3 % 3 + 1, n % 3 + 1]) {
                let x = balanced_counts(&have, &w);
                assert!(x
                    .iter()
                    .zip(&have)
                    .all(|(k, h)| k <= h && (*k >= 1) == (*h >= 1)));
                let listed: Vec<usize> = (0..3).filter(|&i| have[i] > 0).collect();
                let sub = |v: &[usize]| listed.iter().map(|&i| v[i]).collect::<Vec<_>>();
                let ws: Vec<u32> = listed.iter().map(|&i| w[i]).collect();
                let mut best = None;
                for a in 1..=have[0] {
                    for b in 1..=have[1] {
                        for c in (have[2].min(1))..=have[2] {
                            let y = [a, b, c];
                            if within(&sub(&y), &ws) {
                                best = best.max(Some(a + b + c));
                            }
                        }
                    }
                }
                match best {
                    Some(most) => {
                        assert!(within(&sub(&x), &ws), "{have:?} {w:?} -> {x:?}");
                        assert_eq!(x.iter().sum::<usize>(), most, "{have:?} {w:?} -> {x:?}");
                    }
                    None => assert!(!within(&sub(&x), &ws)),
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 216 * 27);
    }

    #[test]
    fn one_descriptor_with_shared_relays_lists_equal_counts() {
        // a and c both have an intro point on relay 1: one descriptor can list 3/3/2 at most;
        // it lists 2/2/2, each node's clients a third.
        let sets = vec![
            ("a".to_string(), vec![1, 2, 3]),
            ("b".to_string(), vec![4, 5, 6]),
            ("c".to_string(), vec![1, 7, 8]),
        ];
        let ws = merged_windows(&sets, |r: &u32| *r, 20, 8);
        assert_eq!(ws.len(), 1);
        relays_of(&ws[0], |r| *r);
        let counts: Vec<usize> = ["a", "b", "c"]
            .iter()
            .map(|n| ws[0].iter().filter(|(m, _)| m == n).count())
            .collect();
        assert_eq!(counts, vec![2, 2, 2]);
    }
}
