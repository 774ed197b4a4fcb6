//! The load-bearing assumption, proved on the private Tor network: a node hosts the master
//! service on embedded Arti with ONLY the public identity key and blinded keypairs in its
//! keystore (Arti's publisher cannot run), our own code builds and uploads the descriptor, and a
//! real C-tor client reaches the master address through it. The descriptor fetched back from the
//! HSDirs decrypts and lists exactly this node's intro points.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arti_client::config::{CfgPath, TorClientConfigBuilder};
use arti_client::TorClient;
use futures::StreamExt;
use rustbalance::keys::MasterIdentity;
use rustbalance::{descriptor, hosting, publisher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tor_cell::relaycell::msg::Connected;
use tor_checkable::Timebound;
use tor_hscrypto::pk::HsBlindIdKey;
use tor_hscrypto::time::TimePeriod;
use tor_hsservice::config::OnionServiceConfigBuilder;
use tor_netdoc::doc::hsdesc::HsDesc;

const BODY: &[u8] = b"served by a RustBalance node without the identity secret\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_serves_the_master_address_through_our_own_descriptor() {
    let net = testnet::fixture::shared().expect("private Tor network");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("single-node-{}", std::process::id()));
    let state = dir.join("state");
    let text = std::fs::read_to_string(&net.arti_config).unwrap();
    let mut builder: TorClientConfigBuilder = toml::from_str(&text).unwrap();
    builder
        .storage()
        .state_dir(CfgPath::new_literal(&state))
        .cache_dir(CfgPath::new_literal(dir.join("cache")));
    rustbalance::install_crypto_provider();
    let client = TorClient::create_bootstrapped(builder.build().unwrap())
        .await
        .expect("bootstrap");

    // Keys: public identity + blinded keypairs only.
    let identity = MasterIdentity::generate(&mut rand::rng());
    let master = identity.onion_address();
    let hsid = identity.public();
    let nick = hosting::nickname();
    let keymgr = client.keymgr().expect("keymgr");
    let netdir = client.dirmgr().unwrap().timely_netdir().expect("netdir");
    let mut periods: Vec<TimePeriod> = netdir
        .hs_all_time_periods()
        .iter()
        .map(|p| p.time_period())
        .collect();
    if let Some(next) = netdir.hs_time_period().next() {
        if !periods.contains(&next) {
            periods.push(next);
        }
    }
    // A missing public identity is refused before anything is installed.
    assert!(matches!(
        hosting::precheck(keymgr, &nick, &master),
        Err(hosting::HostingError::PublicIdentityMissing(_))
    ));
    hosting::install_public_identity(keymgr, &nick, &hsid).unwrap();
    let blinded = hosting::blind_for_periods(identity.hs_id_keypair(), &periods).unwrap();
    hosting::sync_blinded_keys(keymgr, &nick, &hsid, blinded).unwrap();
    hosting::precheck(keymgr, &nick, &master).expect("keystore holds only public + blinded keys");

    let svc_config = OnionServiceConfigBuilder::default()
        .nickname(nick.clone())
        .build()
        .unwrap();
    let (svc, requests) = client
        .launch_onion_service(svc_config)
        .unwrap()
        .expect("service enabled");
    assert_eq!(
        svc.onion_address(),
        Some(master.hs_id()),
        "Arti hosts the master identity"
    );
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut streams = tor_hsservice::handle_rend_requests(requests);
        while let Some(req) = streams.next().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let Ok(mut s) = req.accept(Connected::new_empty()).await else {
                    return;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut head = vec![0u8; 4096];
                let _ = s.read(&mut head).await;
                let resp = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", BODY.len());
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.write_all(BODY).await;
                let _ = s.flush().await;
            });
        }
    });

    // Arti's intro point manager runs without its publisher: wait for its intro points.
    let t0 = Instant::now();
    let ipts = loop {
        let ipts = hosting::read_current_ipts(&state, &nick).unwrap();
        if ipts.len() >= 3 || (!ipts.is_empty() && t0.elapsed() > Duration::from_secs(30)) {
            break ipts;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no intro points after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "{} intro points after {:.1} s",
        ipts.len(),
        t0.elapsed().as_secs_f64()
    );
    // Give the establishers a moment to finish (ipts.json does not say which are established).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let netdir = client.dirmgr().unwrap().timely_netdir().unwrap();
    let ipt_descs: Vec<_> = ipts
        .iter()
        .map(|i| hosting::intro_point_desc(keymgr, &netdir, &nick, i).unwrap())
        .collect();

    // Our publisher: one descriptor per relevant period, uploaded to every responsible HSDir.
    let pool = client.hs_circ_pool().unwrap();
    let caps = descriptor::Capabilities::declared(netdir.params());
    for params in netdir.hs_all_time_periods() {
        let tp = params.time_period();
        let (_, blind_kp, _) = identity.hs_id_keypair().compute_blinded_key(tp).unwrap();
        let now = SystemTime::now();
        let spec = descriptor::Spec {
            master: &hsid,
            blind: &blind_kp,
            period: tp,
            revision: descriptor::revision_counter(&blind_kp, &params, now).unwrap(),
            intro_points: &ipt_descs,
            caps: &caps,
            lifetime: Duration::from_secs(3 * 3600),
        };
        let built = descriptor::build(&spec, now, &mut rand::rng()).unwrap();
        let blind_id = HsBlindIdKey::from(&blind_kp).id();
        let results = publisher::upload_to_hsdirs(
            client.runtime(),
            &pool,
            &netdir,
            blind_id,
            tp,
            &[built.text.clone().into()],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        let ok = results.iter().filter(|r| r.error.is_none()).count();
        eprintln!(
            "period {}: {} bytes, revision {}, uploaded to {ok}/{} HSDirs {:?}",
            hosting::period_slug(tp),
            built.text.len(),
            built.revision,
            results.len(),
            results
                .iter()
                .filter_map(|r| r.error.as_deref())
                .collect::<Vec<_>>()
        );
        assert!(ok > 0, "no HSDir accepted the descriptor: {results:?}");
    }

    // The descriptor the network serves decrypts and lists exactly our intro points.
    let tp = netdir.hs_time_period();
    let (blind_pk, subcred) = hsid.compute_blinded_key(tp).unwrap();
    let fetched = publisher::fetch_from_hsdirs(client.runtime(), &pool, &netdir, blind_pk.id(), tp)
        .await
        .unwrap();
    let text = fetched
        .iter()
        .find_map(|(_, r)| r.as_ref().ok())
        .unwrap_or_else(|| panic!("no HSDir served the descriptor: {fetched:?}"));
    let desc = HsDesc::parse_decrypt_validate(text, &blind_pk.id(), &subcred, None)
        .expect("descriptor decrypts")
        .if_valid_at(&SystemTime::now())
        .expect("descriptor is valid now");
    assert_eq!(
        desc.flow_control().map(|(p, inc)| (p, inc.get())),
        caps.flow_control,
        "the served descriptor declares congestion control with the consensus's sendme_inc"
    );
    let mut served: Vec<[u8; 32]> = desc
        .intro_points()
        .iter()
        .map(|i| i.ipt_sid_key().as_ref().to_bytes())
        .collect();
    let mut ours: Vec<[u8; 32]> = ipt_descs
        .iter()
        .map(|i| i.ipt_sid_key().as_ref().to_bytes())
        .collect();
    served.sort();
    ours.sort();
    assert_eq!(
        served, ours,
        "the served descriptor lists exactly this node's intro points"
    );

    // A real C-tor client reaches the master address.
    let onion = master.to_string();
    let socks = net.client.socks;
    let t1 = Instant::now();
    let body = loop {
        let onion = onion.clone();
        let r = tokio::task::spawn_blocking(move || {
            testnet::client::http_get_via_socks(
                socks,
                &onion,
                80,
                "/",
                None,
                Duration::from_secs(60),
            )
        })
        .await
        .unwrap();
        match r {
            Ok(resp) => break resp.body,
            Err(e) if t1.elapsed() < Duration::from_secs(120) => {
                eprintln!("C-tor client: {e}; retrying");
                if let Ok(mut c) = testnet::client::ControlConn::connect(
                    net.client.control,
                    &net.client.control_cookie,
                    Duration::from_secs(5),
                ) {
                    let _ = c.command("SIGNAL NEWNYM");
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => panic!("the C-tor client never reached the master address: {e}"),
        }
    };
    assert_eq!(body, BODY);
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    eprintln!(
        "C-tor client reached the master in {:.1} s after upload",
        t1.elapsed().as_secs_f64()
    );
    // After all this, the keystore still holds no identity secret: Arti never made one.
    hosting::precheck(keymgr, &nick, &master)
        .expect("keystore still holds only public + blinded keys");
    drop(svc);
    let _ = std::fs::remove_dir_all(dir);
}
