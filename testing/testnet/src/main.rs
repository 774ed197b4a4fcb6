//! `testnet`: start, inspect and stop RustBalance's private Tor network (see testing/README.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use testnet::network::{self, Description, StartOptions};

#[derive(Parser)]
#[command(
    name = "testnet",
    about = "A private Tor network on 127.0.0.1 for RustBalance's tests"
)]
struct Cli {
    /// Network directory (default: $RUSTBALANCE_TESTNET_DIR, else target/testnet).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a network and wait until it is usable.
    Start {
        /// First of the consecutive ports the network uses.
        #[arg(long, default_value_t = 16000)]
        base_port: u16,
        /// Non-exit relays (besides the 3 authorities, which relay too).
        #[arg(long, default_value_t = 3)]
        relays: u16,
        /// Exit relays.
        #[arg(long, default_value_t = 2)]
        exits: u16,
        /// Steady V3AuthVotingInterval in seconds (the onion time period is 24 of these).
        #[arg(long, default_value_t = 15)]
        voting_interval: u32,
        /// Give up if not usable after this many seconds.
        #[arg(long, default_value_t = 180)]
        timeout: u64,
        /// Size of the large target file in bytes.
        #[arg(long, default_value_t = testnet::target::DEFAULT_LARGE_BYTES)]
        large_bytes: u64,
        /// Leave the processes running if the start fails.
        #[arg(long)]
        keep_on_failure: bool,
    },
    /// Stop exactly the processes the network started.
    Stop,
    /// Show the network's processes, memory and consensus.
    Status {
        /// Print the JSON description instead.
        #[arg(long)]
        json: bool,
    },
    /// Serve a directory over HTTP (the sample target; started by `start`).
    #[command(hide = true)]
    ServeHttp {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        listen: SocketAddr,
    },
}

fn main() -> std::process::ExitCode {
    // Behave like other Unix tools when the reader goes away (`testnet status | head`).
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testnet: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let dir = cli.dir.unwrap_or_else(testnet::fixture::dir);
    match cli.command {
        Command::Start {
            base_port,
            relays,
            exits,
            voting_interval,
            timeout,
            large_bytes,
            keep_on_failure,
        } => {
            let exe = std::env::current_exe().context("locating the testnet binary")?;
            let mut opts = StartOptions::new(dir.clone(), exe);
            opts.shape.base_port = base_port;
            opts.shape.relays = relays;
            opts.shape.exits = exits;
            opts.shape.voting_interval_secs = voting_interval;
            opts.ready_timeout = Duration::from_secs(timeout);
            opts.large_bytes = large_bytes;
            opts.keep_on_failure = keep_on_failure;
            let desc = network::start(&opts, &mut |l| println!("{l}"))?;
            let t = &desc.timings;
            println!(
                "usable after {:.1} s (keys+configs {:.1} s, processes {:.1} s, consensus {:.1} s); \
                 {} processes, total RSS {:.1} MiB",
                secs(t.usable_ms),
                secs(Some(t.prepared_ms)),
                secs(Some(t.processes_ms)),
                secs(t.consensus_ms),
                desc.processes.len(),
                desc.total_rss_kib() as f64 / 1024.0
            );
            println!("sample onion: http://{}/", desc.onion_address()?);
            println!(
                "client SOCKS {}  control {}",
                desc.client.socks, desc.client.control
            );
            println!("description: {}", dir.join(network::DESCRIPTION).display());
            println!("Arti fragment: {}", desc.arti_config.display());
        }
        Command::Stop => {
            let r = network::stop(&dir)?;
            if r.stopped.is_empty() {
                println!("nothing was running in {}", dir.display());
            } else {
                println!(
                    "stopped {} processes: {}",
                    r.stopped.len(),
                    r.stopped.join(" ")
                );
            }
            if !r.killed.is_empty() {
                println!("needed SIGKILL: {}", r.killed.join(" "));
            }
        }
        Command::Status { json } => {
            let desc = Description::load(&dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&desc)?);
                return Ok(());
            }
            println!(
                "network in {}: {:?}, {}",
                dir.display(),
                desc.state,
                desc.tor_version
            );
            for p in &desc.processes {
                let rss = p.rss_kib().map(|k| format!("{:.1} MiB", k as f64 / 1024.0));
                let state = if p.alive() { "alive" } else { "dead" };
                println!(
                    "  {:8} pid {:7} {:5} {}",
                    p.name,
                    p.pid,
                    state,
                    rss.unwrap_or_default()
                );
            }
            println!("total RSS {:.1} MiB", desc.total_rss_kib() as f64 / 1024.0);
            if let Some(c) = desc.client_consensus() {
                println!(
                    "client consensus {} (voting interval {:?} s):",
                    c.valid_after, c.voting_interval_secs
                );
                for (name, flags) in &c.relays {
                    println!("  {name:8} {}", flags.join(" "));
                }
            }
            if let Some(onion) = &desc.target.onion_address {
                println!("sample onion: http://{onion}/");
            }
            if desc.state == network::NetState::Ready && desc.alive().len() != desc.processes.len()
            {
                bail!("some processes of the network died");
            }
        }
        Command::ServeHttp { root, listen } => testnet::target::serve(root, listen)?,
    }
    Ok(())
}

fn secs(ms: Option<u64>) -> f64 {
    ms.map(|m| m as f64 / 1000.0).unwrap_or(f64::NAN)
}
