//! Proof of work across the cluster on the private Tor network, with the C-tor client (0.4.9,
//! which solves PoW puzzles) as the judge. Three nodes with `[pow]` on and a floor on the
//! suggested effort (so the client always solves): the served descriptor has ONE `pow-params`
//! line, whose seed is the one every node derives from the cluster token and loads; the
//! client's solved requests are verified by EVERY node (Arti's verified-solve counter on each,
//! no failures); and so they stay across a seed rotation (every 2 minutes here) and a time
//! period change (6 minutes on this network).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::*;
use tor_checkable::Timebound as _;
use tor_netdoc::doc::hsdesc::pow::PowParams;

const LIMIT: Duration = Duration::from_secs(150);
const MIN_EFFORT: u32 = 16;

fn pow(n: &ClusterNode) -> serde_json::Value {
    n.node
        .status()
        .map(|s| s["pow"].clone())
        .unwrap_or(serde_json::Value::Null)
}

fn verified(n: &ClusterNode) -> u64 {
    pow(n)["counters"]["verified"].as_u64().unwrap_or(0)
}

/// The served descriptor's `pow-params` lines: (seed head hex, effort).
fn served_pow(hsdirs: &HsDirs, address: &str) -> Option<Vec<(String, u32)>> {
    let (_, d) = hsdirs.served(address, None)?;
    Some(
        d.pow_params()
            .iter()
            .map(|p| match p {
                PowParams::V1(v1) => {
                    let seed = v1.seed().clone().dangerously_assume_timely();
                    (
                        rustbalance::pow::seeds::head_hex(&seed),
                        u32::from(v1.suggested_effort()),
                    )
                }
                _ => ("?".into(), 0),
            })
            .collect(),
    )
}

/// The seed the cluster derives for the current period in `epoch`, as a head.
fn derived_head(token: &std::path::Path, hsdirs: &HsDirs, epoch: u64) -> String {
    let token = rustbalance::keys::load_cluster_token(token).unwrap();
    let key = rustbalance::pow::PowKey::from_cluster(&token);
    rustbalance::pow::seeds::head_hex(&key.seed(hsdirs.period().unwrap(), epoch))
}

/// C-tor fetches on fresh circuits until every node's verified-solve counter moved past
/// `before`; the fetch count, failures, and per-node increments.
fn through_every_node(
    net: &testnet::Description,
    nodes: &[&ClusterNode],
    address: &str,
    phase: &str,
) -> (usize, usize, Vec<u64>) {
    let before: Vec<u64> = nodes.iter().map(|n| verified(n)).collect();
    let mut failures = 0;
    let t0 = Instant::now();
    for i in 0..60 {
        match get_once(net, address, &format!("{phase}-{i}")) {
            Ok(200) => {}
            other => {
                failures += 1;
                eprintln!("{phase}: fetch {i}: {other:?}");
            }
        }
        let now: Vec<u64> = nodes
            .iter()
            .zip(&before)
            .map(|(n, b)| verified(n).saturating_sub(*b))
            .collect();
        if now.iter().all(|v| *v > 0) {
            eprintln!(
                "{phase}: every node verified solved requests after {} fetches in {:.1} s \
                 ({failures} failed): {now:?}",
                i + 1,
                t0.elapsed().as_secs_f64()
            );
            return (i + 1, failures, now);
        }
    }
    let states: BTreeMap<String, serde_json::Value> = nodes
        .iter()
        .map(|n| (n.node.name.clone(), pow(n)))
        .collect();
    panic!("{phase}: not every node verified a solved request: {states:#?}");
}

/// A request sent a header line every 10 s (the target drops a connection idle for 30 s) on
/// a stream held open, answered when finished.
struct Trickle {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Result<testnet::client::HttpResponse, String>)>,
}

fn trickle(mut stream: std::net::TcpStream, host: &str, path: &str) -> Trickle {
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::Ordering;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stop);
    let head = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n");
    let thread = std::thread::spawn(move || {
        let mut lines = 0;
        let mut run = || -> Result<testnet::client::HttpResponse, String> {
            stream
                .write_all(head.as_bytes())
                .map_err(|e| e.to_string())?;
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_secs(10));
                stream
                    .write_all(format!("X-Held: {lines}\r\n").as_bytes())
                    .map_err(|e| format!("after {lines} lines: {e}"))?;
                lines += 1;
            }
            stream.write_all(b"\r\n").map_err(|e| e.to_string())?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
            testnet::client::parse_response(&raw).map_err(|e| e.to_string())
        };
        let r = run();
        (lines, r)
    });
    Trickle { stop, thread }
}

impl Trickle {
    fn finish(self) -> (usize, Result<testnet::client::HttpResponse, String>) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.join().expect("the trickle thread")
    }
}

/// Every node's status agrees on the advertised seed, and has it loaded.
fn every_node_holds(nodes: &[&ClusterNode], head: &str) -> bool {
    nodes.iter().all(|n| {
        let p = pow(n);
        let advertised = p["advertised"]
            .as_array()
            .is_some_and(|a| a.iter().any(|h| h["heads"][0] == head));
        let loaded = p["loaded"].as_array().is_some_and(|a| {
            a.iter().any(|h| {
                h["heads"]
                    .as_array()
                    .is_some_and(|hs| hs.iter().any(|x| x == head))
            })
        });
        advertised && loaded
    })
}

fn no_failures(nodes: &[&ClusterNode]) {
    for n in nodes {
        let c = &pow(n)["counters"];
        assert_eq!(c["failed"], 0, "{}: {c}", n.node.name);
    }
}

#[test]
fn every_node_verifies_the_one_advertised_seed_across_rotations_and_periods() {
    let net = testnet::fixture::shared().expect("private Tor network");
    let dir = scratch("pow");
    let token = new_token(&dir, "cluster.token");
    let hsdirs = HsDirs::new(net, &dir);
    let [mut a, mut b, mut c] = trio("pow", net, &token);
    for n in [&a, &b, &c] {
        let mut text = std::fs::read_to_string(&n.node.config).unwrap();
        text.push_str(&format!(
            "\n[pow]\nenabled = true\nmin_effort = {MIN_EFFORT}\nseed_rotation = \"2m\"\n"
        ));
        std::fs::write(&n.node.config, text).unwrap();
    }
    a.node.start();
    b.node.start();
    c.node.start();
    let address = a.node.address.clone();
    let nodes = [&a, &b, &c];

    // One pow-params line, listing all three nodes, with the cluster's seed.
    let (head, effort, epoch) = wait_for(
        LIMIT,
        "a descriptor with pow-params listing all three nodes",
        || {
            let listed = hsdirs.descriptor(&address)?;
            if !serves_every_node(
                &listed,
                &[own_auth_keys(&a), own_auth_keys(&b), own_auth_keys(&c)],
            ) {
                return None;
            }
            let lines = served_pow(&hsdirs, &address)?;
            assert!(lines.len() <= 1, "more than one pow-params line: {lines:?}");
            let (head, effort) = lines.into_iter().next()?;
            let epoch = pow(&a)["epoch"].as_u64()?;
            (head == derived_head(&token, &hsdirs, epoch)).then_some((head, effort, epoch))
        },
    );
    assert_eq!(effort, MIN_EFFORT, "the floor is advertised");
    wait_for(
        LIMIT,
        "every node advertising and verifying that seed",
        || every_node_holds(&nodes, &head).then_some(()),
    );
    eprintln!("seed head {head} (epoch {epoch}), effort {effort}");
    let first_period = hsdirs.period().unwrap();

    // The C-tor client solves (effort 16) and every node verifies.
    let r = fetch(net, &address, &net.target.index_path);
    assert_eq!(r.status, 200);
    through_every_node(net, &nodes, &address, "first");
    no_failures(&nodes);

    // A seed rotation: every node loads the next epoch's seeds at its own offset (relaunching
    // its service); the descriptor moves to the new seed; the client (its cache purged) still
    // gets in through every node. A stream opened before the relaunches still works after
    // them: a relaunch keeps established rendezvous circuits.
    let held = testnet::client::socks5_connect(
        net.client.socks,
        &address,
        80,
        Some("held-across-relaunch"),
        Duration::from_secs(60),
    )
    .expect("a stream opened before the rotation");
    let held = trickle(held, &address, &net.target.index_path);
    let loaded_before: Vec<u64> = nodes
        .iter()
        .map(|n| pow(n)["loaded_epoch"].as_u64().unwrap_or(0))
        .collect();
    let head2 = wait_for(
        Duration::from_secs(240),
        "the next epoch's seed served",
        || {
            let lines = served_pow(&hsdirs, &address)?;
            let (h, _) = lines.first()?.clone();
            let e = pow(&a)["epoch"].as_u64()?;
            (e > epoch && h != head && h == derived_head(&token, &hsdirs, e)).then_some(h)
        },
    );
    wait_for(LIMIT, "every node verifying the rotated seed", || {
        every_node_holds(&nodes, &head2).then_some(())
    });
    wait_for(
        LIMIT,
        "every node relaunched with the next epoch's seeds",
        || {
            nodes
                .iter()
                .zip(&loaded_before)
                .all(|(n, b)| pow(n)["loaded_epoch"].as_u64().is_some_and(|e| e > *b))
                .then_some(())
        },
    );
    for n in &nodes {
        assert!(
            n.node.log().contains("to load new PoW seeds"),
            "{} did not relaunch for the rotation",
            n.node.name
        );
    }
    let (lines, r) = held.finish();
    let r = r.expect("the stream opened before the relaunches");
    assert_eq!(r.status, 200, "a stream held across every node's relaunch");
    eprintln!("a stream held across the relaunches carried {lines} header lines, then a 200");
    std::thread::sleep(Duration::from_secs(11));
    newnym(net);
    through_every_node(net, &nodes, &address, "rotated");
    no_failures(&nodes);

    // A time-period change: the new period's descriptor carries that period's seed, which
    // every node loaded with the period's blinded key.
    wait_for(Duration::from_secs(420), "the next time period", || {
        (hsdirs.period()? != first_period).then_some(())
    });
    let head3 = wait_for(
        LIMIT,
        "the new period's descriptor with the cluster's seed",
        || {
            let lines = served_pow(&hsdirs, &address)?;
            let (h, _) = lines.first()?.clone();
            let e = pow(&a)["epoch"].as_u64()?;
            (h == derived_head(&token, &hsdirs, e) && every_node_holds(&nodes, &h)).then_some(h)
        },
    );
    eprintln!("new period {:?}: seed head {head3}", hsdirs.period());
    std::thread::sleep(Duration::from_secs(11));
    newnym(net);
    through_every_node(net, &nodes, &address, "new-period");
    no_failures(&nodes);
    let relaunches: Vec<usize> = nodes
        .iter()
        .map(|n| n.node.log().matches("to load new PoW seeds").count())
        .collect();
    eprintln!("relaunches for new seeds per node: {relaunches:?}");
    for n in [&mut a, &mut b, &mut c] {
        let _ = n.node.stop();
    }
}
