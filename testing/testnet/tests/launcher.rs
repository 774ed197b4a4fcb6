//! The launcher as an operator uses it: the `testnet` binary's messages for each bad start, and
//! a full start → status → stop cycle on its own ports that must leave no process behind.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_testnet");

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("launcher-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn testnet(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run testnet")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn missing_tor_is_named() {
    let dir = scratch("notor");
    let opts = testnet::StartOptions {
        tor: "/nonexistent/tor".into(),
        ..testnet::StartOptions::new(dir.clone(), BIN.into())
    };
    let err = testnet::network::start(&opts, &mut |_| {}).unwrap_err();
    assert!(
        err.to_string()
            .contains("`/nonexistent/tor` was not found: install Debian's `tor` package"),
        "{err}"
    );
    assert!(!dir.exists(), "nothing is created when tor is missing");
}

#[test]
fn a_port_in_use_is_named() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    // The first port of the plan is auth0's ORPort.
    let dir = scratch("port");
    let out = testnet(&dir, &["start", "--base-port", &port.to_string()]);
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert!(
        msg.contains(&format!(
            "port 127.0.0.1:{port} (for auth0 ORPort) is already in use"
        )),
        "{msg}"
    );
}

#[test]
fn a_foreign_directory_is_not_touched() {
    let dir = scratch("foreign");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("precious.txt"), "keep me").unwrap();
    let out = testnet(&dir, &["start", "--base-port", "23000"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a test-network directory"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("precious.txt")).unwrap(),
        "keep me"
    );
}

#[test]
fn status_and_stop_without_a_network_say_so() {
    let dir = scratch("none");
    for cmd in ["status", "stop"] {
        let out = testnet(&dir, &[cmd]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("no test network in"),
            "{cmd}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn bad_shape_is_refused() {
    let dir = scratch("shape");
    let out = testnet(&dir, &["start", "--voting-interval", "10"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("voting_interval_secs = 10"),
        "{}",
        stderr(&out)
    );
}

/// A whole network of its own, named by a relative `--dir` (tor daemonizes into `/`, so the
/// launcher must resolve it): start, a second start refused, status, fetch, stop, and no PID
/// left alive.
#[test]
fn start_status_stop_cycle_leaves_nothing_running() {
    let abs = scratch("cycle");
    let dir = PathBuf::from(abs.file_name().unwrap());
    let out = testnet(
        &dir,
        &["start", "--base-port", "24000", "--large-bytes", "100000"],
    );
    let so = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "start failed: {}\n{so}", stderr(&out));
    assert!(so.contains("usable after"), "{so}");
    eprintln!("{so}");

    let desc = testnet::Description::load(&abs).unwrap();
    assert_eq!(desc.state, testnet::network::NetState::Ready);
    assert_eq!(desc.processes.len(), 11, "10 tor processes + the target");

    let again = testnet(&dir, &["start", "--base-port", "24000"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already running"),
        "{}",
        stderr(&again)
    );

    let st = testnet(&dir, &["status"]);
    let st_out = String::from_utf8_lossy(&st.stdout).into_owned();
    assert!(st.status.success(), "{st_out}");
    assert_eq!(st_out.matches(" alive ").count(), 11, "{st_out}");

    let r = desc
        .fetch_sample_onion("/large.bin", std::time::Duration::from_secs(60))
        .unwrap();
    assert_eq!(r.body, desc.large_body());

    let stop = testnet(&dir, &["stop"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert!(String::from_utf8_lossy(&stop.stdout).contains("stopped 11 processes"));
    let survivors: Vec<u32> = desc
        .processes
        .iter()
        .filter(|p| p.alive())
        .map(|p| p.pid)
        .collect();
    assert!(
        survivors.is_empty(),
        "still alive after stop: {survivors:?}"
    );
    let st = testnet(&dir, &["status"]);
    assert_eq!(
        String::from_utf8_lossy(&st.stdout)
            .matches(" alive ")
            .count(),
        0
    );
    let _ = std::fs::remove_dir_all(&abs);
}
