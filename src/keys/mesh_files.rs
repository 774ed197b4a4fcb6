//! The mesh's secret files: this node's WireGuard private key (`wg genkey` text) and the
//! cluster token. Same policy as every secret file here: read only if no group/other access,
//! size-bounded, created `0600` and never overwritten.

use std::path::Path;

use base64::Engine as _;

use super::fsutil::{read_secret_file, write_new_secret_file, LengthRule};
use super::KeyError;
use crate::mesh::{ClusterToken, MeshKeys, MeshPublicKey};

/// Longest accepted key file: 44 base64 characters plus line ending and some slack.
const MAX_KEY_FILE: u64 = 128;
/// Longest accepted token file.
const MAX_TOKEN_FILE: u64 = 4096;

fn mesh_err(kind: &'static str, path: &Path, reason: impl ToString) -> KeyError {
    KeyError::MeshFile {
        kind,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Loads this node's WireGuard private key (base64, as `wg genkey` writes it).
pub fn load_mesh_keys(path: &Path) -> Result<MeshKeys, KeyError> {
    let bytes = read_secret_file(path, LengthRule::AtMost(MAX_KEY_FILE))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        mesh_err(
            "mesh private key",
            path,
            "not text (expected `wg genkey` output)",
        )
    })?;
    MeshKeys::from_private_base64(text.trim()).map_err(|e| mesh_err("mesh private key", path, e))
}

/// Loads the cluster token: a file of exactly 32 bytes is a raw token, used byte for byte;
/// any other file is text (`token-generate`, `wg genpsk`, a passphrase) and its surrounding
/// whitespace is trimmed. (Trimming a raw token would change it wherever its first or last
/// byte happens to be a space or a newline.)
pub fn load_cluster_token(path: &Path) -> Result<ClusterToken, KeyError> {
    let bytes = read_secret_file(path, LengthRule::AtMost(MAX_TOKEN_FILE))?;
    let token = if bytes.len() == RAW_TOKEN_LEN || std::str::from_utf8(&bytes).is_err() {
        &bytes[..]
    } else {
        bytes.trim_ascii()
    };
    ClusterToken::new(token.to_vec()).map_err(|e| mesh_err("cluster token", path, e))
}

/// Longest accepted access-token file.
const MAX_ACCESS_TOKEN_FILE: u64 = 1024;
/// Shortest access token.
const MIN_ACCESS_TOKEN: usize = 16;

/// Loads the status endpoint's access token: text, surrounding whitespace trimmed, at least
/// 16 characters of printable ASCII (it travels in an HTTP header).
pub fn load_access_token(path: &Path) -> Result<zeroize::Zeroizing<String>, KeyError> {
    let bytes = read_secret_file(path, LengthRule::AtMost(MAX_ACCESS_TOKEN_FILE))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| mesh_err("status access token", path, "not text"))?
        .trim();
    if text.len() < MIN_ACCESS_TOKEN || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(mesh_err(
            "status access token",
            path,
            format!("must be at least {MIN_ACCESS_TOKEN} printable ASCII characters, no spaces"),
        ));
    }
    Ok(zeroize::Zeroizing::new(text.to_string()))
}

/// A raw (binary) cluster token's length: the WireGuard preshared key's.
const RAW_TOKEN_LEN: usize = 32;

/// Generates a WireGuard private key into a new `0600` file; returns its public key.
pub fn generate_mesh_key_file(path: &Path) -> Result<MeshPublicKey, KeyError> {
    let keys = MeshKeys::generate();
    let mut text = keys.private_key_base64();
    text.push('\n');
    write_new_secret_file(path, text.as_bytes())?;
    Ok(keys.public_key())
}

/// Generates a cluster token (32 random bytes, base64) into a new `0600` file.
pub fn generate_cluster_token_file(path: &Path) -> Result<(), KeyError> {
    let mut raw = zeroize::Zeroizing::new([0u8; 32]);
    rand::fill(&mut raw[..]);
    let mut text = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(raw));
    text.push('\n');
    write_new_secret_file(path, text.as_bytes())
}

/// A node's own 32-byte secret at `path` (raw bytes, `0600`), created at first use: the PoW
/// seed key of a node without a mesh (with one, the key comes from the cluster token).
pub fn load_or_create_secret(path: &Path) -> Result<zeroize::Zeroizing<[u8; 32]>, KeyError> {
    if path.symlink_metadata().is_err() {
        if let Some(dir) = path.parent() {
            super::ensure_dir(dir)?;
        }
        let mut raw = zeroize::Zeroizing::new([0u8; 32]);
        rand::fill(&mut raw[..]);
        write_new_secret_file(path, &raw[..])?;
    }
    let bytes = read_secret_file(path, LengthRule::Exactly(32))?;
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&bytes);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn generated_files_load_back_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("mesh.key");
        let token = dir.path().join("cluster.token");
        let public = generate_mesh_key_file(&key).unwrap();
        generate_cluster_token_file(&token).unwrap();
        for p in [&key, &token] {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        assert_eq!(load_mesh_keys(&key).unwrap().public_key(), public);
        let t1 = load_cluster_token(&token).unwrap();
        assert_eq!(
            t1.preshared_key(),
            load_cluster_token(&token).unwrap().preshared_key()
        );
        assert!(matches!(
            generate_mesh_key_file(&key),
            Err(KeyError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn a_raw_token_is_used_byte_for_byte_and_a_text_token_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        // 32 raw bytes that start with a newline and end with a space.
        let mut raw = [0xa5u8; 32];
        raw[0] = b'\n';
        raw[31] = b' ';
        let a = load_cluster_token(&write("raw.token", &raw)).unwrap();
        assert_eq!(a.preshared_key().bytes(), raw, "used as is, not trimmed");
        // Binary of another length is not trimmed either.
        let mut bin = vec![0xffu8; 40];
        bin[39] = b'\n';
        let b = load_cluster_token(&write("bin.token", &bin)).unwrap();
        let b2 = load_cluster_token(&write("bin2.token", &bin[..39])).unwrap();
        assert_ne!(b.preshared_key(), b2.preshared_key());
        // Text: the trailing newline does not matter.
        let t1 = load_cluster_token(&write("t1.token", b"a passphrase of some length\n")).unwrap();
        let t2 = load_cluster_token(&write("t2.token", b"a passphrase of some length")).unwrap();
        assert_eq!(t1.preshared_key(), t2.preshared_key());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason_and_no_secret() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &[u8], mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let p = write("short.token", b"tooshort\n", 0o600);
        let e = load_cluster_token(&p).unwrap_err().to_string();
        assert!(
            e.contains("cluster token") && !e.contains("tooshort"),
            "{e}"
        );
        let p = write("open.token", b"0123456789abcdef0123456789", 0o644);
        let e = load_cluster_token(&p).unwrap_err().to_string();
        assert!(e.contains("chmod"), "{e}");
        let p = write("bad.key", b"not-a-key\n", 0o600);
        let e = load_mesh_keys(&p).unwrap_err().to_string();
        assert!(e.contains("mesh private key"), "{e}");
        assert!(
            !e.contains("not-a-key"),
            "the file's content is not echoed: {e}"
        );
    }
}
