//! Where this node's blinded keys come from, and keeping Arti's keystore in step with the
//! network's time periods.

use std::path::{Path, PathBuf};

use arti_client::TorClient;
use tor_hscrypto::pk::HsBlindIdKeypair;
use tor_hscrypto::time::TimePeriod;
use tor_netdir::NetDir;
use tor_rtcompat::PreferredRuntime;

use super::DaemonError;
use crate::config::{MasterConfig, MasterKeys};
use crate::hosting::{self, HostingError};
use crate::keys::{load_blinded_dir, BlindedKey, KeyError, MasterIdentity, OnionAddress};

/// The source of blinded keys.
pub enum KeySource {
    /// The identity secret is on this node: blinded keys are computed for any period.
    Identity(MasterIdentity),
    /// Offline-master mode: blinded keys exported ahead of time, re-read from their directory
    /// whenever the periods change (so fresh keys can be dropped in without a restart).
    BlindedDir {
        /// The directory.
        dir: PathBuf,
        /// The master the keys must belong to.
        master: OnionAddress,
        /// The keys loaded last.
        keys: Vec<BlindedKey>,
    },
}

/// A period this node has no blinded key for.
#[derive(Debug, thiserror::Error)]
pub enum KeySourceError {
    /// Blinding failed.
    #[error(transparent)]
    Hosting(#[from] HostingError),
    /// Offline mode and the directory lacks the period.
    #[error("no blinded key for period {period} in {dir}: export more with `rustbalance keys export-blinded`")]
    Missing {
        /// The period slug.
        period: String,
        /// The directory.
        dir: String,
    },
}

impl KeySource {
    /// Loads the configured master keys and checks they are the master address's.
    pub fn load(master: &MasterConfig) -> Result<KeySource, DaemonError> {
        match &master.keys {
            MasterKeys::Identity(path) => {
                let identity = load_identity(path)?;
                let found = identity.onion_address();
                if found != master.onion_address {
                    return Err(DaemonError::WrongMasterKey {
                        found: found.to_string(),
                        master: master.onion_address.to_string(),
                    });
                }
                Ok(KeySource::Identity(identity))
            }
            MasterKeys::BlindedDir(dir) => {
                let keys = load_blinded_dir(dir, &master.onion_address)?;
                tracing::info!(dir = %dir.display(), keys = keys.len(), "offline master: blinded keys loaded");
                Ok(KeySource::BlindedDir {
                    dir: dir.clone(),
                    master: master.onion_address.clone(),
                    keys,
                })
            }
        }
    }

    /// Re-reads the blinded-key directory (offline mode); keeps the old keys if it fails.
    pub fn reload(&mut self) {
        if let KeySource::BlindedDir { dir, master, keys } = self {
            match load_blinded_dir(dir, master) {
                Ok(k) => *keys = k,
                Err(e) => {
                    tracing::warn!(error = %e, "blinded-key directory not re-read; keeping the keys loaded before")
                }
            }
        }
    }

    /// The blinded keypair for a period, if this source has it.
    pub fn blinded(&self, tp: TimePeriod) -> Result<HsBlindIdKeypair, KeySourceError> {
        match self {
            KeySource::Identity(id) => Ok(hosting::blind_for_periods(id.hs_id_keypair(), &[tp])?
                .remove(0)
                .1),
            KeySource::BlindedDir { dir, keys, .. } => keys
                .iter()
                .find(|k| k.period == tp)
                .map(BlindedKey::to_keypair)
                .ok_or_else(|| KeySourceError::Missing {
                    period: hosting::period_slug(tp),
                    dir: dir.display().to_string(),
                }),
        }
    }
}

/// Loads an identity secret in C tor's format or as PKCS8 PEM, by its first bytes.
pub fn load_identity(path: &Path) -> Result<MasterIdentity, KeyError> {
    let is_pem = std::fs::read(path)
        .map(|b| b.starts_with(b"-----BEGIN"))
        .unwrap_or(false);
    if is_pem {
        MasterIdentity::from_pkcs8_pem(path)
    } else {
        MasterIdentity::from_ctor_secret_key_file(path)
    }
}

/// The periods a node must hold blinded keys for: those the network publishes for, plus the
/// previous and next of the current one (clients near a boundary may use either).
pub fn wanted_periods(netdir: &NetDir) -> Vec<TimePeriod> {
    let current = netdir.hs_time_period();
    let mut out: Vec<TimePeriod> = netdir
        .hs_all_time_periods()
        .iter()
        .map(|p| p.time_period())
        .collect();
    for tp in [current.prev(), Some(current), current.next()]
        .into_iter()
        .flatten()
    {
        if !out.contains(&tp) {
            out.push(tp);
        }
    }
    out.sort_by_key(|tp| tp.interval_num());
    out
}

/// Makes the keystore hold exactly the blinded keys of [`wanted_periods`] for the current
/// network directory. Returns the periods it holds.
pub fn sync_for_netdir(
    client: &TorClient<PreferredRuntime>,
    source: &KeySource,
    master: &OnionAddress,
) -> Result<Vec<TimePeriod>, DaemonError> {
    let netdir = client
        .dirmgr()
        .map_err(super::arti("directory manager"))?
        .timely_netdir()
        .map_err(|e| DaemonError::Launch(format!("no usable network directory: {e}")))?;
    let wanted_all = wanted_periods(&netdir);
    let current = netdir.hs_time_period();
    let mut wanted = Vec::new();
    let mut periods = Vec::new();
    for tp in wanted_all {
        match source.blinded(tp) {
            Ok(k) => {
                wanted.push((tp, k));
                periods.push(tp);
            }
            // Without the current period's key no client can connect: refuse.
            Err(e) if tp == current => return Err(DaemonError::Launch(e.to_string())),
            Err(e) => tracing::warn!(error = %e, "blinded key missing for a neighbouring period"),
        }
    }
    let keymgr = client.keymgr().map_err(super::arti("key manager"))?;
    let removed =
        hosting::sync_blinded_keys(keymgr, &hosting::nickname(), master.public_key(), wanted)?;
    tracing::info!(
        periods = ?periods.iter().map(|p| hosting::period_slug(*p)).collect::<Vec<_>>(),
        removed = ?removed,
        "blinded keys in the keystore"
    );
    Ok(periods)
}
