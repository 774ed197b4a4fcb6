//! End-to-end proof that Arti works on the private test network: an `arti-client` built from the
//! launcher's generated fragment bootstraps from our authorities and fetches the sample onion
//! service's pages (as a client), byte for byte.

use std::time::{Duration, Instant};

use arti_client::config::{CfgPath, TorClientConfigBuilder};
use arti_client::TorClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GET `path` from `onion:80` through Arti; returns (status line, body).
async fn get(
    client: &TorClient<tor_rtcompat::PreferredRuntime>,
    onion: &str,
    path: &str,
) -> anyhow::Result<(String, Vec<u8>)> {
    let mut stream = client.connect((onion, 80)).await?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {onion}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let resp = testnet::client::parse_response(&raw)?;
    Ok((resp.status.to_string(), resp.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arti_client_bootstraps_and_fetches_the_sample_onion() {
    let net = testnet::fixture::shared().expect("private Tor network");
    let onion = net
        .onion_address()
        .expect("sample onion address")
        .to_string();

    let text = std::fs::read_to_string(&net.arti_config).expect("Arti fragment");
    let mut builder: TorClientConfigBuilder =
        toml::from_str(&text).expect("the fragment is valid Arti config");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("arti-client-{}", std::process::id()));
    builder
        .storage()
        .state_dir(CfgPath::new_literal(dir.join("state")))
        .cache_dir(CfgPath::new_literal(dir.join("cache")));
    let config = builder.build().expect("Arti config builds");

    let t0 = Instant::now();
    rustbalance::install_crypto_provider();
    let client = tokio::time::timeout(
        Duration::from_secs(120),
        TorClient::create_bootstrapped(config),
    )
    .await
    .expect("Arti bootstraps within 120 s")
    .expect("Arti bootstraps");
    eprintln!(
        "Arti bootstrapped on the test network in {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // The first descriptor fetch may race the network's first HSDir ring: retry to a deadline.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (status, body) = loop {
        match tokio::time::timeout(Duration::from_secs(60), get(&client, &onion, "/")).await {
            Ok(Ok(r)) => break r,
            Ok(Err(e)) if Instant::now() < deadline => eprintln!("retrying: {e:#}"),
            Err(_) if Instant::now() < deadline => eprintln!("retrying: fetch timed out"),
            other => panic!("Arti could not fetch the sample onion: {other:?}"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert_eq!(status, "200");
    assert_eq!(body, net.index_body(), "index page bytes differ");
    eprintln!(
        "index fetched through Arti {:.1} s after bootstrap",
        t0.elapsed().as_secs_f64()
    );

    let t1 = Instant::now();
    let (status, body) = get(&client, &onion, &net.target.large_path)
        .await
        .expect("large file");
    assert_eq!(status, "200");
    assert_eq!(body.len() as u64, net.target.large_bytes);
    assert!(body == net.large_body(), "large file bytes differ");
    eprintln!(
        "{} bytes through Arti in {:.1} s",
        body.len(),
        t1.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(dir);
}
