//! Blinded keys for offline-master mode: exporting them from the master identity, and loading
//! and verifying them on a node.
//!
//! The master identity secret stays offline; [`export_blinded`] writes one file per time period
//! with that period's blinded keypair (`KS_hs_blind_id`), and nodes load a directory of them
//! with [`load_blinded_dir`]. File `blinded-<interval>_<length min>_<offset s>.key` (the period
//! slug Arti's keystore uses), mode `0600`, exactly [`BLINDED_FILE_LEN`] bytes:
//!
//! | bytes | content |
//! | --- | --- |
//! | 0..32 | tag `== rustbalance-blinded-v1 ==` padded with NULs |
//! | 32..64 | the MASTER public identity key (`KP_hs_id`) |
//! | 64..72 | `interval_num`, u64 big-endian |
//! | 72..76 | period length in minutes, u32 big-endian |
//! | 76..80 | epoch offset in seconds, u32 big-endian |
//! | 80..144 | the expanded blinded secret key (scalar ‖ hash prefix) |
//!
//! A file thus says by itself which master and which period it is for. Loading checks the tag,
//! the length, the master, that the name's slug is the period inside, and that the secret's
//! public key is the master's blinded key for that period (computed from the public identity
//! alone). The hash-prefix half of the secret cannot be checked without the master secret; it
//! only seeds signature nonces, so a corrupted one still yields valid signatures.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use safelog::DisplayRedacted as _;
use tor_hscrypto::pk::{HsBlindIdKey, HsBlindIdKeypair, HsId};
use tor_hscrypto::time::{TimePeriod, TimePeriodError};
use tor_llcrypto::pk::ed25519 as tor_ed25519;
use zeroize::Zeroizing;

use super::fsutil::{read_secret_file, write_new_secret_file, LengthRule};
use super::{KeyError, MasterIdentity, OnionAddress};

/// The most periods [`export_blinded`] writes in one call.
pub const MAX_EXPORT_PERIODS: u32 = 10_000;

/// The length of a blinded key file.
pub const BLINDED_FILE_LEN: usize = 32 + 32 + 8 + 4 + 4 + 64;

/// The tag that starts a blinded key file; the version is part of it.
const BLINDED_TAG: &[u8; 32] = b"== rustbalance-blinded-v1 ==\0\0\0\0";

/// Blinded key file names are `<prefix><slug><suffix>`.
const FILE_PREFIX: &str = "blinded-";
/// See [`FILE_PREFIX`].
const FILE_SUFFIX: &str = ".key";

/// The mode of a key directory we create.
#[cfg(unix)]
const KEY_DIR_MODE: u32 = 0o700;

/// Minutes in a day, for [`export_count_for_days`].
const MINUTES_PER_DAY: u64 = 24 * 60;

/// A blinded keypair (`KS_hs_blind_id`) of the master identity for one time period, loaded and
/// verified by [`load_blinded_dir`].
///
/// Holds a secret key: its `Debug` shows only the period, and it is not `Clone`.
pub struct BlindedKey {
    /// The time period this key is for.
    pub period: TimePeriod,
    /// The blinded keypair.
    keypair: HsBlindIdKeypair,
}

impl BlindedKey {
    /// The blinded keypair.
    pub fn keypair(&self) -> &HsBlindIdKeypair {
        &self.keypair
    }

    /// An owned copy of the blinded keypair (for inserting into Arti's keystore).
    pub fn to_keypair(&self) -> HsBlindIdKeypair {
        let expanded: &tor_ed25519::ExpandedKeypair = self.keypair.as_ref();
        let bytes = Zeroizing::new(expanded.to_secret_key_bytes());
        let copy = tor_ed25519::ExpandedKeypair::from_secret_key_bytes(*bytes)
            // Unreachable: these bytes came from `to_secret_key_bytes`, which is all
            // `from_secret_key_bytes` requires.
            .unwrap_or_else(|| unreachable!("to_secret_key_bytes output is always accepted"));
        HsBlindIdKeypair::from(copy)
    }

    /// The blinded public key (`KP_hs_blind_id`).
    pub fn public(&self) -> HsBlindIdKey {
        HsBlindIdKey::from(&self.keypair)
    }
}

impl fmt::Debug for BlindedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlindedKey")
            .field("period", &format_args!("{}", slug(self.period)))
            .field("keypair", &format_args!("<redacted>"))
            .finish()
    }
}

/// The time period of `length_minutes` minutes, epoch offset `offset_secs` seconds, that
/// contains `now`.
///
/// Tor's mainnet uses 1440 minutes and 43200 s; the private test network 6 minutes and 180 s.
/// Take both from a node's network directory when in doubt.
pub fn period_at(
    now: SystemTime,
    length_minutes: u32,
    offset_secs: u32,
) -> Result<TimePeriod, KeyError> {
    check_length(length_minutes).map_err(|reason| KeyError::InvalidTimePeriod { reason })?;
    TimePeriod::new(
        Duration::from_secs(u64::from(length_minutes) * 60),
        now,
        Duration::from_secs(offset_secs.into()),
    )
    .map_err(|e| KeyError::InvalidTimePeriod {
        reason: match e {
            TimePeriodError::OutOfRange => {
                format!("the time is before the periods' epoch (Unix epoch + {offset_secs} s)")
            }
            e => e.to_string(),
        },
    })
}

/// How many periods of `length_minutes` to export so that `days` days from now are covered:
/// `ceil(days × 1440 / length) + 1` (the current period is already under way).
///
/// Fails if that exceeds [`MAX_EXPORT_PERIODS`].
pub fn export_count_for_days(days: u32, length_minutes: u32) -> Result<u32, KeyError> {
    check_length(length_minutes).map_err(|reason| KeyError::InvalidTimePeriod { reason })?;
    let count = (u64::from(days) * MINUTES_PER_DAY).div_ceil(u64::from(length_minutes)) + 1;
    u32::try_from(count)
        .ok()
        .filter(|c| *c <= MAX_EXPORT_PERIODS)
        .ok_or(KeyError::ExportCount {
            count,
            max: MAX_EXPORT_PERIODS,
        })
}

/// Export the master's blinded keys for `count` consecutive periods starting at `first`, one
/// file per period in `dir` (created with mode `0700` if missing). Returns the files written.
///
/// `count` must be between 1 and [`MAX_EXPORT_PERIODS`]. Existing files are never replaced:
/// if any target file exists, nothing is written ([`KeyError::AlreadyExists`] names it); if a
/// write fails midway, the files this call wrote are removed again.
pub fn export_blinded(
    identity: &MasterIdentity,
    first: TimePeriod,
    count: u32,
    dir: &Path,
) -> Result<Vec<PathBuf>, KeyError> {
    if !(1..=MAX_EXPORT_PERIODS).contains(&count) {
        return Err(KeyError::ExportCount {
            count: count.into(),
            max: MAX_EXPORT_PERIODS,
        });
    }
    check_length(first.length().as_minutes())
        .map_err(|reason| KeyError::InvalidTimePeriod { reason })?;

    let mut periods = Vec::with_capacity(count as usize);
    let mut tp = first;
    periods.push(tp);
    for _ in 1..count {
        tp = tp.next().ok_or_else(|| KeyError::InvalidTimePeriod {
            reason: format!("the periods after {} overflow", slug(tp)),
        })?;
        periods.push(tp);
    }

    ensure_dir(dir)?;
    let targets: Vec<(TimePeriod, PathBuf)> = periods
        .into_iter()
        .map(|tp| (tp, dir.join(file_name(tp))))
        .collect();
    // Refuse before writing anything; write_new_secret_file still refuses races.
    for (_, path) in &targets {
        if fs::symlink_metadata(path).is_ok() {
            return Err(KeyError::AlreadyExists { path: path.clone() });
        }
    }

    let mut written = Vec::with_capacity(targets.len());
    for (tp, path) in targets {
        if let Err(e) = write_one(identity, tp, &path) {
            for ours in &written {
                // Best effort: the first error is the one worth reporting.
                let _ = fs::remove_file(ours);
            }
            return Err(e);
        }
        written.push(path);
    }
    Ok(written)
}

/// Load and verify every `blinded-*.key` file in `dir` (other files are ignored) as blinded
/// keys of `master`. Returns them sorted by period (length, offset, then interval number).
///
/// Any bad file fails the whole load, with an error naming it: wrong permissions (group/other
/// access), length or tag; another master; a name that is not the period inside; or a secret
/// that is not the master's blinded key for that period.
pub fn load_blinded_dir(dir: &Path, master: &OnionAddress) -> Result<Vec<BlindedKey>, KeyError> {
    let read_dir_err = |source: io::Error| KeyError::ReadDir {
        path: dir.to_owned(),
        source,
    };
    let mut keys = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_dir_err)? {
        let entry = entry.map_err(read_dir_err)?;
        let name = entry.file_name();
        let Some(name_slug) = name
            .to_str()
            .and_then(|n| n.strip_prefix(FILE_PREFIX))
            .and_then(|n| n.strip_suffix(FILE_SUFFIX))
        else {
            continue;
        };
        keys.push(load_file(&entry.path(), name_slug, master)?);
    }
    keys.sort_by_key(|k| {
        (
            k.period.length().as_minutes(),
            k.period.epoch_offset_in_sec(),
            k.period.interval_num(),
        )
    });
    Ok(keys)
}

/// The master address the blinded keys in `dir` belong to (read from its first key file; the
/// caller then loads the directory with [`load_blinded_dir`], which checks every file).
pub fn blinded_dir_master(dir: &Path) -> Result<OnionAddress, KeyError> {
    let read_dir_err = |source: io::Error| KeyError::ReadDir {
        path: dir.to_owned(),
        source,
    };
    let mut names: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(read_dir_err)?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(FILE_PREFIX) && n.ends_with(FILE_SUFFIX))
        })
        .map(|e| e.path())
        .collect();
    names.sort();
    let first = names.first().ok_or_else(|| KeyError::NoBlindedKeys {
        path: dir.to_owned(),
    })?;
    let data = read_secret_file(first, LengthRule::Exactly(BLINDED_FILE_LEN as u64))?;
    let mut key = [0u8; 32];
    key.copy_from_slice(&data[32..64]);
    OnionAddress::from_public_key_bytes(key).ok_or_else(|| KeyError::BlindedTag {
        path: first.clone(),
    })
}

/// The keys for the `wanted` periods (in the order wanted, duplicates once), and the wanted
/// periods no key covers.
pub fn covering<'a>(
    keys: &'a [BlindedKey],
    wanted: &[TimePeriod],
) -> (Vec<&'a BlindedKey>, Vec<TimePeriod>) {
    let mut found: Vec<&BlindedKey> = Vec::new();
    let mut missing: Vec<TimePeriod> = Vec::new();
    for (i, tp) in wanted.iter().enumerate() {
        if wanted[..i].contains(tp) {
            continue;
        }
        match keys.iter().find(|k| k.period == *tp) {
            Some(k) => found.push(k),
            None => missing.push(*tp),
        }
    }
    (found, missing)
}

/// The period slug Arti's keystore uses: `<interval>_<length min>_<offset s>`.
pub(super) fn slug(tp: TimePeriod) -> String {
    format!(
        "{}_{}_{}",
        tp.interval_num(),
        tp.length().as_minutes(),
        tp.epoch_offset_in_sec()
    )
}

/// The file name of the blinded key of `tp`.
fn file_name(tp: TimePeriod) -> String {
    format!("{FILE_PREFIX}{}{FILE_SUFFIX}", slug(tp))
}

/// Why a period length cannot be used, if it cannot: it must be at least one minute, and
/// `TimePeriod` keeps it in seconds as a `u32`.
fn check_length(length_minutes: u32) -> Result<(), String> {
    if length_minutes == 0 {
        Err("the period length is 0 minutes".into())
    } else if length_minutes > u32::MAX / 60 {
        Err(format!(
            "the period length {length_minutes} minutes is too long (at most {} minutes)",
            u32::MAX / 60
        ))
    } else {
        Ok(())
    }
}

/// Make sure `dir` is a directory, creating it (and its parents) with mode `0700` if missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), KeyError> {
    let create_err = |source: io::Error| KeyError::CreateDir {
        path: dir.to_owned(),
        source,
    };
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(KeyError::NotADirectory {
            path: dir.to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
                builder.mode(KEY_DIR_MODE);
                builder.create(dir).map_err(create_err)?;
                // The umask may have removed bits we need: make it exactly 0700.
                fs::set_permissions(dir, fs::Permissions::from_mode(KEY_DIR_MODE))
                    .map_err(create_err)?;
            }
            #[cfg(not(unix))]
            builder.create(dir).map_err(create_err)?;
            Ok(())
        }
        Err(e) => Err(create_err(e)),
    }
}

/// The blinded key file of `identity` for `tp`, as bytes (what [`export_blinded`] writes, and
/// what a key holder sends its members over the mesh).
pub fn blinded_key_bytes(
    identity: &MasterIdentity,
    tp: TimePeriod,
) -> Result<Zeroizing<[u8; BLINDED_FILE_LEN]>, KeyError> {
    let (_, keypair, _) = identity
        .hs_id_keypair()
        .compute_blinded_key(tp)
        .map_err(|source| KeyError::Blinding {
            period: slug(tp),
            source,
        })?;
    Ok(encode(&identity.public().id(), tp, &keypair))
}

/// The file bytes of `keypair`, the blinded key of `master` for `tp`.
fn encode(
    master: &HsId,
    tp: TimePeriod,
    keypair: &HsBlindIdKeypair,
) -> Zeroizing<[u8; BLINDED_FILE_LEN]> {
    let expanded: &tor_ed25519::ExpandedKeypair = keypair.as_ref();
    let secret = Zeroizing::new(expanded.to_secret_key_bytes());
    let mut contents = Zeroizing::new([0_u8; BLINDED_FILE_LEN]);
    let fields: [&[u8]; 6] = [
        BLINDED_TAG,
        master.as_ref(),
        &tp.interval_num().to_be_bytes(),
        &tp.length().as_minutes().to_be_bytes(),
        &tp.epoch_offset_in_sec().to_be_bytes(),
        &secret[..],
    ];
    let mut at = 0;
    for field in fields {
        contents[at..at + field.len()].copy_from_slice(field);
        at += field.len();
    }
    debug_assert_eq!(at, BLINDED_FILE_LEN);
    contents
}

/// Blind `identity` for `tp` and write the file `path`.
fn write_one(identity: &MasterIdentity, tp: TimePeriod, path: &Path) -> Result<(), KeyError> {
    let contents = blinded_key_bytes(identity, tp)?;
    write_new_secret_file(path, &contents[..])
}

impl BlindedKey {
    /// This key as file bytes (for handing it to another node of `master`'s cluster).
    pub fn to_bytes(&self, master: &OnionAddress) -> Zeroizing<[u8; BLINDED_FILE_LEN]> {
        encode(&master.hs_id(), self.period, &self.keypair)
    }
}

/// Decodes and verifies blinded key bytes received from elsewhere (a join reply, a key
/// holder's push) exactly as a file is checked; errors name `origin`.
pub fn decode_blinded_key(
    data: &[u8],
    master: &OnionAddress,
    origin: &str,
) -> Result<BlindedKey, KeyError> {
    parse(data, Path::new(origin), None, master)
}

/// Verifies `data` as a blinded key of `master` and stores it in `dir` (created 0700) under
/// its period's file name, atomically and 0600. Returns the key's period and whether the
/// file was new (`false`: a key for that period was already there; it is never replaced).
pub fn store_blinded_key(
    dir: &Path,
    data: &[u8],
    master: &OnionAddress,
    origin: &str,
) -> Result<(TimePeriod, bool), KeyError> {
    let key = decode_blinded_key(data, master, origin)?;
    ensure_dir(dir)?;
    let path = dir.join(file_name(key.period));
    match write_new_secret_file(&path, data) {
        Ok(()) => Ok((key.period, true)),
        Err(KeyError::AlreadyExists { .. }) => Ok((key.period, false)),
        Err(e) => Err(e),
    }
}

/// Split `N` bytes off the front of `rest`.
fn take<'a, const N: usize>(rest: &mut &'a [u8]) -> Option<&'a [u8; N]> {
    let (head, tail) = rest.split_first_chunk::<N>()?;
    *rest = tail;
    Some(head)
}

/// Load and verify one blinded key file whose name carries `name_slug`.
fn load_file(path: &Path, name_slug: &str, master: &OnionAddress) -> Result<BlindedKey, KeyError> {
    let data = read_secret_file(path, LengthRule::Exactly(BLINDED_FILE_LEN as u64)).map_err(
        |e| match e {
            KeyError::WrongLength {
                path,
                expected,
                got,
            } => KeyError::BlindedLength {
                path,
                expected,
                got,
            },
            e => e,
        },
    )?;
    parse(&data, path, Some(name_slug), master)
}

/// Verify blinded key bytes (from the file `path`, or received: then `name_slug` is `None`).
fn parse(
    data: &[u8],
    path: &Path,
    name_slug: Option<&str>,
    master: &OnionAddress,
) -> Result<BlindedKey, KeyError> {
    if data.len() != BLINDED_FILE_LEN {
        return Err(KeyError::BlindedLength {
            path: path.to_owned(),
            expected: BLINDED_FILE_LEN as u64,
            got: data.len() as u64,
        });
    }
    let short = || KeyError::BlindedLength {
        path: path.to_owned(),
        expected: BLINDED_FILE_LEN as u64,
        got: data.len() as u64,
    };

    let mut rest: &[u8] = data;
    let tag = take::<32>(&mut rest).ok_or_else(short)?;
    if tag != BLINDED_TAG {
        return Err(KeyError::BlindedTag {
            path: path.to_owned(),
        });
    }

    let file_master = HsId::from(*take::<32>(&mut rest).ok_or_else(short)?);
    if file_master != master.hs_id() {
        return Err(KeyError::BlindedWrongMaster {
            path: path.to_owned(),
            found: file_master.display_unredacted().to_string(),
            expected: master.to_string(),
        });
    }

    let interval = u64::from_be_bytes(*take::<8>(&mut rest).ok_or_else(short)?);
    let length = u32::from_be_bytes(*take::<4>(&mut rest).ok_or_else(short)?);
    let offset = u32::from_be_bytes(*take::<4>(&mut rest).ok_or_else(short)?);
    check_length(length).map_err(|reason| KeyError::BlindedBadPeriod {
        path: path.to_owned(),
        reason,
    })?;
    let period = TimePeriod::from_parts(length, interval, offset);
    let file_slug = slug(period);
    if let Some(name_slug) = name_slug.filter(|n| *n != file_slug) {
        return Err(KeyError::BlindedNameMismatch {
            path: path.to_owned(),
            name_slug: name_slug.to_owned(),
            file_slug,
        });
    }

    let secret = Zeroizing::new(*take::<64>(&mut rest).ok_or_else(short)?);
    let mismatch = || KeyError::BlindedKeyMismatch {
        path: path.to_owned(),
        period: slug(period),
    };
    let keypair = HsBlindIdKeypair::from(
        tor_ed25519::ExpandedKeypair::from_secret_key_bytes(*secret).ok_or_else(mismatch)?,
    );
    let (expected, _) = master
        .public_key()
        .compute_blinded_key(period)
        .map_err(|source| KeyError::Blinding {
            period: slug(period),
            source,
        })?;
    if HsBlindIdKey::from(&keypair).id() != expected.id() {
        return Err(mismatch());
    }
    Ok(BlindedKey { period, keypair })
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// A fixed identity, so failures are reproducible.
    fn identity(seed: u8) -> MasterIdentity {
        let kp = tor_ed25519::Keypair::from_bytes(&[seed; 32]);
        MasterIdentity::from(tor_hscrypto::pk::HsIdKeypair::from(
            tor_ed25519::ExpandedKeypair::from(&kp),
        ))
    }

    const FIRST: (u32, u64, u32) = (1440, 20573, 43200);

    fn first() -> TimePeriod {
        TimePeriod::from_parts(FIRST.0, FIRST.1, FIRST.2)
    }

    /// Export `count` periods from `first()` into a fresh temp dir.
    fn exported(count: u32) -> (tempfile::TempDir, MasterIdentity, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let id = identity(7);
        let files = export_blinded(&id, first(), count, dir.path()).unwrap();
        (dir, id, files)
    }

    /// Rewrite `path` with `f` applied to its bytes, keeping mode 0600.
    fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = fs::read(path).unwrap();
        f(&mut bytes);
        fs::write(path, &bytes).unwrap();
    }

    fn load_err(dir: &Path, id: &MasterIdentity) -> KeyError {
        load_blinded_dir(dir, &id.onion_address()).unwrap_err()
    }

    #[test]
    fn file_layout() {
        let (_dir, id, files) = exported(1);
        assert_eq!(
            files[0].file_name().unwrap().to_str().unwrap(),
            "blinded-20573_1440_43200.key"
        );
        let bytes = fs::read(&files[0]).unwrap();
        assert_eq!(bytes.len(), BLINDED_FILE_LEN);
        assert_eq!(BLINDED_FILE_LEN, 144);
        assert_eq!(&bytes[..28], b"== rustbalance-blinded-v1 ==");
        assert_eq!(&bytes[28..32], &[0; 4]);
        assert_eq!(&bytes[32..64], id.public().id().as_ref());
        assert_eq!(&bytes[64..72], &20573_u64.to_be_bytes());
        assert_eq!(&bytes[72..76], &1440_u32.to_be_bytes());
        assert_eq!(&bytes[76..80], &43200_u32.to_be_bytes());
        let (_, kp, _) = id.hs_id_keypair().compute_blinded_key(first()).unwrap();
        let exp: &tor_ed25519::ExpandedKeypair = kp.as_ref();
        assert_eq!(&bytes[80..], &exp.to_secret_key_bytes()[..]);
        let mode = fs::metadata(&files[0]).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn round_trip_ignores_other_files() {
        let (dir, id, files) = exported(3);
        fs::write(dir.path().join("README"), b"hello").unwrap();
        fs::write(dir.path().join("blinded-20573_1440_43200.key~"), b"x").unwrap();
        let keys = load_blinded_dir(dir.path(), &id.onion_address()).unwrap();
        assert_eq!(keys.len(), files.len());
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(key.period.interval_num(), FIRST.1 + i as u64);
            let (pk, _, _) = id.hs_id_keypair().compute_blinded_key(key.period).unwrap();
            assert_eq!(key.public().id(), pk.id());
            assert_eq!(HsBlindIdKey::from(&key.to_keypair()).id(), pk.id());
        }
    }

    #[test]
    fn wrong_tag() {
        let (dir, id, files) = exported(1);
        edit(&files[0], |b| b[3] = b'R');
        let e = load_err(dir.path(), &id);
        assert!(
            matches!(&e, KeyError::BlindedTag { path } if *path == files[0]),
            "{e:?}"
        );
        // A future version is refused the same way.
        edit(&files[0], |b| {
            b[..32].copy_from_slice(b"== rustbalance-blinded-v2 ==\0\0\0\0")
        });
        assert!(matches!(
            load_err(dir.path(), &id),
            KeyError::BlindedTag { .. }
        ));
    }

    #[test]
    fn truncated_and_extended() {
        let (dir, id, files) = exported(1);
        edit(&files[0], |b| b.truncate(100));
        let e = load_err(dir.path(), &id);
        assert!(
            matches!(&e, KeyError::BlindedLength { path, expected: 144, got: 100 } if *path == files[0]),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("blinded-20573_1440_43200.key"),
            "{e}"
        );
        edit(&files[0], |b| b.resize(200, 0));
        assert!(matches!(
            load_err(dir.path(), &id),
            KeyError::BlindedLength { got: 200, .. }
        ));
    }

    #[test]
    fn wrong_master() {
        let (dir, id, files) = exported(1);
        let other = identity(8);
        let e = load_err(dir.path(), &other);
        match &e {
            KeyError::BlindedWrongMaster {
                path,
                found,
                expected,
            } => {
                assert_eq!(path, &files[0]);
                assert_eq!(found, &id.onion_address().to_string());
                assert_eq!(expected, &other.onion_address().to_string());
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn slug_period_mismatch() {
        let (dir, id, files) = exported(1);
        let renamed = dir.path().join("blinded-20574_1440_43200.key");
        fs::rename(&files[0], &renamed).unwrap();
        let e = load_err(dir.path(), &id);
        match &e {
            KeyError::BlindedNameMismatch {
                path,
                name_slug,
                file_slug,
            } => {
                assert_eq!(path, &renamed);
                assert_eq!(name_slug, "20574_1440_43200");
                assert_eq!(file_slug, "20573_1440_43200");
            }
            e => panic!("{e:?}"),
        }
        // A name that is no slug at all is a mismatch too.
        let junk = dir.path().join("blinded-latest.key");
        fs::rename(&renamed, &junk).unwrap();
        assert!(matches!(
            load_err(dir.path(), &id),
            KeyError::BlindedNameMismatch { .. }
        ));
    }

    #[test]
    fn tampered_secret_or_period() {
        let (dir, id, files) = exported(1);
        edit(&files[0], |b| b[80] ^= 1);
        let e = load_err(dir.path(), &id);
        assert!(
            matches!(&e, KeyError::BlindedKeyMismatch { path, period } if *path == files[0] && period == "20573_1440_43200"),
            "{e:?}"
        );

        // Period edited inside and the file renamed to match: the key is not that period's.
        let (dir, id, files) = exported(1);
        edit(&files[0], |b| {
            b[64..72].copy_from_slice(&20574_u64.to_be_bytes())
        });
        fs::rename(&files[0], dir.path().join("blinded-20574_1440_43200.key")).unwrap();
        assert!(matches!(
            load_err(dir.path(), &id),
            KeyError::BlindedKeyMismatch { .. }
        ));

        // A period length of 0 is refused before any arithmetic on it.
        let (dir, id, files) = exported(1);
        edit(&files[0], |b| {
            b[72..76].copy_from_slice(&0_u32.to_be_bytes())
        });
        assert!(matches!(
            load_err(dir.path(), &id),
            KeyError::BlindedBadPeriod { .. }
        ));
    }

    #[test]
    fn open_permissions_refused() {
        let (dir, id, files) = exported(2);
        fs::set_permissions(&files[1], fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_err(dir.path(), &id);
        assert!(
            matches!(&e, KeyError::InsecurePermissions { path, mode: 0o644 } if *path == files[1]),
            "{e:?}"
        );
    }

    #[test]
    fn overwrite_refused_and_nothing_written() {
        let (dir, id, files) = exported(2);
        let before = fs::read(&files[1]).unwrap();
        // Periods 20572..20574: the middle one exists.
        let earlier = first().prev().unwrap();
        let e = export_blinded(&id, earlier, 3, dir.path()).unwrap_err();
        assert!(
            matches!(&e, KeyError::AlreadyExists { path } if *path == files[0]),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("blinded-20573_1440_43200.key"),
            "{e}"
        );
        assert!(!dir.path().join("blinded-20572_1440_43200.key").exists());
        assert_eq!(fs::read(&files[1]).unwrap(), before);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn export_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let id = identity(7);
        for count in [0, MAX_EXPORT_PERIODS + 1] {
            let e = export_blinded(&id, first(), count, dir.path()).unwrap_err();
            assert!(matches!(e, KeyError::ExportCount { .. }), "{e:?}");
        }
        let last = TimePeriod::from_parts(1440, u64::MAX, 0);
        let e = export_blinded(&id, last, 2, dir.path()).unwrap_err();
        assert!(matches!(e, KeyError::InvalidTimePeriod { .. }), "{e:?}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

        // A file where the directory should be.
        let file = dir.path().join("f");
        fs::write(&file, b"").unwrap();
        let e = export_blinded(&id, first(), 1, &file).unwrap_err();
        assert!(matches!(e, KeyError::NotADirectory { .. }), "{e:?}");
    }

    #[test]
    fn creates_dir_0700() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("a/b");
        let files = export_blinded(&identity(7), first(), 2, &target).unwrap();
        assert_eq!(files.len(), 2);
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn missing_dir_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let e =
            load_blinded_dir(&dir.path().join("nope"), &identity(7).onion_address()).unwrap_err();
        assert!(matches!(e, KeyError::ReadDir { .. }), "{e:?}");
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn period_at_and_count() {
        // 2026-04-30T12:00:00Z begins mainnet period 20573 (docs/arti-hosting.md §2.1).
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_777_550_400);
        assert_eq!(period_at(start, 1440, 43200).unwrap(), first());
        let just_before = start - Duration::from_secs(1);
        assert_eq!(
            period_at(just_before, 1440, 43200).unwrap(),
            first().prev().unwrap()
        );
        let tp = period_at(start, 6, 180).unwrap();
        assert!(tp.contains(start));
        assert_eq!(tp.length().as_minutes(), 6);
        assert_eq!(tp.epoch_offset_in_sec(), 180);

        for length in [0, u32::MAX / 60 + 1] {
            assert!(matches!(
                period_at(start, length, 0),
                Err(KeyError::InvalidTimePeriod { .. })
            ));
        }
        assert!(matches!(
            period_at(SystemTime::UNIX_EPOCH, 1440, 43200),
            Err(KeyError::InvalidTimePeriod { .. })
        ));

        assert_eq!(export_count_for_days(0, 1440).unwrap(), 1);
        assert_eq!(export_count_for_days(30, 1440).unwrap(), 31);
        assert_eq!(export_count_for_days(1, 6).unwrap(), 241);
        assert_eq!(export_count_for_days(1, 7).unwrap(), 207); // ceil(1440 / 7) = 206
        assert!(matches!(
            export_count_for_days(42, 6),
            Err(KeyError::ExportCount { count: 10081, .. })
        ));
        assert!(matches!(
            export_count_for_days(1, 0),
            Err(KeyError::InvalidTimePeriod { .. })
        ));
    }

    #[test]
    fn covering_reports_missing() {
        let (dir, id, _) = exported(3);
        let keys = load_blinded_dir(dir.path(), &id.onion_address()).unwrap();
        let p = first();
        let want = [p.prev().unwrap(), p, p.next().unwrap(), p];
        let (have, missing) = covering(&keys, &want);
        assert_eq!(
            have.iter().map(|k| k.period).collect::<Vec<_>>(),
            vec![p, p.next().unwrap()]
        );
        assert_eq!(missing, vec![p.prev().unwrap()]);
        // Same interval, other length: not covered.
        let other = TimePeriod::from_parts(6, FIRST.1, FIRST.2);
        assert_eq!(covering(&keys, &[other]).1, vec![other]);
    }

    #[test]
    fn debug_and_errors_hide_the_secret() {
        let (dir, id, files) = exported(1);
        let keys = load_blinded_dir(dir.path(), &id.onion_address()).unwrap();
        let dbg = format!("{:?} {:#?}", keys[0], keys);
        assert!(
            dbg.contains("<redacted>") && dbg.contains("20573_1440_43200"),
            "{dbg}"
        );
        let secret = fs::read(&files[0]).unwrap()[80..].to_vec();
        edit(&files[0], |b| b[81] ^= 0xff);
        let e = load_err(dir.path(), &id);
        for text in [dbg, format!("{e} {e:?}")] {
            for half in [&secret[..32], &secret[32..]] {
                let hex: String = half[..8].iter().map(|b| format!("{b:02x}")).collect();
                assert!(!text.to_lowercase().contains(&hex), "{text}");
                let list = format!("{:?}", &half[..4]);
                assert!(!text.contains(list.trim_end_matches(']')), "{text}");
            }
        }
    }
}
