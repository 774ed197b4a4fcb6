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

/// The input with letters rotated by 13 and digits by 5: same length, same whitespace and the
/// same classes of bytes, other text.
fn rotated(data: &[u8]) -> Vec<u8> {
    data.iter()
        .map(|&b| match b {
            b'a'..=b'z' => b'a' + (b - b'a' + 13) % 26,
            b'A'..=b'Z' => b'A' + (b - b'A' + 13) % 26,
            b'0'..=b'9' => b'0' + (b - b'0' + 5) % 10,
            _ => b,
        })
        .collect()
}

/// Whether `load`'s error echoes the file's content: a long enough run of the input shows up
/// in the error for `data`, AND its rotated form shows up in the error for the rotated input.
/// (An error that only names the file's path, length or kind does not follow the content, so
/// an input that spells out such a message is not a leak.)
fn leaks<T, E: std::fmt::Display>(
    file: &Path,
    data: &[u8],
    err: &str,
    load: impl Fn(&Path) -> Result<T, E>,
) -> bool {
    let Some(t) = std::str::from_utf8(data).ok().map(str::trim) else {
        return false;
    };
    if t.len() < 12 || !err.contains(t) {
        return false;
    }
    let rot = rotated(t.as_bytes());
    let rot = std::str::from_utf8(&rot).expect("rotation keeps UTF-8");
    if rot == t {
        return true;
    }
    let shadow = file.with_extension("rotated");
    write(&shadow, &rotated(data));
    load(&shadow).err().is_some_and(|e| e.to_string().contains(rot))
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    let file = d.join("key");
    write(&file, data);
    if let Err(e) = load_identity(&file) {
        let e = e.to_string();
        assert!(!leaks(&file, data, &e, load_identity), "identity error leaks: {e}");
    }
    if let Err(e) = load_mesh_keys(&file) {
        let e = e.to_string();
        assert!(!leaks(&file, data, &e, load_mesh_keys), "mesh key error leaks: {e}");
    }
    if let Err(e) = load_cluster_token(&file) {
        let e = e.to_string();
        assert!(!leaks(&file, data, &e, load_cluster_token), "token error leaks: {e}");
    }
    if let Err(e) = load_access_token(&file) {
        let e = e.to_string();
        assert!(
            !leaks(&file, data, &e, load_access_token),
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
