//! The `keys` module against test vectors made by real C tor and OpenSSL (tests/vectors/README.md).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use rustbalance::keys::{MasterIdentity, OnionAddress};

fn vector(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name)
}

fn read_text(name: &str) -> String {
    std::fs::read_to_string(vector(name))
        .unwrap()
        .trim_end()
        .to_owned()
}

/// Git does not keep 0600, so copy a secret vector into a private temp dir with mode 0600.
fn private_copy(dir: &Path, name: &str) -> PathBuf {
    let dest = dir.join(name);
    std::fs::copy(vector(name), &dest).unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600)).unwrap();
    dest
}

/// Write `id` in C tor format, read it back, and check the address; returns the file bytes.
fn ctor_round_trip(dir: &Path, id: &MasterIdentity, name: &str) -> Vec<u8> {
    let out = dir.join(name);
    id.write_ctor_secret_key_file(&out).unwrap();
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let back = MasterIdentity::from_ctor_secret_key_file(&out).unwrap();
    assert_eq!(back.onion_address(), id.onion_address());
    assert_eq!(back.public(), id.public());
    std::fs::read(&out).unwrap()
}

#[test]
fn ctor_vector_gives_tors_hostname() {
    let expected = read_text("ctor_hostname");
    assert_eq!(expected.len(), 62, "{expected}");
    let dir = tempfile::tempdir().unwrap();
    let key = private_copy(dir.path(), "ctor_hs_ed25519_secret_key");

    let id = MasterIdentity::from_ctor_secret_key_file(&key).unwrap();
    assert_eq!(id.onion_address().to_string(), expected);

    let parsed: OnionAddress = expected.parse().unwrap();
    assert_eq!(parsed, id.onion_address());
    assert_eq!(parsed.public_key(), &id.public());
    assert_eq!(parsed.to_string(), expected);

    // Write/read round trip; the rewritten file is stable from then on.
    let first = ctor_round_trip(dir.path(), &id, "rewritten1");
    let again = MasterIdentity::from_ctor_secret_key_file(dir.path().join("rewritten1")).unwrap();
    let second = ctor_round_trip(dir.path(), &again, "rewritten2");
    assert_eq!(first, second);
    assert_eq!(first[..32], std::fs::read(&key).unwrap()[..32]);
}

#[test]
fn ctor_vector_with_open_permissions_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = private_copy(dir.path(), "ctor_hs_ed25519_secret_key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = MasterIdentity::from_ctor_secret_key_file(&key)
        .unwrap_err()
        .to_string();
    assert!(err.contains("0644"), "{err}");
    assert!(
        err.contains(&format!("chmod 600 {}", key.display())),
        "{err}"
    );
}

#[test]
fn pkcs8_vector_gives_python_computed_address() {
    let expected = read_text("pkcs8_ed25519_onion_address");
    assert_eq!(expected.len(), 62, "{expected}");
    let dir = tempfile::tempdir().unwrap();
    let key = private_copy(dir.path(), "pkcs8_ed25519.pem");

    let id = MasterIdentity::from_pkcs8_pem(&key).unwrap();
    assert_eq!(id.onion_address().to_string(), expected);
    assert_eq!(
        expected.parse::<OnionAddress>().unwrap(),
        id.onion_address()
    );

    // PEM -> C tor -> same address.
    ctor_round_trip(dir.path(), &id, "from_pem");
}

#[test]
fn vector_addresses_parse_in_any_case_without_suffix() {
    for name in ["ctor_hostname", "pkcs8_ed25519_onion_address"] {
        let canonical = read_text(name);
        let bare = canonical.strip_suffix(".onion").unwrap();
        for input in [bare.to_owned(), canonical.to_ascii_uppercase()] {
            let a: OnionAddress = input.parse().unwrap();
            assert_eq!(a.to_string(), canonical);
        }
    }
}
