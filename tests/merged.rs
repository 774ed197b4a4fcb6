//! Many nodes, one address, on the private Tor network: the elected publisher's merged
//! descriptor lists every healthy node's intro points; a C-tor client reaches the target
//! through every node; a killed node's intro points leave the descriptor on the HSDirs, while a
//! client keeps requesting. Timings are printed (the `cluster` benchmark measures them).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::*;

const LIMIT: Duration = Duration::from_secs(90);

#[test]
fn three_nodes_one_merged_descriptor_failover_keeps_clients_served() {
    let net = testnet::fixture::shared().expect("private Tor network");
    let target = net.target.http.to_string();
    let dir = scratch("merged");
    let token = new_token(&dir, "cluster.token");
    let a = cluster_node("m-a", &target, net, None, 10, &token, &[]);
    let key = a.node.key_file();
    let b = cluster_node("m-b", &target, net, Some(&key), 20, &token, &[a.seed()]);
    let c = cluster_node(
        "m-c",
        &target,
        net,
        Some(&key),
        30,
        &token,
        &[a.seed(), b.seed()],
    );
    let mut nodes = [a, b, c];
    for n in nodes.iter_mut() {
        n.node.start();
    }
    let address = nodes[0].node.address.clone();

    // Every node's intro points in the publisher's merged descriptor…
    wait_for(LIMIT, "a's merged descriptor lists all three nodes", || {
        let s = nodes[0].node.status()?;
        let merged = s["merged"].as_array()?;
        let listed = merged
            .iter()
            .filter(|m| m["listed"].as_u64().unwrap_or(0) > 0)
            .count();
        (listed == 3 && published(&s)).then_some(())
    });
    let all: BTreeSet<String> = nodes.iter().flat_map(own_auth_keys).collect();
    assert!(all.len() >= 3, "every node has intro points: {all:?}");
    // …and that is what the HSDirs serve.
    let t0 = Instant::now();
    let served = wait_for(LIMIT, "the HSDirs serve the merged descriptor", || {
        let all: BTreeSet<String> = nodes.iter().flat_map(own_auth_keys).collect();
        fetch_descriptor(net, &address).filter(|d| *d == all)
    });
    eprintln!(
        "descriptor on the HSDirs lists {} intro points of 3 nodes ({:.1} s)",
        served.len(),
        t0.elapsed().as_secs_f64()
    );
    for n in &nodes[1..] {
        let s = n.node.status().unwrap();
        assert!(
            s["periods"].as_array().unwrap().is_empty(),
            "{}: a standby never uploads",
            n.node.name
        );
    }

    // A client with fresh circuits per request reaches the target through every node.
    let before: Vec<u64> = nodes
        .iter()
        .map(|n| n.node.status().unwrap()["proxy"]["total"].as_u64().unwrap())
        .collect();
    let client = Client::start(net, address.clone());
    let mut last_newnym = Instant::now();
    wait_for(LIMIT * 2, "streams through every node", || {
        // The C-tor client keeps using an intro circuit it has; new identities (at most one
        // per 10 s, tor's rate limit) make it pick intro points afresh.
        if last_newnym.elapsed() > Duration::from_secs(10) {
            newnym(net);
            last_newnym = Instant::now();
        }
        let through: Vec<u64> = nodes
            .iter()
            .zip(&before)
            .map(|(n, b)| {
                n.node.status().map_or(0, |s| {
                    s["proxy"]["total"].as_u64().unwrap_or(0).saturating_sub(*b)
                })
            })
            .collect();
        eprintln!(
            "streams per node so far: {through:?} (client ok/failed {:?})",
            client.counts()
        );
        through.iter().all(|t| *t > 0).then_some(())
    });

    // Kill a standby: its intro points leave the descriptor on the HSDirs.
    let c_keys = own_auth_keys(&nodes[2]);
    let killed = Instant::now();
    nodes[2].node.kill9();
    let gone = wait_for(LIMIT, "c's intro points leave the descriptor", || {
        let d = fetch_descriptor(net, &address)?;
        (d.is_disjoint(&c_keys) && !d.is_empty()).then(|| killed.elapsed())
    });
    eprintln!(
        "standby killed: clean descriptor on the HSDirs after {:.1} s",
        gone.as_secs_f64()
    );

    // Kill the publisher: b takes over and publishes a descriptor without a's intro points.
    let a_keys = own_auth_keys(&nodes[0]);
    let killed = Instant::now();
    nodes[0].node.kill9();
    let gone = wait_for(LIMIT, "a's intro points leave the descriptor", || {
        let d = fetch_descriptor(net, &address)?;
        (d.is_disjoint(&a_keys) && !d.is_empty()).then(|| killed.elapsed())
    });
    eprintln!(
        "publisher killed: clean descriptor on the HSDirs after {:.1} s",
        gone.as_secs_f64()
    );

    // Restart both: their intro points come back.
    nodes[0].node.start();
    nodes[2].node.start();
    wait_for(
        LIMIT,
        "all three nodes' intro points are served again",
        || {
            let all: BTreeSet<String> = nodes.iter().flat_map(own_auth_keys).collect();
            let d = fetch_descriptor(net, &address)?;
            (all.len() >= 3 && d == all).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(5));
    let (ok, failed) = client.finish();
    let rate = ok as f64 / (ok + failed).max(1) as f64;
    eprintln!(
        "client during the kills: {ok} ok, {failed} failed ({:.1} %)",
        rate * 100.0
    );
    assert!(ok > 0);
    assert!(
        rate >= 0.9,
        "clients keep being served through the kills: {ok} ok, {failed} failed"
    );
}
