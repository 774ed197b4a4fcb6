//! Many nodes, one address: failover and throughput on the private Tor network.
//! `cargo bench --bench failover` (harness = false) PRINTS:
//! - time from `kill -9` of a node until the descriptor the HSDirs serve no longer lists its
//!   intro points on every HSDir a client may ask (fetched by a separate Arti client, polled
//!   continuously), for standbys and publishers,
//!   `RB_BENCH_KILLS` rounds (default 3) of each;
//! - the success rate of a client requesting continuously (fresh circuits each time) during
//!   all the kills and restarts;
//! - requests per second through the 3-node cluster and through the C-tor onion service
//!   serving the same content directly, `RB_BENCH_LOAD_THREADS` (default 4) concurrent
//!   requesters for `RB_BENCH_LOAD_SECS` (default 20) each.
//!
//! Figures only: nothing here asserts a timing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::*;

/// Every running node has intro points in the descriptor the HSDirs serve (one per relay, so
/// not necessarily all of them).
fn served_all(nodes: &[ClusterNode], hsdirs: &HsDirs, address: &str) -> bool {
    let all: Vec<BTreeSet<String>> = nodes
        .iter()
        .filter(|n| n.node.child.is_some())
        .map(own_auth_keys)
        .collect();
    hsdirs
        .descriptor(address)
        .is_some_and(|d| serves_every_node(&d, &all))
}

/// Kills `victim`; returns the seconds until the served descriptor lacks its intro points.
fn kill_and_measure(
    nodes: &mut [ClusterNode],
    victim: usize,
    hsdirs: &HsDirs,
    address: &str,
) -> f64 {
    let keys = own_auth_keys(&nodes[victim]);
    let t0 = Instant::now();
    nodes[victim].node.kill9();
    wait_for(Duration::from_secs(120), "clean descriptor", || {
        let d = hsdirs.descriptor(address)?;
        (!d.is_empty() && d.is_disjoint(&keys)).then(|| t0.elapsed().as_secs_f64())
    })
}

fn throughput(
    net: &'static testnet::Description,
    address: &str,
    threads: usize,
    secs: u64,
) -> (f64, u64) {
    let client = Client::start_with(net, address.to_string(), threads, Duration::ZERO);
    // Warm-up: descriptor fetched, circuits built.
    std::thread::sleep(Duration::from_secs(3));
    let (ok0, failed0) = client.counts();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let (ok1, failed1) = client.counts();
    let elapsed = t0.elapsed().as_secs_f64();
    client.finish();
    ((ok1 - ok0) as f64 / elapsed, failed1 - failed0)
}

fn main() {
    locate_testnet_bin();
    let net = testnet::fixture::shared().unwrap_or_else(|e| panic!("private Tor network: {e}"));
    let dir = scratch("bench-failover");
    let token = new_token(&dir, "cluster.token");
    let hsdirs = HsDirs::new(net, &dir);
    let mut nodes = trio("fo", net, &token);
    for n in nodes.iter_mut() {
        n.node.start();
    }
    let address = nodes[0].node.address.clone();
    wait_for(
        Duration::from_secs(120),
        "every node's intro points served",
        || served_all(&nodes, &hsdirs, &address).then_some(()),
    );

    let kills = env_usize("RB_BENCH_KILLS", 3);
    let client = Client::start(net, address.clone());
    let mut standby = Vec::new();
    let mut publisher = Vec::new();
    for round in 0..kills {
        let t = kill_and_measure(&mut nodes, 2, &hsdirs, &address);
        eprintln!("  round {round}: standby killed, clean descriptor after {t:.1} s");
        standby.push(t);
        nodes[2].node.start();
        wait_for(Duration::from_secs(120), "standby back", || {
            served_all(&nodes, &hsdirs, &address).then_some(())
        });
        let t = kill_and_measure(&mut nodes, 0, &hsdirs, &address);
        eprintln!("  round {round}: publisher killed, clean descriptor after {t:.1} s");
        publisher.push(t);
        nodes[0].node.start();
        wait_for(
            Duration::from_secs(120),
            "publisher back, role handed back",
            || {
                let back = nodes[0].mesh().is_some_and(|m| role(&m) == "publisher");
                (back && served_all(&nodes, &hsdirs, &address)).then_some(())
            },
        );
    }
    let (ok, failed) = client.finish();
    println!("3 nodes, default timers, private Tor network:");
    println!(
        "  standby kill -9 → clean descriptor on the HSDirs:   {}",
        summary(&standby, "s", 1)
    );
    println!(
        "  publisher kill -9 → clean descriptor on the HSDirs: {}",
        summary(&publisher, "s", 1)
    );
    println!(
        "  client during {} kills and restarts: {ok} ok, {failed} failed ({:.2} % success)",
        kills * 2,
        100.0 * ok as f64 / (ok + failed).max(1) as f64
    );

    let threads = env_usize("RB_BENCH_LOAD_THREADS", 4);
    let secs = env_usize("RB_BENCH_LOAD_SECS", 20) as u64;
    let (cluster_rps, cluster_failed) = throughput(net, &address, threads, secs);
    let direct = net.onion_address().expect("the sample onion service");
    let (direct_rps, direct_failed) = throughput(net, direct, threads, secs);
    println!(
        "  requests/s, {threads} concurrent requesters, fresh circuits per request, {secs} s:"
    );
    println!(
        "    through the 3-node cluster:     {cluster_rps:.2} req/s ({cluster_failed} failed)"
    );
    println!("    C-tor onion service (direct):   {direct_rps:.2} req/s ({direct_failed} failed)");
    for n in nodes.iter_mut() {
        if n.node.child.is_some() {
            let _ = n.node.stop();
        }
    }
}
