//! [`KeyError`]: what can go wrong loading, writing or parsing keys and addresses.

use std::io;
use std::path::PathBuf;

use tor_llcrypto::pk::keymanip::BlindingError;

/// An error from the `keys` module.
///
/// File errors name the file; address errors name the part of the address that is wrong.
/// No variant ever carries secret key material, so `Debug` and `Display` are safe to log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A blinded-key directory holds no blinded key.
    #[error("{} holds no blinded-*.key file (write some with `rustbalance keys export-blinded`)", path.display())]
    NoBlindedKeys {
        /// The directory.
        path: PathBuf,
    },

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

    /// A mesh key or cluster token file does not hold what it must.
    #[error("{kind} file {}: {reason}", path.display())]
    MeshFile {
        /// "mesh private key" or "cluster token".
        kind: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong (never the secret).
        reason: String,
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
    /// An authorized client's key is not `descriptor:x25519:<base32>`.
    #[error(
        "{source_name} line {line}: {problem} (expected descriptor:x25519:<52 base32 characters>)"
    )]
    ClientKey {
        /// The file, or `master.authorized_clients[<index>]`.
        source_name: String,
        /// The line (1 for a list entry).
        line: usize,
        /// What is wrong.
        problem: String,
    },

    /// More authorized clients than a descriptor may hold.
    #[error(
        "{count} authorized clients configured; at most {max} fit in a descriptor (Arti's cap)"
    )]
    TooManyClients {
        /// How many distinct keys were found.
        count: usize,
        /// The cap.
        max: usize,
    },

    /// A key directory could not be listed.
    #[error("cannot read key directory {}: {source}", path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// A key directory could not be created.
    #[error("cannot create key directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },

    /// A path that must be a directory is something else.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The offending path.
        path: PathBuf,
    },

    /// A blinded key file does not have the fixed length of its format.
    #[error(
        "blinded key file {} has the wrong length: expected {expected} bytes, got {got} \
         (truncated, or not a rustbalance-blinded-v1 file)",
        path.display()
    )]
    BlindedLength {
        /// The key file.
        path: PathBuf,
        /// The length the format requires.
        expected: u64,
        /// The length found.
        got: u64,
    },

    /// A blinded key file does not start with `== rustbalance-blinded-v1 ==` and NUL padding.
    #[error(
        "blinded key file {} does not start with the tag \"== rustbalance-blinded-v1 ==\": \
         not a RustBalance blinded key file, or one of an unsupported version",
        path.display()
    )]
    BlindedTag {
        /// The key file.
        path: PathBuf,
    },

    /// A blinded key file was exported from another master identity.
    #[error(
        "blinded key file {} is for the master {found}, not the configured master {expected}",
        path.display()
    )]
    BlindedWrongMaster {
        /// The key file.
        path: PathBuf,
        /// The master address recorded in the file.
        found: String,
        /// The configured master address.
        expected: String,
    },

    /// A blinded key file records a time period that cannot exist.
    #[error("blinded key file {} records an invalid time period: {reason}", path.display())]
    BlindedBadPeriod {
        /// The key file.
        path: PathBuf,
        /// What is wrong with the period.
        reason: String,
    },

    /// A blinded key file's name and contents disagree on the time period.
    #[error(
        "blinded key file {} is named for period {name_slug} but holds the key of period \
         {file_slug} (renamed file?)",
        path.display()
    )]
    BlindedNameMismatch {
        /// The key file.
        path: PathBuf,
        /// The period slug in the file name (`<interval>_<length min>_<offset s>`).
        name_slug: String,
        /// The period slug recorded inside the file.
        file_slug: String,
    },

    /// A blinded key file's secret is not the master's blinded key for its period.
    #[error(
        "blinded key file {} does not hold the master's blinded key for period {period} \
         (corrupted or tampered with)",
        path.display()
    )]
    BlindedKeyMismatch {
        /// The key file.
        path: PathBuf,
        /// The period slug recorded inside the file.
        period: String,
    },

    /// Blinding the master identity for a period failed (not expected for a valid key).
    #[error("cannot blind the master identity for period {period}: {source}")]
    Blinding {
        /// The period slug.
        period: String,
        /// The cause.
        #[source]
        source: BlindingError,
    },

    /// The number of periods to export is out of range.
    #[error("cannot export {count} blinded keys: between 1 and {max} periods may be exported")]
    ExportCount {
        /// The number requested.
        count: u64,
        /// The largest number allowed.
        max: u32,
    },

    /// The configured identity is not the master address's.
    #[error("master.key holds the identity of {found}, but master.onion_address is {master}")]
    WrongMasterKey {
        /// The key's address.
        found: String,
        /// The configured master address.
        master: String,
    },

    /// Offline-master mode and the directory lacks a period's key.
    #[error(
        "no blinded key for period {period} in {}: export more with `rustbalance keys export-blinded`",
        dir.display()
    )]
    NoBlindedKey {
        /// The period slug.
        period: String,
        /// The directory.
        dir: PathBuf,
    },

    /// A time period cannot be formed from the given parameters.
    #[error("invalid time period: {reason}")]
    InvalidTimePeriod {
        /// What is wrong.
        reason: String,
    },
}
