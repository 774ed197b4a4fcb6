//! More than 20 intro points: 8 nodes with 3 intro points each on the private Tor network. The
//! publisher uploads distinct descriptors (windows of 20 of the interleaved merged list), so the
//! HSDirs together serve all 24 intro points while each descriptor keeps every node.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::*;

const NODES: usize = 8;

#[test]
fn eight_nodes_use_more_than_twenty_intro_points_across_hsdirs() {
    let net = testnet::fixture::shared().expect("private Tor network");
    let target = net.target.http.to_string();
    let dir = scratch("distinct");
    let token = new_token(&dir, "cluster.token");
    let first = cluster_node("d-0", &target, net, None, 0, &token, &[]);
    let key = first.node.key_file();
    let seed = first.seed();
    let mut nodes = vec![first];
    for i in 1..NODES {
        nodes.push(cluster_node(
            &format!("d-{i}"),
            &target,
            net,
            Some(&key),
            i as u32,
            &token,
            std::slice::from_ref(&seed),
        ));
    }
    // Five intro points a node (40 in all): this network has only 8 relays and a descriptor
    // lists at most one intro point per relay, so more points per relay give the distinct
    // windows something to choose from.
    for n in &nodes {
        let mut text = std::fs::read_to_string(&n.node.config).unwrap();
        text.push_str("\n[publish]\nintro_points = 5\n");
        std::fs::write(&n.node.config, text).unwrap();
    }
    for n in nodes.iter_mut() {
        n.node.start();
    }
    let address = nodes[0].node.address.clone();

    // The publisher reports distinct descriptors with more than 20 intro points in use.
    let status = wait_for(
        Duration::from_secs(180),
        "distinct descriptors uploaded",
        || {
            for n in nodes.iter_mut() {
                n.node.assert_running();
            }
            let s = nodes[0].node.status()?;
            let listed = s["merged"]
                .as_array()?
                .iter()
                .filter(|m| m["listed"].as_u64().unwrap_or(0) > 0)
                .count();
            let ok = listed == NODES
                && s["periods"].as_array()?.iter().any(|p| {
                    p["descriptors"].as_u64().unwrap_or(1) > 1
                        && p["intro_points"].as_u64().unwrap_or(0) > 20
                        && p["hsdirs"]
                            .as_array()
                            .is_some_and(|h| h.iter().filter(|h| h["ok"] == true).count() >= 2)
                });
            ok.then_some(s)
        },
    );
    eprintln!("publisher: {}", status["periods"]);

    // Which node owns which intro point.
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for n in &nodes {
        let s = n.node.status().unwrap();
        for i in s["intro_points"].as_array().unwrap() {
            owner.insert(
                i["auth_key"].as_str().unwrap().to_string(),
                n.node.name.clone(),
            );
        }
    }
    assert!(
        owner.len() > 20,
        "{} intro points in the cluster",
        owner.len()
    );

    // What the HSDirs serve, fetched by an Arti client from every HSDir a client would ask.
    let served = HsDirs::new(net, &dir).per_hsdir(&address);
    assert!(
        served.len() >= 2,
        "descriptors fetched from {} HSDirs",
        served.len()
    );
    let distinct: BTreeSet<&BTreeSet<String>> = served.iter().collect();
    let in_use: BTreeSet<&String> = served.iter().flatten().collect();
    eprintln!(
        "{} HSDirs answered with {} distinct descriptors; {} distinct intro points in use",
        served.len(),
        distinct.len(),
        in_use.len()
    );
    assert!(
        distinct.len() >= 2,
        "different HSDirs serve different subsets"
    );
    assert!(
        in_use.len() > 20,
        "more than 20 intro points in use: {}",
        in_use.len()
    );
    // Every node is in use. Each descriptor lists at most one intro point per relay (a C tor
    // client only uses the first entry on a relay) and, within that, as many nodes as it can:
    // on this 8-relay network that is fewer than 8 per descriptor, on the real network all.
    let mut nodes_in_use: BTreeSet<&String> = BTreeSet::new();
    for d in &served {
        assert!(d.len() <= 20);
        let nodes_in: BTreeSet<&String> = d.iter().filter_map(|k| owner.get(k)).collect();
        eprintln!(
            "  descriptor: {} intro points of {} nodes",
            d.len(),
            nodes_in.len()
        );
        assert!(
            nodes_in.len() * 2 > d.len(),
            "mostly one intro point per node: {} of {} nodes",
            d.len(),
            nodes_in.len()
        );
        nodes_in_use.extend(nodes_in);
    }
    assert_eq!(
        nodes_in_use.len(),
        NODES,
        "every node is in some descriptor"
    );
}
