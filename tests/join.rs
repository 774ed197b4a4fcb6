//! Two lines to a cluster, on the private Tor network with real binaries and a C-tor client as
//! the judge: `init --endpoint` on node a prints a join line; `rustbalance join` on b (line from
//! a file) and c (line from stdin, a fresh `invite`) reach the master address over Tor, get the
//! cluster's token, members and BLINDED keys only, and run as normal nodes. All three end up in
//! one mesh and in the descriptor the HSDirs serve; the C-tor client reaches the target through
//! each. A used invite is refused on the joiner with its reason, counted on the cluster; a plain
//! client on the join port gets a refusal frame and the target never sees it. Across a
//! time-period boundary the key holder (a) pushes b the next periods' blinded keys and b stays
//! in the descriptor.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const LIMIT: Duration = Duration::from_secs(120);

/// An HTTP target that counts the requests naming `Host: join-probe` it gets (what the plain
/// client sends on the join port: the health probes and the real clients send other bytes).
fn counting_target(body: &'static [u8]) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let h = h.clone();
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 2048];
                let n = conn.read(&mut buf).unwrap_or(0);
                if buf[..n].windows(17).any(|w| w == b"Host: join-probe\r") {
                    h.fetch_add(1, Ordering::Relaxed);
                }
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(body);
            });
        }
    });
    (addr, hits)
}

fn blinded_files(n: &Node) -> BTreeSet<String> {
    std::fs::read_dir(n.dir.join("blinded"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| f.starts_with("blinded-"))
                .collect()
        })
        .unwrap_or_default()
}

fn every_node_served(nodes: &[&Node], hsdirs: &HsDirs, address: &str) -> Option<usize> {
    let own: Vec<BTreeSet<String>> = nodes.iter().map(|n| n.auth_keys()).collect();
    let d = hsdirs.descriptor(address)?;
    serves_every_node(&d, &own).then_some(d.len())
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn init_then_join_lines_make_a_three_node_cluster_with_blinded_keys_only() {
    let net = testnet::fixture::shared().expect("private Tor network");
    let dir = scratch("join");
    std::fs::create_dir_all(&dir).unwrap();
    let hsdirs = HsDirs::new(net, &dir);
    let body: &'static [u8] = Box::leak(net.index_body().to_vec().into_boxed_slice());
    let (target, hits) = counting_target(body);

    // Node a: `init --endpoint` makes everything and prints the master address and a join line.
    let a_endpoint = format!("127.0.0.1:{}", free_udp_port());
    let mut a = Node::init_with(
        "join-a",
        &target,
        net,
        &["--endpoint", &a_endpoint, "--listen", &a_endpoint],
    );
    let line = a.join_line();
    // Keys handed out and pushed cover one period ahead only, so b's keys after the boundary
    // below can only come from a's push (the grant gave the previous, current and next).
    let mut text = std::fs::read_to_string(&a.config).unwrap();
    text.push_str("\n[join]\nshare_periods = 1\n");
    std::fs::write(&a.config, text).unwrap();
    a.start();
    a.wait_published();
    let address = a.address.clone();
    assert_eq!(line_master(&line), address);

    // Node b joins with the line from a file; node c with a fresh invite on stdin.
    let (mut b, took_b, out) = join_node("join-b", LineFrom::File(&line), &target, net);
    assert!(
        out.status.success(),
        "join b failed:\n{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        a.log()
    );
    eprintln!("join b took {:.1} s", took_b.as_secs_f64());
    assert!(stdout(&out).contains("joined the cluster of"));
    assert!(
        !b.dir.join("hs_ed25519_secret_key").exists(),
        "a joined node holds blinded keys only"
    );
    let granted_b = blinded_files(&b);
    assert_eq!(granted_b.len(), 3, "previous, current, next: {granted_b:?}");
    assert!(
        !stderr(&out).contains(&line[10..40]),
        "the line is never echoed"
    );

    // The same single-use line again: refused on the joiner with its reason, nothing written.
    let (used, _, out) = join_node("join-x", LineFrom::File(&line), &target, net);
    assert!(!out.status.success(), "a used invite must be refused");
    assert!(
        stderr(&out).contains("already used"),
        "the joiner says why: {}",
        stderr(&out)
    );
    assert!(!used.config.exists(), "a refused join writes no config");

    let invite = rustbalance_ok(&["invite", "-c", a.config.to_str().unwrap(), "--ttl", "10m"]);
    let (mut c, took_c, out) = join_node("join-c", LineFrom::Stdin(invite.trim()), &target, net);
    assert!(out.status.success(), "join c failed:\n{}", stderr(&out));
    eprintln!("join c took {:.1} s", took_c.as_secs_f64());
    b.start();
    c.start();

    // One mesh of three, each member healthy with its lifecycle and keys shown.
    wait_for(LIMIT, "a sees b and c healthy in its mesh", || {
        let s = a.status()?;
        let mesh = &s["cluster"];
        let ok = ["join-b", "join-c"].iter().all(|id| {
            member(mesh, id)
                .is_some_and(|m| m["lifecycle"] == "healthy" && m["keys"]["holder"] == false)
        });
        ok.then_some(())
    });
    let s = a.status().unwrap();
    assert_eq!(
        s["keys"]["holder"], true,
        "a holds the identity: {}",
        s["keys"]
    );
    assert!(s["join"]["granted"].as_u64().unwrap() >= 2, "{}", s["join"]);
    assert!(
        s["join"]["refused"]["used_up"].as_u64().unwrap_or(0)
            + s["join"]["refused"]["replayed"].as_u64().unwrap_or(0)
            >= 1,
        "the used invite is counted: {}",
        s["join"]
    );

    // The descriptor the HSDirs serve lists every node.
    let t0 = Instant::now();
    let n = wait_for(
        LIMIT,
        "the HSDirs serve a descriptor listing a, b and c",
        || every_node_served(&[&a, &b, &c], &hsdirs, &address),
    );
    eprintln!(
        "descriptor lists {n} intro points of 3 nodes ({:.1} s after the joins)",
        t0.elapsed().as_secs_f64()
    );

    // `status --watch` redraws the view until interrupted.
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_rustbalance"))
        .args(["status", "--watch", "-c", a.config.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(4500));
    watch.kill().unwrap();
    let mut shown = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut shown)
        .unwrap();
    let _ = watch.wait();
    assert!(
        shown.matches("\x1b[2J").count() >= 2 && shown.matches("node join-a").count() >= 2,
        "status --watch redraws: {shown:?}"
    );
    assert!(
        shown.contains("lifecycle") || shown.contains("healthy"),
        "{shown}"
    );

    // A C-tor client reaches the target through every node; a's metrics move with it.
    let m0 = metrics_at(&a.status_addr).expect("GET /metrics");
    assert_eq!(
        m0.get("rustbalance_members{liveness=\"alive\"}"),
        Some(&2.0),
        "{m0:?}"
    );
    assert_eq!(m0.get("rustbalance_key_holder"), Some(&1.0));
    assert!(m0["rustbalance_join_granted_total"] >= 2.0);
    assert!(m0["rustbalance_join_refused_total{reason=\"used_up\"}"] >= 1.0);
    let nodes = [&a, &b, &c];
    let before = proxy_totals(&nodes);
    let client = Client::start(net, address.clone());
    wait_streams_through_every_node(net, &nodes, &before, &client, &hsdirs, &address, LIMIT * 2);
    let (ok, failed) = client.finish();
    assert!(ok > 0, "client ok {ok}, failed {failed}");
    wait_for(Duration::from_secs(10), "a's stream metrics move", || {
        let m = metrics_at(&a.status_addr)?;
        (m["rustbalance_streams_total"] > m0["rustbalance_streams_total"]
            && m["tor_hs_rdv_num_total"] > m0["tor_hs_rdv_num_total"]
            && m["tor_hs_app_write_bytes_total"] > m0["tor_hs_app_write_bytes_total"]
            && m["tor_hs_rend_circ_build_time_count"] > m0["tor_hs_rend_circ_build_time_count"])
            .then_some(())
    });

    // A plain client on the join port: a refusal frame, nothing else; the target never sees it.
    // Status snapshots refresh every second.
    std::thread::sleep(Duration::from_millis(1500));
    let totals_before = proxy_totals(&nodes);
    let reply = {
        let t0 = Instant::now();
        loop {
            let r = testnet::client::socks5_connect(
                net.client.socks,
                &address,
                rustbalance::join::JOIN_PORT,
                Some("plain-join-probe"),
                Duration::from_secs(60),
            )
            .map(|mut s| {
                s.write_all(b"GET / HTTP/1.0\r\nHost: join-probe\r\n\r\n")
                    .ok();
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out);
                out
            });
            match r {
                Ok(out) if !out.is_empty() => break out,
                other if t0.elapsed() < LIMIT => {
                    eprintln!("join-port probe: {:?}; retrying", other.map(|o| o.len()));
                    std::thread::sleep(Duration::from_secs(2));
                }
                other => panic!("no answer on the join port: {other:?}"),
            }
        }
    };
    let frame = rustbalance::join::wire::split(&reply, rustbalance::join::wire::FrameKind::Reply)
        .expect("a join reply frame");
    match rustbalance::join::wire::JoinReply::decode(frame.body).unwrap() {
        rustbalance::join::wire::JoinReply::Refused(r) => {
            assert_eq!(r.code, rustbalance::join::wire::RefusalCode::Malformed)
        }
        other => panic!("a plain client got {other:?}"),
    }
    assert_eq!(
        hits.load(Ordering::Relaxed),
        0,
        "the target never sees the join port"
    );
    std::thread::sleep(Duration::from_millis(1500));
    let totals_after = proxy_totals(&nodes);
    assert_eq!(totals_before, totals_after, "no stream was proxied");
    // The status snapshot is refreshed every second.
    wait_for(Duration::from_secs(10), "the refusal is counted", || {
        let malformed: u64 = nodes
            .iter()
            .filter_map(|n| n.status()?["join"]["refused"]["malformed"].as_u64())
            .sum();
        (malformed >= 1).then_some(())
    });

    // Two join streams on one rendezvous circuit (same SOCKS isolation): the second is refused
    // at once, the first still gets its answer.
    let socks = |iso: &str| {
        testnet::client::socks5_connect(
            net.client.socks,
            &address,
            rustbalance::join::JOIN_PORT,
            Some(iso),
            Duration::from_secs(60),
        )
    };
    let mut first = wait_for(LIMIT, "a first join stream", || socks("two-on-one").ok());
    let second = socks("two-on-one");
    assert!(
        second.is_err(),
        "a second join stream on one circuit must be refused"
    );
    first.write_all(b"\0\0\0\0\0\0\0\0").unwrap();
    let mut out = Vec::new();
    let _ = first.read_to_end(&mut out);
    assert!(
        out.starts_with(b"RBJ"),
        "the first stream is answered: {out:?}"
    );
    wait_for(
        Duration::from_secs(10),
        "the refused stream is counted",
        || {
            let limited: u64 = nodes
                .iter()
                .filter_map(|n| n.status()?["join"]["refused"]["rate_limited"].as_u64())
                .sum();
            (limited >= 1).then_some(())
        },
    );

    // Across a time-period boundary: a pushes b the keys of the periods ahead, and b stays in
    // the descriptor.
    let left = wait_for(LIMIT, "the poller's consensus", || hsdirs.period_left());
    eprintln!(
        "waiting {:.0} s for the time period to end",
        left.as_secs_f64()
    );
    std::thread::sleep(left + Duration::from_secs(3));
    let pushed = wait_for(LIMIT, "a pushes b a blinded key it was not granted", || {
        let now = blinded_files(&b);
        let new: Vec<String> = now.difference(&granted_b).cloned().collect();
        (!new.is_empty()).then_some(new)
    });
    eprintln!("pushed to b after the boundary: {pushed:?}");
    assert!(b.log().contains("blinded keys received from a key holder"));
    // The pushed key is for a period after every granted one: b could not have had it.
    let period = |f: &str| -> u64 {
        f.trim_start_matches("blinded-")
            .split('_')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let granted_max = granted_b.iter().map(|f| period(f)).max().unwrap();
    assert!(
        pushed.iter().any(|f| period(f) > granted_max),
        "{pushed:?} vs granted up to {granted_max}"
    );
    wait_for(
        LIMIT,
        "the new period's descriptor lists a, b and c",
        || every_node_served(&[&a, &b, &c], &hsdirs, &address),
    );
    for n in [&mut a, &mut b, &mut c] {
        n.assert_running();
    }
    assert!(!b.dir.join("hs_ed25519_secret_key").exists());
    for n in [&a, &b, &c] {
        assert!(!n.log().contains("panicked"), "{}:\n{}", n.name, n.log());
    }
}
