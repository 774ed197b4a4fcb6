//! Load spread across a 3-node cluster on the private Tor network: many fresh clients (each an
//! isolated in-process Arti client: its own descriptor fetch and its own choice of intro
//! point), and how the rendezvous requests split over the nodes, next to how many intro points
//! each node has in the merged descriptor.
//!
//! `cargo bench --bench spread` (harness = false). PRINTS the shares and asserts nothing about
//! them. `RB_BENCH_WEIGHTS` (`node.weight` of the three nodes, e.g. `2,1,1`; default `1,1,1`)
//! and `RB_BENCH_INTRO_POINTS` (`publish.intro_points` per node, default 3): with more intro
//! points than the relays allow in one descriptor, the weights decide the slots. `RB_BENCH_CLIENTS` (fresh clients, default 300: the sampling noise of a share is about ±5 % of a third at 2 sigma), `RB_BENCH_PARALLEL` (at once, 6).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use support::*;

fn rendezvous(n: &ClusterNode) -> u64 {
    n.node
        .status()
        .and_then(|s| s["proxy"]["rendezvous"].as_u64())
        .unwrap_or(0)
}

/// The status of the node that is publisher now.
fn publisher_status(nodes: &[ClusterNode]) -> Option<serde_json::Value> {
    nodes.iter().find_map(|n| {
        let s = n.node.status()?;
        (s["role"] == "publisher").then_some(s)
    })
}

fn main() {
    let clients = env_usize("RB_BENCH_CLIENTS", 300);
    let parallel = env_usize("RB_BENCH_PARALLEL", 6);
    locate_testnet_bin();
    let net = testnet::fixture::shared().unwrap_or_else(|e| panic!("private Tor network: {e}"));
    let dir = scratch("spread");
    let token = new_token(&dir, "cluster.token");
    let hsdirs = HsDirs::new(net, &dir);
    let weights: Vec<u32> = std::env::var("RB_BENCH_WEIGHTS")
        .unwrap_or_else(|_| "1,1,1".into())
        .split(',')
        .map(|w| {
            w.trim()
                .parse()
                .unwrap_or_else(|_| panic!("RB_BENCH_WEIGHTS: {w:?} is not a weight"))
        })
        .collect();
    assert_eq!(weights.len(), 3, "RB_BENCH_WEIGHTS: three weights");
    let intro_points = env_usize("RB_BENCH_INTRO_POINTS", 3);
    let mut nodes = trio("sp", net, &token);
    for (n, w) in nodes.iter_mut().zip(&weights) {
        let text = std::fs::read_to_string(&n.node.config).unwrap();
        let text = text.replacen("[node]\n", &format!("[node]\nweight = {w}\n"), 1)
            + &format!("\n[publish]\nintro_points = {intro_points}\n");
        std::fs::write(&n.node.config, text).unwrap();
        n.node.start();
    }
    let address = nodes[0].node.address.clone();
    wait_for(
        Duration::from_secs(180),
        "every node in the served descriptor",
        || {
            let own: Vec<_> = nodes.iter().map(own_auth_keys).collect();
            let d = hsdirs.descriptor(&address)?;
            serves_every_node(&d, &own).then_some(())
        },
    );
    // A node still establishing intro points lists fewer, and one descriptor for every HSDir
    // then lists as few of every node's (the shares are kept even): wait for all of them, and
    // for the served descriptors to agree with the publisher's choice.
    let _ = poll_for(Duration::from_secs(180), || {
        nodes
            .iter()
            .all(|n| own_auth_keys(n).len() >= intro_points)
            .then_some(())
    });
    let settled = poll_for(Duration::from_secs(120), || {
        let listed: u64 = publisher_status(&nodes)?["merged"]
            .as_array()?
            .iter()
            .filter_map(|m| m["listed"].as_u64())
            .sum();
        let served = hsdirs.per_hsdir(&address);
        let own: Vec<_> = nodes.iter().map(own_auth_keys).collect();
        (!served.is_empty()
            && served
                .iter()
                .all(|d| d.len() as u64 == listed && serves_every_node(d, &own)))
        .then_some(())
    });
    if settled.is_none() {
        eprintln!("the served descriptors did not settle on the publisher's choice in 120 s");
    }
    let publisher = publisher_status(&nodes).expect("a publisher");
    let listed: BTreeMap<String, u64> = publisher["merged"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["node_id"].as_str().unwrap_or("?").to_string(),
                m["listed"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    // What one descriptor lists, per node: the mean share of each HSDir's descriptor.
    let own: Vec<_> = nodes.iter().map(own_auth_keys).collect();
    let served = hsdirs.per_hsdir(&address);
    let per_desc: Vec<f64> = own
        .iter()
        .map(|o| {
            served
                .iter()
                .map(|s| o.intersection(s).count() as f64 / s.len().max(1) as f64)
                .sum::<f64>()
                / served.len().max(1) as f64
        })
        .collect();
    let before: Vec<u64> = nodes.iter().map(rendezvous).collect();

    // Fresh clients: isolated Arti clients (own HS descriptor cache and circuits each).
    rustbalance::install_crypto_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = {
        use arti_client::config::{CfgPath, TorClientConfigBuilder};
        let text = std::fs::read_to_string(&net.arti_config).unwrap();
        let mut b: TorClientConfigBuilder = toml::from_str(&text).unwrap();
        b.storage()
            .state_dir(CfgPath::new_literal(dir.join("clients-state")))
            .cache_dir(CfgPath::new_literal(dir.join("clients-cache")));
        let config = b.build().unwrap();
        rt.block_on(arti_client::TorClient::create_bootstrapped(config))
            .expect("client bootstrap")
    };
    let t0 = Instant::now();
    let (ok, failed) = rt.block_on(async {
        let slots = Arc::new(tokio::sync::Semaphore::new(parallel));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let permit = Arc::clone(&slots).acquire_owned().await.unwrap();
            let client = base.isolated_client();
            let address = address.clone();
            tasks.spawn(async move {
                let _permit = permit;
                let attempt = async {
                    let mut s = client.connect((address.as_str(), 80)).await?;
                    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
                    s.flush().await?;
                    // Arti services end a stream with END reason MISC, which an Arti client
                    // reports as an error after the last byte: read until then.
                    let mut body = Vec::new();
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        body.extend_from_slice(&buf[..n]);
                    }
                    Ok::<bool, Box<dyn std::error::Error + Send + Sync>>(
                        body.starts_with(b"HTTP/1.0 200") || body.starts_with(b"HTTP/1.1 200"),
                    )
                };
                match tokio::time::timeout(Duration::from_secs(60), attempt).await {
                    Ok(Ok(true)) => true,
                    Ok(Ok(false)) => {
                        eprintln!("client: not a 200 answer");
                        false
                    }
                    Ok(Err(e)) => {
                        let chain: Vec<String> = std::iter::successors(
                            Some(&*e as &(dyn std::error::Error + 'static)),
                            |e| e.source(),
                        )
                        .map(ToString::to_string)
                        .collect();
                        eprintln!("client: {}", chain.join(": "));
                        false
                    }
                    Err(_) => {
                        eprintln!("client: timed out");
                        false
                    }
                }
            });
        }
        let (mut ok, mut failed) = (0u64, 0u64);
        while let Some(r) = tasks.join_next().await {
            if matches!(r, Ok(true)) {
                ok += 1;
            } else {
                failed += 1;
            }
        }
        (ok, failed)
    });
    let elapsed = t0.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let after: Vec<u64> = nodes.iter().map(rendezvous).collect();
    let deltas: Vec<u64> = before.iter().zip(&after).map(|(b, a)| a - b).collect();
    let total: u64 = deltas.iter().sum();
    println!("== load spread: 3 nodes, {clients} fresh clients ({parallel} at once) ==");
    println!(
        "fetches: {ok} ok, {failed} failed in {:.1} s; rendezvous requests counted on the nodes: {total}",
        elapsed.as_secs_f64()
    );
    let weight_total: u32 = weights.iter().sum();
    println!(
        "weights {weights:?}, {intro_points} intro points per node, {} HSDir descriptors",
        served.len()
    );
    println!("node      weight  rendezvous   share   by weight   own intro points   listed (all windows)   share per descriptor   deviation from weighted share   sampling noise (2 sigma)");
    for ((n, d), (w, pd)) in nodes.iter().zip(&deltas).zip(weights.iter().zip(&per_desc)) {
        let id = n.node.name.clone();
        let share = *d as f64 / total.max(1) as f64;
        let by_weight = f64::from(*w) / f64::from(weight_total);
        let l = listed.get(&id).copied().unwrap_or(0);
        let has = own_auth_keys(n).len();
        // Each rendezvous lands on this node with probability `pd` (the intro point a client
        // picks, uniformly): the binomial spread of the share around it, relative to the
        // weighted share.
        let noise = 2.0 * (pd * (1.0 - pd) / total.max(1) as f64).sqrt() / by_weight;
        println!(
            "{id:8} {w:>6}  {d:>10}   {:>5.1} %   {:>5.1} %   {has:>10}         {l:>10}             {:>6.1} %               {:>+6.1} %                      ±{:.1} %",
            share * 100.0,
            by_weight * 100.0,
            pd * 100.0,
            (share / by_weight - 1.0) * 100.0,
            noise * 100.0
        );
    }
    println!("done (figures only; nothing about the spread is asserted)");
    for n in nodes.iter_mut() {
        let _ = n.node.stop();
    }
}
