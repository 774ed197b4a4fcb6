//! The configuration file as written: serde structs with `deny_unknown_fields` and defaults,
//! and the rules that turn them into the typed [`Config`](super::Config).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    node: RawNode,
    master: RawMaster,
    target: RawTarget,
    #[serde(default)]
    publish: RawPublish,
    tor: RawTor,
    #[serde(default)]
    status: RawStatus,
    mesh: Option<RawMesh>,
    #[serde(default)]
    join: RawJoin,
    #[serde(default)]
    repair: RawRepair,
    #[serde(default)]
    pow: RawPow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRepair {
    enabled: bool,
    probe_interval: String,
    probe_timeout: String,
    fail_after: u32,
    recover_after: u32,
    backoff_min: String,
    backoff_max: String,
}

impl Default for RawRepair {
    fn default() -> Self {
        RawRepair {
            enabled: true,
            probe_interval: "30s".into(),
            probe_timeout: "20s".into(),
            fail_after: 2,
            recover_after: 2,
            backoff_min: "30s".into(),
            backoff_max: "10m".into(),
        }
    }
}

impl RawRepair {
    fn validate(self) -> Result<RepairConfig, ConfigError> {
        let probe_interval = duration("repair.probe_interval", &self.probe_interval, SECOND, HOUR)?;
        let probe_timeout = duration("repair.probe_timeout", &self.probe_timeout, SECOND, HOUR)?;
        if probe_timeout > probe_interval {
            return Err(invalid(
                "repair.probe_timeout",
                format!("{:?}", self.probe_timeout),
                format!(
                    "must not exceed repair.probe_interval ({})",
                    self.probe_interval
                ),
            ));
        }
        for (key, v) in [
            ("repair.fail_after", self.fail_after),
            ("repair.recover_after", self.recover_after),
        ] {
            if !(1..=100).contains(&v) {
                return Err(invalid(key, v, "must be from 1 to 100"));
            }
        }
        let backoff_min = duration("repair.backoff_min", &self.backoff_min, SECOND, HOUR)?;
        let backoff_max = duration("repair.backoff_max", &self.backoff_max, SECOND, 24 * HOUR)?;
        if backoff_max < backoff_min {
            return Err(invalid(
                "repair.backoff_max",
                format!("{:?}", self.backoff_max),
                format!(
                    "must not be below repair.backoff_min ({})",
                    self.backoff_min
                ),
            ));
        }
        Ok(RepairConfig {
            enabled: self.enabled,
            probe_interval,
            probe_timeout,
            fail_after: self.fail_after,
            recover_after: self.recover_after,
            backoff_min,
            backoff_max,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPow {
    enabled: bool,
    queue_depth: usize,
    seed_rotation: String,
    min_effort: u32,
    max_effort: u32,
    rendezvous_concurrency: usize,
}

impl Default for RawPow {
    fn default() -> Self {
        RawPow {
            enabled: false,
            queue_depth: 8192,
            seed_rotation: "2h".into(),
            min_effort: 0,
            max_effort: 10_000,
            rendezvous_concurrency: 64,
        }
    }
}

impl RawPow {
    fn validate(self) -> Result<PowConfig, ConfigError> {
        if !(1..=1_000_000).contains(&self.queue_depth) {
            return Err(invalid(
                "pow.queue_depth",
                self.queue_depth,
                "must be from 1 to 1000000 (each queued request holds about 4 KiB)",
            ));
        }
        let seed_rotation = duration("pow.seed_rotation", &self.seed_rotation, MINUTE, 24 * HOUR)?;
        if !(1..=10_000).contains(&self.rendezvous_concurrency) {
            return Err(invalid(
                "pow.rendezvous_concurrency",
                self.rendezvous_concurrency,
                "must be from 1 to 10000",
            ));
        }
        if self.max_effort == 0 {
            return Err(invalid("pow.max_effort", 0, "must be at least 1"));
        }
        if self.min_effort > self.max_effort {
            return Err(invalid(
                "pow.min_effort",
                self.min_effort,
                format!("must not exceed pow.max_effort ({})", self.max_effort),
            ));
        }
        Ok(PowConfig {
            enabled: self.enabled,
            queue_depth: self.queue_depth,
            seed_rotation,
            min_effort: self.min_effort,
            max_effort: self.max_effort,
            rendezvous_concurrency: self.rendezvous_concurrency,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawJoin {
    enabled: bool,
    hand_out_identity: bool,
    share_periods: u8,
    max_per_minute: u32,
}

impl Default for RawJoin {
    fn default() -> Self {
        RawJoin {
            enabled: true,
            hand_out_identity: false,
            share_periods: 8,
            max_per_minute: 6,
        }
    }
}

impl RawJoin {
    fn validate(self) -> Result<JoinConfig, ConfigError> {
        if !(1..=30).contains(&self.share_periods) {
            return Err(invalid(
                "join.share_periods",
                self.share_periods,
                "must be from 1 to 30",
            ));
        }
        if !(1..=600).contains(&self.max_per_minute) {
            return Err(invalid(
                "join.max_per_minute",
                self.max_per_minute,
                "must be from 1 to 600",
            ));
        }
        Ok(JoinConfig {
            enabled: self.enabled,
            hand_out_identity: self.hand_out_identity,
            share_periods: self.share_periods,
            max_per_minute: self.max_per_minute,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    id: String,
    #[serde(default = "default_priority")]
    priority: u32,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default = "default_worker_threads")]
    worker_threads: usize,
}

fn default_priority() -> u32 {
    100
}

fn default_weight() -> u32 {
    1
}

fn default_worker_threads() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMaster {
    onion_address: String,
    key: Option<PathBuf>,
    blinded_keys: Option<PathBuf>,
    authorized_clients_dir: Option<PathBuf>,
    authorized_clients: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    address: String,
    #[serde(default = "default_virtual_ports")]
    virtual_ports: Vec<u16>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: String,
    #[serde(default = "default_idle_timeout")]
    idle_timeout: String,
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    #[serde(default)]
    health: RawHealth,
}

fn default_virtual_ports() -> Vec<u16> {
    vec![80]
}
fn default_connect_timeout() -> String {
    "30s".into()
}
fn default_idle_timeout() -> String {
    "5m".into()
}
fn default_max_connections() -> usize {
    1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHealth {
    kind: String,
    path: String,
    expect_status: u16,
    interval: String,
    timeout: String,
    fail_after: u32,
    recover_after: u32,
}

impl Default for RawHealth {
    fn default() -> Self {
        RawHealth {
            kind: "tcp".into(),
            path: "/".into(),
            expect_status: 200,
            interval: "5s".into(),
            timeout: "3s".into(),
            fail_after: 3,
            recover_after: 2,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPublish {
    intro_points: u8,
    republish_interval: String,
    min_republish_gap: String,
    descriptor_lifetime: String,
    max_clock_skew: String,
}

impl Default for RawPublish {
    fn default() -> Self {
        RawPublish {
            intro_points: 3,
            republish_interval: "60m".into(),
            min_republish_gap: "1s".into(),
            descriptor_lifetime: "3h".into(),
            max_clock_skew: "5m".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTor {
    state_dir: PathBuf,
    cache_dir: PathBuf,
    arti_config: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStatus {
    listen: String,
    access_token_file: Option<PathBuf>,
}

impl Default for RawStatus {
    fn default() -> Self {
        RawStatus {
            listen: "127.0.0.1:9191".into(),
            access_token_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMesh {
    listen: String,
    endpoint: Option<String>,
    private_key_file: PathBuf,
    cluster_token_file: PathBuf,
    #[serde(default)]
    seeds: Vec<RawSeed>,
    #[serde(default = "default_max_clock_skew")]
    max_clock_skew: String,
    #[serde(default = "default_probe_period")]
    probe_period: String,
    #[serde(default = "default_probe_timeout")]
    probe_timeout: String,
    #[serde(default = "default_suspect_timeout")]
    suspect_timeout: String,
    #[serde(default = "default_state_interval")]
    state_interval: String,
    #[serde(default = "default_lease_duration")]
    lease_duration: String,
    #[serde(default = "default_handback_after")]
    handback_after: String,
}

fn default_max_clock_skew() -> String {
    "5s".into()
}
fn default_probe_period() -> String {
    "1s".into()
}
fn default_probe_timeout() -> String {
    "500ms".into()
}
fn default_suspect_timeout() -> String {
    "2s".into()
}
fn default_state_interval() -> String {
    "1s".into()
}
fn default_lease_duration() -> String {
    "6s".into()
}
fn default_handback_after() -> String {
    "10s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeed {
    public_key: String,
    endpoint: String,
}

const MILLISECOND: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

impl RawConfig {
    pub(super) fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        Ok(Config {
            node: self.node.validate()?,
            master: self.master.validate(base)?,
            target: self.target.validate()?,
            publish: self.publish.validate()?,
            tor: self.tor.validate(base)?,
            status: self.status.validate(base)?,
            mesh: self.mesh.map(|m| m.validate(base)).transpose()?,
            join: self.join.validate()?,
            repair: self.repair.validate()?,
            pow: self.pow.validate()?,
        })
    }
}

impl RawNode {
    fn validate(self) -> Result<NodeConfig, ConfigError> {
        let ok = (1..=64).contains(&self.id.len())
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(invalid(
                "node.id",
                format!("{:?}", self.id),
                "must be 1-64 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        if !(1..=100).contains(&self.weight) {
            return Err(invalid("node.weight", self.weight, "must be from 1 to 100"));
        }
        if !(1..=256).contains(&self.worker_threads) {
            return Err(invalid(
                "node.worker_threads",
                self.worker_threads,
                "must be from 1 to 256",
            ));
        }
        Ok(NodeConfig {
            id: self.id,
            priority: self.priority,
            weight: self.weight,
            worker_threads: self.worker_threads,
        })
    }
}

/// Why a configured file cannot be used: it does not exist, or is not a regular file (a
/// directory, a FIFO, a device).
fn missing_file(p: &Path) -> &'static str {
    if p.exists() {
        "not a regular file"
    } else {
        "no such file"
    }
}

/// Resolves a configured path against the config file's directory.
fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

impl RawMaster {
    fn validate(self, base: &Path) -> Result<MasterConfig, ConfigError> {
        let onion_address: OnionAddress = self.onion_address.parse().map_err(|e| {
            invalid(
                "master.onion_address",
                format!("{:?}", self.onion_address),
                format!("{e}"),
            )
        })?;
        let keys = match (self.key, self.blinded_keys) {
            (Some(k), None) => {
                let k = resolve(base, k);
                if !k.is_file() {
                    return Err(invalid("master.key", k.display(), missing_file(&k)));
                }
                MasterKeys::Identity(k)
            }
            (None, Some(d)) => {
                let d = resolve(base, d);
                if !d.is_dir() {
                    return Err(invalid("master.blinded_keys", d.display(), "no such directory"));
                }
                MasterKeys::BlindedDir(d)
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "master.key",
                    "(set)",
                    "set either master.key (identity secret) or master.blinded_keys (offline master), not both",
                ))
            }
            (None, None) => {
                return Err(invalid(
                    "master.key",
                    "(missing)",
                    "set master.key (identity secret) or master.blinded_keys (offline master)",
                ))
            }
        };
        // The list's syntax and the cap now; the directory is read at start and re-read while
        // running (its files may change).
        let list = self.authorized_clients.as_deref().unwrap_or_default();
        if list.len() > crate::keys::MAX_AUTHORIZED_CLIENTS {
            return Err(invalid(
                "master.authorized_clients",
                format!("{} entries", list.len()),
                format!(
                    "at most {} clients fit in a descriptor",
                    crate::keys::MAX_AUTHORIZED_CLIENTS
                ),
            ));
        }
        for (i, k) in list.iter().enumerate() {
            if let Err(e) = crate::keys::parse_client_key(k) {
                return Err(invalid(
                    "master.authorized_clients",
                    format!("entry {i} {k:?}"),
                    format!("{e}: expected descriptor:x25519:<52 base32 characters>"),
                ));
            }
        }
        let authorized_clients_dir = match self.authorized_clients_dir {
            Some(d) => {
                let d = resolve(base, d);
                if !d.is_dir() {
                    return Err(invalid(
                        "master.authorized_clients_dir",
                        d.display(),
                        "no such directory",
                    ));
                }
                Some(d)
            }
            None => None,
        };
        // Either key present (even an empty list) turns restricted discovery on: an empty set
        // locks every client out, it never makes the descriptor public.
        let restricted = (authorized_clients_dir.is_some() || self.authorized_clients.is_some())
            .then(|| RestrictedDiscovery {
                dir: authorized_clients_dir,
                list: self.authorized_clients.unwrap_or_default(),
            });
        Ok(MasterConfig {
            onion_address,
            keys,
            restricted,
        })
    }
}

impl RawTarget {
    fn validate(self) -> Result<TargetConfig, ConfigError> {
        // The target's address is private: errors describe it without echoing it.
        let hidden = "(not shown)";
        let (host, port) = self.address.rsplit_once(':').ok_or_else(|| {
            invalid(
                "target.address",
                hidden,
                "must be host:port or <address>.onion:port",
            )
        })?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
            invalid(
                "target.address",
                hidden,
                "the port must be a number from 1 to 65535",
            )
        })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        // `x.onion.` (a fully qualified name) is the onion address, never a DNS name.
        let bare = host.strip_suffix('.').unwrap_or(host);
        let address = if bare.to_ascii_lowercase().ends_with(".onion") {
            let address = bare.parse().map_err(|e| {
                invalid(
                    "target.address",
                    hidden,
                    format!("not a valid v3 onion address: {e}"),
                )
            })?;
            TargetAddr::Onion { address, port }
        } else {
            if host.is_empty() || host.contains(char::is_whitespace) {
                return Err(invalid(
                    "target.address",
                    hidden,
                    "the host part is empty or has spaces",
                ));
            }
            TargetAddr::Tcp {
                host: host.to_string(),
                port,
            }
        };
        if self.virtual_ports.is_empty() || self.virtual_ports.contains(&0) {
            return Err(invalid(
                "target.virtual_ports",
                format!("{:?}", self.virtual_ports),
                "list at least one port from 1 to 65535",
            ));
        }
        if self.virtual_ports.contains(&crate::join::JOIN_PORT) {
            return Err(invalid(
                "target.virtual_ports",
                format!("{:?}", self.virtual_ports),
                format!(
                    "port {} is the join port, reserved (never proxied)",
                    crate::join::JOIN_PORT
                ),
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid("target.max_connections", 0, "must be at least 1"));
        }
        Ok(TargetConfig {
            address,
            virtual_ports: self.virtual_ports,
            connect_timeout: duration(
                "target.connect_timeout",
                &self.connect_timeout,
                SECOND,
                10 * MINUTE,
            )?,
            idle_timeout: duration("target.idle_timeout", &self.idle_timeout, SECOND, 24 * HOUR)?,
            max_connections: self.max_connections,
            health: self.health.validate()?,
        })
    }
}

impl RawHealth {
    fn validate(self) -> Result<HealthConfig, ConfigError> {
        let kind = match self.kind.as_str() {
            "tcp" => ProbeKind::Tcp,
            "http" => {
                if !self.path.starts_with('/') {
                    return Err(invalid(
                        "target.health.path",
                        format!("{:?}", self.path),
                        "must start with /",
                    ));
                }
                if !(100..=599).contains(&self.expect_status) {
                    return Err(invalid(
                        "target.health.expect_status",
                        self.expect_status,
                        "must be an HTTP status 100-599",
                    ));
                }
                ProbeKind::Http {
                    path: self.path,
                    expect_status: self.expect_status,
                }
            }
            other => {
                return Err(invalid(
                    "target.health.kind",
                    format!("{other:?}"),
                    "must be \"tcp\" or \"http\"",
                ))
            }
        };
        let interval = duration("target.health.interval", &self.interval, SECOND, HOUR)?;
        let timeout = duration(
            "target.health.timeout",
            &self.timeout,
            Duration::from_millis(100),
            HOUR,
        )?;
        if timeout > interval {
            return Err(invalid(
                "target.health.timeout",
                format!("{:?}", self.timeout),
                format!("must not exceed target.health.interval ({})", self.interval),
            ));
        }
        for (key, v) in [
            ("target.health.fail_after", self.fail_after),
            ("target.health.recover_after", self.recover_after),
        ] {
            if !(1..=100).contains(&v) {
                return Err(invalid(key, v, "must be from 1 to 100"));
            }
        }
        Ok(HealthConfig {
            kind,
            interval,
            timeout,
            fail_after: self.fail_after,
            recover_after: self.recover_after,
        })
    }
}

impl RawPublish {
    fn validate(self) -> Result<PublishConfig, ConfigError> {
        if !(3..=20).contains(&self.intro_points) {
            return Err(invalid(
                "publish.intro_points",
                self.intro_points,
                "must be from 3 to 20 (Arti's range)",
            ));
        }
        let republish_interval = duration(
            "publish.republish_interval",
            &self.republish_interval,
            MINUTE,
            12 * HOUR,
        )?;
        let min_republish_gap = duration(
            "publish.min_republish_gap",
            &self.min_republish_gap,
            SECOND,
            HOUR,
        )?;
        // rend-spec-v3: descriptor-lifetime is in minutes, at most 720.
        let descriptor_lifetime = duration(
            "publish.descriptor_lifetime",
            &self.descriptor_lifetime,
            30 * MINUTE,
            12 * HOUR,
        )?;
        let max_clock_skew =
            duration("publish.max_clock_skew", &self.max_clock_skew, SECOND, HOUR)?;
        if republish_interval >= descriptor_lifetime {
            return Err(invalid(
                "publish.republish_interval",
                format!("{:?}", self.republish_interval),
                format!(
                    "must be shorter than publish.descriptor_lifetime ({})",
                    self.descriptor_lifetime
                ),
            ));
        }
        if min_republish_gap > republish_interval {
            return Err(invalid(
                "publish.min_republish_gap",
                format!("{:?}", self.min_republish_gap),
                format!(
                    "must not exceed publish.republish_interval ({})",
                    self.republish_interval
                ),
            ));
        }
        Ok(PublishConfig {
            intro_points: self.intro_points,
            republish_interval,
            min_republish_gap,
            descriptor_lifetime,
            max_clock_skew,
        })
    }
}

impl RawTor {
    fn validate(self, base: &Path) -> Result<TorConfig, ConfigError> {
        let arti_config = match self.arti_config {
            Some(p) => {
                let p = resolve(base, p);
                if !p.is_file() {
                    return Err(invalid("tor.arti_config", p.display(), missing_file(&p)));
                }
                Some(p)
            }
            None => None,
        };
        Ok(TorConfig {
            state_dir: resolve(base, self.state_dir),
            cache_dir: resolve(base, self.cache_dir),
            arti_config,
        })
    }
}

impl RawStatus {
    fn validate(self, base: &Path) -> Result<StatusConfig, ConfigError> {
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            invalid(
                "status.listen",
                format!("{:?}", self.listen),
                "must be IP:port, e.g. \"127.0.0.1:9191\"",
            )
        })?;
        let access_token_file = self.access_token_file.map(|p| resolve(base, p));
        if let Some(p) = &access_token_file {
            if !p.is_file() {
                return Err(invalid(
                    "status.access_token_file",
                    p.display(),
                    "must be an existing file (mode 0600) holding the token, at least 16 characters",
                ));
            }
        }
        if !listen.ip().is_loopback() && access_token_file.is_none() {
            return Err(invalid(
                "status.listen",
                format!("{:?}", self.listen),
                "not a loopback address: the status shows members' keys and endpoints, so \
                 serving other hosts needs status.access_token_file (then every request must \
                 send the token)",
            ));
        }
        Ok(StatusConfig {
            listen,
            access_token_file,
        })
    }
}

/// An address peers can send to: a concrete IP (not `0.0.0.0` / `::`) and a port other than 0.
fn reachable(addr: &SocketAddr) -> bool {
    !addr.ip().is_unspecified() && addr.port() != 0
}

const REACHABLE_RULE: &str =
    "peers must be able to send to it: a concrete IP (not 0.0.0.0 or ::) and a port from 1 to 65535";

impl RawMesh {
    fn validate(self, base: &Path) -> Result<MeshConfig, ConfigError> {
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            invalid(
                "mesh.listen",
                format!("{:?}", self.listen),
                "must be IP:port, e.g. \"0.0.0.0:51820\"",
            )
        })?;
        let endpoint = match &self.endpoint {
            Some(text) => {
                let endpoint: SocketAddr = text.parse().map_err(|_| {
                    invalid(
                        "mesh.endpoint",
                        format!("{text:?}"),
                        "must be IP:port, e.g. \"192.0.2.1:51820\"",
                    )
                })?;
                if !reachable(&endpoint) {
                    return Err(invalid(
                        "mesh.endpoint",
                        format!("{text:?}"),
                        REACHABLE_RULE,
                    ));
                }
                endpoint
            }
            None if !reachable(&listen) => {
                return Err(invalid(
                    "mesh.endpoint",
                    "(missing)",
                    format!(
                        "required because mesh.listen ({:?}) is not an address peers can send to \
                         (unspecified IP or port 0): set the IP:port peers reach this node at",
                        self.listen
                    ),
                ))
            }
            None => listen,
        };
        let private_key_file = resolve(base, self.private_key_file);
        if !private_key_file.is_file() {
            return Err(invalid(
                "mesh.private_key_file",
                private_key_file.display(),
                missing_file(&private_key_file),
            ));
        }
        // The token is secret: only its path is ever shown, and it is not read here.
        let cluster_token_file = resolve(base, self.cluster_token_file);
        if !cluster_token_file.is_file() {
            return Err(invalid(
                "mesh.cluster_token_file",
                cluster_token_file.display(),
                missing_file(&cluster_token_file),
            ));
        }
        let seeds = validate_seeds(self.seeds)?;
        let max_clock_skew = duration(
            "mesh.max_clock_skew",
            &self.max_clock_skew,
            100 * MILLISECOND,
            MINUTE,
        )?;
        let probe_period = duration(
            "mesh.probe_period",
            &self.probe_period,
            100 * MILLISECOND,
            MINUTE,
        )?;
        let probe_timeout = duration(
            "mesh.probe_timeout",
            &self.probe_timeout,
            Duration::from_nanos(1),
            MINUTE,
        )?;
        if probe_timeout >= probe_period {
            return Err(invalid(
                "mesh.probe_timeout",
                format!("{:?}", self.probe_timeout),
                format!(
                    "must be shorter than mesh.probe_period ({})",
                    self.probe_period
                ),
            ));
        }
        let suspect_timeout = duration(
            "mesh.suspect_timeout",
            &self.suspect_timeout,
            100 * MILLISECOND,
            5 * MINUTE,
        )?;
        let state_interval = duration(
            "mesh.state_interval",
            &self.state_interval,
            100 * MILLISECOND,
            MINUTE,
        )?;
        let lease_duration = duration(
            "mesh.lease_duration",
            &self.lease_duration,
            100 * MILLISECOND,
            10 * MINUTE,
        )?;
        let handback_after = duration(
            "mesh.handback_after",
            &self.handback_after,
            Duration::ZERO,
            HOUR,
        )?;
        let election =
            crate::election::ElectionConfig::new(lease_duration, max_clock_skew, handback_after)
                .map_err(|e| {
                    invalid(
                        "mesh.lease_duration",
                        format!("{:?}", self.lease_duration),
                        format!(
                            "{e}; the skew margin is mesh.max_clock_skew ({:?})",
                            self.max_clock_skew
                        ),
                    )
                })?;
        Ok(MeshConfig {
            listen,
            endpoint,
            private_key_file,
            cluster_token_file,
            seeds,
            max_clock_skew,
            probe_period,
            probe_timeout,
            suspect_timeout,
            state_interval,
            election,
        })
    }
}

/// `mesh.seeds`: each entry is named by its index, like `[1].public_key = "…"`.
fn validate_seeds(raw: Vec<RawSeed>) -> Result<Vec<SeedConfig>, ConfigError> {
    let mut seeds: Vec<SeedConfig> = Vec::with_capacity(raw.len());
    for (i, seed) in raw.into_iter().enumerate() {
        let key_value = || format!("[{i}].public_key = {:?}", seed.public_key);
        let public_key = crate::mesh::MeshPublicKey::from_base64(&seed.public_key)
            .map_err(|e| invalid("mesh.seeds", key_value(), e.to_string()))?;
        if let Some(first) = seeds.iter().position(|s| s.public_key == public_key) {
            return Err(invalid(
                "mesh.seeds",
                key_value(),
                format!("the same public key as [{first}]; list each seed once"),
            ));
        }
        let endpoint_value = || format!("[{i}].endpoint = {:?}", seed.endpoint);
        let endpoint: SocketAddr = seed.endpoint.parse().map_err(|_| {
            invalid(
                "mesh.seeds",
                endpoint_value(),
                "must be IP:port, e.g. \"192.0.2.1:51820\"",
            )
        })?;
        if !reachable(&endpoint) {
            return Err(invalid("mesh.seeds", endpoint_value(), REACHABLE_RULE));
        }
        seeds.push(SeedConfig {
            public_key,
            endpoint,
        });
    }
    Ok(seeds)
}
