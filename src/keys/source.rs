//! Where a node's blinded keys come from ([`KeySource`]): the identity secret (blinded keys
//! computed for any period) or, in offline-master mode, a directory of exported blinded keys,
//! re-read when asked (fresh keys can be dropped in without a restart).

use std::path::{Path, PathBuf};

use tor_hscrypto::pk::HsBlindIdKeypair;
use tor_hscrypto::time::TimePeriod;

use super::{load_blinded_dir, BlindedKey, KeyError, MasterIdentity, OnionAddress};
use crate::config::{MasterConfig, MasterKeys};

/// The source of blinded keys.
pub enum KeySource {
    /// The identity secret is on this node: blinded keys are computed for any period.
    Identity(MasterIdentity),
    /// Offline-master mode: blinded keys exported ahead of time.
    BlindedDir {
        /// The directory.
        dir: PathBuf,
        /// The master the keys must belong to.
        master: OnionAddress,
        /// The keys loaded last.
        keys: Vec<BlindedKey>,
    },
}

impl KeySource {
    /// Loads the configured master keys and checks they are the master address's.
    pub fn load(master: &MasterConfig) -> Result<KeySource, KeyError> {
        match &master.keys {
            MasterKeys::Identity(path) => {
                let identity = load_identity(path)?;
                let found = identity.onion_address();
                if found != master.onion_address {
                    return Err(KeyError::WrongMasterKey {
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
    pub fn blinded(&self, tp: TimePeriod) -> Result<HsBlindIdKeypair, KeyError> {
        match self {
            KeySource::Identity(id) => id
                .hs_id_keypair()
                .compute_blinded_key(tp)
                .map(|(_, kp, _)| kp)
                .map_err(|source| KeyError::Blinding {
                    period: super::blinded::slug(tp),
                    source,
                }),
            KeySource::BlindedDir { dir, keys, .. } => keys
                .iter()
                .find(|k| k.period == tp)
                .map(BlindedKey::to_keypair)
                .ok_or_else(|| KeyError::NoBlindedKey {
                    period: super::blinded::slug(tp),
                    dir: dir.clone(),
                }),
        }
    }
}

/// Longest identity file looked at (a PKCS8 PEM ed25519 key is about 120 bytes).
const MAX_IDENTITY_FILE: u64 = 4096;

/// Loads an identity secret in C tor's format or as PKCS8 PEM, by its first bytes. The file
/// is checked (regular file, 0600, bounded size) before anything is read.
pub fn load_identity(path: &Path) -> Result<MasterIdentity, KeyError> {
    let head = super::fsutil::read_secret_file(
        path,
        super::fsutil::LengthRule::AtMost(MAX_IDENTITY_FILE),
    )?;
    if head.starts_with(b"-----BEGIN") {
        MasterIdentity::from_pkcs8_pem(path)
    } else {
        MasterIdentity::from_ctor_secret_key_file(path)
    }
}
