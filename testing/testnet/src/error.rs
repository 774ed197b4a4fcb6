//! Errors of the test-network launcher. Each names the thing that went wrong (a file, a port, a
//! process) so that a failed start says what to fix.

use std::path::PathBuf;

/// Everything that can go wrong while starting, checking or stopping a private network.
#[derive(Debug, thiserror::Error)]
pub enum TestnetError {
    /// A program the launcher runs (`tor`, `tor-gencert`) is not installed.
    #[error("`{program}` was not found: install Debian's `tor` package (apt-get install tor)")]
    ToolMissing {
        /// The program name.
        program: String,
    },
    /// A program the launcher runs failed.
    #[error("`{command}` failed ({status}): {output}")]
    ToolFailed {
        /// The command line, for the operator to rerun by hand.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed (trimmed).
        output: String,
    },
    /// A network already runs in this directory.
    #[error(
        "a test network is already running in {dir} (pids {pids:?}); \
         use it, or stop it first with `testnet stop --dir {dir}`"
    )]
    AlreadyRunning {
        /// Its data directory.
        dir: PathBuf,
        /// The PIDs still alive.
        pids: Vec<u32>,
    },
    /// The directory exists, holds files, and was not made by this launcher.
    #[error(
        "{dir} exists and is not a test-network directory (no {marker} marker); \
         refusing to touch it: pick another --dir or remove it yourself"
    )]
    NotOurDir {
        /// The directory.
        dir: PathBuf,
        /// The marker file name the launcher looks for.
        marker: &'static str,
    },
    /// No network has been started in this directory.
    #[error("no test network in {dir} (no {file}); start one with `testnet start --dir {dir}`")]
    NotStarted {
        /// The directory.
        dir: PathBuf,
        /// The description file that is missing.
        file: &'static str,
    },
    /// A port the network needs is taken.
    #[error(
        "port 127.0.0.1:{port} (for {what}) is already in use: {source}; pick another --base-port"
    )]
    PortInUse {
        /// The port.
        port: u16,
        /// Which process of the network wanted it.
        what: String,
        /// The bind error.
        source: std::io::Error,
    },
    /// The requested port range does not fit below 65536.
    #[error("--base-port {base} leaves no room for the {needed} ports the network needs")]
    PortRange {
        /// The base port asked for.
        base: u16,
        /// How many consecutive ports are needed.
        needed: u16,
    },
    /// A process of the network exited while it was needed.
    #[error("{name} (pid {pid}) died; last lines of {log}:\n{tail}")]
    ProcessDied {
        /// The node's name.
        name: String,
        /// Its PID.
        pid: u32,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// The network did not become usable before the deadline.
    #[error("the network was not usable after {waited_secs} s: {missing}")]
    NotReady {
        /// How long the launcher waited.
        waited_secs: u64,
        /// The condition still missing, in words.
        missing: String,
    },
    /// A file the launcher reads or writes could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file had unexpected contents.
    #[error("{path}: {problem}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A request through the network (SOCKS, HTTP, control port) failed.
    #[error("{0}")]
    Request(#[from] crate::client::RequestError),
}

impl TestnetError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| TestnetError::Io { path, source }
    }
}
