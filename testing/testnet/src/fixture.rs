//! Test support: one private network shared by every test of a run.
//!
//! [`shared`] reuses a usable network already running in the fixture directory (for example one
//! that the test command started with `testnet start`), or starts one. A network this process
//! started is stopped when the process exits, unless `RUSTBALANCE_TESTNET_KEEP=1`. Processes
//! serialise on a lock file beside the directory, so concurrent test binaries start at most one.
//!
//! Environment: `RUSTBALANCE_TESTNET_DIR` (directory; default `target/testnet` of this
//! workspace), `RUSTBALANCE_TESTNET_BIN` (the `testnet` binary that serves the target; default
//! `target/<profile>/testnet` beside the test binary), `RUSTBALANCE_TESTNET_KEEP`.

use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::network::{self, Description, NetState, StartOptions};

static SHARED: OnceLock<Result<Description, String>> = OnceLock::new();
static STARTED_HERE: OnceLock<PathBuf> = OnceLock::new();

/// The directory the fixture uses.
pub fn dir() -> PathBuf {
    std::env::var_os("RUSTBALANCE_TESTNET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(crate::default_dir)
}

/// The shared, usable network (started on first use). The error says why it could not start.
pub fn shared() -> Result<&'static Description, String> {
    SHARED
        .get_or_init(start_or_reuse)
        .as_ref()
        .map_err(Clone::clone)
}

fn start_or_reuse() -> Result<Description, String> {
    let dir = dir();
    let lock_path = dir.with_extension("lock");
    if let Some(parent) = lock_path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let lock =
        std::fs::File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
    // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "lock {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        ));
    }
    if let Ok(desc) = Description::load(&dir) {
        if desc.state == NetState::Ready && desc.alive().len() == desc.processes.len() {
            eprintln!("testnet fixture: reusing the network in {}", dir.display());
            return Ok(desc);
        }
    }
    let opts = StartOptions::new(dir.clone(), server_program()?);
    eprintln!("testnet fixture: starting a network in {}", dir.display());
    let desc = network::start(&opts, &mut |line| eprintln!("testnet fixture: {line}"))
        .map_err(|e| e.to_string())?;
    if std::env::var_os("RUSTBALANCE_TESTNET_KEEP").is_none() {
        let _ = STARTED_HERE.set(dir);
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe {
            libc::atexit(stop_at_exit);
        }
    }
    Ok(desc)
}

extern "C" fn stop_at_exit() {
    if let Some(dir) = STARTED_HERE.get() {
        match network::stop(dir) {
            Ok(r) => eprintln!("testnet fixture: stopped {} processes", r.stopped.len()),
            Err(e) => eprintln!("testnet fixture: stop failed: {e}"),
        }
    }
}

/// The `testnet` binary, which serves the sample target when run as `serve-http`.
fn server_program() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("RUSTBALANCE_TESTNET_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // Test binaries live in target/<profile>/deps/; binaries in target/<profile>/.
    let candidates = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("testnet"))
        .collect::<Vec<_>>();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            format!(
                "the `testnet` binary was not found ({candidates:?}); build it with \
                 `cargo build -p rustbalance-testnet` or set RUSTBALANCE_TESTNET_BIN"
            )
        })
}
