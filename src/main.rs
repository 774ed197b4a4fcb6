//! The `rustbalance` binary: everything is in the library's `cli` module.

fn main() -> std::process::ExitCode {
    rustbalance::cli::main()
}
