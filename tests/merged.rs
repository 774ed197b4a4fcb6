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
    let dir = scratch("merged");
    let token = new_token(&dir, "cluster.token");
    let hsdirs = HsDirs::new(net, &dir);
    let mut nodes = trio("m", net, &token);
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
        let own: Vec<BTreeSet<String>> = nodes.iter().map(own_auth_keys).collect();
        hsdirs
            .descriptor(&address)
            .filter(|d| serves_every_node(d, &own))
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

    // The client's requests through the kills must not straddle a time-period boundary (the
    // test network's periods last 6 minutes; a client that moves to the next period before its
    // descriptor is up finds none, which is not what this test is about): if the period ends
    // within 90 s, wait for the next one and for its descriptor to list every node.
    let left = hsdirs.period_left();
    eprintln!("time period left: {left:?}");
    if let Some(left) = left.filter(|l| *l < Duration::from_secs(90)) {
        eprintln!(
            "period ends in {:.0} s: waiting for the next one",
            left.as_secs_f64()
        );
        std::thread::sleep(left + Duration::from_secs(5));
        wait_for(
            LIMIT,
            "the next period's descriptor lists every node",
            || every_node_served(&nodes, &hsdirs, &address),
        );
    }
    // A client with fresh circuits per request reaches the target through every node.
    let all: Vec<&Node> = nodes.iter().map(|n| &n.node).collect();
    let before = proxy_totals(&all);
    // Three requesters: the success rate through the kills is measured on more requests (one
    // requester made as few as 9 when its requests waited on a killed node's intro points,
    // so a single failure moved the rate by 11 points).
    let client = Client::start_with(net, address.clone(), 3, Duration::from_millis(200));
    wait_streams_through_every_node(net, &all, &before, &client, &hsdirs, &address, LIMIT * 2);

    // Kill a standby: its intro points leave the descriptor on the HSDirs.
    let c_keys = own_auth_keys(&nodes[2]);
    let killed = Instant::now();
    nodes[2].node.kill9();
    let gone = wait_for(LIMIT, "c's intro points leave the descriptor", || {
        let d = hsdirs.descriptor(&address)?;
        (d.is_disjoint(&c_keys) && !d.is_empty()).then(|| killed.elapsed())
    });
    eprintln!(
        "standby killed: clean descriptor on the HSDirs after {:.1} s",
        gone.as_secs_f64()
    );

    // Kill the publisher: b takes over and publishes a descriptor without a's intro points,
    // with revision counters above a's.
    let a_keys = own_auth_keys(&nodes[0]);
    let a_revisions = revisions(&nodes[0].node.status().unwrap());
    let killed = Instant::now();
    nodes[0].node.kill9();
    let gone = wait_for(LIMIT, "a's intro points leave the descriptor", || {
        let d = hsdirs.descriptor(&address)?;
        (d.is_disjoint(&a_keys) && !d.is_empty()).then(|| killed.elapsed())
    });
    eprintln!(
        "publisher killed: clean descriptor on the HSDirs after {:.1} s",
        gone.as_secs_f64()
    );
    let b_status = nodes[1].node.status().unwrap();
    let mut compared = 0;
    for p in b_status["periods"].as_array().unwrap() {
        let period = p["period"].as_str().unwrap();
        if let Some((_, a_rev)) = a_revisions.iter().find(|(s, _)| s == period) {
            assert!(
                p["revision"].as_u64().unwrap() > *a_rev,
                "period {period}: b's revision {} must exceed a's {a_rev}",
                p["revision"]
            );
            compared += 1;
        }
    }
    assert!(compared > 0, "b published for a period a had published for");

    // Restart both: their intro points come back.
    nodes[0].node.start();
    nodes[2].node.start();
    wait_for(
        LIMIT,
        "all three nodes' intro points are served again",
        || every_node_served(&nodes, &hsdirs, &address),
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

/// `Some` when the HSDirs agree on a descriptor listing an intro point of every node.
fn every_node_served(nodes: &[ClusterNode], hsdirs: &HsDirs, address: &str) -> Option<()> {
    let own: Vec<BTreeSet<String>> = nodes.iter().map(own_auth_keys).collect();
    let d = hsdirs.descriptor(address)?;
    serves_every_node(&d, &own).then_some(())
}

/// A TCP target that can be taken down and brought back on the same port.
struct Switchable {
    port: u16,
    stop: Option<std::sync::mpsc::Sender<()>>,
}

impl Switchable {
    fn new() -> Switchable {
        let mut s = Switchable {
            port: free_port(),
            stop: None,
        };
        s.up();
        s
    }

    fn up(&mut self) {
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || loop {
            if rx.try_recv().is_ok() {
                return; // the listener is dropped: connections are refused
            }
            let _ = listener.accept();
            std::thread::sleep(Duration::from_millis(20));
        });
        self.stop = Some(tx);
    }

    fn down(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_node_whose_target_is_down_leaves_the_descriptor_and_returns() {
    let net = testnet::fixture::shared().expect("private Tor network");
    let dir = scratch("health");
    let token = new_token(&dir, "cluster.token");
    let hsdirs = HsDirs::new(net, &dir);
    let mut flaky = Switchable::new();
    let mut a = cluster_node(
        "h-a",
        &net.target.http.to_string(),
        net,
        None,
        10,
        &token,
        &[],
    );
    let key = a.node.key_file();
    let b_target = format!("127.0.0.1:{}", flaky.port);
    let mut b = cluster_node("h-b", &b_target, net, Some(&key), 20, &token, &[a.seed()]);
    let mut text = std::fs::read_to_string(&b.node.config).unwrap();
    text.push_str(
        "\n[target.health]\ninterval = \"1s\"\ntimeout = \"500ms\"\nfail_after = 2\nrecover_after = 1\n",
    );
    std::fs::write(&b.node.config, text).unwrap();
    a.node.start();
    b.node.start();
    let address = a.node.address.clone();
    wait_for(LIMIT, "both nodes' intro points served", || {
        let d = hsdirs.descriptor(&address)?;
        serves_every_node(&d, &[own_auth_keys(&a), own_auth_keys(&b)]).then_some(())
    });
    let b_keys = own_auth_keys(&b);

    let t0 = Instant::now();
    flaky.down();
    let gone = wait_for(LIMIT, "b's intro points withdrawn", || {
        let d = hsdirs.descriptor(&address)?;
        (!d.is_empty() && d.is_disjoint(&b_keys)).then(|| t0.elapsed())
    });
    eprintln!(
        "target down: b's intro points off the HSDirs after {:.1} s",
        gone.as_secs_f64()
    );
    let sb = b.node.status().unwrap();
    assert_eq!(sb["target_up"], false, "{sb}");
    let sa = a.node.status().unwrap();
    let entry = sa["merged"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node_id"] == "h-b")
        .cloned()
        .unwrap();
    assert_eq!(entry["healthy"], false, "{entry}");
    assert_eq!(entry["listed"], 0, "{entry}");

    let t1 = Instant::now();
    flaky.up();
    wait_for(LIMIT, "b's intro points return", || {
        let d = hsdirs.descriptor(&address)?;
        serves_every_node(&d, &[own_auth_keys(&a), own_auth_keys(&b)]).then_some(())
    });
    eprintln!(
        "target back: b's intro points served again after {:.1} s",
        t1.elapsed().as_secs_f64()
    );
    let _ = a.node.stop();
    let _ = b.node.stop();
}
