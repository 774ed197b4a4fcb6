//! The command line: parses arguments and calls the library. This is the binary's edge, the one
//! place errors become `anyhow` and then an exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use tokio::sync::watch;

use crate::config::Config;
use crate::daemon;
use crate::keys::{MasterIdentity, OnionAddress};
use crate::status;

/// RustBalance: several nodes, one onion address.
#[derive(Parser, Debug)]
#[command(name = "rustbalance", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `init` and `join` both ask for.
#[derive(clap::Args, Debug)]
struct NodeArgs {
    /// Where the target is: host:port, or <address>.onion:port.
    #[arg(long)]
    target: String,
    /// Directory for the node's keys, config and Arti state (created; must not hold a config).
    #[arg(long, default_value = "rustbalance")]
    dir: PathBuf,
    /// This node's id, unique in the cluster (default: `node-` and 8 random hex digits; `join`
    /// asks for it, and the cluster picks another if it is taken).
    #[arg(long)]
    node_id: Option<String>,
    /// An Arti configuration file to use (e.g. a private test network's fragment).
    #[arg(long)]
    arti_config: Option<PathBuf>,
    /// Status endpoint address.
    #[arg(long, default_value = "127.0.0.1:9191")]
    status_listen: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a node: a master identity (new or imported), its key file and a config file.
    Init {
        #[command(flatten)]
        node: NodeArgs,
        /// Import this identity secret (C tor hs_ed25519_secret_key or PKCS8 PEM) instead of
        /// generating one.
        #[arg(long)]
        import: Option<PathBuf>,
        /// Offline master: copy the blinded keys of this directory (`keys export-blinded`) into
        /// the node instead of holding an identity secret; the master address is theirs.
        #[arg(long, conflicts_with = "import")]
        blinded: Option<PathBuf>,
        /// This node's mesh endpoint (IP:port, reachable by the other nodes over UDP): makes the
        /// node the first of a cluster (cluster token, mesh key, `[mesh]`) and prints a join line.
        #[arg(long)]
        endpoint: Option<std::net::SocketAddr>,
        /// The mesh's UDP listen address (default: 0.0.0.0 and the endpoint's port).
        #[arg(long, requires = "endpoint")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Print a fresh join line for this cluster (from the node's configuration: its cluster
    /// token and master address). Any running node of the cluster accepts it.
    Invite {
        /// Configuration file.
        #[arg(short, long, default_value = "rustbalance/rustbalance.toml")]
        config: PathBuf,
        /// How long the line is valid.
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
        /// How many nodes may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
    /// Join a cluster: reach the master address over Tor with a join line, receive the cluster's
    /// token, members and master keys, and write this node's directory. Then `run` it.
    Join {
        /// The join line (or `-` to read it from standard input; a line in argv is visible to
        /// other local users while `join` runs: prefer --line-file or stdin).
        line: Option<String>,
        /// Read the join line from this file.
        #[arg(long, conflicts_with = "line")]
        line_file: Option<PathBuf>,
        #[command(flatten)]
        node: NodeArgs,
        /// This node's mesh endpoint (IP:port, reachable by the other nodes over UDP).
        #[arg(long)]
        endpoint: std::net::SocketAddr,
        /// The mesh's UDP listen address (default: 0.0.0.0 and the endpoint's port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Run the node.
    Run {
        /// Configuration file.
        #[arg(short, long, default_value = "rustbalance/rustbalance.toml")]
        config: PathBuf,
    },
    /// Check the configuration and every key file it names (permissions included) without
    /// starting anything: exit 0 if `run` would start, else the same error as `run`.
    CheckConfig {
        /// Configuration file.
        #[arg(short, long, default_value = "rustbalance/rustbalance.toml")]
        config: PathBuf,
    },
    /// Ask the running node for its status.
    Status {
        /// Configuration file (for the status endpoint's address).
        #[arg(short, long, default_value = "rustbalance/rustbalance.toml")]
        config: PathBuf,
        /// Print the JSON snapshot.
        #[arg(long)]
        json: bool,
        /// Refresh the view every 2 s until interrupted.
        #[arg(long, conflicts_with = "json")]
        watch: bool,
    },
    /// Master identity keys, and the mesh's WireGuard key and cluster token.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Show the onion address of an identity secret (C tor or PKCS8 PEM).
    Show {
        /// The key file.
        key: PathBuf,
    },
    /// Convert an identity secret (C tor or PKCS8 PEM) to C tor's format (0600).
    Import {
        /// The key file to read.
        key: PathBuf,
        /// Where to write hs_ed25519_secret_key (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Export blinded keys for the coming days (offline-master mode): run this where the identity
    /// secret lives, copy the directory to the nodes, set `master.blinded_keys` to it.
    ExportBlinded {
        /// The identity secret (C tor or PKCS8 PEM).
        key: PathBuf,
        /// Directory to write the keys into (created 0700; existing keys are never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// How many days ahead the keys must cover (from the previous period on).
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Time-period length in minutes (1440 on the public network; 6 on the private test network).
        #[arg(long, default_value_t = 1440)]
        period_length: u32,
        /// Time-period offset in seconds (43200 on the public network; 180 on the test network).
        #[arg(long, default_value_t = 43200)]
        period_offset: u32,
    },
    /// Generate a new identity secret in C tor's format (0600).
    Generate {
        /// Where to write it (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Generate this node's WireGuard private key for `mesh.private_key_file` (0600) and print
    /// its public key (what other nodes put in `mesh.seeds`).
    MeshGenerate {
        /// Where to write it (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the WireGuard public key of a `mesh.private_key_file`.
    MeshPublic {
        /// The private key file.
        key: PathBuf,
    },
    /// Generate a cluster token for `mesh.cluster_token_file` (32 random bytes, base64, 0600);
    /// copy the same file to every node of the cluster.
    TokenGenerate {
        /// Where to write it (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Entry point of the `rustbalance` binary.
pub fn main() -> ExitCode {
    crate::install_crypto_provider();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rustbalance: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init {
            node:
                NodeArgs {
                    target,
                    dir,
                    node_id,
                    arti_config,
                    status_listen,
                },
            import,
            blinded,
            endpoint,
            listen,
        } => {
            let address = init(&InitOptions {
                target,
                dir: dir.clone(),
                import,
                blinded,
                node_id: node_id.unwrap_or_else(crate::join::fresh_node_id),
                arti_config,
                status_listen,
                mesh: endpoint.map(|e| (listen.unwrap_or_else(|| any_ip(e)), e)),
            })?;
            println!("master address: {address}");
            println!("config: {}", dir.join(CONFIG_FILE).display());
            println!(
                "run it with: rustbalance run -c {}",
                dir.join(CONFIG_FILE).display()
            );
            if endpoint.is_some() {
                let config = Config::load(&dir.join(CONFIG_FILE))?;
                let line = mint(&config, crate::join::invite::DEFAULT_TTL, 1)?;
                println!(
                    "join line (secret; valid 1 h, one node; `rustbalance invite` makes more):"
                );
                println!("{}", line.as_str());
            } else {
                println!("single node (no --endpoint): no mesh, no join line");
            }
            Ok(())
        }
        Command::Invite { config, ttl, uses } => {
            let config =
                Config::load(&config).with_context(|| format!("loading {}", config.display()))?;
            let line = mint(&config, ttl.into(), uses)?;
            println!("{}", line.as_str());
            Ok(())
        }
        Command::Join {
            line,
            line_file,
            node:
                NodeArgs {
                    target,
                    dir,
                    node_id,
                    arti_config,
                    status_listen,
                },
            endpoint,
            listen,
        } => {
            let line = read_line(line, line_file)?;
            let invite = crate::join::invite::Invite::parse(&line)?;
            let spec = crate::join::enrol::JoinSpec {
                dir: dir.clone(),
                master: invite.master.clone(),
                target,
                listen: listen.unwrap_or_else(|| any_ip(endpoint)),
                endpoint,
                arti_config: match arti_config {
                    Some(p) => {
                        Some(std::path::absolute(&p).with_context(|| format!("{}", p.display()))?)
                    }
                    None => None,
                },
                status_listen,
            };
            let config_path = tokio_runtime(None)?.block_on(join(&spec, &invite, node_id))?;
            println!("joined the cluster of {}", invite.master);
            println!("config: {}", config_path.display());
            println!("run it with: rustbalance run -c {}", config_path.display());
            Ok(())
        }
        Command::CheckConfig { config } => {
            let config =
                Config::load(&config).with_context(|| format!("loading {}", config.display()))?;
            let report = daemon::preflight(&config)?;
            println!("configuration OK");
            println!("node id: {}", report.node_id);
            println!("master address: {}", report.master);
            println!("master keys: {}", report.keys);
            if let Some(k) = report.mesh_public_key {
                println!("mesh public key: {k}");
            }
            if let Some(n) = report.authorized_clients {
                println!("restricted discovery: {n} authorized clients");
            }
            Ok(())
        }
        Command::Run { config } => {
            let config =
                Config::load(&config).with_context(|| format!("loading {}", config.display()))?;
            init_logging();
            tokio_runtime(Some(config.node.worker_threads))?.block_on(async move {
                let (tx, rx) = watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    tracing::info!("signal received: shutting down");
                    let _ = tx.send(true);
                    // Keep the sender alive so tasks see `true`, not a closed channel.
                    std::future::pending::<()>().await;
                });
                daemon::run(config, rx).await
            })?;
            Ok(())
        }
        Command::Status {
            config,
            json,
            watch,
        } => {
            // `rustbalance status | head` ends quietly, like other Unix tools.
            // SAFETY: restoring SIGPIPE's default disposition; no other thread runs yet.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            }
            let config =
                Config::load(&config).with_context(|| format!("loading {}", config.display()))?;
            let token = match &config.status.access_token_file {
                Some(p) => Some(crate::keys::load_access_token(p)?),
                None => None,
            };
            let rt = tokio_runtime(None)?;
            let fetch = || {
                rt.block_on(status::fetch(
                    config.status.listen,
                    token.as_ref().map(|t| t.as_str()),
                ))
            };
            if watch {
                loop {
                    // Clear the screen, then the view (an error is shown, and retried).
                    let view = match fetch() {
                        Ok(s) => s.render(),
                        Err(e) => format!("rustbalance: {e}\n"),
                    };
                    print!("\x1b[2J\x1b[H{view}");
                    std::io::Write::flush(&mut std::io::stdout())?;
                    std::thread::sleep(std::time::Duration::from_secs(2));
                }
            }
            let snapshot = fetch()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&snapshot)?);
            } else {
                print!("{}", snapshot.render());
            }
            Ok(())
        }
        Command::Keys(KeysCommand::Show { key }) => {
            println!("{}", daemon_keys_load(&key)?.onion_address());
            Ok(())
        }
        Command::Keys(KeysCommand::Import { key, out }) => {
            let id = daemon_keys_load(&key)?;
            id.write_ctor_secret_key_file(&out)?;
            println!("{} written to {}", id.onion_address(), out.display());
            Ok(())
        }
        Command::Keys(KeysCommand::ExportBlinded {
            key,
            out,
            days,
            period_length,
            period_offset,
        }) => {
            let id = daemon_keys_load(&key)?;
            let current =
                crate::keys::period_at(std::time::SystemTime::now(), period_length, period_offset)?;
            let first = current.prev().unwrap_or(current);
            let count = crate::keys::export_count_for_days(days, period_length)? + 1;
            let files = crate::keys::export_blinded(&id, first, count, &out)?;
            println!(
                "{} blinded keys of {} for periods {} .. {} written to {}",
                files.len(),
                id.onion_address(),
                first.interval_num(),
                first.interval_num() + u64::from(count) - 1,
                out.display()
            );
            Ok(())
        }
        Command::Keys(KeysCommand::Generate { out }) => {
            let id = MasterIdentity::generate(&mut rand::rng());
            id.write_ctor_secret_key_file(&out)?;
            println!("{} written to {}", id.onion_address(), out.display());
            Ok(())
        }
        Command::Keys(KeysCommand::MeshGenerate { out }) => {
            let public = crate::keys::generate_mesh_key_file(&out)?;
            println!("public key: {}", public.to_base64());
            println!("private key written to {}", out.display());
            Ok(())
        }
        Command::Keys(KeysCommand::MeshPublic { key }) => {
            println!(
                "{}",
                crate::keys::load_mesh_keys(&key)?.public_key().to_base64()
            );
            Ok(())
        }
        Command::Keys(KeysCommand::TokenGenerate { out }) => {
            crate::keys::generate_cluster_token_file(&out)?;
            println!("cluster token written to {}", out.display());
            Ok(())
        }
    }
}

fn daemon_keys_load(path: &Path) -> anyhow::Result<MasterIdentity> {
    Ok(crate::keys::load_identity(path)?)
}

/// The config file `init` writes inside its directory.
pub const CONFIG_FILE: &str = crate::join::enrol::CONFIG_FILE;
/// The key file `init` writes inside its directory.
pub const KEY_FILE: &str = crate::join::enrol::KEY_FILE;

/// What `rustbalance init` needs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Target address (host:port or onion:port).
    pub target: String,
    /// Node directory.
    pub dir: PathBuf,
    /// Identity to import instead of generating one.
    pub import: Option<PathBuf>,
    /// Blinded keys to copy instead of an identity (offline master).
    pub blinded: Option<PathBuf>,
    /// Node id.
    pub node_id: String,
    /// Arti configuration file.
    pub arti_config: Option<PathBuf>,
    /// Status endpoint.
    pub status_listen: String,
    /// With a mesh: (listen, endpoint).
    pub mesh: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
}

/// `0.0.0.0` (or `::`) with `endpoint`'s port.
fn any_ip(endpoint: std::net::SocketAddr) -> std::net::SocketAddr {
    let ip: std::net::IpAddr = if endpoint.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    std::net::SocketAddr::new(ip, endpoint.port())
}

/// A fresh join line for the cluster `config` belongs to.
fn mint(
    config: &Config,
    ttl: std::time::Duration,
    uses: u32,
) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let Some(mesh) = &config.mesh else {
        bail!(
            "this node has no [mesh]: there is no cluster to invite to (init --endpoint makes one)"
        );
    };
    let token = crate::keys::load_cluster_token(&mesh.cluster_token_file)?;
    let invite = crate::join::invite::Invite::mint(
        &token,
        &config.master.onion_address,
        ttl,
        uses,
        std::time::SystemTime::now(),
    )?;
    Ok(invite.to_line())
}

/// The join line from argv, a file or standard input.
fn read_line(
    line: Option<String>,
    file: Option<PathBuf>,
) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let text = match (line, file) {
        (Some(l), _) if l != "-" => l,
        (_, Some(f)) => {
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?
        }
        _ => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::Read::take(std::io::stdin(), 4096), &mut s)
                .context("reading the join line from standard input")?;
            s
        }
    };
    Ok(zeroize::Zeroizing::new(text.trim().to_string()))
}

/// Joins the cluster of `invite`: bootstraps Arti in the new node's directory, sends the
/// request to the master address's join port, checks the grant and writes the node.
async fn join(
    spec: &crate::join::enrol::JoinSpec,
    invite: &crate::join::invite::Invite,
    node_id: Option<String>,
) -> anyhow::Result<PathBuf> {
    use crate::join::{client, enrol};
    if let Some(id) = &node_id {
        if !crate::membership::identity::valid_node_id(id) {
            bail!("--node-id {id:?}: not 1-64 of A-Z a-z 0-9 . _ -");
        }
    }
    if invite.terms.expires <= crate::join::invite::unix_secs(std::time::SystemTime::now()) {
        bail!("the join line has expired: ask for a new one (rustbalance invite)");
    }
    enrol::prepare_dir(&spec.dir)?;
    let arti = crate::daemon::arti_client_config(
        spec.arti_config.as_deref(),
        &spec.dir.join("arti-state"),
        &spec.dir.join("arti-cache"),
    )?;
    let tor = arti_client::TorClient::builder()
        .config(arti)
        .create_unbootstrapped()
        .context("creating the Tor client")?;
    client::bootstrap(&tor).await?;
    let keys = crate::mesh::MeshKeys::generate();
    let (frame, _) = client::request_frame(
        invite,
        keys.public_key(),
        spec.endpoint,
        node_id,
        std::time::SystemTime::now(),
    )?;
    let reply = client::exchange(&tor, invite, &frame).await?;
    let grant = client::check_reply(invite, &frame, &reply)?;
    eprintln!(
        "granted: node id {}, {} member(s), {:?}",
        grant.node_id,
        grant.members.len(),
        grant.keys
    );
    if matches!(grant.keys, crate::join::wire::KeyMaterial::Blinded(_)) && !grant.holder_live {
        eprintln!(
            "warning: no node holding the identity secret is live: this node's blinded keys \
             last {} period(s) ahead unless one joins or fresh keys are exported",
            grant.share_periods
        );
    }
    Ok(enrol::write_joined(spec, &keys, &grant)?)
}

/// Creates a node directory: identity key (0600), config (validated before it is written).
/// Returns the master address.
pub fn init(opts: &InitOptions) -> anyhow::Result<OnionAddress> {
    let config_path = opts.dir.join(CONFIG_FILE);
    if config_path.exists() {
        bail!(
            "{} exists: refusing to overwrite a node",
            config_path.display()
        );
    }
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("creating {}", opts.dir.display()))?;
    // The master: an identity (generated or imported), or blinded keys only (offline master).
    let (identity, blinded) = match &opts.blinded {
        Some(src) => {
            let master = crate::keys::blinded_dir_master(src)?;
            let keys = crate::keys::load_blinded_dir(src, &master)?;
            (None, Some((master, keys)))
        }
        None => (
            Some(match &opts.import {
                Some(p) => daemon_keys_load(p)?,
                None => MasterIdentity::generate(&mut rand::rng()),
            }),
            None,
        ),
    };
    let address = match (&identity, &blinded) {
        (Some(id), _) => id.onion_address(),
        (None, Some((master, _))) => master.clone(),
        (None, None) => unreachable!("one of the two is set"),
    };
    let arti_config = match &opts.arti_config {
        Some(p) => Some(std::path::absolute(p).with_context(|| format!("{}", p.display()))?),
        None => None,
    };
    let text = crate::join::enrol::render(&crate::join::enrol::ConfigSpec {
        node_id: opts.node_id.clone(),
        master: address.clone(),
        keys: if blinded.is_some() {
            crate::join::enrol::MasterKeyFile::Blinded(crate::join::enrol::BLINDED_DIR.into())
        } else {
            crate::join::enrol::MasterKeyFile::Identity(KEY_FILE.into())
        },
        target: opts.target.clone(),
        virtual_ports: vec![80],
        authorized_clients: None,
        pow: None,
        arti_config,
        status_listen: opts.status_listen.clone(),
        mesh: opts
            .mesh
            .map(|(listen, endpoint)| crate::join::enrol::MeshSpec {
                listen,
                endpoint,
                seeds: Vec::new(),
                timers: None,
            }),
        share_periods: None,
    });
    // Validate before writing anything that a failed init would leave behind.
    let key_path = opts.dir.join(KEY_FILE);
    let mut written = Vec::new();
    if let Some(id) = &identity {
        id.write_ctor_secret_key_file(&key_path)?;
        written.push(key_path);
    }
    if let Some((master, keys)) = &blinded {
        let d = opts.dir.join(crate::join::enrol::BLINDED_DIR);
        written.push(d.clone());
        for k in keys {
            if let Err(e) =
                crate::keys::store_blinded_key(&d, &k.to_bytes(master)[..], master, "blinded key")
            {
                let _ = std::fs::remove_dir_all(&d);
                return Err(e.into());
            }
        }
    }
    let result = (|| -> anyhow::Result<()> {
        if opts.mesh.is_some() {
            let p = opts.dir.join(crate::join::enrol::MESH_KEY_FILE);
            crate::keys::generate_mesh_key_file(&p)?;
            written.push(p);
            let p = opts.dir.join(crate::join::enrol::TOKEN_FILE);
            crate::keys::generate_cluster_token_file(&p)?;
            written.push(p);
        }
        crate::join::enrol::write_config(&opts.dir, &text)?;
        Ok(())
    })();
    if let Err(e) = result {
        for p in &written {
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        }
        return Err(e);
    }
    Ok(address)
}

/// The default log filter: INFO, minus warnings that are expected by design and say nothing an
/// operator must act on:
/// - `tor_hsservice::publish`: Arti's own descriptor publisher stops at once ("identity key not
///   found"): nodes never hold the identity secret in Arti's keystore, RustBalance publishes
///   (the daemon says so once at INFO);
/// - `tor_netdir`: relay-weighting diagnostics ("requested N relays, only M usable"), printed in
///   bulk on small networks; circuits that then fail are still reported by `tor_circmgr`.
///
/// `RUST_LOG` replaces it entirely.
pub const DEFAULT_LOG_FILTER: &str = "info,tor_hsservice::publish=error,tor_netdir=error";

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// The async runtime: `workers` threads, or tokio's default (one per core) with `None`. The
/// node runs with `node.worker_threads`: Arti's circuit and channel reactors wake once per cell
/// or so, across threads each wake-up is a context switch, and one worker measured 31 % less
/// CPU per MB than two, at the same throughput.
fn tokio_runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_a_valid_node_and_refuses_to_overwrite() {
        let dir = std::env::temp_dir().join(format!("rb-init-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = InitOptions {
            target: "127.0.0.1:8080".into(),
            dir: dir.clone(),
            import: None,
            blinded: None,
            node_id: "n1".into(),
            arti_config: None,
            status_listen: "127.0.0.1:9191".into(),
            mesh: None,
        };
        let address = init(&opts).unwrap();
        let config = Config::load(&dir.join(CONFIG_FILE)).unwrap();
        assert_eq!(config.master.onion_address, address);
        let key = daemon_keys_load(&dir.join(KEY_FILE)).unwrap();
        assert_eq!(key.onion_address(), address);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = init(&opts).unwrap_err().to_string();
        assert!(again.contains("refusing to overwrite"), "{again}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn init_with_a_bad_target_leaves_nothing_behind() {
        let dir = std::env::temp_dir().join(format!("rb-init-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = InitOptions {
            target: "no-port".into(),
            dir: dir.clone(),
            import: None,
            blinded: None,
            node_id: "n1".into(),
            arti_config: None,
            status_listen: "127.0.0.1:9191".into(),
            mesh: None,
        };
        let err = format!("{:#}", init(&opts).unwrap_err());
        assert!(err.contains("target.address"), "{err}");
        assert!(!dir.join(KEY_FILE).exists() && !dir.join(CONFIG_FILE).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn init_with_blinded_keys_and_an_endpoint_makes_an_offline_master_cluster_node() {
        let tmp = tempfile::tempdir().unwrap();
        let id = MasterIdentity::generate(&mut rand::rng());
        let src = tmp.path().join("exported");
        let first = tor_hscrypto::time::TimePeriod::from_parts(1440, 20_000, 43200);
        crate::keys::export_blinded(&id, first, 3, &src).unwrap();
        let dir = tmp.path().join("n1");
        let opts = InitOptions {
            target: "127.0.0.1:8080".into(),
            dir: dir.clone(),
            import: None,
            blinded: Some(src),
            node_id: "n1".into(),
            arti_config: None,
            status_listen: "127.0.0.1:9191".into(),
            mesh: Some((
                "0.0.0.0:51820".parse().unwrap(),
                "192.0.2.1:51820".parse().unwrap(),
            )),
        };
        let address = init(&opts).unwrap();
        assert_eq!(address, id.onion_address());
        let config = Config::load(&dir.join(CONFIG_FILE)).unwrap();
        assert!(matches!(
            config.master.keys,
            crate::config::MasterKeys::BlindedDir(_)
        ));
        assert!(!dir.join(KEY_FILE).exists(), "no identity secret");
        let mesh = config.mesh.clone().expect("--endpoint writes [mesh]");
        assert_eq!(mesh.endpoint, "192.0.2.1:51820".parse().unwrap());
        crate::keys::load_mesh_keys(&mesh.private_key_file).unwrap();
        crate::keys::load_cluster_token(&mesh.cluster_token_file).unwrap();
        assert_eq!(
            crate::daemon::preflight(&config).unwrap().keys,
            format!("3 blinded keys in {}", dir.join("blinded").display())
        );
        // A join line for that cluster.
        let line = mint(&config, std::time::Duration::from_secs(60), 2).unwrap();
        let inv = crate::join::invite::Invite::parse(&line).unwrap();
        assert_eq!(inv.master, address);
        assert_eq!(inv.terms.uses, 2);
    }

    #[test]
    fn init_without_a_node_id_gives_each_node_its_own() {
        let ids: std::collections::BTreeSet<String> =
            (0..64).map(|_| crate::join::fresh_node_id()).collect();
        assert_eq!(ids.len(), 64, "64 fresh ids, all different");
        for id in &ids {
            assert!(crate::membership::identity::valid_node_id(id), "{id}");
            assert!(id.starts_with("node-") && id.len() == 13, "{id}");
        }
    }
}
