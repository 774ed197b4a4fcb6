//! Self-repair on the private Tor network: the publisher's Tor traffic is cut (every TCP
//! connection of its process reset by an iptables rule on its own cgroup) while its mesh, UDP,
//! stays up. Its self-check finds its Tor side broken, it withdraws (advertises `tor_broken`)
//! and repairs itself; the other node takes over publishing, and the HSDirs serve a descriptor
//! without the broken node's intro points, through which a C-tor client still reaches the
//! target. When the cut ends, the node works again and its intro points return.

mod support;

use std::time::{Duration, Instant};

use support::*;

const LIMIT: Duration = Duration::from_secs(120);

const FAST_REPAIR: &str = "\n[repair]\nprobe_interval = \"3s\"\nprobe_timeout = \"3s\"\n\
    fail_after = 2\nrecover_after = 2\nbackoff_min = \"5s\"\nbackoff_max = \"20s\"\n";

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn a_node_whose_tor_side_is_cut_withdraws_repairs_and_returns() {
    let net = testnet::fixture::shared().expect("private Tor network");
    let dir = scratch("repair");
    let token = new_token(&dir, "cluster.token");
    let hsdirs = HsDirs::new(net, &dir);
    let target = net.target.http.to_string();
    let mut a = cluster_node("r-a", &target, net, None, 10, &token, &[]);
    let key = a.node.key_file();
    let mut b = cluster_node("r-b", &target, net, Some(&key), 20, &token, &[a.seed()]);
    for n in [&a, &b] {
        let mut text = std::fs::read_to_string(&n.node.config).unwrap();
        text.push_str(FAST_REPAIR);
        std::fs::write(&n.node.config, text).unwrap();
    }
    let cg = Cgroup::new("r-a");
    a.node.start_in(&cg);
    b.node.start();
    let address = a.node.address.clone();
    wait_for(
        LIMIT,
        "both nodes' intro points served, a publishing",
        || {
            let d = hsdirs.descriptor(&address)?;
            let a_pub = role(&a.mesh()?) == "publisher";
            (a_pub && serves_every_node(&d, &[own_auth_keys(&a), own_auth_keys(&b)])).then_some(())
        },
    );
    let s = a.node.status().unwrap();
    assert_eq!(s["repair"]["state"], "working", "{}", s["repair"]);
    let a_keys = own_auth_keys(&a);
    let b_keys = own_auth_keys(&b);

    // Cut a's Tor traffic; its status endpoint, its target and the mesh keep working.
    let t0 = Instant::now();
    let cut = TorCut::new(&cg, &[port_of(&a.node.status_addr), net.target.http.port()]);
    let broken = wait_for(LIMIT, "a finds its Tor side broken", || {
        let s = a.node.status()?;
        (s["repair"]["state"] == "broken").then(|| (t0.elapsed(), s["repair"].clone()))
    });
    eprintln!(
        "Tor cut: a withdrew after {:.1} s ({})",
        broken.0.as_secs_f64(),
        broken.1
    );
    assert!(
        broken.1["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{}",
        broken.1
    );
    wait_for(LIMIT, "b sees a as tor_broken and publishes", || {
        let m = b.mesh()?;
        let lifecycle = member(&m, "r-a")?["lifecycle"].as_str()?.to_string();
        (lifecycle == "tor_broken" && role(&m) == "publisher").then_some(())
    });
    let gone = wait_for(LIMIT, "a's intro points off the HSDirs", || {
        let d = hsdirs.descriptor(&address)?;
        (!d.is_empty() && d.is_disjoint(&a_keys) && !d.is_disjoint(&b_keys)).then(|| t0.elapsed())
    });
    eprintln!(
        "Tor cut: a's intro points off the HSDirs after {:.1} s",
        gone.as_secs_f64()
    );
    // The mesh stayed up all along: a is a live member, not a dead one.
    let m = b.mesh().unwrap();
    assert!(live_members(&m).contains(&"r-a".to_string()), "{m}");
    // A C-tor client still gets in (through b).
    newnym(net);
    let r = fetch(net, &address, &net.target.index_path);
    assert_eq!(r.status, 200, "fetch while a is cut: {r:?}");
    wait_for(LIMIT, "a repairs itself (relaunches its service)", || {
        let s = a.node.status()?;
        (s["repair"]["repairs"].as_u64()? >= 1).then_some(())
    });
    a.node.assert_running();
    assert!(
        a.node.log().contains("master onion service relaunched"),
        "{}",
        a.node.log()
    );

    // The cut ends: a works again and is back in the served descriptor.
    let t1 = Instant::now();
    drop(cut);
    wait_for(LIMIT, "a's Tor side works again", || {
        let s = a.node.status()?;
        (s["repair"]["state"] == "working").then_some(())
    });
    let back = wait_for(
        Duration::from_secs(180),
        "a's intro points served again",
        || {
            let d = hsdirs.descriptor(&address)?;
            serves_every_node(&d, &[own_auth_keys(&a), own_auth_keys(&b)]).then(|| t1.elapsed())
        },
    );
    eprintln!(
        "Tor back: a's intro points on the HSDirs again after {:.1} s",
        back.as_secs_f64()
    );
    let m = b.mesh().unwrap();
    assert_eq!(member(&m, "r-a").unwrap()["lifecycle"], "healthy", "{m}");
    newnym(net);
    let r = fetch(net, &address, &net.target.index_path);
    assert_eq!(r.status, 200, "fetch after the repair: {r:?}");
    let _ = a.node.stop();
    let _ = b.node.stop();
}
