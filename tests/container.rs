//! The container image (testing/container/Containerfile, FROM scratch + the static binary) on
//! the private Tor network: `init` and `run` FROM THE IMAGE (podman, host networking, the node's
//! files in a volume, a non-root user), the C-tor client fetches the target through the master
//! address, and the image's HEALTHCHECK (`rustbalance status`) passes.
//!
//! `testing/run-tests.sh` builds the image and sets `RB_CONTAINER_IMAGE`; without it this test
//! says it is skipped (a plain `cargo test` has no static build).

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

fn podman(args: &[&str]) -> std::process::Output {
    Command::new("podman")
        .arg("--runtime")
        .arg("runc")
        .args(args)
        .output()
        .expect("podman runs")
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops and removes the container when the test ends, passed or not.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", "-t", "5", &self.0]);
    }
}

#[test]
fn a_node_from_the_image_serves_the_master_address() {
    let Ok(image) = std::env::var("RB_CONTAINER_IMAGE") else {
        eprintln!(
            "SKIPPED: RB_CONTAINER_IMAGE is unset (testing/run-tests.sh builds the image and sets it)"
        );
        return;
    };
    let net = testnet::fixture::shared().expect("private Tor network");
    let dir = scratch("container");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&net.arti_config, dir.join("arti.toml")).unwrap();
    // The image runs as uid 10001: the volume is its.
    let chown = Command::new("chown")
        .args(["-R", "10001:10001", dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chown.success(), "chown the volume (the suite runs as root)");
    let volume = format!("{}:/var/lib/rustbalance", dir.display());
    let status_addr = format!("127.0.0.1:{}", free_port());
    let run = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "run",
            "--network=host",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "-v",
            &volume,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let target = net.target.http.to_string();
    let init: Vec<String> = run(&[
        "--rm",
        &image,
        "init",
        "--target",
        &target,
        "--dir",
        "/var/lib/rustbalance/node",
        "--node-id",
        "boxed",
        "--arti-config",
        "/var/lib/rustbalance/arti.toml",
        "--status-listen",
        &status_addr,
    ]);
    let args: Vec<&str> = init.iter().map(String::as_str).collect();
    let out = podman_ok(&args);
    let address = out
        .lines()
        .find_map(|l| l.strip_prefix("master address: "))
        .expect("init prints the master address")
        .to_string();
    let key =
        std::fs::metadata(dir.join("node/hs_ed25519_secret_key")).expect("init wrote the key");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&key),
        10001,
        "the node's files are the container user's"
    );

    let name = format!("rb-test-{}", std::process::id());
    let runargs = run(&["-d", "--name", &name, &image]);
    let args: Vec<&str> = runargs.iter().map(String::as_str).collect();
    podman_ok(&args);
    let _container = Container(name.clone());
    let status = wait_for(Duration::from_secs(180), "the boxed node publishes", || {
        status_at(&status_addr).filter(published)
    });
    assert_eq!(status["node_id"], "boxed");
    let r = fetch(net, &address, "/");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        net.index_body(),
        "the target through the boxed node"
    );
    // The image's HEALTHCHECK: `rustbalance status` inside the container.
    let health = podman(&["healthcheck", "run", &name]);
    assert!(
        health.status.success(),
        "healthcheck: {} {}",
        String::from_utf8_lossy(&health.stdout),
        String::from_utf8_lossy(&health.stderr)
    );
    let user = podman_ok(&["inspect", "--format", "{{.Config.User}}", &name]);
    assert_eq!(user.trim(), "10001:10001", "a non-root user");
    let out = podman(&["logs", &name]);
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(logs.contains("master onion service launched"), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(!logs.contains(&target), "the target is never logged");
}
