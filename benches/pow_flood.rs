//! An introduction flood against a node with PoW on, on the private Tor network: does the
//! suggested effort rise in the served descriptor, and does a client that solves still get in
//! while the flood waits in the queue?
//!
//! `cargo bench --bench pow_flood` (harness = false; about 15 minutes: Arti recomputes the
//! suggested effort every 5 minutes). PRINTS a timeline and a summary; asserts only that the
//! set-up worked.
//!
//! - The node: one RustBalance node, `[pow]` on, `min_effort = 0`, `rendezvous_concurrency = 1`
//!   (one rendezvous handshake at a time, so a flood this machine can generate outruns it and
//!   requests wait in Arti's queue), capped at `RB_FLOOD_CPU_PERCENT` (10) % of one core by a
//!   cgroup (0: no cap). The machine runs the relays, both clients and the node on two cores,
//!   so without a cap the flooding client, not the node, is the bottleneck.
//! - The flood: a second C-tor client of its own, started here, `RB_FLOOD_WORKERS` (48)
//!   connections at once, each on circuits of its own (a new SOCKS isolation, so a new
//!   introduction), each a GET of the index page abandoned after `RB_FLOOD_PATIENCE_SECS` (3)
//!   unless served, for `RB_FLOOD_SECS` (720); bounded in count (the workers) and time.
//!   Abandoning keeps the flood open-loop, as an attacker's is: requests arrive at the rate the
//!   flooder makes them, not at the rate the node serves them (with clients that wait for their
//!   answer, arrivals equal service and Arti's rule never raises the effort). It fetched the
//!   descriptor while its effort was 0, so it does not solve. Until just before Arti's first
//!   effort update it is told NEWNYM at every sample (C tor gives up on a service whose intro
//!   points all failed, which dropped requests look like, and NEWNYM clears that; the
//!   descriptor it refetches still says 0); after that it keeps its effort-0 copy (C tor caches
//!   descriptors) until it gives up by itself, within a minute or so, and later, its failure
//!   record expired, fetches the new descriptor and solves like any client.
//! - The probe: the test network's C-tor client, its descriptor cache purged (NEWNYM) before
//!   each probe, so it solves at the effort the served descriptor asks for at that moment;
//!   one probe every `RB_FLOOD_PROBE_SECS` (15), given 60 s.
//! - Without PoW / with PoW: the probes made while the descriptor said effort 0 are the
//!   "without" figures, those made while it asked for more the "with" figures, under the same
//!   flood; the timeline shows whether the flood still arrived (`enqueued` moving) at each.
//!   Probes before the flood are the baseline.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;
use tor_netdoc::doc::hsdesc::pow::PowParams;

/// The served descriptor's suggested effort (`None`: no descriptor, or no pow-params).
fn served_effort(hsdirs: &HsDirs, address: &str) -> Option<u32> {
    let (_, d) = hsdirs.served(address, None)?;
    d.pow_params().iter().find_map(|p| match p {
        PowParams::V1(v1) => Some(u32::from(v1.suggested_effort())),
        _ => None,
    })
}

/// A C-tor client of the bench's own (the flooder), killed on drop.
struct Flooder {
    child: Child,
    socks: std::net::SocketAddr,
    control: std::net::SocketAddr,
    cookie: std::path::PathBuf,
}

impl Flooder {
    /// A client configured like the network's client, with its own ports and data directory,
    /// and room for many circuits being built at once.
    fn start(net: &testnet::Description, dir: &std::path::Path) -> Flooder {
        let base = std::fs::read_to_string(net.client.data_dir.join("torrc"))
            .expect("the network client's torrc");
        let data = dir.join("flooder");
        keys_dir(&data);
        let socks: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let control: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut torrc: String = base
            .lines()
            .filter(|l| {
                ![
                    "DataDirectory",
                    "RunAsDaemon",
                    "PidFile",
                    "Log ",
                    "Nickname",
                    "SocksPort",
                    "ControlPort",
                    "CookieAuthentication",
                ]
                .iter()
                .any(|k| l.starts_with(k))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        torrc.push_str(&format!(
            "DataDirectory {d}\nRunAsDaemon 0\nLog notice file {d}/notice.log\n\
             Nickname flooder\nSocksPort {socks}\nControlPort {control}\n\
             CookieAuthentication 1\nMaxClientCircuitsPending 256\n",
            d = data.display()
        ));
        let path = dir.join("flooder.torrc");
        std::fs::write(&path, torrc).unwrap();
        let child = Command::new("tor")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the flooding C-tor client");
        let log = data.join("notice.log");
        wait_for(Duration::from_secs(120), "the flooder bootstrapped", || {
            std::fs::read_to_string(&log)
                .ok()?
                .contains("Bootstrapped 100%")
                .then_some(())
        });
        Flooder {
            child,
            socks,
            control,
            cookie: data.join("control_auth_cookie"),
        }
    }

    /// Purges its descriptor cache and its record of failed intro points (C tor stops trying
    /// a service whose intro points all failed, as dropped requests look to it).
    fn newnym(&self) {
        if let Ok(mut c) = testnet::client::ControlConn::connect(
            self.control,
            &self.cookie,
            Duration::from_secs(5),
        ) {
            let _ = c.command("SIGNAL NEWNYM");
        }
    }
}

impl Drop for Flooder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keys_dir(p: &std::path::Path) {
    std::fs::create_dir_all(p).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
}

/// A cgroup of the cgroup-v1 `cpu` controller holding at most `percent` % of one core (the
/// node's capacity, so that a flood this one machine generates exceeds it); removed on drop.
fn cpu_cap(name: &str, percent: usize) -> Cgroup {
    let root = std::path::Path::new("/sys/fs/cgroup/cpu");
    assert!(
        root.join("cpu.cfs_quota_us").exists(),
        "RB_FLOOD_CPU_PERCENT needs the cgroup-v1 cpu controller at {} (or set it to 0)",
        root.display()
    );
    let relative = format!("rustbalance-bench-{}-{name}", std::process::id());
    let path = root.join(&relative);
    std::fs::create_dir_all(&path).unwrap();
    std::fs::write(path.join("cpu.cfs_period_us"), "100000").unwrap();
    std::fs::write(path.join("cpu.cfs_quota_us"), (1000 * percent).to_string()).unwrap();
    Cgroup { path, relative }
}

/// One flood request: when it started (seconds into the flood), and its latency if it got a 200.
#[derive(Clone, Copy)]
struct Shot {
    at: f64,
    ok: Option<f64>,
}

/// One probe by the solving client.
struct Probe {
    at: f64,
    effort: Option<u32>,
    result: Result<f64, String>,
}

fn probe(net: &testnet::Description, address: &str, iso: &str) -> Result<f64, String> {
    newnym(net);
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    match get_once(net, address, iso)? {
        200 => Ok(t0.elapsed().as_secs_f64()),
        s => Err(format!("status {s}")),
    }
}

fn pow_status(node: &Node) -> serde_json::Value {
    node.status()
        .map(|s| s["pow"].clone())
        .unwrap_or(serde_json::Value::Null)
}

fn stats(latencies: &[f64]) -> String {
    if latencies.is_empty() {
        "-".into()
    } else {
        summary(latencies, "s", 2)
    }
}

fn main() {
    let workers = env_usize("RB_FLOOD_WORKERS", 48);
    let flood_secs = env_usize("RB_FLOOD_SECS", 720) as u64;
    let probe_every = Duration::from_secs(env_usize("RB_FLOOD_PROBE_SECS", 15) as u64);
    let queue_depth = env_usize("RB_FLOOD_QUEUE", 64);
    let patience = Duration::from_secs(env_usize("RB_FLOOD_PATIENCE_SECS", 3) as u64);
    locate_testnet_bin();
    let net = testnet::fixture::shared().unwrap_or_else(|e| panic!("private Tor network: {e}"));
    let dir = scratch("pow-flood");
    let hsdirs = HsDirs::new(net, &dir);
    let mut node = Node::init("pow-flood", &net.target.http.to_string(), net);
    let mut text = std::fs::read_to_string(&node.config).unwrap();
    text.push_str(&format!(
        "\n[pow]\nenabled = true\nmin_effort = 0\nqueue_depth = {queue_depth}\n\
         rendezvous_concurrency = 1\nseed_rotation = \"24h\"\n"
    ));
    std::fs::write(&node.config, text).unwrap();
    let cpu_percent = env_usize("RB_FLOOD_CPU_PERCENT", 10);
    // Arti's PoW manager starts with the service and updates the effort every 5 minutes.
    let first_update = Instant::now() + Duration::from_secs(300);
    let _cap = if cpu_percent > 0 {
        let cap = cpu_cap("pow-flood", cpu_percent);
        node.start_in(&cap);
        eprintln!("node capped at {cpu_percent} % of one core");
        Some(cap)
    } else {
        node.start();
        None
    };
    node.wait_published();
    let address = node.address.clone();
    let effort0 = wait_for(
        Duration::from_secs(180),
        "a served descriptor with pow-params",
        || served_effort(&hsdirs, &address),
    );
    eprintln!("served descriptor: pow-params, effort {effort0}");

    // Baseline: no flood.
    let mut baseline = Vec::new();
    for i in 0..3 {
        match probe(net, &address, &format!("base-{i}")) {
            Ok(s) => baseline.push(s),
            Err(e) => eprintln!("baseline probe {i}: {e}"),
        }
    }
    eprintln!("baseline (no flood): {}", stats(&baseline));

    // The flooder caches the descriptor at effort 0.
    let flooder = Flooder::start(net, &dir);
    wait_for(
        Duration::from_secs(120),
        "the flooder reached the service",
        || {
            testnet::client::http_get_via_socks(
                flooder.socks,
                &address,
                80,
                &net.target.index_path,
                Some("warm"),
                Duration::from_secs(30),
            )
            .ok()
            .filter(|r| r.status == 200)
        },
    );
    let cached = served_effort(&hsdirs, &address);
    eprintln!("flooder holds the descriptor (effort {cached:?}); flooding with {workers} workers for {flood_secs} s");

    let stop = Arc::new(AtomicBool::new(false));
    let shots: Arc<Mutex<Vec<Shot>>> = Arc::default();
    let reasons: Arc<Mutex<std::collections::BTreeMap<String, usize>>> = Arc::default();
    let t_flood = Instant::now();
    let threads: Vec<_> = (0..workers)
        .map(|w| {
            let stop = Arc::clone(&stop);
            let shots = Arc::clone(&shots);
            let reasons = Arc::clone(&reasons);
            let address = address.clone();
            let socks = flooder.socks;
            let path = net.target.index_path.clone();
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let at = t_flood.elapsed().as_secs_f64();
                    let t0 = Instant::now();
                    let ok = testnet::client::http_get_via_socks(
                        socks,
                        &address,
                        80,
                        &path,
                        Some(&format!("flood-{w}-{i}")),
                        patience,
                    )
                    .map_err(|e| e.to_string())
                    .and_then(|r| match r.status {
                        200 => Ok(t0.elapsed().as_secs_f64()),
                        s => Err(format!("status {s}")),
                    });
                    let ok = match ok {
                        Ok(s) => Some(s),
                        Err(e) => {
                            // The reason, without the address.
                            let why = e.rsplit(": ").next().unwrap_or(&e).to_string();
                            *reasons.lock().unwrap().entry(why).or_insert(0usize) += 1;
                            None
                        }
                    };
                    let failed_fast = ok.is_none() && t0.elapsed() < Duration::from_secs(1);
                    shots.lock().unwrap().push(Shot { at, ok });
                    i += 1;
                    if failed_fast {
                        // The client refused at once (it holds the service unreachable for a
                        // while): no point in spinning.
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            })
        })
        .collect();

    println!(
        "{:>6} {:>6} {:>6} {:>6} {:>9} {:>9} {:>8} {:>8} {:>8} {:>10} {:>12}",
        "t(s)",
        "served",
        "own",
        "advert",
        "enqueued",
        "verified",
        "dropped",
        "expired",
        "flood ok",
        "flood fail",
        "probe"
    );
    let mut probes = Vec::new();
    let mut seen = 0usize;
    let mut risen = false;
    let mut n = 0;
    while t_flood.elapsed() < Duration::from_secs(flood_secs) {
        let tick = Instant::now();
        let at = t_flood.elapsed().as_secs_f64();
        let effort = served_effort(&hsdirs, &address);
        if effort == Some(0) && !risen && Instant::now() + probe_every < first_update {
            // Until just before the first update the flooder refreshes (still effort 0, so it
            // never solves); after that it keeps its effort-0 copy.
            flooder.newnym();
        }
        risen |= effort.is_some_and(|e| e > 0);
        let result = probe(net, &address, &format!("probe-{n}"));
        n += 1;
        let p = pow_status(&node);
        let c = &p["counters"];
        let (ok, fail) = {
            let s = shots.lock().unwrap();
            let new = &s[seen..];
            seen = s.len();
            let ok = new.iter().filter(|x| x.ok.is_some()).count();
            (ok, new.len() - ok)
        };
        println!(
            "{:>6.0} {:>6} {:>6} {:>6} {:>9} {:>9} {:>8} {:>8} {:>8} {:>10} {:>12}",
            at,
            effort.map_or("-".into(), |e| e.to_string()),
            p["own_effort"].to_string(),
            p["advertised_effort"].to_string(),
            c["enqueued"].to_string(),
            c["verified"].to_string(),
            c["dropped"].to_string(),
            c["expired"].to_string(),
            ok,
            fail,
            match &result {
                Ok(s) => format!("{s:.2} s"),
                Err(_) => "failed".into(),
            }
        );
        if let Err(e) = &result {
            eprintln!("probe at {at:.0} s: {e}");
        }
        probes.push(Probe { at, effort, result });
        std::io::stdout().flush().ok();
        // Probes every 5 s once the effort rose: the flooder gives up on its own soon after.
        let every = if risen {
            probe_every.min(Duration::from_secs(5))
        } else {
            probe_every
        };
        if let Some(rest) = every.checked_sub(tick.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    drop(flooder);

    // The summary: probes by the effort the descriptor asked for when they started; flood
    // requests over the whole flood.
    let shots = shots.lock().unwrap().clone();
    let flood_ok: Vec<f64> = shots.iter().filter_map(|s| s.ok).collect();
    let rise = probes
        .iter()
        .find(|p| p.effort.is_some_and(|e| e > 0))
        .map(|p| p.at);
    println!();
    println!(
        "baseline, no flood, effort {effort0}: {}/3 ok, {}",
        baseline.len(),
        stats(&baseline)
    );
    println!(
        "flood requests (cached effort-0 descriptor; ok = served within {patience:?}): {}/{} ok ({:.0} %), {} ({:.1} requests/s)",
        flood_ok.len(),
        shots.len(),
        100.0 * flood_ok.len() as f64 / shots.len().max(1) as f64,
        stats(&flood_ok),
        shots.len() as f64 / flood_secs as f64
    );
    for (label, solving) in [
        ("descriptor effort 0", false),
        ("descriptor effort > 0", true),
    ] {
        let set: Vec<&Probe> = probes
            .iter()
            .filter(|p| p.effort.is_some_and(|e| (e > 0) == solving))
            .collect();
        let ok: Vec<f64> = set
            .iter()
            .filter_map(|p| p.result.as_ref().ok().copied())
            .collect();
        let efforts: std::collections::BTreeSet<u32> =
            set.iter().filter_map(|p| p.effort).collect();
        println!(
            "probes under flood, {label} (efforts {efforts:?}): {}/{} ok, {}",
            ok.len(),
            set.len(),
            stats(&ok)
        );
    }
    if let Some(at) = rise {
        let before: Vec<&Shot> = shots.iter().filter(|s| s.at < at).collect();
        let after: Vec<&Shot> = shots.iter().filter(|s| s.at >= at).collect();
        for (label, set) in [("before the rise", before), ("after the rise", after)] {
            let ok: Vec<f64> = set.iter().filter_map(|s| s.ok).collect();
            println!(
                "flood requests {label}: {}/{} ok, {}",
                ok.len(),
                set.len(),
                stats(&ok)
            );
        }
        println!("the served effort first rose {at:.0} s into the flood");
    } else {
        println!("the served effort never rose above 0 during the flood");
    }
    println!("flood failures by reason: {:?}", reasons.lock().unwrap());
    println!(
        "relaunches for new seeds: {}",
        node.log().matches("to load new PoW seeds").count()
    );
    let _ = node.stop();
}
