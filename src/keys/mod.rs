//! The master onion-service identity and v3 onion addresses.
//!
//! This module owns:
//! - [`MasterIdentity`], the master identity keypair (`KS_hs_id`/`KP_hs_id`) that every node's
//!   descriptors are ultimately derived from: generating it, loading it from C tor's
//!   `hs_ed25519_secret_key` or from an Onionbalance/OpenSSL PKCS8 PEM file, and writing it back
//!   in C tor's format;
//! - [`OnionAddress`], a parsed and verified v3 `.onion` address (rend-spec-v3 §6
//!   \[ONIONADDRESS\]) that yields the public identity key;
//! - the file-permission policy for secret key files: a file whose mode grants group or other
//!   any access is refused, and files we create are `0600`;
//! - offline-master mode's blinded keys ([`export_blinded`], [`load_blinded_dir`],
//!   [`BlindedKey`]): one file per time period holding the master's blinded keypair
//!   (`KS_hs_blind_id`) with the master public key and the period it is for, so nodes never need
//!   the identity secret; loading verifies each key against the master's public identity;
//! - the mesh's secret files (WireGuard private key, cluster token): [`load_mesh_keys`],
//!   [`load_cluster_token`] and their generators, under the same file policy;
//! - [`KeySource`]: where a running node's blinded keys come from (the identity secret, or the
//!   offline-master directory), and [`load_identity`] (either file format);
//! - restricted discovery's authorized clients ([`load_authorized_clients`]): C tor's
//!   `descriptor:x25519:<base32>` `.auth` files and/or a configured list, at most 160;
//! - [`KeyError`], the errors of all of the above, each naming the file (or the address part)
//!   and what is wrong.
//!
//! What it must never do: put secret key bytes in an error, a `Debug` string or a log; overwrite
//! an existing key file; do network I/O; touch Arti's keystore (the `hosting` module installs the
//! blinded keys there). Blinding itself is tor-hscrypto's (`compute_blinded_key`).
//!
//! The crypto and the address encoding are Arti's (tor-hscrypto `HsIdKeypair`/`HsId`,
//! tor-llcrypto ed25519); only the two file formats are parsed here, because tor-keymgr's C tor
//! parser is private to its directory-based keystore.

mod address;
mod blinded;
mod clients;
mod error;
mod fsutil;
mod identity;
mod mesh_files;
mod source;

pub use address::OnionAddress;
pub(crate) use blinded::ensure_dir;
pub use blinded::{
    blinded_dir_master, blinded_key_bytes, covering, decode_blinded_key, export_blinded,
    export_count_for_days, load_blinded_dir, period_at, store_blinded_key, BlindedKey,
    BLINDED_FILE_LEN, MAX_EXPORT_PERIODS,
};
pub use clients::{
    load_authorized_clients, parse_auth_file, parse_client_key, MAX_AUTHORIZED_CLIENTS,
};
pub use error::KeyError;
pub(crate) use fsutil::write_new_secret_file;
pub use identity::MasterIdentity;
pub use mesh_files::{
    generate_cluster_token_file, generate_mesh_key_file, load_access_token, load_cluster_token,
    load_mesh_keys, load_or_create_secret,
};
pub use source::{load_identity, KeySource};
