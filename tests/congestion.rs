//! Congestion control on the rendezvous circuit, judged by the C-tor client: while it fetches
//! the 8 MiB file through a node, its control port's `CIRC_BW` events for that rendezvous
//! circuit carry congestion-control fields (`CWND=`; C tor adds them only to a circuit with a
//! congestion-control object, which an onion client's rendezvous circuit gets only when the
//! service's descriptor declares flow control and the service accepts the INTRODUCE1
//! extension). The network's C-tor onion service, measured the same way, shows what "on" looks
//! like.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;
use testnet::client::{http_get_via_socks, ControlConn};

/// Fetches the large file from `address` while watching the client's circuits; returns the
/// `CIRC_BW` events of its rendezvous circuit(s) to `address`.
fn rend_circuit_bandwidth_events(
    net: &testnet::Description,
    address: &str,
    tag: &str,
) -> Vec<String> {
    let query = address.trim_end_matches(".onion").to_string();
    let mut events = ControlConn::connect(
        net.client.control,
        &net.client.control_cookie,
        Duration::from_secs(5),
    )
    .expect("control port");
    events.command("SETEVENTS CIRC CIRC_BW").expect("SETEVENTS");
    let done = Arc::new(AtomicBool::new(false));
    let fetcher = {
        let done = Arc::clone(&done);
        let (socks, address, path) = (
            net.client.socks,
            address.to_string(),
            net.target.large_path.clone(),
        );
        let tag = tag.to_string();
        std::thread::spawn(move || {
            let r = http_get_via_socks(
                socks,
                &address,
                80,
                &path,
                Some(&tag),
                Duration::from_secs(120),
            );
            done.store(true, Ordering::SeqCst);
            r.map(|r| r.body.len())
        })
    };
    let mut rend: BTreeSet<String> = BTreeSet::new();
    let mut bw = Vec::new();
    let mut finished_at: Option<Instant> = None;
    loop {
        if done.load(Ordering::SeqCst) && finished_at.is_none() {
            finished_at = Some(Instant::now());
        }
        if finished_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            break;
        }
        let Ok(ev) = events.next_event() else {
            continue;
        };
        let mut words = ev.split(' ');
        match words.next() {
            Some("CIRC") => {
                let id = words.next().unwrap_or("").to_string();
                if ev.contains("PURPOSE=HS_CLIENT_REND")
                    && ev.contains(&format!("REND_QUERY={query}"))
                {
                    rend.insert(id);
                }
            }
            Some("CIRC_BW") => {
                if let Some(id) = ev.split(' ').find_map(|w| w.strip_prefix("ID=")) {
                    if rend.contains(id) {
                        bw.push(ev.clone());
                    }
                }
            }
            _ => {}
        }
    }
    let body = fetcher
        .join()
        .unwrap()
        .expect("the large file through the C-tor client");
    assert_eq!(body, net.target.large_bytes as usize, "whole file");
    assert!(!rend.is_empty(), "no rendezvous circuit to {address} seen");
    bw
}

fn has_cc(events: &[String]) -> bool {
    events.iter().any(|e| e.contains(" CWND="))
}

#[test]
fn a_c_tor_clients_rendezvous_circuit_to_a_node_negotiates_congestion_control() {
    let net = testnet::fixture::shared().expect("private Tor network");
    let mut node = Node::init("cc", &net.target.http.to_string(), net);
    node.start();
    node.wait_published();
    let _ = fetch(net, &node.address, &net.target.index_path);

    let c_tor = net
        .onion_address()
        .expect("the network's C-tor onion service")
        .to_string();
    let baseline = rend_circuit_bandwidth_events(net, &c_tor, "cc-ctor");
    assert!(
        has_cc(&baseline),
        "the C-tor onion service's rendezvous circuit shows no congestion control: {baseline:?}"
    );
    let ours = rend_circuit_bandwidth_events(net, &node.address, "cc-node");
    assert!(
        has_cc(&ours),
        "the node's rendezvous circuit runs without congestion control: {ours:?}"
    );
    let sample = ours.iter().find(|e| e.contains("CWND=")).unwrap();
    eprintln!("node rendezvous circuit: {sample}");
    let _ = node.stop();
}
