//! Restricted discovery's authorized clients: C tor's format, one
//! `descriptor:x25519:<base32 public key>` per `<name>.auth` file in a directory (what C tor
//! reads from `authorized_clients/`), and/or a list in the configuration. Public keys: no
//! permission policy, but regular files only, read bounded.

use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;

use tor_hscrypto::pk::HsClientDescEncKey;
use tor_llcrypto::pk::curve25519;

use super::fsutil::read_public_file;
use super::KeyError;

/// At most this many clients (Arti's `MAX_RESTRICTED_DISCOVERY_CLIENTS`): more would push the
/// descriptor past its 50 kB.
pub const MAX_AUTHORIZED_CLIENTS: usize = 160;

/// Longest `.auth` file read (one key line is 70 bytes).
const MAX_AUTH_FILE: u64 = 4096;

/// Parses one client key (`descriptor:x25519:<base32>`, base32 in either case, surrounding
/// whitespace ignored).
pub fn parse_client_key(text: &str) -> Result<curve25519::PublicKey, String> {
    let key = HsClientDescEncKey::from_str(text.trim()).map_err(|e| e.to_string())?;
    Ok(*key.as_ref())
}

/// Parses a `.auth` file's text: exactly one key line; blank lines and `#` comments allowed.
pub fn parse_auth_file(name: &str, text: &str) -> Result<curve25519::PublicKey, KeyError> {
    let mut found = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let bad = |problem: String| KeyError::ClientKey {
            source_name: name.to_string(),
            line: i + 1,
            problem,
        };
        if found.is_some() {
            return Err(bad(
                "a second key in one file (one client per .auth file)".into()
            ));
        }
        found = Some(parse_client_key(t).map_err(bad)?);
    }
    found.ok_or_else(|| KeyError::ClientKey {
        source_name: name.to_string(),
        line: 1,
        problem: "no key in the file".into(),
    })
}

/// The authorized clients from `dir` (every `*.auth` file; other names are ignored) and
/// `list`, without duplicates, in a stable order; more than [`MAX_AUTHORIZED_CLIENTS`] is an
/// error.
pub fn load_authorized_clients(
    dir: Option<&Path>,
    list: &[String],
) -> Result<Vec<curve25519::PublicKey>, KeyError> {
    let mut keys: BTreeSet<[u8; 32]> = BTreeSet::new();
    for (i, entry) in list.iter().enumerate() {
        let k = parse_client_key(entry).map_err(|problem| KeyError::ClientKey {
            source_name: format!("master.authorized_clients[{i}]"),
            line: 1,
            problem,
        })?;
        keys.insert(k.to_bytes());
    }
    if let Some(dir) = dir {
        let read_dir_err = |source: std::io::Error| KeyError::ReadDir {
            path: dir.to_owned(),
            source,
        };
        if !dir.is_dir() {
            return Err(KeyError::NotADirectory {
                path: dir.to_owned(),
            });
        }
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(read_dir_err)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "auth"))
            .collect();
        paths.sort();
        for path in paths {
            let bytes = read_public_file(&path, MAX_AUTH_FILE)?;
            let name = path.display().to_string();
            let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::ClientKey {
                source_name: name.clone(),
                line: 1,
                problem: "not UTF-8 text".into(),
            })?;
            keys.insert(parse_auth_file(&name, text)?.to_bytes());
        }
    }
    if keys.len() > MAX_AUTHORIZED_CLIENTS {
        return Err(KeyError::TooManyClients {
            count: keys.len(),
            max: MAX_AUTHORIZED_CLIENTS,
        });
    }
    Ok(keys.into_iter().map(curve25519::PublicKey::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "descriptor:x25519:ZPRRMIV6DV6SJFL7SFBSVLJ5VUNPGCDFEVZ7M23LTLVTCCXJQBKA";
    const K2: &str = "descriptor:x25519:SACGOAEODFGCYY22NYZV45ZESFPFLDGLMBWFACKEO34XGHASSAMQ";

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("rb-clients-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn keys_from_a_directory_and_a_list_deduplicated() {
        let d = dir("ok");
        std::fs::write(d.join("alice.auth"), format!("{K1}\n")).unwrap();
        std::fs::write(
            d.join("bob.auth"),
            format!("# bob\n\n{}\n", K2.to_lowercase()),
        )
        .unwrap();
        std::fs::write(d.join("README"), "not a key").unwrap();
        let keys = load_authorized_clients(Some(&d), &[K1.to_string()]).unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.contains(&parse_client_key(K2).unwrap()));
        let only_list = load_authorized_clients(None, &[K2.into()]).unwrap();
        assert_eq!(only_list, vec![parse_client_key(K2).unwrap()]);
        assert!(load_authorized_clients(Some(&dir("empty")), &[])
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_bad_file_or_entry_is_named_with_its_line() {
        let d = dir("bad");
        std::fs::write(d.join("carol.auth"), format!("# c\n{K1}\n{K2}\n")).unwrap();
        let e = load_authorized_clients(Some(&d), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("carol.auth line 3") && e.contains("second key"),
            "{e}"
        );
        std::fs::write(d.join("carol.auth"), "\n\ndescriptor:x25519:AAAA\n").unwrap();
        let e = load_authorized_clients(Some(&d), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("carol.auth line 3"), "{e}");
        std::fs::write(d.join("carol.auth"), "descriptor:ed25519:AAAA\n").unwrap();
        let e = load_authorized_clients(Some(&d), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("carol.auth line 1") && e.contains("ed25519"),
            "{e}"
        );
        std::fs::write(d.join("carol.auth"), "# nothing\n").unwrap();
        let e = load_authorized_clients(Some(&d), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no key"), "{e}");
        let e = load_authorized_clients(None, &[K1.into(), "x25519:abc".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("master.authorized_clients[1]"), "{e}");
        std::fs::write(d.join("carol.auth"), vec![b'#'; 5000]).unwrap();
        let e = load_authorized_clients(Some(&d), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("carol.auth"), "{e}");
        let e = load_authorized_clients(Some(&d.join("missing")), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing") && e.contains("not a directory"),
            "{e}"
        );
    }

    #[test]
    fn more_than_160_clients_are_refused() {
        let list: Vec<String> = (0..=MAX_AUTHORIZED_CLIENTS as u16)
            .map(|i| {
                let mut b = [7u8; 32];
                b[..2].copy_from_slice(&i.to_be_bytes());
                HsClientDescEncKey::from(curve25519::PublicKey::from(b)).to_string()
            })
            .collect();
        let e = load_authorized_clients(None, &list)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("161 authorized clients") && e.contains("160"),
            "{e}"
        );
        assert_eq!(
            load_authorized_clients(None, &list[..160]).unwrap().len(),
            160
        );
    }
}
