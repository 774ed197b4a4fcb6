//! The `rustbalance` binary. The daemon and its commands are not built yet (issue 3); until
//! then this binary says so instead of pretending to run.

fn main() -> std::process::ExitCode {
    eprintln!(
        "rustbalance {}: the daemon is not built yet; see README.md for what exists",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::from(2)
}
