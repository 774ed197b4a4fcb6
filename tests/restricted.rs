//! Restricted discovery on the private Tor network, with the C-tor client as the judge: two
//! nodes share one directory of C tor `.auth` files; the merged descriptor opens only for the
//! clients listed there. A C-tor client without the key is refused ("client authorization
//! missing"); with the key (`ONION_CLIENT_AUTH_ADD`) it reaches the target through both nodes;
//! once its file is removed and the descriptor republished, a fresh fetch is refused again.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use support::*;
use testnet::client::ControlConn;
use tor_hscrypto::pk::{HsClientDescEncKey, HsClientDescEncKeypair, HsClientDescEncSecretKey};
use tor_llcrypto::pk::curve25519;

const LIMIT: Duration = Duration::from_secs(120);

/// A client key pair: its `.auth` line, the private key as C tor's control port takes it, and
/// the pair for the poller.
struct ClientKey {
    auth_line: String,
    control_blob: String,
    pair: HsClientDescEncKeypair,
}

fn client_key() -> ClientKey {
    let bytes: [u8; 32] = rand::random();
    let secret = curve25519::StaticSecret::from(bytes);
    let public = curve25519::PublicKey::from(&secret);
    ClientKey {
        auth_line: HsClientDescEncKey::from(public).to_string(),
        control_blob: format!(
            "x25519:{}",
            base64::engine::general_purpose::STANDARD.encode(secret.to_bytes())
        ),
        pair: HsClientDescEncKeypair::new(
            HsClientDescEncKey::from(public),
            HsClientDescEncSecretKey::from(secret),
        ),
    }
}

/// A control-port command that must succeed (2xx: `ONION_CLIENT_AUTH_ADD` answers 251 or 252
/// when it also decrypted a cached descriptor).
fn control(net: &testnet::Description, cmd: &str) {
    let mut c = ControlConn::connect(
        net.client.control,
        &net.client.control_cookie,
        Duration::from_secs(5),
    )
    .expect("C-tor client control port");
    if let Err(e) = c.command(cmd) {
        let e = e.to_string();
        let verb = cmd.split(' ').next().unwrap_or("");
        assert!(e.contains("answered 25"), "{verb}: {e}");
    }
}

fn rendezvous(n: &ClusterNode) -> u64 {
    n.node
        .status()
        .and_then(|s| s["proxy"]["rendezvous"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_restricted_descriptor_admits_exactly_the_authorized_clients_through_every_node() {
    let net = testnet::fixture::shared().expect("private Tor network");
    let dir = scratch("restricted");
    let token = new_token(&dir, "cluster.token");
    let hsdirs = HsDirs::new(net, &dir);
    let clients = dir.join("authorized_clients");
    std::fs::create_dir_all(&clients).unwrap();
    let alice = client_key();
    let bob = client_key();
    std::fs::write(clients.join("alice.auth"), format!("{}\n", alice.auth_line)).unwrap();

    let target = net.target.http.to_string();
    let mut a = cluster_node("rd-a", &target, net, None, 10, &token, &[]);
    let key = a.node.key_file();
    let mut b = cluster_node("rd-b", &target, net, Some(&key), 20, &token, &[a.seed()]);
    for n in [&a, &b] {
        let text = std::fs::read_to_string(&n.node.config).unwrap();
        let text = text.replacen(
            "[master]\n",
            &format!(
                "[master]\nauthorized_clients_dir = {:?}\n",
                clients.to_str().unwrap()
            ),
            1,
        );
        std::fs::write(&n.node.config, text).unwrap();
    }
    a.node.start();
    b.node.start();
    let address = a.node.address.clone();
    let onion = address.trim_end_matches(".onion").to_string();

    // What the HSDirs serve opens for alice only, and lists both nodes.
    wait_for(LIMIT, "a descriptor for alice listing both nodes", || {
        let d = hsdirs.descriptor_as(&address, &alice.pair)?;
        serves_every_node(&d, &[own_auth_keys(&a), own_auth_keys(&b)]).then_some(())
    });
    let (for_bob, answered) = hsdirs.opening_for(&address, Some(&bob.pair));
    assert_eq!(for_bob, 0, "bob opens {for_bob} of {answered}");
    let (for_anyone, _) = hsdirs.opening_for(&address, None);
    assert_eq!(for_anyone, 0, "a client with only the address opens it");
    let s = a.node.status().unwrap();
    assert_eq!(s["authorized_clients"], 1, "{s}");

    // The C-tor client without the key: refused for missing client authorization.
    let e = get_once(net, &address, "none").expect_err("fetched without the client key");
    assert!(e.contains("client authorization missing"), "{e}");

    // With alice's key: in, through both nodes (each fetch on new circuits, so the client
    // picks intro points afresh).
    let add_alice = || {
        control(
            net,
            &format!("ONION_CLIENT_AUTH_ADD {onion} {}", alice.control_blob),
        );
    };
    add_alice();
    let r = fetch(net, &address, &net.target.index_path);
    assert_eq!(r.status, 200);
    let start = [rendezvous(&a), rendezvous(&b)];
    let mut through: BTreeSet<&str> = BTreeSet::new();
    for i in 0..40 {
        if let Ok(200) = get_once(net, &address, &format!("alice-{i}")) {
            if rendezvous(&a) > start[0] {
                through.insert("rd-a");
            }
            if rendezvous(&b) > start[1] {
                through.insert("rd-b");
            }
        }
        if through.len() == 2 {
            eprintln!("both nodes served alice after {} fetches", i + 1);
            break;
        }
    }
    assert_eq!(
        through.len(),
        2,
        "alice reached the target through {through:?}"
    );

    // Alice removed, bob added: republished; the HSDirs' descriptor no longer opens for alice,
    // and a fresh fetch by the C-tor client holding alice's key is refused.
    std::fs::remove_file(clients.join("alice.auth")).unwrap();
    std::fs::write(clients.join("bob.auth"), format!("{}\n", bob.auth_line)).unwrap();
    wait_for(LIMIT, "the descriptor re-encrypted for bob only", || {
        let d = hsdirs.descriptor_as(&address, &bob.pair)?;
        let (for_alice, _) = hsdirs.opening_for(&address, Some(&alice.pair));
        (serves_every_node(&d, &[own_auth_keys(&a), own_auth_keys(&b)]) && for_alice == 0)
            .then_some(())
    });
    assert!(a.node.log().contains("authorized clients changed"));
    // A fresh fetch with alice's key still held: NEWNYM purges C tor's descriptor cache (and
    // its ephemeral client keys, so hers is added again). C tor carries out at most one NEWNYM
    // per 10 s: wait that out first.
    std::thread::sleep(Duration::from_secs(11));
    newnym(net);
    std::thread::sleep(Duration::from_secs(1));
    add_alice();
    let e = get_once(net, &address, "alice-after").expect_err("alice fetched after her removal");
    assert!(e.contains("client authorization wrong"), "{e}");

    control(net, &format!("ONION_CLIENT_AUTH_REMOVE {onion}"));
    let _ = a.node.stop();
    let _ = b.node.stop();
}
