//! The merged descriptor's inputs: intro points carried between nodes ([`IptWire`]) and the
//! fair choice of at most 20 of them when the cluster has more.

use tor_bytes::{Reader, Writer};
use tor_hscrypto::pk::{HsIntroPtSessionIdKey, HsSvcNtorKey};
use tor_linkspec::EncodedLinkSpec;
use tor_llcrypto::pk::{curve25519, ed25519};
use tor_netdoc::doc::hsdesc::IntroPointDesc;

use super::DescriptorError;
use crate::membership::IptWire;

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

/// Picks at most `cap` items from per-node lists, round-robin over the nodes in the order
/// given: every node gets `cap / nodes` (±1) if it has that many, and what one node lacks the
/// others fill. `rotate` starts the round-robin at a different node, so successive picks (or
/// different HSDirs) can favour different nodes for the remainder. Returns (node, item) pairs.
pub fn fair_share<T: Clone>(
    sets: &[(String, Vec<T>)],
    cap: usize,
    rotate: usize,
) -> Vec<(String, T)> {
    let n = sets.len();
    let mut out = Vec::new();
    if n == 0 {
        return out;
    }
    let mut depth = 0;
    loop {
        let mut any = false;
        for k in 0..n {
            let (node, items) = &sets[(k + rotate) % n];
            if let Some(item) = items.get(depth) {
                any = true;
                if out.len() == cap {
                    return out;
                }
                out.push((node.clone(), item.clone()));
            }
        }
        if !any {
            return out;
        }
        depth += 1;
    }
}

/// Distinct descriptors: `count` windows of `size` consecutive items of `items` (wrapping), the
/// i-th starting at `i * size`. With `items` in round-robin order over the nodes
/// ([`fair_share`] without a cap), every window holds every node's share, and together the
/// windows use up to `count * size` distinct items. At most `size` items: one window, all of
/// them.
pub fn windows<T: Clone>(items: &[T], size: usize, count: usize) -> Vec<Vec<T>> {
    if items.len() <= size || count <= 1 || size == 0 {
        return vec![items.iter().take(size.max(1)).cloned().collect()];
    }
    (0..count)
        .map(|i| {
            (0..size)
                .map(|k| items[(i * size + k) % items.len()].clone())
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(sizes: &[usize]) -> Vec<(String, Vec<usize>)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (format!("n{i}"), (0..n).collect()))
            .collect()
    }

    fn per_node(picked: &[(String, usize)]) -> Vec<usize> {
        let mut counts = std::collections::BTreeMap::new();
        for (n, _) in picked {
            *counts.entry(n.clone()).or_insert(0) += 1;
        }
        counts.into_values().collect()
    }

    #[test]
    fn under_the_cap_everything_is_listed() {
        let p = fair_share(&sets(&[3, 3, 3]), 20, 0);
        assert_eq!(p.len(), 9);
    }

    #[test]
    fn over_the_cap_every_node_gets_its_share() {
        let p = fair_share(&sets(&[3; 8]), 20, 0);
        assert_eq!(p.len(), 20);
        assert_eq!(per_node(&p), vec![3, 3, 3, 3, 2, 2, 2, 2]);
        // One node with many intro points does not crowd out the others.
        let p = fair_share(&sets(&[20, 1, 1]), 20, 0);
        assert_eq!(per_node(&p), vec![18, 1, 1]);
        // Rotation changes who gets the remainder.
        let p = fair_share(&sets(&[3; 8]), 20, 4);
        assert_eq!(per_node(&p), vec![2, 2, 2, 2, 3, 3, 3, 3]);
    }

    #[test]
    fn distinct_windows_use_more_than_twenty_and_keep_every_node() {
        // 8 nodes x 3 intro points = 24 > 20, and 8 HSDirs.
        let all = fair_share(&sets(&[3; 8]), usize::MAX, 0);
        assert_eq!(all.len(), 24);
        let w = windows(&all, 20, 8);
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
        let big = fair_share(&sets(&[20; 8]), usize::MAX, 0);
        let used: std::collections::BTreeSet<(String, usize)> =
            windows(&big, 20, 8).into_iter().flatten().collect();
        assert_eq!(used.len(), 160);
        // Twenty or fewer: one descriptor for all.
        assert_eq!(windows(&[1, 2, 3], 20, 8), vec![vec![1, 2, 3]]);
    }

    #[test]
    fn empty_inputs() {
        assert!(fair_share::<u8>(&[], 20, 0).is_empty());
        assert!(fair_share(&sets(&[0, 0]), 20, 1).is_empty());
        assert!(fair_share(&sets(&[5]), 0, 0).is_empty());
    }

    #[test]
    fn wire_form_round_trips_and_bad_input_is_refused() {
        let auth = ed25519::Keypair::generate(&mut rand::rng()).verifying_key();
        let w = IptWire {
            link_specifiers: [
                &[0u8, 6][..],
                &[127, 0, 0, 1, 0x3e, 0x80],
                &[2, 20],
                &[7; 20],
            ]
            .concat(),
            onion_key: [1; 32],
            auth_key: auth.to_bytes(),
            enc_key: [3; 32],
        };
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
}
