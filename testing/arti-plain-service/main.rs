//! A plain Arti onion service with no RustBalance code: Arti generates and keeps the identity,
//! Arti's own publisher uploads the descriptor, and Arti's own reverse proxy (`tor-hsrproxy`)
//! forwards port 80 to the target. The baseline for `tests/conformance.rs` (what Arti's
//! publisher puts in a descriptor) and for `benches/single_node.rs` (what Arti costs without
//! us).
//!
//! `arti_plain_service --arti-config FILE --dir DIR --target HOST:PORT [--auth-client KEY]...`
//! prints `address: <onion>` once the service is launched, then runs until killed. With
//! `--auth-client descriptor:x25519:<base32>` it runs in restricted discovery for those keys;
//! with `--pow` it enables proof of work (Arti's own seeds and `pow-params`).

use std::sync::Arc;

use arti_client::config::{CfgPath, TorClientConfigBuilder};
use arti_client::TorClient;
use tor_hsrproxy::config::ProxyConfigBuilder;
use tor_hsrproxy::OnionServiceReverseProxy;
use tor_hsservice::config::OnionServiceConfigBuilder;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    rustbalance::install_crypto_provider();
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: arti_plain_service --arti-config FILE --dir DIR --target HOST:PORT [--auth-client KEY]...";
    let arti_config = arg(&args, "--arti-config").ok_or(usage)?;
    let dir = std::path::PathBuf::from(arg(&args, "--dir").ok_or(usage)?);
    let target = arg(&args, "--target").ok_or(usage)?;
    let clients: Vec<String> = args
        .windows(2)
        .filter(|w| w[0] == "--auth-client")
        .map(|w| w[1].clone())
        .collect();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let mut builder: TorClientConfigBuilder =
        toml::from_str(&std::fs::read_to_string(&arti_config)?)?;
    builder
        .storage()
        .state_dir(CfgPath::new_literal(dir.join("state")))
        .cache_dir(CfgPath::new_literal(dir.join("cache")));
    builder.storage().permissions().trust_no_group_id();
    let config = builder.build()?;

    let mut svc = String::from("nickname = \"plain\"\n");
    if args.iter().any(|a| a == "--pow") {
        svc.push_str("enable_pow = true\n");
    }
    if !clients.is_empty() {
        svc.push_str(
            "[restricted_discovery]\nenabled = true\n[restricted_discovery.static_keys]\n",
        );
        for (i, k) in clients.iter().enumerate() {
            svc.push_str(&format!("client{i} = {k:?}\n"));
        }
    }
    let svc: OnionServiceConfigBuilder = toml::from_str(&svc)?;
    let svc = svc.build()?;
    let proxy: ProxyConfigBuilder =
        toml::from_str(&format!("proxy_ports = [[\"80\", {target:?}]]"))?;
    let proxy = proxy.build()?;

    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let client = TorClient::create_bootstrapped(config).await?;
        let (service, requests) = client
            .launch_onion_service(svc)?
            .ok_or("onion services are disabled in the Arti configuration")?;
        let address = service.onion_address().ok_or("no onion address")?;
        println!(
            "address: {}",
            tor_hscrypto::pk::HsIdKey::try_from(address)
                .map(|k| rustbalance::keys::OnionAddress::from(&k).to_string())
                .unwrap_or_default()
        );
        use std::io::Write as _;
        std::io::stdout().flush()?;
        let proxy = OnionServiceReverseProxy::new(proxy);
        let nick = tor_hsservice::HsNickname::new("plain".into())?;
        let _keep: Arc<_> = service;
        proxy
            .handle_requests(client.runtime().clone(), nick, requests)
            .await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
