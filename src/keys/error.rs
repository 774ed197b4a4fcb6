//! [`KeyError`]: what can go wrong loading, writing or parsing keys and addresses.

use std::io;
use std::path::PathBuf;

/// An error from the `keys` module.
///
/// File errors name the file; address errors name the part of the address that is wrong.
/// No variant ever carries secret key material, so `Debug` and `Display` are safe to log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be opened or read.
    #[error("cannot read key file {}: {source}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// The key file could not be created or written.
    #[error("cannot write key file {}: {source}", path.display())]
    Write {
        /// The key file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// Writing would replace an existing file; keys are never overwritten.
    #[error("refusing to overwrite existing file {}", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },

    /// The key path is a directory or another non-regular file.
    #[error("key file {} is not a regular file", path.display())]
    NotRegularFile {
        /// The offending path.
        path: PathBuf,
    },

    /// The secret key file grants its group or other users some access.
    #[error(
        "key file {} has mode {mode:04o}, which gives group/other access to a secret key; \
         run chmod 600 {}",
        path.display(),
        path.display()
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// The permission bits found (`mode & 0o7777`).
        mode: u32,
    },

    /// The C tor key file does not have the fixed length of its format.
    #[error(
        "C tor key file {} has the wrong length: expected {expected} bytes, got {got}",
        path.display()
    )]
    WrongLength {
        /// The key file.
        path: PathBuf,
        /// The length the format requires.
        expected: u64,
        /// The length found.
        got: u64,
    },

    /// The key file is larger than any key of its format could be.
    #[error(
        "key file {} is too large to be a key: at most {limit} bytes expected, got {got}",
        path.display()
    )]
    FileTooLarge {
        /// The key file.
        path: PathBuf,
        /// The largest size accepted.
        limit: u64,
        /// The size found.
        got: u64,
    },

    /// The C tor key file does not start with `== ed25519v1-secret: type0 ==\0\0\0`.
    #[error(
        "C tor key file {} does not start with the tag \"== ed25519v1-secret: type0 ==\": \
         not an ed25519 onion-service secret key (hs_ed25519_secret_key)",
        path.display()
    )]
    WrongTag {
        /// The key file.
        path: PathBuf,
    },

    /// The 64 key bytes of the C tor file are not a usable expanded ed25519 secret key.
    #[error("C tor key file {} holds an invalid expanded ed25519 secret key", path.display())]
    InvalidSecretKey {
        /// The key file.
        path: PathBuf,
    },

    /// The PEM armour is malformed or has the wrong label.
    #[error("key file {} is not a PKCS8 PEM private key: {reason}", path.display())]
    BadPem {
        /// The key file.
        path: PathBuf,
        /// What is wrong (never includes key bytes).
        reason: String,
    },

    /// The DER inside the PEM is not a well-formed PKCS8 ed25519 private key.
    #[error("key file {} has malformed PKCS8 DER: {reason}", path.display())]
    BadDer {
        /// The key file.
        path: PathBuf,
        /// What is wrong (never includes key bytes).
        reason: String,
    },

    /// The PKCS8 key is for another algorithm.
    #[error(
        "key file {} holds a key with algorithm OID {oid}, not ed25519 (1.3.101.112)",
        path.display()
    )]
    NotEd25519 {
        /// The key file.
        path: PathBuf,
        /// The algorithm OID found, dotted.
        oid: String,
    },

    /// The onion address does not have exactly 56 characters before `.onion`.
    #[error(
        "invalid v3 onion address: expected 56 base32 characters before \".onion\", got {got}"
    )]
    AddressLength {
        /// The number of characters found.
        got: usize,
    },

    /// The onion address is not a bare `<56 chars>[.onion]` name.
    #[error("invalid v3 onion address: {reason}")]
    AddressSyntax {
        /// What is wrong.
        reason: &'static str,
    },

    /// The onion address contains a character that is not base32.
    #[error("invalid v3 onion address: bad base32 at character {position}")]
    AddressBase32 {
        /// The 0-based position of the offending character.
        position: usize,
    },

    /// The onion address's version byte is not 3.
    #[error("invalid v3 onion address: version {version}, only version 3 is supported")]
    AddressVersion {
        /// The version byte found.
        version: u8,
    },

    /// The onion address's checksum does not match: most likely a typo.
    #[error("invalid v3 onion address: checksum mismatch (mistyped address?)")]
    AddressChecksum,

    /// The onion address's key part is not a valid ed25519 public key.
    #[error("invalid v3 onion address: the key is not a valid ed25519 public key")]
    AddressNotAKey,
}
