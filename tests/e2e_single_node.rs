//! The real `rustbalance` binary, end to end, on the private Tor network: `init`, `run`,
//! `status`, a real C-tor client fetching through the master address, signals, and the errors
//! an operator sees for bad input.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::*;
use testnet::client::{http_get_via_socks, ControlConn, RequestError};

#[test]
fn tcp_target_small_and_large_files_through_the_master_address() {
    let net = testnet::fixture::shared().expect("private Tor network");
    let mut node = Node::init("tcp", &net.target.http.to_string(), net);
    node.start();
    let status = node.wait_published();
    assert_eq!(status["role"], "publisher");
    assert_eq!(status["master_address"], node.address.as_str());
    assert!(!status["intro_points"].as_array().unwrap().is_empty());

    let t0 = Instant::now();
    let page = fetch(net, &node.address, "/");
    assert_eq!(page.status, 200);
    assert_eq!(page.body, net.index_body());
    eprintln!(
        "index through the master in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let t1 = Instant::now();
    let large = fetch(net, &node.address, &net.target.large_path);
    assert!(
        large.body == net.large_body(),
        "large file differs ({} bytes)",
        large.body.len()
    );
    eprintln!(
        "{} bytes through the master in {:.2} s",
        large.body.len(),
        t1.elapsed().as_secs_f64()
    );

    let s = node.status().unwrap();
    assert!(s["proxy"]["total"].as_u64().unwrap() >= 2, "{s}");
    let human = rustbalance(&["status", "-c", node.config.to_str().unwrap()]);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("HSDirs accepted") && human.contains("role publisher"),
        "{human}"
    );
    assert!(
        !node.log().contains(&net.target.http.to_string()),
        "the target address must never be logged"
    );

    // No busy loop: the keystore is synced once per period change, not on every spin of a
    // loop woken by a closed channel (a single node has no mesh to push keys; seen: thousands
    // of syncs a second).
    let syncs = node.log().matches("blinded keys in the keystore").count();
    assert!(syncs <= 5, "{syncs} keystore syncs in one short run");

    let exit = node.stop();
    assert!(
        exit.success(),
        "SIGTERM must exit cleanly: {exit:?}\n{}",
        node.log()
    );
    assert!(
        node.status().is_none(),
        "the status endpoint is gone after shutdown"
    );
}

#[test]
fn onion_target_through_the_embedded_arti_client() {
    let net = testnet::fixture::shared().expect("private Tor network");
    let target = format!("{}:{}", net.onion_address().unwrap(), net.target.onion_port);
    let mut node = Node::init("onion", &target, net);
    node.start();
    node.wait_published();
    let page = fetch(net, &node.address, "/");
    assert_eq!(page.body, net.index_body());
    let large = fetch(net, &node.address, &net.target.large_path);
    assert!(
        large.body == net.large_body(),
        "large file differs ({} bytes)",
        large.body.len()
    );
    assert!(
        !node.log().contains(net.onion_address().unwrap()),
        "the target onion must never be logged"
    );
}

#[test]
fn target_down_gives_a_closed_stream_and_the_daemon_stays_up() {
    let net = testnet::fixture::shared().expect("private Tor network");
    let dead = format!("127.0.0.1:{}", free_port());
    let mut node = Node::init("down", &dead, net);
    node.start();
    node.wait_published();
    let t0 = Instant::now();
    // The descriptor may still be propagating: retry until the refusal (not a descriptor or
    // intro failure) comes back.
    let refusal = loop {
        match http_get_via_socks(
            net.client.socks,
            &node.address,
            80,
            "/",
            Some("down"),
            Duration::from_secs(60),
        ) {
            Err(RequestError::Socks { code, reason, .. }) if code < 0xF0 => break (code, reason),
            Ok(r) => panic!("expected a refused stream, got HTTP {}", r.status),
            Err(e) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(120),
                    "never refused cleanly: {e}"
                );
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    };
    eprintln!(
        "refused with SOCKS {:#04x} ({}) after {:.1} s",
        refusal.0,
        refusal.1,
        t0.elapsed().as_secs_f64()
    );
    // The status snapshot refreshes every second.
    let t1 = Instant::now();
    loop {
        let s = node.status().expect("the daemon is still up");
        if s["proxy"]["failed_connects"].as_u64().unwrap() >= 1 {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(10),
            "failed connect not counted: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        node.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "daemon still running"
    );
}

#[test]
fn bad_inputs_are_refused_with_clear_errors() {
    // A bad config value names the key.
    let dir = scratch("badcfg");
    std::fs::create_dir_all(&dir).unwrap();
    let out = rustbalance(&[
        "init",
        "--target",
        "127.0.0.1:9",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let cfg = dir.join("rustbalance.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace("priority = 100", "priority = 100\nintro_points = 3"),
    )
    .unwrap();
    let out = rustbalance(&["run", "-c", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `intro_points`"), "{err}");
    std::fs::write(
        &cfg,
        text.replace(
            "virtual_ports = [80]",
            "virtual_ports = [80]\nconnect_timeout = \"never\"",
        ),
    )
    .unwrap();
    let err = String::from_utf8_lossy(&rustbalance(&["run", "-c", cfg.to_str().unwrap()]).stderr)
        .into_owned();
    assert!(err.contains("target.connect_timeout = \"never\""), "{err}");

    // A key of another identity is refused before anything starts.
    std::fs::write(&cfg, &text).unwrap();
    let other = dir.join("other_key");
    assert!(
        rustbalance(&["keys", "generate", "--out", other.to_str().unwrap()])
            .status
            .success()
    );
    std::fs::rename(&other, dir.join("hs_ed25519_secret_key")).unwrap();
    let err = String::from_utf8_lossy(&rustbalance(&["run", "-c", cfg.to_str().unwrap()]).stderr)
        .into_owned();
    assert!(err.contains("master.key holds the identity of"), "{err}");

    // A key readable by others is refused, with the fix.
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("hs_ed25519_secret_key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err =
        String::from_utf8_lossy(&rustbalance(&["keys", "show", key.to_str().unwrap()]).stderr)
            .into_owned();
    assert!(err.contains("chmod 600"), "{err}");
    // A truncated key file says what is wrong.
    std::fs::write(&key, b"== ed25519v1-secret: type0 ==\0\0\0short").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err =
        String::from_utf8_lossy(&rustbalance(&["keys", "show", key.to_str().unwrap()]).stderr)
            .into_owned();
    assert!(
        err.to_lowercase().contains("length") || err.contains("bytes"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Offline-master mode: the identity secret stays on an "offline" machine; the node gets only
/// exported blinded keys, and the master address is still served.
#[test]
fn offline_master_node_serves_with_blinded_keys_only() {
    let net = testnet::fixture::shared().expect("private Tor network");
    let offline = scratch("offline-master");
    std::fs::create_dir_all(&offline).unwrap();
    let key = offline.join("hs_ed25519_secret_key");
    assert!(
        rustbalance(&["keys", "generate", "--out", key.to_str().unwrap()])
            .status
            .success()
    );
    let mut node = Node::init_with(
        "offline-node",
        &net.target.http.to_string(),
        net,
        &["--import", key.to_str().unwrap()],
    );

    // Export a day of blinded keys for this network's time periods, then take the identity
    // secret off the node.
    let blinded = node.dir.join("blinded");
    let out = rustbalance(&[
        "keys",
        "export-blinded",
        key.to_str().unwrap(),
        "--out",
        blinded.to_str().unwrap(),
        "--days",
        "1",
        "--period-length",
        &net.hsdir_interval_minutes.to_string(),
        "--period-offset",
        &(12 * net.voting_interval_secs).to_string(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
    std::fs::remove_file(node.dir.join("hs_ed25519_secret_key")).unwrap();
    let cfg = std::fs::read_to_string(&node.config).unwrap();
    std::fs::write(
        &node.config,
        cfg.replace(
            "key = \"hs_ed25519_secret_key\"",
            "blinded_keys = \"blinded\"",
        ),
    )
    .unwrap();

    node.start();
    node.wait_published();
    let page = fetch(net, &node.address, "/");
    assert_eq!(page.body, net.index_body());

    // Nowhere under the node's directory is there an identity secret.
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, found);
            } else if p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ks_hs_id")
                || p.file_name().unwrap() == "hs_ed25519_secret_key"
            {
                found.push(p);
            }
        }
    }
    let mut found = Vec::new();
    walk(&node.dir, &mut found);
    assert!(found.is_empty(), "identity secret on the node: {found:?}");
}

/// The descriptor the network actually serves, as a C-tor client cached it, decrypts with the
/// master's public key and lists exactly the intro points the daemon says it hosts.
#[test]
fn the_descriptor_a_c_tor_client_uses_lists_exactly_this_nodes_intro_points() {
    use tor_checkable::Timebound;
    use tor_hscrypto::pk::HsBlindIdKey;
    use tor_hscrypto::time::TimePeriod;
    use tor_netdoc::doc::hsdesc::HsDesc;

    let net = testnet::fixture::shared().expect("private Tor network");
    let mut node = Node::init("desc", &net.target.http.to_string(), net);
    node.start();
    let status = node.wait_published();
    assert_eq!(fetch(net, &node.address, "/").body, net.index_body());

    let master: rustbalance::keys::OnionAddress = node.address.parse().unwrap();
    let short = node.address.trim_end_matches(".onion");
    let mut control = ControlConn::connect(
        net.client.control,
        &net.client.control_cookie,
        Duration::from_secs(10),
    )
    .unwrap();
    let text = control
        .getinfo(&format!("hs/client/desc/id/{short}"))
        .expect("the client cached the descriptor");
    // Which period the client used is the client's business: try the periods we published for.
    let periods: Vec<TimePeriod> = status["periods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let slug = p["period"].as_str().unwrap();
            let parts: Vec<u64> = slug.split('_').map(|x| x.parse().unwrap()).collect();
            TimePeriod::from_parts(parts[1] as u32, parts[0], parts[2] as u32)
        })
        .collect();
    let desc = periods
        .iter()
        .find_map(|tp| {
            let (blind, subcred) = master.public_key().compute_blinded_key(*tp).ok()?;
            let blind: HsBlindIdKey = blind;
            match HsDesc::parse_decrypt_validate(&text, &blind.id(), &subcred, None) {
                Ok(d) => Some(d),
                Err(e) => {
                    eprintln!(
                        "(the cached descriptor is not for period {}: {e})",
                        tp.interval_num()
                    );
                    None
                }
            }
        })
        .expect("the served descriptor decrypts with the master's public key")
        .if_valid_at(&std::time::SystemTime::now())
        .expect("the served descriptor is valid now");
    // It declares congestion control (and the subprotocols) exactly as Arti's own publisher
    // would under this consensus (which sets no cc_* parameters): without the flow-control
    // line a C-tor client never negotiates congestion control with the node.
    let caps = rustbalance::descriptor::Capabilities::declared(
        &tor_netdir::params::NetParameters::default(),
    );
    assert!(caps.flow_control.is_some());
    assert_eq!(
        desc.flow_control().map(|(p, inc)| (p, inc.get())),
        caps.flow_control,
        "flow-control line of the descriptor the C-tor client uses"
    );
    assert_eq!(desc.declared_capabilities(), &caps.protocols);
    let mut served: Vec<String> = desc
        .intro_points()
        .iter()
        .map(|ipt| {
            ipt.link_specifiers()
                .iter()
                .find_map(|ls| match ls.parse() {
                    Ok(tor_linkspec::LinkSpec::RsaId(id)) => Some(id.to_string()),
                    _ => None,
                })
                .expect("intro point names its relay")
        })
        .collect();
    let now = node.status().unwrap();
    let mut hosted: Vec<String> = now["intro_points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["relay"].as_str().unwrap().to_string())
        .collect();
    served.sort();
    hosted.sort();
    assert_eq!(
        served, hosted,
        "served descriptor vs the daemon's intro points"
    );
    assert!(!served.is_empty() && served.len() <= 20);
}

/// systemd's `Type=notify` protocol as systemd speaks it, through a real `NOTIFY_SOCKET`:
/// status lines while Arti bootstraps, `READY=1` once the master service runs (and the node,
/// without seeds, needs no mesh), watchdog pings with `WATCHDOG_USEC` set, `STOPPING=1` on
/// SIGTERM.
#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let net = testnet::fixture::shared().expect("private Tor network");
    let mut node = Node::init("notify", &net.target.http.to_string(), net);
    let sock_path = node.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    node.start_with_env(&[
        ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
        ("WATCHDOG_USEC", "2000000"),
    ]);
    let mut heard: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    fn listen(
        sock: &UnixDatagram,
        heard: &mut Vec<String>,
        buf: &mut [u8],
        until: impl Fn(&[String]) -> bool,
        limit: Duration,
    ) {
        let t0 = Instant::now();
        while !until(heard) {
            assert!(t0.elapsed() < limit, "systemd heard only {heard:?}");
            if let Ok(n) = sock.recv(buf) {
                heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }
    listen(
        &sock,
        &mut heard,
        &mut buf,
        |h| h.iter().any(|m| m.lines().any(|l| l == "READY=1")),
        Duration::from_secs(120),
    );
    assert!(
        heard
            .iter()
            .any(|m| m.contains("STATUS=Arti bootstrapping")),
        "status lines while bootstrapping: {heard:?}"
    );
    let ready = heard.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(
        ready.contains("STATUS=serving the master address"),
        "{ready}"
    );
    listen(
        &sock,
        &mut heard,
        &mut buf,
        |h| h.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2,
        Duration::from_secs(10),
    );
    let code = node.stop();
    assert!(code.success(), "clean stop: {code:?}");
    while let Ok(n) = sock.recv(&mut buf) {
        heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        heard.iter().any(|m| m.contains("STOPPING=1")),
        "STOPPING=1 on SIGTERM: {heard:?}"
    );
}
