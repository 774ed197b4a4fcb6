//! `rustbalance check-config`: validates the configuration and every key file it names
//! (permissions included) without starting anything, with `run`'s own errors. No network.

mod support;

use std::os::unix::fs::PermissionsExt as _;

use support::*;

fn init_node(name: &str) -> std::path::PathBuf {
    let dir = scratch(name);
    rustbalance_ok(&[
        "init",
        "--target",
        "127.0.0.1:8080",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    dir
}

#[test]
fn a_good_node_passes_and_bad_files_fail_with_runs_error() {
    let dir = init_node("check-ok");
    let config = dir.join("rustbalance.toml");
    let out = rustbalance_ok(&["check-config", "-c", config.to_str().unwrap()]);
    assert!(out.contains("configuration OK"), "{out}");
    assert!(out.contains("master keys: identity secret"), "{out}");
    assert!(
        out.contains("node id: node-"),
        "init picked a node id: {out}"
    );

    // A key readable by others: refused, and `run` refuses it with the same words.
    let key = dir.join("hs_ed25519_secret_key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let check = rustbalance(&["check-config", "-c", config.to_str().unwrap()]);
    assert!(!check.status.success());
    let check_err = String::from_utf8_lossy(&check.stderr).to_string();
    assert!(check_err.contains("chmod"), "{check_err}");
    let run = rustbalance(&["run", "-c", config.to_str().unwrap()]);
    assert!(!run.status.success(), "run refuses too");
    let run_err = String::from_utf8_lossy(&run.stderr).to_string();
    let first = check_err.lines().find(|l| l.contains("chmod")).unwrap();
    assert!(
        run_err.contains(first.trim_start_matches("error: ")),
        "{run_err}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A [mesh] section whose token file is missing, or a FIFO for a key: clear errors.
    let text = std::fs::read_to_string(&config).unwrap();
    let key_out = dir.join("mesh.key");
    rustbalance_ok(&["keys", "mesh-generate", "--out", key_out.to_str().unwrap()]);
    let token = dir.join("cluster.token");
    rustbalance_ok(&["keys", "token-generate", "--out", token.to_str().unwrap()]);
    std::fs::write(
        &config,
        format!(
            "{text}\n[mesh]\nlisten = \"127.0.0.1:51999\"\nprivate_key_file = \"mesh.key\"\n\
             cluster_token_file = \"cluster.token\"\n"
        ),
    )
    .unwrap();
    let out = rustbalance_ok(&["check-config", "-c", config.to_str().unwrap()]);
    assert!(out.contains("mesh public key: "), "{out}");
    std::fs::remove_file(&token).unwrap();
    let c = std::ffi::CString::new(token.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let t0 = std::time::Instant::now();
    let check = rustbalance(&["check-config", "-c", config.to_str().unwrap()]);
    assert!(!check.status.success());
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(10),
        "a FIFO does not hang it"
    );
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(err.contains("not a regular file"), "{err}");
    // A config error names the key.
    std::fs::write(
        &config,
        text.replace("priority = 100", "priority = \"high\""),
    )
    .unwrap();
    let check = rustbalance(&["check-config", "-c", config.to_str().unwrap()]);
    assert!(!check.status.success());
    assert!(String::from_utf8_lossy(&check.stderr).contains("priority"));
}
