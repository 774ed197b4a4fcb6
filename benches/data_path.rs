//! The data path, three ways in ONE run on the private Tor network, with the same C-tor client
//! and the same target: through a RustBalance node; directly from the network's C-tor onion
//! service; and from a plain Arti onion service with no RustBalance code
//! (`testing/arti-plain-service/main.rs`: Arti's own publisher and reverse proxy, same Arti). The
//! plain Arti service separates Arti's cost from ours.
//!
//! `cargo bench --bench data_path` (harness = false). It PRINTS figures and asserts nothing
//! about time; bodies are checked byte for byte. Per service:
//! - TTFB (GET /) and throughput (the 8 MiB file), fetches interleaved across the services;
//! - service CPU seconds per MB over those transfers (utime + stime from /proc);
//! - RSS idle, and peak RSS with 1 / 10 / 100 concurrent transfers and with 1000 idle streams;
//! - errors.
//!
//! Environment: `RB_BENCH_FETCHES` (bulk fetches per service, default 4), plus the fixture's
//! `RUSTBALANCE_TESTNET_DIR` / `_BIN` / `_KEEP`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;
use testnet::client::socks5_connect;
use testnet::Description;

/// One service under test.
struct Service {
    name: &'static str,
    host: String,
    port: u16,
    pid: u32,
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the state field.
    let hz = 100.0; // USER_HZ on Linux
    (ticks(11) + ticks(12)) / hz
}

/// Context switches (voluntary, involuntary) summed over all the process's threads, and the
/// thread count.
fn switches(pid: u32) -> (u64, u64, usize) {
    let mut v = (0, 0, 0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return v;
    };
    for t in tasks.flatten() {
        let st = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let field = |name: &str| {
            st.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|x| x.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        v.0 += field("voluntary_ctxt_switches:");
        v.1 += field("nonvoluntary_ctxt_switches:");
        v.2 += 1;
    }
    v
}

/// With `RB_BENCH_PERF=1`: `perf record` (on-CPU samples, 499 Hz) of one service process over
/// the bulk transfers, into `target/tmp/perf-<name>.data`.
struct Perf {
    child: std::process::Child,
    file: std::path::PathBuf,
}

impl Perf {
    fn start(name: &str, pid: u32) -> Option<Perf> {
        if std::env::var("RB_BENCH_PERF").ok().as_deref() != Some("1") {
            return None;
        }
        let file =
            std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("perf-{name}.data"));
        let child = std::process::Command::new("perf")
            .args(["record", "-q", "-F", "499", "-p", &pid.to_string(), "-o"])
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| println!("  perf not started ({e}); install linux-perf"))
            .ok()?;
        Some(Perf { child, file })
    }

    /// Stops recording and prints the hottest symbols.
    fn report(mut self, name: &str) {
        // SAFETY: SIGINT to our own child makes perf write its file and exit.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let out = std::process::Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "dso,symbol",
                "--percent-limit",
                "1.5",
                "-i",
            ])
            .arg(&self.file)
            .output();
        println!("  perf, {name} (on-CPU samples over the bulk transfers; symbols >= 1.5 %):");
        match out {
            Ok(o) => {
                for l in String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                    .take(25)
                {
                    // perf pads with empty srcline columns ("-").
                    println!("    {}", l.trim_end().trim_end_matches(['-', ' ']));
                }
            }
            Err(e) => println!("    perf report failed: {e}"),
        }
    }
}

/// Resident set size in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Runs `work` while sampling `pid`'s RSS every 50 ms; returns the peak and `work`'s result.
fn peak_rss_during<T>(pid: u32, work: impl FnOnce() -> T) -> (f64, T) {
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut peak: f64 = 0.0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(rss_mib(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak.max(rss_mib(pid))
        })
    };
    let r = work();
    stop.store(true, Ordering::Relaxed);
    (sampler.join().unwrap(), r)
}

/// `n` concurrent transfers of the large file, each on circuits of its own; each reads for at
/// most `hold` then drops its stream. Returns (streams that got a 200 header, errors).
fn concurrent_transfers(
    net: &Description,
    s: &Service,
    n: usize,
    hold: Duration,
    tag: &str,
) -> (usize, usize) {
    let ok = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (ok, errors) = (Arc::clone(&ok), Arc::clone(&errors));
            let (socks, host, port, path) = (
                net.client.socks,
                s.host.clone(),
                s.port,
                net.target.large_path.clone(),
            );
            let user = format!("{tag}-{i}");
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let r = (|| -> Result<(), String> {
                    let mut c = socks5_connect(socks, &host, port, Some(&user), OP_TIMEOUT)
                        .map_err(|e| e.to_string())?;
                    c.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
                        .map_err(|e| e.to_string())?;
                    let mut buf = vec![0u8; 64 * 1024];
                    let n = c.read(&mut buf).map_err(|e| e.to_string())?;
                    if !buf[..n].starts_with(b"HTTP/1.0 200")
                        && !buf[..n].starts_with(b"HTTP/1.1 200")
                    {
                        return Err("no 200".into());
                    }
                    while t0.elapsed() < hold {
                        if c.read(&mut buf).map_err(|e| e.to_string())? == 0 {
                            break;
                        }
                    }
                    Ok(())
                })();
                match r {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            println!("  error ({user}): {e}");
                        }
                        0
                    }
                };
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    (ok.load(Ordering::Relaxed), errors.load(Ordering::Relaxed))
}

/// `n` streams opened on ONE circuit (one SOCKS username) and held idle (the request is not
/// sent) for `hold`; returns (opened, errors, first error) and the service's peak RSS meanwhile.
fn idle_streams(
    net: &Description,
    s: &Service,
    n: usize,
    hold: Duration,
    tag: &str,
) -> (usize, usize, f64, Option<String>) {
    let (peak, (opened, errors, first)) = peak_rss_during(s.pid, || {
        let mut held = Vec::new();
        let mut errors = 0;
        let mut first = None;
        for _ in 0..n {
            match socks5_connect(net.client.socks, &s.host, s.port, Some(tag), OP_TIMEOUT) {
                Ok(c) => held.push(c),
                Err(e) => {
                    if errors == 0 {
                        println!("  first idle-stream error ({}): {e}", s.name);
                        first = Some(e.to_string());
                    }
                    errors += 1;
                }
            }
        }
        std::thread::sleep(hold);
        (held.len(), errors, first)
    });
    (opened, errors, peak, first)
}

fn reachable(net: &Description, s: &Service, index: &[u8]) {
    let t0 = Instant::now();
    let mut i = 0;
    loop {
        i += 1;
        match timed_get(
            net,
            &s.host,
            s.port,
            "/",
            &format!("dp-reach-{}-{i}", s.name),
            index,
        ) {
            Ok(_) => return,
            Err(e) if t0.elapsed() < Duration::from_secs(180) => {
                let _ = e;
                newnym(net);
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("{} not reachable: {e}", s.name),
        }
    }
}

fn main() {
    let fetches = env_usize("RB_BENCH_FETCHES", 4);
    locate_testnet_bin();
    let net = testnet::fixture::shared().unwrap_or_else(|e| panic!("private Tor network: {e}"));
    let large = net.large_body();
    let index = net.index_body();
    let mb = large.len() as f64 / 1e6;
    let pid = std::process::id();
    let dir = scratch("data-path");

    let mut node = Node::init("dp-node", &net.target.http.to_string(), net);
    node.start();
    let node_pid = node.child.as_ref().unwrap().id();
    let plain = PlainArti::start(net, &dir.join("plain"), &[]);
    // A second node whose target is the C-tor onion service: the double onion path (client →
    // node, node's embedded Arti client → C-tor service). Bulk figures only.
    let onion_target = format!("{}:{}", net.onion_address().unwrap(), net.target.onion_port);
    let mut onion_node = Node::init("dp-node-onion", &onion_target, net);
    onion_node.start();
    let hs_pid = net
        .processes
        .iter()
        .find(|p| p.name == "hs")
        .map(|p| p.pid)
        .expect("the network's C-tor onion service process");
    let services = [
        Service {
            name: "node",
            host: node.address.clone(),
            port: 80,
            pid: node_pid,
        },
        Service {
            name: "c-tor",
            host: net.onion_address().unwrap().to_string(),
            port: net.target.onion_port,
            pid: hs_pid,
        },
        Service {
            name: "arti",
            host: plain.address.clone(),
            port: 80,
            pid: plain.child.id(),
        },
    ];
    let via_onion = Service {
        name: "node→onion",
        host: onion_node.address.clone(),
        port: 80,
        pid: onion_node.child.as_ref().unwrap().id(),
    };
    let bulk: Vec<&Service> = services.iter().chain([&via_onion]).collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("== data path: RustBalance node vs C-tor onion service vs plain Arti service ==");
    println!(
        "conditions: {cores} cores; {}; one C-tor client; target {}; {} B file; {fetches} bulk \
         fetches per service, interleaved; rustbalance = {BIN} ({})",
        net.tor_version.trim_end_matches('.'),
        net.target.http,
        large.len(),
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        }
    );
    for s in &bulk {
        reachable(net, s, &index);
    }
    std::thread::sleep(Duration::from_secs(5));
    let idle: Vec<f64> = services.iter().map(|s| rss_mib(s.pid)).collect();

    // TTFB and throughput, interleaved; CPU over the bulk transfers only.
    let mut ttfb = vec![Vec::new(); bulk.len()];
    let mut mbps = vec![Vec::new(); bulk.len()];
    let mut cpu = vec![0.0f64; bulk.len()];
    let mut errors = vec![0usize; bulk.len()];
    let sw0: Vec<_> = bulk.iter().map(|s| switches(s.pid)).collect();
    let perf: Vec<Option<Perf>> = services
        .iter()
        .map(|s| Perf::start(s.name, s.pid))
        .collect();
    for i in 1..=fetches {
        for (k, s) in bulk.iter().enumerate() {
            match timed_get(
                net,
                &s.host,
                s.port,
                "/",
                &format!("dp-{pid}-t-{}-{i}", s.name),
                &index,
            ) {
                Ok(f) => ttfb[k].push(f.ttfb.as_secs_f64() * 1e3),
                Err(e) => {
                    errors[k] += 1;
                    println!("  {} GET / #{i}: {e}", s.name);
                }
            }
            let c0 = cpu_seconds(s.pid);
            match timed_get(
                net,
                &s.host,
                s.port,
                &net.target.large_path,
                &format!("dp-{pid}-b-{}-{i}", s.name),
                &large,
            ) {
                Ok(f) => {
                    cpu[k] += cpu_seconds(s.pid) - c0;
                    let rate = f.body as f64 / f.transfer.as_secs_f64() / 1e6;
                    println!(
                        "  bulk {:10} #{i}: {rate:5.2} MB/s (ttfb {:.0} ms)",
                        s.name,
                        f.ttfb.as_secs_f64() * 1e3
                    );
                    mbps[k].push(rate);
                }
                Err(e) => {
                    errors[k] += 1;
                    println!("  {} GET large #{i}: {e}", s.name);
                }
            }
        }
    }
    for (p, s) in perf.into_iter().zip(&services) {
        if let Some(p) = p {
            p.report(s.name);
        }
    }
    // Context switches over the whole bulk loop (the small GETs included), per MB moved.
    let sw: Vec<(f64, f64, usize)> = bulk
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let (v, n, threads) = switches(s.pid);
            let moved = mb * mbps[k].len().max(1) as f64;
            (
                (v - sw0[k].0) as f64 / moved,
                (n - sw0[k].1) as f64 / moved,
                threads,
            )
        })
        .collect();
    // Memory under concurrency.
    let mut conc = vec![Vec::new(); 3];
    for n in [1usize, 10, 100] {
        for (k, s) in services.iter().enumerate() {
            let (peak, (ok, err)) = peak_rss_during(s.pid, || {
                concurrent_transfers(
                    net,
                    s,
                    n,
                    Duration::from_secs(8),
                    &format!("dp-{pid}-c{n}-{}", s.name),
                )
            });
            errors[k] += err;
            conc[k].push((n, peak, ok, err));
        }
    }
    let mut idle1000 = Vec::new();
    for (k, s) in services.iter().enumerate() {
        let (mut opened, mut err, mut peak, first) = idle_streams(
            net,
            s,
            1000,
            Duration::from_secs(5),
            &format!("dp-{pid}-idle-{}", s.name),
        );
        if opened == 0 {
            // Diagnosis: is it the service, or the client's record of failed intro points
            // after the burst? NEWNYM clears the client's record; the service is untouched.
            println!(
                "  {}: no idle stream opened ({err} errors, first: {}); SIGNAL NEWNYM, reach it again, retry once",
                s.name,
                first.as_deref().unwrap_or("-")
            );
            let failed_first = err;
            newnym(net);
            reachable(net, s, &index);
            (opened, err, peak, _) = idle_streams(
                net,
                s,
                1000,
                Duration::from_secs(5),
                &format!("dp-{pid}-idle2-{}", s.name),
            );
            println!("  {}: after NEWNYM: {opened} opened, {err} errors", s.name);
            err += failed_first; // the failed first round counts
        }
        errors[k] += err;
        idle1000.push((opened, err, peak));
    }

    println!();
    println!("service   ttfb ms (median)   MB/s (median)   CPU s/MB   RSS idle MiB   peak RSS MiB at 1/10/100 transfers (ok/err)   1000 idle streams: opened/err, peak MiB   errors");
    for (k, s) in services.iter().enumerate() {
        let per_mb = cpu[k] / (mb * mbps[k].len().max(1) as f64);
        let c: Vec<String> = conc[k]
            .iter()
            .map(|(n, p, ok, err)| format!("{n}:{p:.0} ({ok}/{err})"))
            .collect();
        let (o, e, p) = idle1000[k];
        println!(
            "{:8} {:>10.1}        {:>8.2}        {:>7.4}     {:>8.1}       {:44}   {o}/{e}, {p:.1}   {}",
            s.name,
            median(&ttfb[k]),
            median(&mbps[k]),
            per_mb,
            idle[k],
            c.join("  "),
            errors[k]
        );
    }
    {
        let k = bulk.len() - 1;
        println!(
            "{:8} {:>10.1}        {:>8.2}        {:>7.4}     (bulk only: a node whose target is the C-tor onion service)   {}",
            bulk[k].name,
            median(&ttfb[k]),
            median(&mbps[k]),
            cpu[k] / (mb * mbps[k].len().max(1) as f64),
            errors[k]
        );
    }
    let ratio = |k: usize, j: usize, v: &dyn Fn(usize) -> f64| v(k) / v(j);
    let tput = |k: usize| median(&mbps[k]);
    let cpumb = |k: usize| cpu[k] / (mb * mbps[k].len().max(1) as f64);
    let rss = |k: usize| idle[k];
    println!();
    println!(
        "ratios vs C tor: throughput node {:.2}x, arti {:.2}x; CPU/MB node {:.2}x, arti {:.2}x; RSS idle node {:.2}x, arti {:.2}x",
        ratio(0, 1, &tput),
        ratio(2, 1, &tput),
        ratio(0, 1, &cpumb),
        ratio(2, 1, &cpumb),
        ratio(0, 1, &rss),
        ratio(2, 1, &rss)
    );
    println!(
        "node vs plain Arti: throughput {:.2}x, CPU/MB {:.2}x, RSS idle {:.2}x; per idle stream (node): {:.1} KiB",
        ratio(0, 2, &tput),
        ratio(0, 2, &cpumb),
        ratio(0, 2, &rss),
        (idle1000[0].2 - idle[0]).max(0.0) * 1024.0 / idle1000[0].0.max(1) as f64
    );
    println!(
        "node→onion vs c-tor directly: throughput {:.2}x, TTFB {:.2}x",
        ratio(3, 1, &tput),
        median(&ttfb[3]) / median(&ttfb[1])
    );
    for (k, s) in bulk.iter().enumerate() {
        println!(
            "context switches per MB (bulk loop), {}: {:.0} voluntary, {:.0} involuntary; {} threads",
            s.name, sw[k].0, sw[k].1, sw[k].2
        );
    }
    println!("done (figures only; no timing is asserted)");
    drop(plain);
    let _ = onion_node.stop();
    let _ = node.stop();
}
