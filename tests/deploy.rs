//! `testing/deploy.sh` end to end for two "hosts" on the private Tor network: each its own root
//! (`--root`, so the machine's /etc is untouched; `--no-systemd`) and its own mesh address
//! (127.0.0.2 and 127.0.0.3). Host A: `--init` prints a join line; host B: `--join FILE` with
//! only that line. Both serve the master address (the HSDirs list both, the C-tor client
//! fetches the target); a second run changes nothing and says so; `--dry-run` changes nothing;
//! `--uninstall` keeps the keys, `--purge` removes them.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::*;

const LIMIT: Duration = Duration::from_secs(120);

fn deploy(args: &[&str]) -> Output {
    Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testing/deploy.sh"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run deploy.sh")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn files(root: &Path) -> BTreeSet<(PathBuf, u64)> {
    fn walk(dir: &Path, out: &mut BTreeSet<(PathBuf, u64)>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            // The running node's own files change by themselves.
            if name.starts_with("arti-") || name == "rustbalance.log" {
                continue;
            }
            if p.is_dir() {
                walk(&p, out);
            } else {
                let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                out.insert((p, len));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, &mut out);
    out
}

fn pid(root: &Path) -> Option<i32> {
    std::fs::read_to_string(root.join("var/lib/rustbalance/rustbalance.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn deploy_init_on_one_host_and_join_on_another_serve_the_master_address() {
    let net = testnet::fixture::shared().expect("private Tor network");
    let dir = scratch("deploy");
    std::fs::create_dir_all(&dir).unwrap();
    let hsdirs = HsDirs::new(net, &dir);
    let bin = env!("CARGO_BIN_EXE_rustbalance");
    let arti = net.arti_config.to_str().unwrap();
    let target = net.target.http.to_string();
    let (root_a, root_b) = (dir.join("host-a"), dir.join("host-b"));
    let ep_a = format!("127.0.0.2:{}", free_udp_port());
    let ep_b = format!("127.0.0.3:{}", free_udp_port());
    let (st_a, st_b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let common = |root: &Path, ep: &str, st: &str| -> Vec<String> {
        [
            "--target",
            &target,
            "--endpoint",
            ep,
            "--listen",
            ep,
            "--status-listen",
            st,
            "--arti-config",
            arti,
            "--binary",
            bin,
            "--root",
            root.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    // --dry-run changes nothing.
    let mut args = vec!["--init".to_string(), "--dry-run".into()];
    args.extend(common(&root_a, &ep_a, &st_a));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = deploy(&a);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("would run"), "{}", text(&out));
    assert!(files(&root_a).is_empty(), "a dry run writes nothing");

    // Host A.
    let mut args = vec!["--init".to_string()];
    args.extend(common(&root_a, &ep_a, &st_a));
    let a_args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = deploy(&a_args);
    assert!(out.status.success(), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("rbjoin1:"))
        .expect("deploy --init prints the join line")
        .to_string();
    let address = line_master(&line);
    assert!(root_a.join("usr/local/bin/rustbalance").exists());
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&root_a.join("etc/rustbalance")), 0o750);
    assert_eq!(mode(&root_a.join("var/lib/rustbalance")), 0o700);
    wait_for(LIMIT, "host A publishes", || {
        status_at(&st_a).filter(published)
    });

    // Idempotent: a second run changes nothing and says so.
    let before = files(&root_a);
    let pid_a = pid(&root_a).unwrap();
    let out = deploy(&a_args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("nothing to do"),
        "a second run says so: {}",
        text(&out)
    );
    assert_eq!(files(&root_a), before, "a second run changes no file");
    assert_eq!(pid(&root_a), Some(pid_a), "and starts nothing");

    // Host B joins with the line in a file.
    let line_file = dir.join("line");
    std::fs::write(&line_file, format!("{line}\n")).unwrap();
    let mut args = vec!["--join".to_string(), line_file.display().to_string()];
    args.extend(common(&root_b, &ep_b, &st_b));
    let b_args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    let out = deploy(&b_args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains(&line), "the line is never echoed");
    assert!(
        !root_b
            .join("var/lib/rustbalance/node/hs_ed25519_secret_key")
            .exists(),
        "B holds blinded keys only"
    );

    // Both serve the master address.
    wait_for(LIMIT, "the HSDirs list hosts A and B", || {
        let own = vec![auth_keys_at(&st_a), auth_keys_at(&st_b)];
        let d = hsdirs.descriptor(&address)?;
        serves_every_node(&d, &own).then_some(())
    });
    eprintln!(
        "deploy.sh --join to serving (on every HSDir): {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let r = fetch(net, &address, "/");
    assert_eq!(r.body, net.index_body());
    let s = status_at(&st_b).unwrap();
    assert_eq!(s["keys"]["holder"], false);

    // Uninstall B (keys kept), then purge A.
    let pid_b = pid(&root_b).unwrap();
    let out = deploy(&["--uninstall", "--root", root_b.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("kept the node's keys"),
        "{}",
        text(&out)
    );
    wait_for(Duration::from_secs(15), "B's node stops", || {
        (!alive(pid_b)).then_some(())
    });
    assert!(!root_b.join("usr/local/bin/rustbalance").exists());
    assert!(root_b
        .join("var/lib/rustbalance/node/rustbalance.toml")
        .exists());
    let out = deploy(&["--uninstall", "--purge", "--root", root_a.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for(Duration::from_secs(15), "A's node stops", || {
        (!alive(pid_a)).then_some(())
    });
    assert!(!root_a.join("var/lib/rustbalance").exists(), "purged");
    let out = deploy(&["--uninstall", "--root", root_a.to_str().unwrap()]);
    assert!(
        text(&out).contains("nothing to uninstall"),
        "{}",
        text(&out)
    );
}
