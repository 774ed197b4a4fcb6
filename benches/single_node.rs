//! One RustBalance node on the private Tor network: how long until the master address answers
//! after `rustbalance run`, and what a fetch through it costs next to the C-tor onion service
//! that serves the same content directly.
//!
//! `cargo bench --bench single_node` (harness = false). It PRINTS figures and never asserts a
//! timing; it does assert correctness (every body is compared byte for byte). Environment:
//! `RB_BENCH_RUNS` (node starts, default 5), `RB_BENCH_FETCHES` (fetches per kind and path,
//! default 5), plus the fixture's `RUSTBALANCE_TESTNET_DIR` / `_BIN` / `_KEEP`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;
use testnet::Description;

/// How long a fresh node may take to become reachable before the benchmark gives up.
const REACH_DEADLINE: Duration = Duration::from_secs(300);
/// Pause between failed reachability attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// What one reachability wait measured.
struct Reach {
    reachable: Duration,
    published: Option<Duration>,
    attempts: usize,
}

/// Polls GET / through the master address until it returns the index page; meanwhile another
/// thread polls `status --json` for the first published period. Times count from `t0`.
fn wait_reachable(net: &Description, node: &mut Node, t0: Instant, label: &str) -> Reach {
    let published: Arc<Mutex<Option<Duration>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (published, stop, addr) = (published.clone(), stop.clone(), node.status_addr.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if status_at(&addr).is_some_and(|s| support::published(&s)) {
                    *published.lock().unwrap() = Some(t0.elapsed());
                    return;
                }
                std::thread::sleep(RETRY_PAUSE);
            }
        })
    };
    let index = net.index_body();
    let mut attempts = 0;
    let reachable = loop {
        attempts += 1;
        let user = format!("rb-bench-{}-{label}-try{attempts}", std::process::id());
        match timed_get(net, &node.address, 80, "/", &user, &index) {
            Ok(_) => break t0.elapsed(),
            Err(e) => {
                node.assert_running();
                if e.starts_with("body differs") || e.starts_with("unexpected status") {
                    panic!("the master answered wrongly: {e}\n{}", node.log());
                }
                if t0.elapsed() > REACH_DEADLINE {
                    stop.store(true, Ordering::Relaxed);
                    panic!(
                        "master {} not reachable {} s after `rustbalance run` ({attempts} \
                         attempts; last: {e})\n{}",
                        node.address,
                        REACH_DEADLINE.as_secs(),
                        node.log()
                    );
                }
                newnym(net);
                std::thread::sleep(RETRY_PAUSE);
            }
        }
    };
    // The status snapshot refreshes about once a second: give it a moment to catch up.
    let grace = Instant::now();
    while !watcher.is_finished() && grace.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().expect("status watcher");
    let published = *published.lock().unwrap();
    Reach {
        reachable,
        published,
        attempts,
    }
}

fn main() {
    // Arguments cargo passes (`--bench`) are ignored.
    let runs = env_usize("RB_BENCH_RUNS", 5);
    let fetches = env_usize("RB_BENCH_FETCHES", 5);
    locate_testnet_bin();
    let net = testnet::fixture::shared().unwrap_or_else(|e| panic!("private Tor network: {e}"));
    let direct = net
        .onion_address()
        .unwrap_or_else(|e| panic!("sample onion service: {e}"))
        .to_string();
    let direct_port = net.target.onion_port;
    let large_path = net.target.large_path.clone();
    let large = net.large_body();
    let index = net.index_body();
    let pid = std::process::id();

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("== RustBalance single-node benchmark ==");
    println!(
        "conditions: {cores} cores; {}; everything on 127.0.0.1: private network of 3 \
         authorities + 5 relays (2 exits), one C-tor client, one C-tor onion service \
         (voting interval {} s, hsdir_interval {} min)",
        net.tor_version.trim_end_matches('.'),
        net.voting_interval_secs,
        net.hsdir_interval_minutes
    );
    println!(
        "large file {} bytes ({:.1} MiB); index {} bytes; {runs} node starts \
         (RB_BENCH_RUNS), {fetches} fetches per kind and path (RB_BENCH_FETCHES); \
         rustbalance = {BIN}",
        large.len(),
        large.len() as f64 / 1048576.0,
        index.len()
    );

    // 1. `rustbalance run` → master reachable.
    println!();
    println!(
        "[1] spawn → master reachable (fresh `init` dir and key each run; TCP target {}; \
         GET / via the C-tor client, fresh SOCKS username per attempt, NEWNYM + {} ms between \
         failed attempts)",
        net.target.http,
        RETRY_PAUSE.as_millis()
    );
    let (mut reach, mut publ) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let mut node = Node::init(&format!("start{run}"), &net.target.http.to_string(), net);
        let t0 = Instant::now();
        node.start();
        let r = wait_reachable(net, &mut node, t0, &format!("start{run}"));
        let exit = node.stop();
        assert!(exit.success(), "SIGTERM exit {exit:?}\n{}", node.log());
        println!(
            "  run {run}: reachable {:6.2} s  status showed published {}  ({} attempts, exit {})",
            r.reachable.as_secs_f64(),
            r.published
                .map_or("never".into(), |p| format!("{:6.2} s", p.as_secs_f64())),
            r.attempts,
            exit.code().map_or("signal".into(), |c| c.to_string())
        );
        reach.push(r.reachable.as_secs_f64());
        publ.extend(r.published.map(|p| p.as_secs_f64()));
        let _ = std::fs::remove_dir_all(&node.dir);
    }
    println!("  reachable:        {}", summary(&reach, "s", 2));
    if !publ.is_empty() {
        println!(
            "  status published: {} ({} of {runs} runs)",
            summary(&publ, "s", 2),
            publ.len()
        );
    }

    // 2. TTFB and throughput through one running node vs the C-tor onion directly.
    println!();
    println!(
        "[2] through one running node: master address port 80 vs the C-tor onion service \
         directly (port {direct_port}), interleaved master, direct, …; every fetch uses a \
         fresh SOCKS username, so each builds fresh circuits (new rendezvous + \
         introduction); descriptors stay cached in the client (one unmeasured warm-up fetch \
         each)"
    );
    let mut node = Node::init("fetch", &net.target.http.to_string(), net);
    let t0 = Instant::now();
    node.start();
    let r = wait_reachable(net, &mut node, t0, "fetch");
    println!(
        "  node up: master {} reachable {:.2} s after spawn",
        node.address,
        r.reachable.as_secs_f64()
    );
    timed_get(
        net,
        &direct,
        direct_port,
        "/",
        &format!("rb-bench-{pid}-warm"),
        &index,
    )
    .unwrap_or_else(|e| panic!("warm-up fetch from the sample onion failed: {e}"));

    let targets = [
        ("master", node.address.clone(), 80u16),
        ("direct", direct, direct_port),
    ];
    let mut ttfb: [Vec<f64>; 2] = Default::default();
    let mut mbps: [Vec<f64>; 2] = Default::default();
    let mut bulk_ttfb: [Vec<f64>; 2] = Default::default();
    let fail =
        |node: &Node, what: &str, e: String| -> ! { panic!("{what} failed: {e}\n{}", node.log()) };
    for i in 1..=fetches {
        for (k, (name, host, port)) in targets.iter().enumerate() {
            let user = format!("rb-bench-{pid}-ttfb-{name}-{i}");
            let f = timed_get(net, host, *port, "/", &user, &index)
                .unwrap_or_else(|e| fail(&node, &format!("{name} GET / #{i}"), e));
            println!(
                "  ttfb   {name:6} #{i}: {:7.1} ms ({} B)",
                f.ttfb.as_secs_f64() * 1e3,
                f.body
            );
            ttfb[k].push(f.ttfb.as_secs_f64() * 1e3);
        }
        for (k, (name, host, port)) in targets.iter().enumerate() {
            let user = format!("rb-bench-{pid}-bulk-{name}-{i}");
            let f = timed_get(net, host, *port, &large_path, &user, &large)
                .unwrap_or_else(|e| fail(&node, &format!("{name} GET {large_path} #{i}"), e));
            let rate = f.body as f64 / f.transfer.as_secs_f64() / 1e6;
            println!(
                "  bulk   {name:6} #{i}: {rate:6.2} MB/s ({} B in {:.2} s after first byte; \
                 ttfb {:.1} ms)",
                f.body,
                f.transfer.as_secs_f64(),
                f.ttfb.as_secs_f64() * 1e3
            );
            mbps[k].push(rate);
            bulk_ttfb[k].push(f.ttfb.as_secs_f64() * 1e3);
        }
    }
    node.assert_running();
    let exit = node.stop();
    assert!(exit.success(), "SIGTERM exit {exit:?}\n{}", node.log());
    let _ = std::fs::remove_dir_all(&node.dir);

    println!("  TTFB (SOCKS connect start → first response byte, GET /):");
    println!("    master: {}", summary(&ttfb[0], "ms", 1));
    println!("    direct: {}", summary(&ttfb[1], "ms", 1));
    println!(
        "    ratio of medians master/direct: {:.2}",
        median(&ttfb[0]) / median(&ttfb[1])
    );
    println!(
        "  throughput ({} B body, first byte → end, MB = 10^6 B):",
        large.len()
    );
    println!("    master: {}", summary(&mbps[0], "MB/s", 2));
    println!("    direct: {}", summary(&mbps[1], "MB/s", 2));
    println!(
        "    ratio of medians master/direct: {:.2}",
        median(&mbps[0]) / median(&mbps[1])
    );
    println!(
        "  TTFB of the bulk fetches: master median {:.1} ms, direct median {:.1} ms",
        median(&bulk_ttfb[0]),
        median(&bulk_ttfb[1])
    );
    println!();
    println!("done (figures only; no timing is asserted)");
}
