//! Join figures. `cargo bench --bench join` (harness = false) PRINTS, on the private Tor
//! network with real processes: for `RB_BENCH_JOINS` joins (default 3) into a running
//! `init --endpoint` node, the time `rustbalance join` takes (bootstrap, reaching the master
//! address, the exchange, writing the node) and the time from `join` starting to the new
//! node's intro points being served by every HSDir that answers for the current period; median
//! and range. Figures only: nothing here asserts a timing (the target is ≤ 30 s).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::*;

fn main() {
    locate_testnet_bin();
    let net = testnet::fixture::shared().expect("private Tor network");
    let joins = env_usize("RB_BENCH_JOINS", 3);
    let dir = scratch("bench-join");
    std::fs::create_dir_all(&dir).unwrap();
    let hsdirs = HsDirs::new(net, &dir);
    let target = net.target.http.to_string();
    let endpoint = format!("127.0.0.1:{}", free_udp_port());
    let mut a = Node::init_with(
        "bj-a",
        &target,
        net,
        &["--endpoint", &endpoint, "--listen", &endpoint],
    );
    a.start();
    a.wait_published();
    let address = a.address.clone();
    let mut nodes = Vec::new();
    let (mut command, mut listed) = (Vec::new(), Vec::new());
    for i in 0..joins {
        let line = rustbalance_ok(&["invite", "-c", a.config.to_str().unwrap()]);
        let t0 = Instant::now();
        let (mut n, took, out) = join_node(
            &format!("bj-{i}"),
            LineFrom::Stdin(line.trim()),
            &target,
            net,
        );
        assert!(
            out.status.success(),
            "join failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        n.start();
        let served = wait_for(
            Duration::from_secs(300),
            "the new node on every HSDir",
            || {
                let own = n.auth_keys();
                let d = hsdirs.descriptor(&address)?;
                (!own.is_empty() && !own.is_disjoint(&d)).then(|| t0.elapsed())
            },
        );
        eprintln!(
            "join {i}: `join` {:.1} s, listed on every HSDir {:.1} s after `join` started",
            took.as_secs_f64(),
            served.as_secs_f64()
        );
        command.push(took.as_secs_f64());
        listed.push(served.as_secs_f64());
        nodes.push(n);
    }
    println!("join benchmark ({joins} joins, private Tor network, 2 cores):");
    println!(
        "  `rustbalance join` runs:        {}",
        summary(&command, "s", 1)
    );
    println!(
        "  join -> listed on every HSDir:  {}",
        summary(&listed, "s", 1)
    );
    println!("  (no C-tor baseline: C tor has no join; the issue's target is <= 30 s)");
    drop(nodes);
    drop(a);
}
