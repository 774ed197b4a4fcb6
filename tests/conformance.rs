//! Descriptor conformance on the private Tor network: a plain Arti onion service (Arti's own
//! publisher, `testing/arti-plain-service/main.rs`) and a RustBalance node, both in restricted
//! discovery for the same client and both with proof of work on, publish; the descriptors the HSDirs serve are compared field
//! by field. Everything Arti's publisher declares for such a service (outer-layer fields,
//! lifetime, flow control, protocols, PoW, intro-point authentication, single-onion, the
//! intro points' link-specifier types, who can decrypt) must be in ours too, so the next gap of
//! the `flow-control` kind cannot hide.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::*;
use tor_hscrypto::pk::{HsClientDescEncKey, HsClientDescEncKeypair, HsClientDescEncSecretKey};
use tor_llcrypto::pk::curve25519;
use tor_netdoc::doc::hsdesc::HsDesc;

const LIMIT: Duration = Duration::from_secs(180);

fn keypair(seed: u8) -> (String, HsClientDescEncKeypair) {
    let secret = curve25519::StaticSecret::from([seed; 32]);
    let public = curve25519::PublicKey::from(&secret);
    (
        HsClientDescEncKey::from(public).to_string(),
        HsClientDescEncKeypair::new(
            HsClientDescEncKey::from(public),
            HsClientDescEncSecretKey::from(secret),
        ),
    )
}

/// The outer (plaintext) layer's keywords in order, and its `descriptor-lifetime`.
fn outer_layer(text: &str) -> (Vec<String>, Option<String>) {
    let mut keywords = Vec::new();
    let mut in_object = false;
    let mut lifetime = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN") {
            in_object = true;
            continue;
        }
        if line.starts_with("-----END") {
            in_object = false;
            continue;
        }
        if in_object {
            continue;
        }
        let mut words = line.split(' ');
        let kw = words.next().unwrap_or("").to_string();
        if kw == "descriptor-lifetime" {
            lifetime = words.next().map(str::to_string);
        }
        keywords.push(kw);
    }
    (keywords, lifetime)
}

/// The link-specifier types of each intro point (as a set per intro point).
fn link_types(d: &HsDesc) -> BTreeSet<Vec<u8>> {
    d.intro_points()
        .iter()
        .map(|i| {
            let mut t: Vec<u8> = i
                .link_specifiers()
                .iter()
                .map(|l| u8::from(l.lstype()))
                .collect();
            t.sort();
            t
        })
        .collect()
}

#[test]
fn our_descriptor_declares_every_field_arti_own_publisher_declares() {
    let net = testnet::fixture::shared().expect("private Tor network");
    let dir = scratch("conformance");
    let hsdirs = HsDirs::new(net, &dir);
    let (alice_line, alice) = keypair(11);
    let (_, bob) = keypair(12);

    let plain = PlainArti::start_with(
        net,
        &dir.join("plain"),
        std::slice::from_ref(&alice_line),
        true,
    );
    let mut node = Node::init("conf", &net.target.http.to_string(), net);
    let mut text = std::fs::read_to_string(&node.config).unwrap().replacen(
        "[master]\n",
        &format!("[master]\nauthorized_clients = [{alice_line:?}]\n"),
        1,
    );
    text.push_str("\n[pow]\nenabled = true\n");
    std::fs::write(&node.config, text).unwrap();
    node.start();

    let (arti_text, arti) = wait_for(LIMIT, "Arti's own descriptor on the HSDirs", || {
        hsdirs.served(&plain.address, Some(&alice))
    });
    let (our_text, ours) = wait_for(LIMIT, "our descriptor on the HSDirs", || {
        hsdirs.served(&node.address, Some(&alice))
    });

    // Outer layer: the same fields in the same order, the same lifetime.
    let (arti_outer, arti_life) = outer_layer(&arti_text);
    let (our_outer, our_life) = outer_layer(&our_text);
    assert_eq!(our_outer, arti_outer, "outer-layer keywords");
    assert_eq!(our_life, arti_life, "descriptor-lifetime");
    // What the inner layer declares.
    assert_eq!(
        ours.flow_control().map(|(p, n)| (p, n.get())),
        arti.flow_control().map(|(p, n)| (p, n.get())),
        "flow-control"
    );
    assert!(ours.flow_control().is_some(), "Arti declares flow control");
    assert_eq!(
        ours.declared_capabilities(),
        arti.declared_capabilities(),
        "proto"
    );
    // PoW on both: one `pow-params v1` line each, the same suggested effort (0 while idle; the
    // floor is 0 by default), a seed that expires in the future and within Arti's longest seed
    // lifetime (120 min; ours: the end of the 2-hour epoch).
    let pow_of = |d: &HsDesc| -> Vec<(u32, std::time::SystemTime)> {
        d.pow_params()
            .iter()
            .map(|p| match p {
                tor_netdoc::doc::hsdesc::pow::PowParams::V1(v1) => {
                    let expires = v1.seed().bounds_start_end().1.expect("an expiry");
                    (u32::from(v1.suggested_effort()), expires)
                }
                _ => panic!("a pow-params scheme other than v1"),
            })
            .collect()
    };
    let (our_pow, arti_pow) = (pow_of(&ours), pow_of(&arti));
    assert_eq!(
        (our_pow.len(), arti_pow.len()),
        (1, 1),
        "one pow-params line each"
    );
    assert_eq!(our_pow[0].0, arti_pow[0].0, "suggested effort");
    let now = std::time::SystemTime::now();
    for (what, (_, expires)) in [("ours", our_pow[0]), ("Arti's", arti_pow[0])] {
        let left = expires.duration_since(now).expect("seed not yet expired");
        assert!(
            left <= Duration::from_secs(121 * 60),
            "{what}: expires in {left:?}"
        );
    }
    assert_eq!(
        ours.is_single_onion_service(),
        arti.is_single_onion_service(),
        "single-onion-service"
    );
    assert_eq!(
        ours.requires_intro_authentication(),
        arti.requires_intro_authentication(),
        "intro-auth-required"
    );
    assert_eq!(
        link_types(&ours),
        link_types(&arti),
        "intro points' link specifiers"
    );
    assert!(!ours.intro_points().is_empty() && !arti.intro_points().is_empty());
    // Restricted discovery: each opens for alice only.
    for (addr, what) in [(&plain.address, "Arti's"), (&node.address, "ours")] {
        let (for_bob, answered) = hsdirs.opening_for(addr, Some(&bob));
        assert!(
            answered > 0 && for_bob == 0,
            "{what}: bob opens {for_bob}/{answered}"
        );
        let (for_anyone, _) = hsdirs.opening_for(addr, None);
        assert_eq!(for_anyone, 0, "{what}: opens without a client key");
    }
    eprintln!(
        "conformant: {} outer fields, lifetime {:?} min, flow-control {:?}, proto {}",
        our_outer.len(),
        our_life,
        ours.flow_control().map(|(p, n)| format!("{p} {n}")),
        ours.declared_capabilities()
    );
    let _ = node.stop();
}
