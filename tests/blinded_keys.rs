//! Offline-master mode: blinded keys exported from the master identity, loaded back on a node.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustbalance::keys::{
    covering, export_blinded, load_blinded_dir, period_at, KeyError, MasterIdentity, OnionAddress,
};
use tor_hscrypto::pk::HsBlindIdKey;
use tor_hscrypto::time::TimePeriod;
use tor_llcrypto::pk::ed25519::ExpandedKeypair;

fn vector(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name)
}

/// Git does not keep 0600, so copy a secret vector into a private temp dir with mode 0600.
fn private_copy(dir: &Path, name: &str) -> PathBuf {
    let dest = dir.join(name);
    std::fs::copy(vector(name), &dest).unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
    dest
}

fn secret_bytes(kp: &impl AsRef<ExpandedKeypair>) -> [u8; 64] {
    kp.as_ref().to_secret_key_bytes()
}

#[test]
fn export_and_load_five_periods() {
    let dir = tempfile::tempdir().unwrap();
    let keydir = dir.path().join("blinded");
    let id = MasterIdentity::generate(&mut rand::rng());
    // The private test network's periods: 6 minutes, offset 180 s.
    let first = period_at(SystemTime::now(), 6, 180).unwrap();

    let files = export_blinded(&id, first, 5, &keydir).unwrap();
    assert_eq!(files.len(), 5);
    for f in &files {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    let dir_mode = std::fs::metadata(&keydir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(dir_mode, 0o700);

    let keys = load_blinded_dir(&keydir, &id.onion_address()).unwrap();
    assert_eq!(keys.len(), 5);
    let mut expected_period = first;
    for key in &keys {
        assert_eq!(key.period, expected_period);
        let (pk, kp, _) = id.hs_id_keypair().compute_blinded_key(key.period).unwrap();
        assert_eq!(secret_bytes(key.keypair()), secret_bytes(&kp));
        assert_eq!(HsBlindIdKey::from(key.keypair()).id(), pk.id());
        expected_period = expected_period.next().unwrap();
    }

    // Another master's address: refused, naming a file.
    let other = MasterIdentity::generate(&mut rand::rng()).onion_address();
    let e = load_blinded_dir(&keydir, &other).unwrap_err();
    assert!(matches!(e, KeyError::BlindedWrongMaster { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(&other.to_string()), "{text}");
    assert!(text.contains(&id.onion_address().to_string()), "{text}");
    assert!(text.contains("blinded-"), "{text}");

    // Exporting the same range again would overwrite: refused.
    let e = export_blinded(&id, first, 5, &keydir).unwrap_err();
    assert!(matches!(e, KeyError::AlreadyExists { .. }), "{e:?}");

    // What a node wants around the boundary: previous, current, next.
    let current = first.next().unwrap();
    let wanted = [first, current, current.next().unwrap()];
    let (have, missing) = covering(&keys, &wanted);
    assert_eq!(
        have.iter().map(|k| k.period).collect::<Vec<_>>(),
        wanted.to_vec()
    );
    assert!(missing.is_empty());

    let last = keys[4].period;
    let beyond = last.next().unwrap();
    let before = first.prev().unwrap();
    let (have, missing) = covering(&keys, &[before, last, beyond]);
    assert_eq!(have.len(), 1);
    assert_eq!(have[0].period, last);
    assert_eq!(missing, vec![before, beyond]);
}

#[test]
fn ctor_vector_blinded_keys_match_public_blinding() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_copy(dir.path(), "ctor_hs_ed25519_secret_key");
    let id = MasterIdentity::from_ctor_secret_key_file(&key).unwrap();
    // The master as a node knows it: only the address tor wrote.
    let hostname = std::fs::read_to_string(vector("ctor_hostname")).unwrap();
    let master: OnionAddress = hostname.trim_end().parse().unwrap();

    // Mainnet periods: 1440 minutes, offset 43200 s; from 2026-04-30T12:00Z (period 20573).
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_777_550_400);
    let first = period_at(start, 1440, 43200).unwrap();
    assert_eq!(first, TimePeriod::from_parts(1440, 20573, 43200));

    let keydir = dir.path().join("blinded");
    export_blinded(&id, first, 3, &keydir).unwrap();
    let keys = load_blinded_dir(&keydir, &master).unwrap();
    assert_eq!(keys.len(), 3);
    for key in &keys {
        let (expected, _) = master.public_key().compute_blinded_key(key.period).unwrap();
        assert_eq!(HsBlindIdKey::from(key.keypair()), expected);
        assert_eq!(key.public().id(), expected.id());
    }
}
