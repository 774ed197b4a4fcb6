//! Fuzzes every key-file reader: whatever bytes a key file holds, loading gives a key or an
//! error naming the file, never a panic, and an error never contains the file's bytes.
//!
//! The input is written (mode 0600) as: a master identity file (C tor format or PKCS8 PEM,
//! chosen by its first bytes as the daemon does), a mesh private key, a cluster token, a
//! status access token, the one file of a blinded-key directory, and the one `.auth` file of a
//! restricted-discovery client directory (also parsed as a configured key list entry).

#![no_main]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rustbalance::keys::{
    load_access_token, load_authorized_clients, load_blinded_dir, load_cluster_token,
    load_identity, load_mesh_keys, OnionAddress,
};

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("rb-fuzz-keys-{}", std::process::id()));
        std::fs::create_dir_all(d.join("blinded")).unwrap();
        std::fs::create_dir_all(d.join("clients")).unwrap();
        d
    })
}

fn master() -> &'static OnionAddress {
    static M: OnceLock<OnionAddress> = OnceLock::new();
    M.get_or_init(|| {
        "coaay4girgmvjbmaw6tlsbq7cmxpvwpnew5vbglx4cor2r5xpqhcdoyd.onion"
            .parse()
            .unwrap()
    })
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A long enough run of the input that must not show up in an error message. `neutral` is the
/// error the same loader gives for files of the same length holding no text of the input: an
/// input that spells out part of an error message itself (its own length, its path) shows up
/// in both, and is no leak.
fn leaks(err: &str, data: &[u8], neutral: impl FnOnce() -> String) -> bool {
    // The file's own path is in every error on purpose: it is not the file's content.
    let path = dir().join("key").display().to_string();
    let err = err.replace(&path, "<file>");
    data.len() >= 12
        && std::str::from_utf8(data)
            .ok()
            .map(str::trim)
            .is_some_and(|t| {
                t.len() >= 12 && err.contains(t) && !neutral().replace(&path, "<file>").contains(t)
            })
}

/// The errors `load` gives for files of `len` bytes holding no text of the input (all `#`, all
/// NUL: one of them fails where the other may load), joined (see [`leaks`]).
fn neutral_error<T, E: std::fmt::Display>(
    file: &Path,
    len: usize,
    load: impl Fn(&Path) -> Result<T, E>,
) -> String {
    let n = file.with_extension("neutral");
    let mut out = String::new();
    for fill in [b'#', 0u8] {
        write(&n, &vec![fill; len]);
        if let Err(e) = load(&n) {
            out.push_str(&e.to_string().replace(".neutral", ""));
            out.push('\n');
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    let file = d.join("key");
    write(&file, data);
    let len = data.len();
    if let Err(e) = load_identity(&file) {
        let neutral = || neutral_error(&file, len, load_identity);
        assert!(!leaks(&e.to_string(), data, neutral), "identity error leaks: {e}");
    }
    if let Err(e) = load_mesh_keys(&file) {
        let neutral = || neutral_error(&file, len, load_mesh_keys);
        assert!(!leaks(&e.to_string(), data, neutral), "mesh key error leaks: {e}");
    }
    if let Err(e) = load_cluster_token(&file) {
        let neutral = || neutral_error(&file, len, load_cluster_token);
        assert!(!leaks(&e.to_string(), data, neutral), "token error leaks: {e}");
    }
    if let Err(e) = load_access_token(&file) {
        let neutral = || neutral_error(&file, len, load_access_token);
        assert!(
            !leaks(&e.to_string(), data, neutral),
            "access token error leaks: {e}"
        );
    }
    // One blinded-key file, named after the period its bytes 64..80 claim (so the checks
    // past the name are reached), with the master's public key spliced in at 32..64 when the
    // input is long enough (so the checks past the master are reached too).
    let blinded = d.join("blinded");
    for entry in std::fs::read_dir(&blinded).unwrap() {
        let _ = std::fs::remove_file(entry.unwrap().path());
    }
    let mut body = data.to_vec();
    if body.len() >= 64 {
        body[32..64].copy_from_slice(master().public_key().as_ref().as_bytes());
    }
    let name = match (body.get(64..72), body.get(72..76), body.get(76..80)) {
        (Some(i), Some(l), Some(o)) => format!(
            "blinded-{}_{}_{}.key",
            u64::from_be_bytes(i.try_into().unwrap()),
            u32::from_be_bytes(l.try_into().unwrap()),
            u32::from_be_bytes(o.try_into().unwrap())
        ),
        _ => "blinded-1_1440_43200.key".to_string(),
    };
    write(&blinded.join(name), &body);
    let _ = load_blinded_dir(&blinded, master());
    // Restricted discovery: a client's `.auth` file, and the same text as a list entry. An
    // accepted set never exceeds the cap.
    write(&d.join("clients").join("c.auth"), data);
    if let Ok(keys) = load_authorized_clients(Some(&d.join("clients")), &[]) {
        assert_eq!(keys.len(), 1);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = load_authorized_clients(None, &[text.to_string()]);
    }
});
