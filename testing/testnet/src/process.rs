//! Processes of the network: running the key tools, starting tor daemons and the target server
//! detached, and checking or killing exactly the PIDs we started. A PID counts as ours only if
//! `/proc/<pid>/cmdline` still names the file we started it with, so a recycled PID is never
//! signalled.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::TestnetError;

/// A process the launcher started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// Node name (`auth0`, …, `target`).
    pub name: String,
    /// PID.
    pub pid: u32,
    /// A path that appears in the process's command line (its torrc or content dir): how we
    /// recognise it later.
    pub token: PathBuf,
    /// Its log file.
    pub log: PathBuf,
}

impl Started {
    /// Whether the process is still alive and still ours.
    pub fn alive(&self) -> bool {
        let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", self.pid)) else {
            return false;
        };
        let token = self.token.to_string_lossy();
        let is_ours = cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == token.as_bytes());
        // A zombie keeps its cmdline empty; treat it as dead.
        is_ours && !is_zombie(self.pid)
    }

    /// Resident memory in KiB, if alive.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The last `n` lines of a file (or a note that it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// Runs a tool to completion, feeding `stdin`, and returns its stdout.
pub fn run_tool(program: &str, args: &[&str], stdin: &[u8]) -> Result<String, TestnetError> {
    let command = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => TestnetError::ToolMissing {
                program: program.to_string(),
            },
            _ => TestnetError::ToolFailed {
                command: command.clone(),
                status: "could not start".into(),
                output: e.to_string(),
            },
        })?;
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| TestnetError::ToolFailed {
            command: command.clone(),
            status: "wait failed".into(),
            output: e.to_string(),
        })?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        return Err(TestnetError::ToolFailed {
            command,
            status: out.status.to_string(),
            output: text.trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts a tor daemon (`RunAsDaemon 1` in its torrc) and returns it once its PID file exists.
/// Tor's parent process exits only after the daemon has parsed its config and bound its ports,
/// so configuration and port errors come back here, with tor's own words.
pub fn start_tor(tor: &str, name: &str, node_dir: &Path) -> Result<Started, TestnetError> {
    let torrc = node_dir.join("torrc");
    let torrc_s = torrc.to_string_lossy().into_owned();
    run_tool(tor, &["-f", &torrc_s, "--hush"], b"").map_err(|e| match e {
        TestnetError::ToolFailed {
            command,
            status,
            output,
        } => TestnetError::ToolFailed {
            command,
            status,
            output: format!("{output}\n{}", tail(&node_dir.join("notice.log"), 8)),
        },
        other => other,
    })?;
    let pid_file = node_dir.join("tor.pid");
    let pid = wait_for_pid_file(&pid_file, Duration::from_secs(10))?;
    Ok(Started {
        name: name.to_string(),
        pid,
        token: torrc,
        log: node_dir.join("notice.log"),
    })
}

fn wait_for_pid_file(path: &Path, limit: Duration) -> Result<u32, TestnetError> {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return Ok(pid);
            }
        }
        if start.elapsed() > limit {
            return Err(TestnetError::BadFile {
                path: path.to_path_buf(),
                problem: format!("no PID written within {} s", limit.as_secs()),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `program args…` in its own session, detached from our terminal, logging to `log`.
/// `token` must be one of `args`: it identifies the process later.
pub fn start_detached(
    name: &str,
    program: &Path,
    args: &[&str],
    token: &Path,
    log: &Path,
) -> Result<Started, TestnetError> {
    let out = std::fs::File::create(log).map_err(TestnetError::io(log))?;
    let err = out.try_clone().map_err(TestnetError::io(log))?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(TestnetError::io(program))?;
    Ok(Started {
        name: name.to_string(),
        pid: child.id(),
        token: token.to_path_buf(),
        log: log.to_path_buf(),
    })
}

/// Stops the given processes: SIGTERM, then SIGKILL for any still alive after `grace`. Returns
/// the names of those that needed SIGKILL. Processes that are not (or no longer) ours are left.
pub fn stop_all(procs: &[Started], grace: Duration) -> Vec<String> {
    for p in procs.iter().filter(|p| p.alive()) {
        signal(p.pid, libc::SIGTERM);
    }
    let start = Instant::now();
    while procs.iter().any(Started::alive) && start.elapsed() < grace {
        reap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut killed = Vec::new();
    for p in procs.iter().filter(|p| p.alive()) {
        signal(p.pid, libc::SIGKILL);
        killed.push(p.name.clone());
    }
    reap();
    killed
}

fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a PID we verified as ours; no memory is shared.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Collects exited children of this process (the target server when we are its parent).
fn reap() {
    loop {
        // SAFETY: waitpid with WNOHANG on any child; status is a local.
        let r = unsafe {
            let mut status = 0;
            libc::waitpid(-1, &mut status, libc::WNOHANG)
        };
        if r <= 0 {
            break;
        }
    }
}
