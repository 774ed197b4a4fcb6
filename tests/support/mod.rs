//! Driving real `rustbalance` processes for the integration tests and benchmarks: node
//! directories made by `rustbalance init`, the daemon started and stopped (SIGTERM or
//! `kill -9`), its status read over its HTTP endpoint, clusters wired with `[mesh]` sections.
//! Included by tests with `mod support;` and by benches with `#[path]`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use testnet::client::{http_get_via_socks, ControlConn, HttpResponse};
use testnet::Description;

pub const BIN: &str = env!("CARGO_BIN_EXE_rustbalance");

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh scratch directory under the target's tmp dir.
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Runs the binary to completion.
pub fn rustbalance(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run rustbalance")
}

/// Runs the binary and returns its stdout, panicking with stderr on failure.
pub fn rustbalance_ok(args: &[&str]) -> String {
    let out = rustbalance(args);
    assert!(
        out.status.success(),
        "rustbalance {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// GET /status from a daemon's endpoint, as JSON (None if it does not answer).
pub fn status_at(addr: &str) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /status HTTP/1.0\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    (status_line.starts_with("HTTP/1.") && status_line.contains(" 200 "))
        .then(|| serde_json::from_str(body).ok())?
}

/// GET /metrics from a daemon's endpoint: the value of each sample line (`name{labels}`).
pub fn metrics_at(addr: &str) -> Option<std::collections::BTreeMap<String, f64>> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.lines().next()?.contains(" 200 ") {
        return None;
    }
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect(),
    )
}

/// A node directory made by `rustbalance init`, and its daemon once started.
pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub address: String,
    pub status_addr: String,
    pub child: Option<Child>,
    starts: u32,
    /// What `init` printed (the join line, with `--endpoint`).
    pub init_output: String,
}

impl Node {
    pub fn init(name: &str, target: &str, net: &Description) -> Node {
        Node::init_with(name, target, net, &[])
    }

    pub fn init_with(name: &str, target: &str, net: &Description, extra: &[&str]) -> Node {
        let dir = scratch(name);
        let status_addr = format!("127.0.0.1:{}", free_port());
        let args: Vec<&str> = [
            "init",
            "--target",
            target,
            "--dir",
            dir.to_str().unwrap(),
            "--node-id",
            name,
            "--arti-config",
            net.arti_config.to_str().unwrap(),
            "--status-listen",
            &status_addr,
        ]
        .iter()
        .chain(extra)
        .copied()
        .collect();
        let text = rustbalance_ok(&args);
        let address = text
            .lines()
            .find_map(|l| l.strip_prefix("master address: "))
            .expect("init prints the master address")
            .to_string();
        Node {
            name: name.to_string(),
            config: dir.join("rustbalance.toml"),
            dir,
            address,
            status_addr,
            child: None,
            starts: 0,
            init_output: text,
        }
    }

    /// A node directory written by something else (`rustbalance join`).
    pub fn existing(name: &str, dir: PathBuf, address: &str, status_addr: &str) -> Node {
        Node {
            name: name.to_string(),
            config: dir.join("rustbalance.toml"),
            dir,
            address: address.to_string(),
            status_addr: status_addr.to_string(),
            child: None,
            starts: 0,
            init_output: String::new(),
        }
    }

    /// The join line `init --endpoint` printed.
    pub fn join_line(&self) -> String {
        self.init_output
            .lines()
            .find(|l| l.starts_with("rbjoin1:"))
            .expect("init --endpoint prints a join line")
            .to_string()
    }

    /// The auth keys (hex) of this node's own intro points, from its status.
    pub fn auth_keys(&self) -> BTreeSet<String> {
        auth_keys_at(&self.status_addr)
    }

    /// The master identity key file `init` wrote.
    pub fn key_file(&self) -> PathBuf {
        self.dir.join("hs_ed25519_secret_key")
    }

    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts the daemon with its wall clock `offset` off (libfaketime, e.g. `"+15m"`); the
    /// monotonic clock is left alone.
    pub fn start_with_clock_offset(&mut self, offset: &str) {
        let lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
        assert!(
            Path::new(lib).exists(),
            "{lib} missing: install Debian's faketime (testing/run-tests.sh does)"
        );
        self.start_with_env(&[
            ("LD_PRELOAD", lib),
            ("FAKETIME", offset),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]);
    }

    /// Starts the daemon with extra environment variables.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        self.starts += 1;
        let log = self.open_log();
        let child = Command::new(BIN)
            .args(["run", "-c", self.config.to_str().unwrap()])
            // RB_TEST_LOG (a RUST_LOG filter) turns up a node's logging when debugging a test.
            .env(
                "RUST_LOG",
                std::env::var("RB_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// The daemon's log file, opened for appending.
    fn open_log(&self) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap()
    }

    /// Starts the daemon inside the cgroup `cg` from its first instruction (so every socket it
    /// opens belongs to it, which is what [`TorCut`] matches).
    pub fn start_in(&mut self, cg: &Cgroup) {
        self.starts += 1;
        let log = self.open_log();
        let procs = cg.path.join("cgroup.procs");
        let child = Command::new("sh")
            .args([
                "-c",
                "echo $$ > \"$0\" && exec \"$@\"",
                procs.to_str().unwrap(),
                BIN,
                "run",
                "-c",
                self.config.to_str().unwrap(),
            ])
            .env(
                "RUST_LOG",
                std::env::var("RB_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn status(&self) -> Option<serde_json::Value> {
        status_at(&self.status_addr)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Panics with the log if the daemon exited.
    pub fn assert_running(&mut self) {
        if let Some(Ok(Some(code))) = self.child.as_mut().map(|c| c.try_wait()) {
            panic!("{} exited with {code}:\n{}", self.name, self.log());
        }
    }

    /// Waits until a descriptor is on at least one HSDir; returns the status then.
    pub fn wait_published(&mut self) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.status() {
                if published(&s) {
                    eprintln!("published {:.1} s after start", t0.elapsed().as_secs_f64());
                    return s;
                }
            }
            self.assert_running();
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "nothing published in 120 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's PID.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit (30 s at most).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("started");
        // SAFETY: kill(2) on our own child's PID.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let t0 = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no exit 30 s after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether a status shows a descriptor accepted by at least one HSDir.
pub fn published(s: &serde_json::Value) -> bool {
    s["periods"].as_array().into_iter().flatten().any(|p| {
        p["hsdirs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|h| h["ok"] == true)
    })
}

/// GET through the C-tor client with retries (a fresh descriptor may still be propagating).
pub fn fetch(net: &Description, onion: &str, path: &str) -> HttpResponse {
    let t0 = Instant::now();
    loop {
        match http_get_via_socks(
            net.client.socks,
            onion,
            80,
            path,
            Some(path),
            Duration::from_secs(60),
        ) {
            Ok(r) => return r,
            Err(e) if t0.elapsed() < Duration::from_secs(120) => {
                eprintln!("fetch {path}: {e}; retrying");
                newnym(net);
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(e) => panic!("C-tor client could not fetch {path} through the master: {e}"),
        }
    }
}

/// Asks the C-tor client for new circuits.
pub fn newnym(net: &Description) {
    if let Ok(mut c) = ControlConn::connect(
        net.client.control,
        &net.client.control_cookie,
        Duration::from_secs(5),
    ) {
        let _ = c.command("SIGNAL NEWNYM");
    }
}

/// One node of a test cluster: its directory, mesh key and port.
pub struct ClusterNode {
    pub node: Node,
    pub public_key: String,
    pub mesh_port: u16,
}

impl ClusterNode {
    pub fn seed(&self) -> (String, u16) {
        (self.public_key.clone(), self.mesh_port)
    }

    /// The `cluster` part of the status.
    pub fn mesh(&self) -> Option<serde_json::Value> {
        self.node.status().map(|s| s["cluster"].clone())
    }
}

/// Creates a cluster node: `init` (importing `master_key` if given), a mesh key, the
/// `[mesh]` section with `token` and `seeds`, and `node.priority`.
pub fn cluster_node(
    name: &str,
    target: &str,
    net: &Description,
    master_key: Option<&Path>,
    priority: u32,
    token: &Path,
    seeds: &[(String, u16)],
) -> ClusterNode {
    let import;
    let extra: Vec<&str> = match master_key {
        Some(k) => {
            import = k.to_str().unwrap().to_string();
            vec!["--import", &import]
        }
        None => vec![],
    };
    let node = Node::init_with(name, target, net, &extra);
    let key = node.dir.join("mesh.key");
    let out = rustbalance_ok(&["keys", "mesh-generate", "--out", key.to_str().unwrap()]);
    let public_key = out
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .expect("mesh-generate prints the public key")
        .to_string();
    let mesh_port = free_udp_port();
    let seeds_toml: Vec<String> = seeds
        .iter()
        .map(|(k, p)| format!("{{ public_key = \"{k}\", endpoint = \"127.0.0.1:{p}\" }}"))
        .collect();
    let mut text = std::fs::read_to_string(&node.config).unwrap();
    text = text.replace("priority = 100", &format!("priority = {priority}"));
    text.push_str(&format!(
        "\n[mesh]\nlisten = \"127.0.0.1:{mesh_port}\"\nprivate_key_file = \"mesh.key\"\n\
         cluster_token_file = {:?}\nseeds = [{}]\n",
        token.to_str().unwrap(),
        seeds_toml.join(", ")
    ));
    std::fs::write(&node.config, text).unwrap();
    ClusterNode {
        node,
        public_key,
        mesh_port,
    }
}

/// A new cluster token file in `dir`.
pub fn new_token(dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    rustbalance_ok(&["keys", "token-generate", "--out", p.to_str().unwrap()]);
    p
}

/// Polls `check` every 200 ms until it returns Some, or panics after `limit` with `what`.
pub fn wait_for<T>(limit: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    poll_for(limit, check).unwrap_or_else(|| panic!("timed out after {limit:?}: {what}"))
}

/// Polls `check` every 200 ms until it returns Some, or None after `limit`.
pub fn poll_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if t0.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The node ids a mesh status lists as live (alive or suspect).
pub fn live_members(mesh: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = mesh["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["liveness"] != "down")
        .filter_map(|m| m["node_id"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// The role a mesh status reports ("publisher" / "standby").
pub fn role(mesh: &serde_json::Value) -> String {
    mesh["role"].as_str().unwrap_or("").to_string()
}

/// A member's entry in a mesh status.
pub fn member<'a>(mesh: &'a serde_json::Value, node_id: &str) -> Option<&'a serde_json::Value> {
    mesh["members"]
        .as_array()?
        .iter()
        .find(|m| m["node_id"] == node_id)
}

/// Benches run from `target/release/deps`: point the fixture at a built `testnet` binary.
pub fn locate_testnet_bin() {
    if std::env::var_os("RUSTBALANCE_TESTNET_BIN").is_some() {
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let target = exe.ancestors().nth(3).map(Path::to_path_buf);
    let found = target.into_iter().flat_map(|t| {
        ["release", "debug"]
            .into_iter()
            .map(move |p| t.join(p).join("testnet"))
    });
    if let Some(p) = found.into_iter().find(|p| p.is_file()) {
        std::env::set_var("RUSTBALANCE_TESTNET_BIN", p);
    }
}

/// `min / median / max` of a sample.
pub fn summary(values: &[f64], unit: &str, prec: usize) -> String {
    format!(
        "min {:.prec$} {unit}  median {:.prec$} {unit}  max {:.prec$} {unit}  (n = {})",
        values.iter().copied().fold(f64::INFINITY, f64::min),
        median(values),
        values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        values.len()
    )
}

/// The median of a sample.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Each period's revision counter in a status (`period slug`, `revision`).
pub fn revisions(status: &serde_json::Value) -> Vec<(String, u64)> {
    status["periods"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["period"].as_str().unwrap_or_default().to_string(),
                p["revision"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The auth keys (hex) of a node's own intro points, from its status.
pub fn own_auth_keys(n: &ClusterNode) -> BTreeSet<String> {
    n.node.auth_keys()
}

/// The auth keys (hex) of the own intro points of the node whose status endpoint is `addr`.
pub fn auth_keys_at(addr: &str) -> BTreeSet<String> {
    status_at(addr)
        .map(|s| {
            s["intro_points"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["auth_key"].as_str())
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a descriptor's intro points (`served`) come from these nodes only and include at
/// least one of each. Not all of each: the publisher lists one intro point per relay (a C tor
/// client only ever uses the first entry on a relay), and the private network has 8 relays.
pub fn serves_every_node(served: &BTreeSet<String>, nodes: &[BTreeSet<String>]) -> bool {
    let all: BTreeSet<&String> = nodes.iter().flatten().collect();
    !served.is_empty()
        && served.iter().all(|k| all.contains(k))
        && nodes.iter().all(|n| !n.is_disjoint(served))
}

/// Reads what the HSDirs serve, with an embedded Arti client of its own (so polling never
/// disturbs the C-tor client that the tests use as the user: C tor does not re-ask an HSDir
/// it asked within 15 minutes, and `HSFETCH` polling would use them all up).
pub struct HsDirs {
    runtime: tokio::runtime::Runtime,
    client: Arc<arti_client::TorClient<tor_rtcompat::PreferredRuntime>>,
}

impl HsDirs {
    /// Bootstraps the poller's Arti client on the test network (state under `dir`).
    pub fn new(net: &Description, dir: &Path) -> HsDirs {
        use arti_client::config::{CfgPath, TorClientConfigBuilder};
        rustbalance::install_crypto_provider();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let text = std::fs::read_to_string(&net.arti_config).unwrap();
        let mut builder: TorClientConfigBuilder = toml::from_str(&text).unwrap();
        builder
            .storage()
            .state_dir(CfgPath::new_literal(dir.join("poller-state")))
            .cache_dir(CfgPath::new_literal(dir.join("poller-cache")));
        let config = builder.build().unwrap();
        let client = runtime
            .block_on(arti_client::TorClient::create_bootstrapped(config))
            .expect("poller bootstrap");
        HsDirs { runtime, client }
    }

    /// How long the current time period has left, by the poller's consensus (`None` before it
    /// has one). The test network's periods last 6 minutes: a test that must not see clients
    /// switch periods mid-way waits for a fresh one.
    pub fn period_left(&self) -> Option<Duration> {
        let netdir = self.client.dirmgr().ok()?.timely_netdir().ok()?;
        let end = netdir.hs_time_period().range().ok()?.end;
        Some(
            end.duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    }

    /// The intro points' auth keys (hex) of the descriptors served now for the current period
    /// by every HSDir a client may ask, if all that answer agree; `None` while they differ
    /// (an upload still under way) or none answers.
    pub fn descriptor(&self, address: &str) -> Option<BTreeSet<String>> {
        let sets = self.per_hsdir(address);
        let first = sets.first()?.clone();
        sets.iter().all(|s| *s == first).then_some(first)
    }

    /// The auth-key sets served by each HSDir that answered, for the current period.
    pub fn per_hsdir(&self, address: &str) -> Vec<BTreeSet<String>> {
        self.per_hsdir_as(address, None)
    }

    /// [`HsDirs::descriptor`] as a restricted-discovery client holding `key` reads it: `None`
    /// also while the served descriptors do not open for that key.
    pub fn descriptor_as(
        &self,
        address: &str,
        key: &tor_hscrypto::pk::HsClientDescEncKeypair,
    ) -> Option<BTreeSet<String>> {
        let sets = self.per_hsdir_as(address, Some(key));
        let first = sets.first()?.clone();
        sets.iter().all(|s| *s == first).then_some(first)
    }

    /// How many HSDirs a client may ask answer with a descriptor that opens for `key`, and how
    /// many answered at all.
    pub fn opening_for(
        &self,
        address: &str,
        key: Option<&tor_hscrypto::pk::HsClientDescEncKeypair>,
    ) -> (usize, usize) {
        let texts = self.texts(address);
        let Ok(master) = address.parse::<rustbalance::keys::OnionAddress>() else {
            return (0, 0);
        };
        let Some(tp) = self.period() else {
            return (0, 0);
        };
        let Ok((blind, subcred)) = master.public_key().compute_blinded_key(tp) else {
            return (0, 0);
        };
        let opening = texts
            .iter()
            .filter(|t| {
                tor_netdoc::doc::hsdesc::HsDesc::parse_decrypt_validate(
                    t,
                    &blind.id(),
                    &subcred,
                    key,
                )
                .is_ok()
            })
            .count();
        (opening, texts.len())
    }

    /// One descriptor the HSDirs serve now for the current period that opens (for `key`, if
    /// given) and is valid: its text and its parsed, decrypted form.
    pub fn served(
        &self,
        address: &str,
        key: Option<&tor_hscrypto::pk::HsClientDescEncKeypair>,
    ) -> Option<(String, tor_netdoc::doc::hsdesc::HsDesc)> {
        use tor_checkable::Timebound;
        let master = address.parse::<rustbalance::keys::OnionAddress>().ok()?;
        let tp = self.period()?;
        let (blind, subcred) = master.public_key().compute_blinded_key(tp).ok()?;
        let now = std::time::SystemTime::now();
        self.texts(address).into_iter().find_map(|text| {
            let d = tor_netdoc::doc::hsdesc::HsDesc::parse_decrypt_validate(
                &text,
                &blind.id(),
                &subcred,
                key,
            )
            .ok()?
            .if_valid_at(&now)
            .ok()?;
            Some((text, d))
        })
    }

    /// The current time period by the poller's consensus.
    pub fn period(&self) -> Option<tor_hscrypto::time::TimePeriod> {
        let netdir = self.client.dirmgr().ok()?.timely_netdir().ok()?;
        Some(netdir.hs_time_period())
    }

    /// The descriptor texts the HSDirs a client may ask serve for the current period.
    fn texts(&self, address: &str) -> Vec<String> {
        let Ok(master) = address.parse::<rustbalance::keys::OnionAddress>() else {
            return Vec::new();
        };
        let client = Arc::clone(&self.client);
        self.runtime.block_on(async move {
            let Ok(dirmgr) = client.dirmgr() else {
                return Vec::new();
            };
            let Ok(netdir) = dirmgr.timely_netdir() else {
                return Vec::new();
            };
            let Ok(pool) = client.hs_circ_pool() else {
                return Vec::new();
            };
            let tp = netdir.hs_time_period();
            let Ok((blind, _)) = master.public_key().compute_blinded_key(tp) else {
                return Vec::new();
            };
            rustbalance::publisher::fetch_from_hsdirs(
                client.runtime(),
                &pool,
                &netdir,
                blind.id(),
                tp,
            )
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .collect()
        })
    }

    fn per_hsdir_as(
        &self,
        address: &str,
        key: Option<&tor_hscrypto::pk::HsClientDescEncKeypair>,
    ) -> Vec<BTreeSet<String>> {
        use tor_checkable::Timebound;
        use tor_netdoc::doc::hsdesc::HsDesc;
        let Ok(master) = address.parse::<rustbalance::keys::OnionAddress>() else {
            return Vec::new();
        };
        let Some(tp) = self.period() else {
            return Vec::new();
        };
        let Ok((blind, subcred)) = master.public_key().compute_blinded_key(tp) else {
            return Vec::new();
        };
        let now = std::time::SystemTime::now();
        self.texts(address)
            .iter()
            .filter_map(|text| {
                HsDesc::parse_decrypt_validate(text, &blind.id(), &subcred, key)
                    .ok()?
                    .if_valid_at(&now)
                    .ok()
            })
            .map(|d| {
                d.intro_points()
                    .iter()
                    .map(|i| {
                        let k: &tor_llcrypto::pk::ed25519::PublicKey = i.ipt_sid_key().as_ref();
                        k.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
                    })
                    .collect()
            })
            .collect()
    }
}

/// One GET of the index page through the C-tor client on circuits of its own (SOCKS isolation
/// `iso`), no retries: the error text on failure.
pub fn get_once(net: &Description, address: &str, iso: &str) -> Result<u16, String> {
    http_get_via_socks(
        net.client.socks,
        address,
        80,
        &net.target.index_path,
        Some(iso),
        Duration::from_secs(60),
    )
    .map(|r| r.status)
    .map_err(|e| e.to_string())
}

/// A client that keeps requesting the index page through the master address, each request
/// on fresh circuits (its own SOCKS isolation).
pub struct Client {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Client {
    pub fn start(net: &'static Description, address: String) -> Client {
        Client::start_with(net, address, 1, Duration::from_millis(200))
    }

    /// `threads` requesters, each pausing `pause` between requests.
    pub fn start_with(
        net: &'static Description,
        address: String,
        threads: usize,
        pause: Duration,
    ) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        for t in 0..threads {
            let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
            let address = address.clone();
            handles.push(std::thread::spawn(move || {
                let mut i = 0u64;
                while !s.load(Ordering::Relaxed) {
                    i += 1;
                    let iso = format!("req-{t}-{i}");
                    match http_get_via_socks(
                        net.client.socks,
                        &address,
                        80,
                        "/",
                        Some(&iso),
                        Duration::from_secs(30),
                    ) {
                        Ok(r) if r.status == 200 && r.body == net.index_body() => {
                            o.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            eprintln!("client: status {}", r.status);
                            f.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("client: {e}");
                            f.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(pause);
                }
            }));
        }
        Client {
            stop,
            ok,
            failed,
            threads: handles,
        }
    }

    pub fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.counts()
    }
}

/// Three cluster nodes on the network's HTTP target sharing one master key and token:
/// `<prefix>-a` (priority 10, no seeds), `-b` (20, seeds a), `-c` (30, seeds a and b). Not
/// started.
pub fn trio(prefix: &str, net: &Description, token: &Path) -> [ClusterNode; 3] {
    let target = net.target.http.to_string();
    let a = cluster_node(&format!("{prefix}-a"), &target, net, None, 10, token, &[]);
    let key = a.node.key_file();
    let b = cluster_node(
        &format!("{prefix}-b"),
        &target,
        net,
        Some(&key),
        20,
        token,
        &[a.seed()],
    );
    let c = cluster_node(
        &format!("{prefix}-c"),
        &target,
        net,
        Some(&key),
        30,
        token,
        &[a.seed(), b.seed()],
    );
    [a, b, c]
}

/// A positive count from the environment, or `default` when unset; any other value stops the
/// run naming the variable (a typo must not silently become the default).
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("{name}={v:?}: expected a positive integer")),
        Err(_) => default,
    }
}

/// How `join_node` hands the join line to `rustbalance join`.
pub enum LineFrom<'a> {
    /// `--line-file`.
    File(&'a str),
    /// Standard input (`-`).
    Stdin(&'a str),
}

/// Runs `rustbalance join` for a new node directory `name` on `target`, its mesh on a fresh
/// loopback UDP port. Returns the node (not started), how long `join` took, and its output.
pub fn join_node(
    name: &str,
    line: LineFrom<'_>,
    target: &str,
    net: &Description,
) -> (Node, Duration, Output) {
    let dir = scratch(name);
    let _ = std::fs::remove_dir_all(&dir);
    let status_addr = format!("127.0.0.1:{}", free_port());
    let endpoint = format!("127.0.0.1:{}", free_udp_port());
    let line_file = std::env::temp_dir().join(format!("{name}-{}.line", std::process::id()));
    let address = line_master(match &line {
        LineFrom::File(l) | LineFrom::Stdin(l) => l,
    });
    let mut args: Vec<String> = vec!["join".into()];
    let stdin_text = match line {
        LineFrom::File(l) => {
            std::fs::write(&line_file, l).unwrap();
            args.extend(["--line-file".into(), line_file.display().to_string()]);
            None
        }
        LineFrom::Stdin(l) => {
            args.push("-".into());
            Some(l.to_string())
        }
    };
    args.extend(
        [
            "--target",
            target,
            "--endpoint",
            &endpoint,
            "--listen",
            &endpoint,
            "--dir",
            dir.to_str().unwrap(),
            "--node-id",
            name,
            "--arti-config",
            net.arti_config.to_str().unwrap(),
            "--status-listen",
            &status_addr,
        ]
        .map(String::from),
    );
    let t0 = Instant::now();
    let mut child = Command::new(BIN)
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rustbalance join");
    if let Some(text) = stdin_text {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{text}\n").as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    let took = t0.elapsed();
    let _ = std::fs::remove_file(&line_file);
    (Node::existing(name, dir, &address, &status_addr), took, out)
}

/// The master address a join line names.
pub fn line_master(line: &str) -> String {
    rustbalance::join::invite::Invite::parse(line)
        .expect("a join line")
        .master
        .to_string()
}

/// Each node's count of streams proxied so far.
pub fn proxy_totals(nodes: &[&Node]) -> Vec<u64> {
    nodes
        .iter()
        .map(|n| n.status().unwrap()["proxy"]["total"].as_u64().unwrap())
        .collect()
}

/// Waits until `client`'s requests have gone through every node (each node's stream count
/// above `before`). The C-tor client keeps an intro circuit it has: every 10 s (tor's rate
/// limit) it is asked for new identities, so it picks intro points afresh, and what each node
/// sees is printed (introductions that reached it, its intro points on the HSDirs).
pub fn wait_streams_through_every_node(
    net: &Description,
    nodes: &[&Node],
    before: &[u64],
    client: &Client,
    hsdirs: &HsDirs,
    address: &str,
    limit: Duration,
) {
    let mut last_newnym = Instant::now();
    wait_for(limit, "streams through every node", || {
        let through: Vec<u64> = nodes
            .iter()
            .zip(before)
            .map(|(n, b)| {
                n.status().map_or(0, |s| {
                    s["proxy"]["total"].as_u64().unwrap_or(0).saturating_sub(*b)
                })
            })
            .collect();
        if through.iter().all(|t| *t > 0) {
            eprintln!(
                "streams per node: {through:?} (client ok/failed {:?})",
                client.counts()
            );
            return Some(());
        }
        if last_newnym.elapsed() > Duration::from_secs(10) {
            newnym(net);
            last_newnym = Instant::now();
            let rendezvous: Vec<u64> = nodes
                .iter()
                .map(|n| {
                    n.status()
                        .map_or(0, |s| s["proxy"]["rendezvous"].as_u64().unwrap_or(0))
                })
                .collect();
            let listed = hsdirs.descriptor(address).unwrap_or_default();
            let on_hsdirs: Vec<usize> = nodes
                .iter()
                .map(|n| n.auth_keys().intersection(&listed).count())
                .collect();
            eprintln!(
                "streams per node so far: {through:?}; rendezvous requests {rendezvous:?}; \
                 own intro points on the HSDirs {on_hsdirs:?} (client ok/failed {:?})",
                client.counts()
            );
        }
        None
    });
}

/// A cgroup (v2) of its own for one test process; removed on drop.
pub struct Cgroup {
    /// Its directory.
    pub path: PathBuf,
    /// Its path relative to the cgroup2 root (what `iptables -m cgroup --path` takes).
    pub relative: String,
}

impl Cgroup {
    /// Creates `rustbalance-test-<pid>-<name>` under the cgroup2 mount. Panics, naming what is
    /// missing, when the machine has no writable cgroup2 hierarchy.
    pub fn new(name: &str) -> Cgroup {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let root = mounts
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
            })
            .expect("a cgroup2 hierarchy in /proc/mounts (needed to cut one node's Tor traffic)");
        let relative = format!("rustbalance-test-{}-{name}", std::process::id());
        let path = root.join(&relative);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating the cgroup {}: {e}", path.display()));
        Cgroup { path, relative }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Empty once its processes are gone; a few tries while they exit.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Cuts the Tor traffic of every process in a cgroup: an iptables rule resets every TCP
/// connection it opens or has open, except on the `keep` ports (its status endpoint, its
/// target). UDP (the mesh) is untouched. The rule goes when this is dropped.
pub struct TorCut {
    rule: Vec<String>,
}

impl TorCut {
    pub fn new(cg: &Cgroup, keep: &[u16]) -> TorCut {
        let ports: Vec<String> = keep.iter().map(u16::to_string).collect();
        let rule: Vec<String> = [
            "OUTPUT",
            "-m",
            "cgroup",
            "--path",
            &cg.relative,
            "-p",
            "tcp",
            "-m",
            "multiport",
            "!",
            "--ports",
            &ports.join(","),
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = Command::new("iptables")
            .arg("-A")
            .args(&rule)
            .output()
            .expect("iptables (Debian's iptables package; testing/run-tests.sh installs it)");
        assert!(
            out.status.success(),
            "iptables -A {}: {}",
            rule.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        TorCut { rule }
    }
}

impl Drop for TorCut {
    fn drop(&mut self) {
        let _ = Command::new("iptables").arg("-D").args(&self.rule).output();
    }
}

/// Every socket operation of [`timed_get`] (SOCKS connect, each read and write).
pub const OP_TIMEOUT: Duration = Duration::from_secs(60);

/// One timed GET.
pub struct Fetch {
    /// SOCKS connect start → first response byte.
    pub ttfb: Duration,
    /// First response byte → end of stream.
    pub transfer: Duration,
    /// Body bytes (after the header).
    pub body: usize,
}

/// GET `path` on `host:port` through the C-tor client with its own isolation username, timing
/// the first byte, and checks the body equals `expected` exactly.
pub fn timed_get(
    net: &Description,
    host: &str,
    port: u16,
    path: &str,
    user: &str,
    expected: &[u8],
) -> Result<Fetch, String> {
    let t0 = Instant::now();
    let mut s =
        testnet::client::socks5_connect(net.client.socks, host, port, Some(user), OP_TIMEOUT)
            .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send GET: {e}"))?;
    let mut raw = Vec::with_capacity(expected.len() + 512);
    let mut buf = vec![0u8; 64 * 1024];
    let mut first: Option<Instant> = None;
    loop {
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("read after {} bytes: {e}", raw.len()))?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        raw.extend_from_slice(&buf[..n]);
    }
    let end = Instant::now();
    let first = first.ok_or("stream closed before any response byte")?;
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP header end in {} bytes", raw.len()))?;
    let status_line = String::from_utf8_lossy(
        &raw[..raw[..head_end]
            .iter()
            .position(|b| *b == b'\r')
            .unwrap_or(head_end)],
    )
    .into_owned();
    if !status_line.starts_with("HTTP/1.0 200") && !status_line.starts_with("HTTP/1.1 200") {
        return Err(format!("unexpected status line {status_line:?}"));
    }
    let body = &raw[head_end + 4..];
    if body != expected {
        return Err(format!(
            "body differs: {} bytes received, {} expected",
            body.len(),
            expected.len()
        ));
    }
    Ok(Fetch {
        ttfb: first - t0,
        transfer: end - first,
        body: body.len(),
    })
}

/// The plain Arti onion service (`testing/arti-plain-service/main.rs`, the cargo example
/// `arti_plain_service`: Arti's own publisher and reverse proxy, no RustBalance code), serving
/// the network's HTTP target on port 80; killed on drop.
pub struct PlainArti {
    pub child: Child,
    pub address: String,
}

impl PlainArti {
    /// Starts it with its state under `dir`, in restricted discovery for `auth` (C tor
    /// `descriptor:x25519:` keys) if any. The example is built first if this profile lacks it
    /// (`cargo test` builds it; `cargo bench` may not).
    pub fn start(net: &Description, dir: &Path, auth: &[String]) -> PlainArti {
        PlainArti::start_with(net, dir, auth, false)
    }

    /// [`PlainArti::start`], with Arti's proof of work on if `pow`.
    pub fn start_with(net: &Description, dir: &Path, auth: &[String], pow: bool) -> PlainArti {
        use std::io::BufRead as _;
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap(); // target/<profile>/deps
        let bin = profile_dir.join("examples").join("arti_plain_service");
        if !bin.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut c = Command::new(cargo);
            c.args(["build", "--example", "arti_plain_service"]);
            if profile_dir.file_name().is_some_and(|p| p == "release") {
                // `cargo bench` builds with the bench profile into target/release.
                c.args(["--profile", "bench"]);
            }
            assert!(
                c.status().unwrap().success(),
                "building the plain Arti service"
            );
        }
        std::fs::create_dir_all(dir).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.args(["--arti-config", net.arti_config.to_str().unwrap()])
            .args(["--dir", dir.to_str().unwrap()])
            .args(["--target", &net.target.http.to_string()]);
        for a in auth {
            cmd.args(["--auth-client", a]);
        }
        if pow {
            cmd.arg("--pow");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .strip_prefix("address: ")
            .expect("the plain Arti service prints its address")
            .trim()
            .to_string();
        PlainArti { child, address }
    }
}

impl Drop for PlainArti {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
