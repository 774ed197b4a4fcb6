//! The node's configuration file: TOML deserialized into raw structs that reject unknown keys,
//! then validated into typed, immutable values ([`Config`]).
//!
//! This module owns every key's name, default and rule; docs/CONFIG.md lists the same keys and
//! a test keeps its example valid. Errors name the key (`target.connect_timeout`) and the bad
//! value, except where the value is secret or private: the target's address is never echoed.
//! It reads no key material: paths are checked to exist, and the keys module loads them.

mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::keys::OnionAddress;

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (syntax, unknown key, wrong type).
    #[error("{path}: {message}")]
    Parse {
        /// The configuration file.
        path: PathBuf,
        /// The TOML error, which names the key and line.
        message: String,
    },
    /// A key has a value outside its rules.
    #[error("{key} = {value}: {problem}")]
    Invalid {
        /// The full key name, like `publish.intro_points`.
        key: &'static str,
        /// The value as written (or a placeholder where it must not be shown).
        value: String,
        /// What is wrong and what is accepted.
        problem: String,
    },
}

fn invalid(
    key: &'static str,
    value: impl std::fmt::Display,
    problem: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        problem: problem.into(),
    }
}

/// The validated configuration of one node.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[node]`.
    pub node: NodeConfig,
    /// `[master]`.
    pub master: MasterConfig,
    /// `[target]`.
    pub target: TargetConfig,
    /// `[publish]`.
    pub publish: PublishConfig,
    /// `[tor]`.
    pub tor: TorConfig,
    /// `[status]`.
    pub status: StatusConfig,
    /// `[mesh]`, or `None` when the section is absent (single-node mode).
    pub mesh: Option<MeshConfig>,
    /// `[join]`: how this node answers nodes joining over the master address (with `[mesh]`).
    pub join: JoinConfig,
    /// `[repair]`: the self-check of this node's Tor side and its repair.
    pub repair: RepairConfig,
    /// `[pow]`: proof of work against introduction floods, with one seed across the cluster.
    pub pow: PowConfig,
}

/// `[pow]`: proof of work (proposal 327). When enabled, every node's service verifies PoW
/// solutions and serves introduction requests by effort; every node verifies the same seeds
/// (derived from the cluster token, the time period and the epoch `unix time / seed_rotation`),
/// and the descriptor advertises the current epoch's seed with the highest suggested effort of
/// the healthy nodes, kept within `[min_effort, max_effort]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowConfig {
    /// Verify solutions and advertise `pow-params`.
    pub enabled: bool,
    /// How many introduction requests wait at most (the lowest effort is dropped first).
    pub queue_depth: usize,
    /// How often the seed changes.
    pub seed_rotation: Duration,
    /// The least suggested effort advertised (0: clients solve only under load).
    pub min_effort: u32,
    /// The most suggested effort advertised.
    pub max_effort: u32,
    /// How many rendezvous handshakes run at once; more requests wait in Arti's queue,
    /// highest effort first.
    pub rendezvous_concurrency: usize,
}

/// `[repair]`: every `probe_interval` the node builds a circuit to one of its own intro-point
/// relays; `fail_after` consecutive failures mark its Tor side broken (its intro points are
/// withdrawn from the descriptor and it may not publish), `recover_after` successes mark it
/// working again. While broken it repairs itself with jittered backoff between `backoff_min`
/// and `backoff_max`: relaunching the onion service, then also retiring every circuit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairConfig {
    /// Run the self-check (and repair).
    pub enabled: bool,
    /// Time between probes.
    pub probe_interval: Duration,
    /// Time one probe may take.
    pub probe_timeout: Duration,
    /// Consecutive failed probes that mark the Tor side broken.
    pub fail_after: u32,
    /// Consecutive good probes that mark it working again.
    pub recover_after: u32,
    /// The first wait between repairs.
    pub backoff_min: Duration,
    /// The longest wait between repairs.
    pub backoff_max: Duration,
}

/// `[join]`: the join service on the master address's reserved join port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinConfig {
    /// Answer join requests (with `[mesh]` only).
    pub enabled: bool,
    /// Hand a joiner the identity secret (if this node holds it) instead of blinded keys.
    pub hand_out_identity: bool,
    /// Blinded keys handed out and pushed cover this many periods ahead of the current one.
    pub share_periods: u8,
    /// Join attempts this node answers per minute (bursts up to 10).
    pub max_per_minute: u32,
}

/// `[node]`: who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Unique name in the cluster (1–64 of `A–Z a–z 0–9 . _ -`).
    pub id: String,
    /// Publisher preference: the lowest number among live nodes publishes.
    pub priority: u32,
    /// This node's share of intro-point slots when the nodes have more intro points than
    /// descriptors list (beyond 20: distinct descriptors), relative to the other nodes'.
    pub weight: u32,
    /// Threads of the async runtime that runs Arti and the proxy (1: every task on one
    /// thread, the fewest wake-ups per cell; docs/PERFORMANCE.md).
    pub worker_threads: usize,
}

/// Where the master identity comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeys {
    /// The identity secret itself (C tor `hs_ed25519_secret_key` or PKCS8 PEM).
    Identity(PathBuf),
    /// Offline-master mode: a directory of blinded keys exported by `rustbalance keys`.
    BlindedDir(PathBuf),
}

/// `[master]`: the public onion service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterConfig {
    /// The master address clients use.
    pub onion_address: OnionAddress,
    /// Its keys.
    pub keys: MasterKeys,
    /// Restricted discovery (client authorization): `None` for a public descriptor.
    pub restricted: Option<RestrictedDiscovery>,
}

/// Restricted discovery: the descriptor is encrypted for these clients only
/// (`master.authorized_clients_dir` and/or `master.authorized_clients`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestrictedDiscovery {
    /// A directory of C tor `<name>.auth` files, re-read while running.
    pub dir: Option<PathBuf>,
    /// Keys given in the configuration (`descriptor:x25519:<base32>`).
    pub list: Vec<String>,
}

/// Where proxied streams go.
#[derive(Clone, PartialEq, Eq)]
pub enum TargetAddr {
    /// Another onion service, reached through the embedded Arti client.
    Onion {
        /// Its address.
        address: OnionAddress,
        /// Its port.
        port: u16,
    },
    /// A plain TCP service.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// Port.
        port: u16,
    },
}

impl std::fmt::Debug for TargetAddr {
    // The target's address is private to the operator: never printed, not even in Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetAddr::Onion { .. } => f.write_str("TargetAddr::Onion([redacted])"),
            TargetAddr::Tcp { .. } => f.write_str("TargetAddr::Tcp([redacted])"),
        }
    }
}

/// How the target's health is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// A TCP (or onion stream) connect succeeds.
    Tcp,
    /// `GET path` answers with `expect_status`.
    Http {
        /// Request path.
        path: String,
        /// Expected HTTP status.
        expect_status: u16,
    },
}

/// `[target.health]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// What a probe does.
    pub kind: ProbeKind,
    /// Time between probes.
    pub interval: Duration,
    /// Time one probe may take.
    pub timeout: Duration,
    /// Consecutive failures that mark the target down.
    pub fail_after: u32,
    /// Consecutive successes that mark it up again.
    pub recover_after: u32,
}

/// `[target]`: the operator's real service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetConfig {
    /// Where streams go.
    pub address: TargetAddr,
    /// Ports of the master onion service that are proxied to the target.
    pub virtual_ports: Vec<u16>,
    /// Time allowed to connect to the target.
    pub connect_timeout: Duration,
    /// A stream with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// Streams this node proxies at once; more are refused with an END.
    pub max_connections: usize,
    /// The active health probe.
    pub health: HealthConfig,
}

/// `[publish]`: descriptor publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishConfig {
    /// Introduction points this node keeps (Arti accepts 3–20).
    pub intro_points: u8,
    /// Republish at least this often even if nothing changed.
    pub republish_interval: Duration,
    /// Never publish more often than this (per time period).
    pub min_republish_gap: Duration,
    /// The descriptor's `descriptor-lifetime`.
    pub descriptor_lifetime: Duration,
    /// How far outside the consensus's validity the local clock may be before this node
    /// refuses to publish (its revision counters would lock the real publisher out).
    pub max_clock_skew: Duration,
}

/// `[tor]`: the embedded Arti client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorConfig {
    /// Arti's state directory (keystore, guards, service state).
    pub state_dir: PathBuf,
    /// Arti's cache directory (directory documents).
    pub cache_dir: PathBuf,
    /// Extra Arti configuration (for example a private network's fragment).
    pub arti_config: Option<PathBuf>,
}

/// `[status]`: the local status endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    /// Address of the HTTP/JSON status endpoint (loopback unless a token is configured).
    pub listen: SocketAddr,
    /// The file holding the token every request must send (`Authorization: Bearer …`).
    pub access_token_file: Option<PathBuf>,
}

/// `[mesh]`: the WireGuard mesh, gossip membership and publisher election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    /// UDP socket WireGuard listens on.
    pub listen: SocketAddr,
    /// The address advertised to peers (defaults to `listen` when that is a concrete address).
    /// Never an unspecified IP, never port 0.
    pub endpoint: SocketAddr,
    /// File with this node's WireGuard private key (`wg genkey` form); checked to exist only.
    pub private_key_file: PathBuf,
    /// File with the cluster token (secret; checked to exist only, never read here).
    pub cluster_token_file: PathBuf,
    /// Nodes contacted at start-up; one reachable node is enough, gossip teaches the rest.
    pub seeds: Vec<SeedConfig>,
    /// Gossip messages whose timestamp differs more from the local clock are rejected; also
    /// the election's skew margin.
    pub max_clock_skew: Duration,
    /// SWIM probe period.
    pub probe_period: Duration,
    /// Time a probe may take; shorter than `probe_period`.
    pub probe_timeout: Duration,
    /// Time a suspected node has to refute before it is declared dead.
    pub suspect_timeout: Duration,
    /// How often a node re-sends its state to every peer.
    pub state_interval: Duration,
    /// Election timers: `mesh.lease_duration`, `mesh.handback_after`, and `max_clock_skew` as
    /// the skew margin.
    pub election: crate::election::ElectionConfig,
}

/// One entry of `mesh.seeds`: a node to contact at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedConfig {
    /// Its WireGuard public key.
    pub public_key: crate::mesh::MeshPublicKey,
    /// Its WireGuard UDP endpoint (a concrete IP, port not 0).
    pub endpoint: SocketAddr,
}

impl Config {
    /// Reads and validates a configuration file. Relative paths in it are taken relative to
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::from_toml(&text, base).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates configuration text; relative paths resolve against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: toml_error(text, &e),
        })?;
        raw.validate(base)
    }
}

/// A TOML error as `line L, column C: message`, without the snippet of the offending line
/// that `toml` prints: that line may hold the target's address (never shown) or a secret.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let at = e
        .span()
        .and_then(|span| text.get(..span.start))
        .map(|before| {
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            let key = toml_key_at(text, line)
                .map(|k| format!(" (`{k}`)"))
                .unwrap_or_default();
            format!("line {line}, column {column}{key}: ")
        })
        .unwrap_or_default();
    format!("{at}{}", e.message().trim())
}

/// The dotted key of the `key = …` on line `line` (1-based), with the `[section]` above it:
/// names, never values.
fn toml_key_at(text: &str, line: usize) -> Option<String> {
    let bare = |k: &str| {
        !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    let lines: Vec<&str> = text.lines().collect();
    let (key, _) = lines.get(line.checked_sub(1)?)?.split_once('=')?;
    let key = key.trim();
    if !bare(key) {
        return None;
    }
    let section = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim())
        .filter(|s| bare(s));
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_string(),
    })
}

/// Parses a duration like `10s`, `5m`, `1h 30m`.
fn duration(
    key: &'static str,
    value: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(value).map_err(|e| {
        invalid(
            key,
            format!("{value:?}"),
            format!("not a duration ({e}); write e.g. \"10s\", \"5m\", \"1h\""),
        )
    })?;
    if d < min || d > max {
        return Err(invalid(
            key,
            format!("{value:?}"),
            format!(
                "must be between {} and {}",
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests;
