//! Fuzzes the status endpoint: whatever bytes a client sends on a connection, the server
//! answers or closes, within its deadline, never panics, and never answers 200 to a request
//! that lacked the access token (when one is configured).
//!
//! Each input is one connection over an in-memory pipe to `status::serve_stream`, the same
//! per-connection code the TCP listener runs. The first byte picks the access mode (bit 0:
//! token configured); the rest is the request.

#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rustbalance::status::{serve_stream, Access, Snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

const TOKEN: &str = "fuzz-token-0123456789";

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, request)) = data.split_first() else {
        return;
    };
    let with_token = mode & 1 == 1;
    runtime().block_on(async {
        let (snap_tx, snapshots) = watch::channel(Snapshot::starting("n1", "x.onion"));
        let (cluster_tx, cluster) = watch::channel(None);
        let access = Access {
            token: with_token.then(|| Arc::new(zeroize::Zeroizing::new(TOKEN.to_string()))),
            ..Access::default()
        };
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(serve_stream(server, snapshots, cluster, access));
        let _ = client.write_all(request).await;
        let _ = client.shutdown().await;
        let mut answer = Vec::new();
        // Virtual time (paused clock): the server's own deadlines end every connection.
        let read = tokio::time::timeout(Duration::from_secs(60), client.read_to_end(&mut answer));
        assert!(
            read.await.is_ok(),
            "the connection ended within its deadline"
        );
        task.await.expect("the connection task did not panic");
        let text = String::from_utf8_lossy(&answer);
        if with_token && text.starts_with("HTTP/1.1 200") {
            // Bytes, not text: the rest of the request need not be UTF-8.
            let bearer = format!("Bearer {TOKEN}");
            assert!(
                request
                    .windows(bearer.len())
                    .any(|w| w == bearer.as_bytes()),
                "200 without the token: {:?}",
                String::from_utf8_lossy(request)
            );
        }
        drop((snap_tx, cluster_tx));
    });
});
