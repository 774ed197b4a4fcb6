//! A node's directory: the configuration text `init` and `join` write, and the files a grant
//! turns into (mesh key, cluster token, master keys), each 0600 and atomic.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::wire::{Grant, KeyMaterial, MeshTimers};
use crate::config::Config;
use crate::keys::{KeyError, MasterIdentity, OnionAddress};
use crate::mesh::{MeshKeys, MeshPublicKey};

/// The config file inside a node directory.
pub const CONFIG_FILE: &str = "rustbalance.toml";
/// The identity secret file.
pub const KEY_FILE: &str = "hs_ed25519_secret_key";
/// The blinded keys directory.
pub const BLINDED_DIR: &str = "blinded";
/// The WireGuard private key file.
pub const MESH_KEY_FILE: &str = "mesh.key";
/// The cluster token file.
pub const TOKEN_FILE: &str = "cluster.token";

/// Where the master keys of a node are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeyFile {
    /// `master.key`.
    Identity(String),
    /// `master.blinded_keys`.
    Blinded(String),
}

/// The `[mesh]` part of a node's configuration.
#[derive(Debug, Clone)]
pub struct MeshSpec {
    /// `mesh.listen`.
    pub listen: SocketAddr,
    /// `mesh.endpoint`.
    pub endpoint: SocketAddr,
    /// `mesh.seeds`.
    pub seeds: Vec<(MeshPublicKey, SocketAddr)>,
    /// The cluster's timers (none: the defaults).
    pub timers: Option<MeshTimers>,
}

/// What a node's configuration says.
#[derive(Debug, Clone)]
pub struct ConfigSpec {
    /// `node.id`.
    pub node_id: String,
    /// `master.onion_address`.
    pub master: OnionAddress,
    /// The master keys.
    pub keys: MasterKeyFile,
    /// `target.address` (private: never logged).
    pub target: String,
    /// `target.virtual_ports`.
    pub virtual_ports: Vec<u16>,
    /// `tor.arti_config`, absolute.
    pub arti_config: Option<PathBuf>,
    /// `status.listen`.
    pub status_listen: String,
    /// `[mesh]`.
    pub mesh: Option<MeshSpec>,
    /// `join.share_periods`, if not the default.
    pub share_periods: Option<u8>,
    /// `master.authorized_clients` (restricted discovery), as `descriptor:x25519:` lines.
    pub authorized_clients: Option<Vec<String>>,
    /// `[pow]`, when on.
    pub pow: Option<super::wire::PowPolicy>,
}

fn ms(v: u64) -> String {
    format!("\"{v}ms\"")
}

/// The configuration text of `spec`.
pub fn render(spec: &ConfigSpec) -> String {
    let mut t = String::from("# RustBalance node configuration (every key: docs/CONFIG.md).\n");
    let _ = write!(
        t,
        "[node]\nid = {:?}\npriority = 100\n\n[master]\nonion_address = \"{}\"\n",
        spec.node_id, spec.master
    );
    match &spec.keys {
        MasterKeyFile::Identity(f) => {
            let _ = writeln!(t, "key = {f:?}");
        }
        MasterKeyFile::Blinded(d) => {
            let _ = writeln!(t, "blinded_keys = {d:?}");
        }
    }
    if let Some(clients) = &spec.authorized_clients {
        let quoted: Vec<String> = clients.iter().map(|c| format!("  {c:?},\n")).collect();
        let _ = write!(
            t,
            "# Restricted discovery: the clients the descriptor is encrypted for (as the\n\
             # cluster had them at join time; keep this the same on every node).\n\
             authorized_clients = [\n{}]\n",
            quoted.concat()
        );
    }
    let ports: Vec<String> = spec.virtual_ports.iter().map(u16::to_string).collect();
    let _ = write!(
        t,
        "\n[target]\naddress = {:?}\nvirtual_ports = [{}]\n\n[tor]\nstate_dir = \"arti-state\"\ncache_dir = \"arti-cache\"\n",
        spec.target,
        ports.join(", ")
    );
    if let Some(a) = &spec.arti_config {
        let _ = writeln!(t, "arti_config = {:?}", a.display().to_string());
    }
    let _ = write!(t, "\n[status]\nlisten = {:?}\n", spec.status_listen);
    if let Some(m) = &spec.mesh {
        let _ = write!(
            t,
            "\n[mesh]\nlisten = \"{}\"\nendpoint = \"{}\"\nprivate_key_file = \"{MESH_KEY_FILE}\"\ncluster_token_file = \"{TOKEN_FILE}\"\n",
            m.listen, m.endpoint
        );
        if m.seeds.is_empty() {
            t.push_str("seeds = []\n");
        } else {
            t.push_str("seeds = [\n");
            for (k, e) in &m.seeds {
                let _ = writeln!(
                    t,
                    "  {{ public_key = \"{}\", endpoint = \"{e}\" }},",
                    k.to_base64()
                );
            }
            t.push_str("]\n");
        }
        if let Some(x) = &m.timers {
            let _ = write!(
                t,
                "max_clock_skew = {}\nprobe_period = {}\nprobe_timeout = {}\nsuspect_timeout = {}\nstate_interval = {}\nlease_duration = {}\nhandback_after = {}\n",
                ms(x.max_clock_skew),
                ms(x.probe_period),
                ms(x.probe_timeout),
                ms(x.suspect_timeout),
                ms(x.state_interval),
                ms(x.lease_duration),
                ms(x.handback_after)
            );
        }
    }
    if let Some(p) = &spec.pow {
        let _ = write!(
            t,
            "\n# Proof of work, as the cluster had it at join time (keep it the same on every node).\n\
             [pow]\nenabled = true\nqueue_depth = {}\nseed_rotation = \"{}s\"\nmin_effort = {}\n\
             max_effort = {}\nrendezvous_concurrency = {}\n",
            p.queue_depth, p.seed_rotation_secs, p.min_effort, p.max_effort, p.rendezvous_concurrency
        );
    }
    if let Some(s) = spec.share_periods {
        let _ = write!(t, "\n[join]\nshare_periods = {s}\n");
    }
    t
}

/// Why a node directory could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// The directory already holds a node.
    #[error("{0} exists: refusing to overwrite a node")]
    Exists(PathBuf),
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A key file.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The configuration that would be written is invalid.
    #[error("the configuration would be invalid: {0}")]
    Config(String),
    /// The grant's keys are not the master's.
    #[error("the cluster's master keys do not verify: {0}")]
    Keys(String),
}

/// Refuses a directory that already holds a node; creates it (0700).
pub fn prepare_dir(dir: &Path) -> Result<(), EnrolError> {
    let config = dir.join(CONFIG_FILE);
    if config.exists() {
        return Err(EnrolError::Exists(config));
    }
    let io = |source| EnrolError::Io {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
}

/// Validates `text` as the configuration of `dir` and writes it (0600, atomically: the target
/// address in it is private).
pub fn write_config(dir: &Path, text: &str) -> Result<PathBuf, EnrolError> {
    Config::from_toml(text, dir).map_err(|e| EnrolError::Config(e.to_string()))?;
    let path = dir.join(CONFIG_FILE);
    crate::keys::write_new_secret_file(&path, text.as_bytes())?;
    Ok(path)
}

/// What `join` needs besides the grant.
pub struct JoinSpec {
    /// The node directory.
    pub dir: PathBuf,
    /// The master address.
    pub master: OnionAddress,
    /// `target.address`.
    pub target: String,
    /// `mesh.listen`.
    pub listen: SocketAddr,
    /// `mesh.endpoint`.
    pub endpoint: SocketAddr,
    /// `tor.arti_config`.
    pub arti_config: Option<PathBuf>,
    /// `status.listen`.
    pub status_listen: String,
}

/// Writes the joined node's files from `grant`: master keys (verified against the master
/// first: a grant whose keys are not the master's writes nothing), mesh key, token, config.
/// On an error the files written so far are removed.
pub fn write_joined(
    spec: &JoinSpec,
    keys: &MeshKeys,
    grant: &Grant,
) -> Result<PathBuf, EnrolError> {
    // Verify before writing anything.
    let master_keys = match &grant.keys {
        KeyMaterial::Identity(bytes) => {
            let id = MasterIdentity::from_ctor_bytes(bytes, Path::new("the granted identity"))?;
            if id.onion_address() != spec.master {
                return Err(EnrolError::Keys(format!(
                    "the identity granted is {}, not {}",
                    id.onion_address(),
                    spec.master
                )));
            }
            MasterKeyFile::Identity(KEY_FILE.into())
        }
        KeyMaterial::Blinded(list) => {
            for (i, k) in list.iter().enumerate() {
                crate::keys::decode_blinded_key(
                    k,
                    &spec.master,
                    &format!("granted blinded key {i}"),
                )
                .map_err(|e| EnrolError::Keys(e.to_string()))?;
            }
            MasterKeyFile::Blinded(BLINDED_DIR.into())
        }
    };
    let mut written: Vec<PathBuf> = Vec::new();
    let result = (|| {
        match &grant.keys {
            KeyMaterial::Identity(bytes) => {
                let p = spec.dir.join(KEY_FILE);
                crate::keys::write_new_secret_file(&p, bytes)?;
                written.push(p);
            }
            KeyMaterial::Blinded(list) => {
                let d = spec.dir.join(BLINDED_DIR);
                written.push(d.clone());
                for k in list {
                    crate::keys::store_blinded_key(&d, k, &spec.master, "granted blinded key")?;
                }
            }
        }
        let p = spec.dir.join(MESH_KEY_FILE);
        let mut text = keys.private_key_base64();
        text.push('\n');
        crate::keys::write_new_secret_file(&p, text.as_bytes())?;
        written.push(p);
        let p = spec.dir.join(TOKEN_FILE);
        crate::keys::write_new_secret_file(&p, &Zeroizing::new(grant.token.clone()))?;
        written.push(p);
        let seeds = grant
            .members
            .iter()
            .filter_map(|m| Some((MeshPublicKey::from_bytes(m.key).ok()?, m.endpoint)))
            .collect();
        let text = render(&ConfigSpec {
            node_id: grant.node_id.clone(),
            master: spec.master.clone(),
            keys: master_keys.clone(),
            target: spec.target.clone(),
            virtual_ports: grant.virtual_ports.clone(),
            arti_config: spec.arti_config.clone(),
            status_listen: spec.status_listen.clone(),
            mesh: Some(MeshSpec {
                listen: spec.listen,
                endpoint: spec.endpoint,
                seeds,
                timers: Some(grant.mesh),
            }),
            share_periods: Some(grant.share_periods),
            pow: grant.pow,
            authorized_clients: grant.authorized_clients.as_ref().map(|c| {
                c.iter()
                    .map(|k| {
                        tor_hscrypto::pk::HsClientDescEncKey::from(
                            tor_llcrypto::pk::curve25519::PublicKey::from(*k),
                        )
                        .to_string()
                    })
                    .collect()
            }),
        });
        write_config(&spec.dir, &text)
    })();
    if result.is_err() {
        for p in written.iter().rev() {
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::wire::Member;

    use crate::join::wire::fixtures::timers;

    #[test]
    fn a_grant_becomes_a_valid_node_directory_with_private_files() {
        let id = MasterIdentity::generate(&mut rand::rng());
        let master = id.onion_address();
        let tp = tor_hscrypto::time::TimePeriod::from_parts(6, 1000, 180);
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("n2");
        prepare_dir(&node).unwrap();
        let keys = MeshKeys::generate();
        let grant = Grant {
            node_id: "node-b".into(),
            token: b"a-token-of-enough-length".to_vec(),
            members: vec![Member {
                node_id: "node-a".into(),
                key: *MeshKeys::generate().public_key().as_bytes(),
                endpoint: "127.0.0.1:5000".parse().unwrap(),
            }],
            keys: KeyMaterial::Blinded(vec![
                crate::keys::blinded_key_bytes(&id, tp).unwrap().to_vec(),
                crate::keys::blinded_key_bytes(&id, tp.next().unwrap())
                    .unwrap()
                    .to_vec(),
            ]),
            holder_live: true,
            virtual_ports: vec![80, 443],
            share_periods: 2,
            mesh: timers(),
            authorized_clients: Some(vec![[9; 32]]),
            pow: Some(crate::join::wire::PowPolicy {
                queue_depth: 500,
                seed_rotation_secs: 1800,
                min_effort: 8,
                max_effort: 900,
                rendezvous_concurrency: 12,
            }),
        };
        let spec = JoinSpec {
            dir: node.clone(),
            master: master.clone(),
            target: "127.0.0.1:8080".into(),
            listen: "127.0.0.1:5001".parse().unwrap(),
            endpoint: "127.0.0.1:5001".parse().unwrap(),
            arti_config: None,
            status_listen: "127.0.0.1:9192".into(),
        };
        let path = write_joined(&spec, &keys, &grant).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.node.id, "node-b");
        assert_eq!(config.target.virtual_ports, vec![80, 443]);
        assert_eq!(config.join.share_periods, 2);
        // So does PoW: the joiner verifies the same seeds and admits requests the same way.
        assert!(config.pow.enabled);
        assert_eq!(config.pow.queue_depth, 500);
        assert_eq!(
            config.pow.seed_rotation,
            std::time::Duration::from_secs(1800)
        );
        assert_eq!((config.pow.min_effort, config.pow.max_effort), (8, 900));
        assert_eq!(config.pow.rendezvous_concurrency, 12);
        // The cluster's authorized clients come along: the joiner never publishes publicly.
        let restricted = config
            .master
            .restricted
            .clone()
            .expect("restricted discovery");
        let clients = crate::keys::load_authorized_clients(None, &restricted.list).unwrap();
        assert_eq!(
            clients.iter().map(|k| k.to_bytes()).collect::<Vec<_>>(),
            vec![[9; 32]]
        );
        let mesh = config.mesh.unwrap();
        assert_eq!(mesh.seeds.len(), 1);
        assert_eq!(
            crate::keys::load_mesh_keys(&mesh.private_key_file)
                .unwrap()
                .public_key(),
            keys.public_key()
        );
        crate::keys::load_cluster_token(&mesh.cluster_token_file).unwrap();
        assert!(
            !node.join(KEY_FILE).exists(),
            "no identity secret on a blinded-only node"
        );
        assert_eq!(
            crate::keys::load_blinded_dir(&node.join(BLINDED_DIR), &master)
                .unwrap()
                .len(),
            2
        );
        use std::os::unix::fs::PermissionsExt as _;
        for f in [CONFIG_FILE, MESH_KEY_FILE, TOKEN_FILE] {
            let mode = std::fs::metadata(node.join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        // A second join into the same directory is refused.
        assert!(matches!(prepare_dir(&node), Err(EnrolError::Exists(_))));

        // Keys of another master: nothing is written.
        let other = MasterIdentity::generate(&mut rand::rng());
        let mut bad = grant.clone();
        bad.keys = KeyMaterial::Blinded(vec![crate::keys::blinded_key_bytes(&other, tp)
            .unwrap()
            .to_vec()]);
        let node3 = dir.path().join("n3");
        prepare_dir(&node3).unwrap();
        let spec3 = JoinSpec {
            dir: node3.clone(),
            ..spec
        };
        assert!(matches!(
            write_joined(&spec3, &keys, &bad),
            Err(EnrolError::Keys(_))
        ));
        assert_eq!(std::fs::read_dir(&node3).unwrap().count(), 0);
    }
}
