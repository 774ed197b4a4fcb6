//! [`MasterIdentity`]: the master identity keypair and its two file formats.
//!
//! - C tor `hs_ed25519_secret_key`: the 32-byte tag `== ed25519v1-secret: type0 ==\0\0\0` then
//!   the 64-byte expanded secret key (scalar || hash prefix); exactly 96 bytes.
//! - PKCS8 PEM (`-----BEGIN PRIVATE KEY-----`, RFC 8410), as written by Onionbalance and
//!   `openssl genpkey -algorithm ed25519`: a 32-byte seed, expanded with SHA-512 as usual.

use std::fmt;
use std::path::Path;

use ed25519::pkcs8::spki::der::pem;
use ed25519::pkcs8::{KeypairBytes, PrivateKeyInfo, ALGORITHM_OID};
use tor_hscrypto::pk::{HsIdKey, HsIdKeypair};
use tor_llcrypto::pk::ed25519 as tor_ed25519;
use zeroize::Zeroizing;

use super::fsutil::{read_secret_file, write_new_secret_file, LengthRule};
use super::{KeyError, OnionAddress};

/// The tag that starts C tor's `hs_ed25519_secret_key`.
const CTOR_SECRET_TAG: &[u8; 32] = b"== ed25519v1-secret: type0 ==\0\0\0";

/// Length of an expanded ed25519 secret key (scalar || hash prefix).
const EXPANDED_SECRET_LEN: usize = 64;

/// Length of C tor's `hs_ed25519_secret_key`.
const CTOR_SECRET_FILE_LEN: usize = CTOR_SECRET_TAG.len() + EXPANDED_SECRET_LEN;

/// Largest PKCS8 PEM file we read. An ed25519 key is about 120 bytes (v1) or 180 (v2).
const PEM_FILE_LIMIT: u64 = 8 * 1024;

/// The PEM label of an unencrypted PKCS8 private key.
const PKCS8_PEM_LABEL: &str = "PRIVATE KEY";

/// The master identity keypair of the onion service (`KS_hs_id` with `KP_hs_id`).
///
/// Holds the secret key: its `Debug` shows only the onion address, and it is not `Clone`.
pub struct MasterIdentity {
    /// The keypair, in Arti's onion-service identity type.
    keypair: HsIdKeypair,
}

impl MasterIdentity {
    /// Generate a new random identity.
    pub fn generate<R: rand::Rng + rand::CryptoRng>(rng: &mut R) -> Self {
        let seed_key = tor_ed25519::Keypair::generate(rng);
        Self::from_expanded(tor_ed25519::ExpandedKeypair::from(&seed_key))
    }

    /// Load C tor's `hs_ed25519_secret_key` (96 bytes: tag then expanded secret key).
    ///
    /// Refused if the file's mode grants group/other any access.
    pub fn from_ctor_secret_key_file(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let data = read_secret_file(path, LengthRule::Exactly(CTOR_SECRET_FILE_LEN as u64))?;
        Self::from_ctor_bytes(&data, path)
    }

    /// Decode C tor's `hs_ed25519_secret_key` bytes (received, or read from `origin`).
    pub fn from_ctor_bytes(data: &[u8], origin: &Path) -> Result<Self, KeyError> {
        if data.len() != CTOR_SECRET_FILE_LEN {
            return Err(KeyError::WrongLength {
                path: origin.to_owned(),
                expected: CTOR_SECRET_FILE_LEN as u64,
                got: data.len() as u64,
            });
        }
        let (tag, secret) = data.split_at(CTOR_SECRET_TAG.len());
        if tag != CTOR_SECRET_TAG {
            return Err(KeyError::WrongTag {
                path: origin.to_owned(),
            });
        }
        let mut bytes = Zeroizing::new([0_u8; EXPANDED_SECRET_LEN]);
        bytes.copy_from_slice(secret);
        let expanded =
            tor_ed25519::ExpandedKeypair::from_secret_key_bytes(*bytes).ok_or_else(|| {
                KeyError::InvalidSecretKey {
                    path: origin.to_owned(),
                }
            })?;
        Ok(Self::from_expanded(expanded))
    }

    /// The identity in C tor's `hs_ed25519_secret_key` format (what
    /// [`write_ctor_secret_key_file`](Self::write_ctor_secret_key_file) writes).
    pub fn to_ctor_bytes(&self) -> Zeroizing<Vec<u8>> {
        let expanded: &tor_ed25519::ExpandedKeypair = self.keypair.as_ref();
        let secret = Zeroizing::new(expanded.to_secret_key_bytes());
        let mut contents = Zeroizing::new(Vec::with_capacity(CTOR_SECRET_FILE_LEN));
        contents.extend_from_slice(CTOR_SECRET_TAG);
        contents.extend_from_slice(&secret[..]);
        contents
    }

    /// Load an unencrypted PKCS8 PEM ed25519 private key (`-----BEGIN PRIVATE KEY-----`), as
    /// written by Onionbalance or `openssl genpkey -algorithm ed25519`.
    ///
    /// Both PKCS8 v1 (seed only) and v2 (seed and public key, which must match) are accepted.
    /// Refused if the file's mode grants group/other any access.
    pub fn from_pkcs8_pem(path: impl AsRef<Path>) -> Result<Self, KeyError> {
        let path = path.as_ref();
        let data = read_secret_file(path, LengthRule::AtMost(PEM_FILE_LIMIT))?;
        let bad_pem = |reason: String| KeyError::BadPem {
            path: path.to_owned(),
            reason,
        };
        let bad_der = |reason: String| KeyError::BadDer {
            path: path.to_owned(),
            reason,
        };

        let (label, der) = pem::decode_vec(&data).map_err(|e| bad_pem(e.to_string()))?;
        let der = Zeroizing::new(der);
        if label != PKCS8_PEM_LABEL {
            let hint = if label == "ENCRYPTED PRIVATE KEY" {
                " (encrypted keys are not supported; decrypt with `openssl pkey`)"
            } else {
                ""
            };
            return Err(bad_pem(format!(
                "label is {label:?}, expected {PKCS8_PEM_LABEL:?}{hint}"
            )));
        }

        // Strict DER: PrivateKeyInfo rejects trailing data and non-canonical encodings.
        let info = PrivateKeyInfo::try_from(&der[..]).map_err(|e| bad_der(e.to_string()))?;
        if info.algorithm.oid != ALGORITHM_OID {
            return Err(KeyError::NotEd25519 {
                path: path.to_owned(),
                oid: info.algorithm.oid.to_string(),
            });
        }
        let pair = KeypairBytes::try_from(info).map_err(|e| bad_der(e.to_string()))?;
        let seed_key = tor_ed25519::Keypair::from_bytes(&pair.secret_key);
        if let Some(public) = &pair.public_key {
            if public.to_bytes() != seed_key.verifying_key().to_bytes() {
                return Err(bad_der(
                    "the embedded public key does not match the private key".into(),
                ));
            }
        }
        Ok(Self::from_expanded(tor_ed25519::ExpandedKeypair::from(
            &seed_key,
        )))
    }

    /// Write the identity in C tor's `hs_ed25519_secret_key` format to a new file, mode `0600`.
    ///
    /// Never replaces an existing file ([`KeyError::AlreadyExists`]).
    ///
    /// The scalar is written reduced modulo the group order, so the bytes can differ from a
    /// file this identity was read from; the key, its signatures and its address are the same.
    pub fn write_ctor_secret_key_file(&self, path: impl AsRef<Path>) -> Result<(), KeyError> {
        write_new_secret_file(path.as_ref(), &self.to_ctor_bytes())
    }

    /// The public identity key (`KP_hs_id`).
    pub fn public(&self) -> HsIdKey {
        HsIdKey::from(&self.keypair)
    }

    /// The onion address of this identity; its `Display` is `<56 chars>.onion`.
    pub fn onion_address(&self) -> OnionAddress {
        OnionAddress::from(self.public())
    }

    /// The keypair as Arti's type, for key blinding (`HsIdKeypair::compute_blinded_key`).
    pub fn hs_id_keypair(&self) -> &HsIdKeypair {
        &self.keypair
    }

    /// Wrap an expanded keypair.
    fn from_expanded(expanded: tor_ed25519::ExpandedKeypair) -> Self {
        MasterIdentity {
            keypair: HsIdKeypair::from(expanded),
        }
    }
}

impl From<HsIdKeypair> for MasterIdentity {
    fn from(keypair: HsIdKeypair) -> Self {
        MasterIdentity { keypair }
    }
}

impl fmt::Debug for MasterIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterIdentity")
            .field("onion_address", &self.onion_address().to_string())
            .field("secret_key", &format_args!("<redacted>"))
            .finish()
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use ed25519::pkcs8::spki::der::pem::LineEnding;
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::PathBuf;

    /// The DER prefix of a PKCS8 v1 ed25519 private key (RFC 8410 §10.3), before the seed.
    const V1_PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];

    fn write_file(dir: &Path, name: &str, contents: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, contents).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn pem_of(label: &str, der: &[u8]) -> String {
        pem::encode_string(label, LineEnding::LF, der).unwrap()
    }

    fn v1_der(seed: &[u8; 32]) -> Vec<u8> {
        [&V1_PREFIX[..], seed].concat()
    }

    /// PKCS8 v2 (OneAsymmetricKey) with `[1] publicKey`.
    fn v2_der(seed: &[u8; 32], public: &[u8; 32]) -> Vec<u8> {
        let mut der = vec![0x30, 0x51, 0x02, 0x01, 0x01];
        der.extend_from_slice(&V1_PREFIX[5..]);
        der.extend_from_slice(seed);
        der.extend_from_slice(&[0x81, 0x21, 0x00]);
        der.extend_from_slice(public);
        der
    }

    fn expected_address(seed: &[u8; 32]) -> String {
        let kp = tor_ed25519::Keypair::from_bytes(seed);
        let id = HsIdKeypair::from(tor_ed25519::ExpandedKeypair::from(&kp));
        OnionAddress::from(HsIdKey::from(&id)).to_string()
    }

    fn secret_bytes(id: &MasterIdentity) -> [u8; 64] {
        let e: &tor_ed25519::ExpandedKeypair = id.hs_id_keypair().as_ref();
        e.to_secret_key_bytes()
    }

    #[test]
    fn ctor_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let id = MasterIdentity::generate(&mut rand::rng());
        let p = dir.path().join("hs_ed25519_secret_key");
        id.write_ctor_secret_key_file(&p).unwrap();

        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        let raw = std::fs::read(&p).unwrap();
        assert_eq!(raw.len(), 96);
        assert_eq!(&raw[..32], CTOR_SECRET_TAG);

        let back = MasterIdentity::from_ctor_secret_key_file(&p).unwrap();
        assert_eq!(back.onion_address(), id.onion_address());
        assert_eq!(back.public(), id.public());
        assert_eq!(secret_bytes(&back), secret_bytes(&id));

        // The same message signs identically with both.
        let msg = b"rustbalance";
        let a: &tor_ed25519::ExpandedKeypair = id.hs_id_keypair().as_ref();
        let b: &tor_ed25519::ExpandedKeypair = back.hs_id_keypair().as_ref();
        assert_eq!(a.sign(msg).to_bytes(), b.sign(msg).to_bytes());
        assert!(a.public().verify(msg, &b.sign(msg)).is_ok());
    }

    #[test]
    fn write_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_file(dir.path(), "k", b"precious", 0o600);
        let id = MasterIdentity::generate(&mut rand::rng());
        let e = id.write_ctor_secret_key_file(&p).unwrap_err();
        assert!(matches!(e, KeyError::AlreadyExists { .. }), "{e:?}");
        assert!(e.to_string().contains(&p.display().to_string()));
        assert_eq!(std::fs::read(&p).unwrap(), b"precious");
    }

    #[test]
    fn ctor_insecure_mode_is_refused_with_path_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let id = MasterIdentity::generate(&mut rand::rng());
        let p = dir.path().join("key");
        id.write_ctor_secret_key_file(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = MasterIdentity::from_ctor_secret_key_file(&p).unwrap_err();
        assert!(
            matches!(e, KeyError::InsecurePermissions { mode: 0o644, .. }),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains("0644"), "{msg}");
        assert!(msg.contains(&format!("chmod 600 {}", p.display())), "{msg}");
    }

    #[test]
    fn ctor_wrong_length_tag_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let id = MasterIdentity::generate(&mut rand::rng());
        let good = dir.path().join("good");
        id.write_ctor_secret_key_file(&good).unwrap();
        let raw = std::fs::read(&good).unwrap();

        for (name, len) in [("truncated", 95), ("tag_only", 32), ("empty", 0)] {
            let p = write_file(dir.path(), name, &raw[..len], 0o600);
            let e = MasterIdentity::from_ctor_secret_key_file(&p).unwrap_err();
            assert!(
                matches!(e, KeyError::WrongLength { expected: 96, got, .. } if got == len as u64),
                "{name}: {e:?}"
            );
            let msg = e.to_string();
            assert!(msg.contains("expected 96 bytes, got"), "{msg}");
            assert!(msg.contains(name), "{msg}");
        }
        let long = [&raw[..], b"\n"].concat();
        let p = write_file(dir.path(), "long", &long, 0o600);
        assert!(matches!(
            MasterIdentity::from_ctor_secret_key_file(&p),
            Err(KeyError::WrongLength {
                expected: 96,
                got: 97,
                ..
            })
        ));

        // The public key file's tag, and a tag with one byte changed.
        let mut wrong = raw.clone();
        wrong[..32].copy_from_slice(b"== ed25519v1-public: type0 ==\0\0\0");
        let p = write_file(dir.path(), "public_tag", &wrong, 0o600);
        let e = MasterIdentity::from_ctor_secret_key_file(&p).unwrap_err();
        assert!(matches!(e, KeyError::WrongTag { .. }), "{e:?}");
        assert!(e.to_string().contains("public_tag"));
        let mut wrong = raw.clone();
        wrong[31] = 1;
        let p = write_file(dir.path(), "tag_nul", &wrong, 0o600);
        assert!(matches!(
            MasterIdentity::from_ctor_secret_key_file(&p),
            Err(KeyError::WrongTag { .. })
        ));

        // Random garbage of the right and of a wrong length.
        let mut rng = rand::rng();
        for len in [96_usize, 500] {
            let garbage: Vec<u8> = (0..len).map(|_| rand::RngExt::random(&mut rng)).collect();
            let p = write_file(dir.path(), &format!("garbage{len}"), &garbage, 0o600);
            let e = MasterIdentity::from_ctor_secret_key_file(&p).unwrap_err();
            assert!(
                matches!(e, KeyError::WrongTag { .. } | KeyError::WrongLength { .. }),
                "{e:?}"
            );
        }

        // A PEM file given to the C tor loader.
        let pem = pem_of(PKCS8_PEM_LABEL, &v1_der(&[5; 32]));
        let p = write_file(dir.path(), "pem", pem.as_bytes(), 0o600);
        assert!(MasterIdentity::from_ctor_secret_key_file(&p).is_err());
    }

    #[test]
    fn pkcs8_v1_and_v2() {
        let dir = tempfile::tempdir().unwrap();
        let seed = [0x11_u8; 32];
        let public = tor_ed25519::Keypair::from_bytes(&seed)
            .verifying_key()
            .to_bytes();

        let p = write_file(
            dir.path(),
            "v1.pem",
            pem_of(PKCS8_PEM_LABEL, &v1_der(&seed)).as_bytes(),
            0o600,
        );
        let id = MasterIdentity::from_pkcs8_pem(&p).unwrap();
        assert_eq!(id.onion_address().to_string(), expected_address(&seed));

        let p = write_file(
            dir.path(),
            "v2.pem",
            pem_of(PKCS8_PEM_LABEL, &v2_der(&seed, &public)).as_bytes(),
            0o600,
        );
        let id2 = MasterIdentity::from_pkcs8_pem(&p).unwrap();
        assert_eq!(id2.onion_address(), id.onion_address());

        let mut other = public;
        other[0] ^= 1;
        let p = write_file(
            dir.path(),
            "v2bad.pem",
            pem_of(PKCS8_PEM_LABEL, &v2_der(&seed, &other)).as_bytes(),
            0o600,
        );
        let e = MasterIdentity::from_pkcs8_pem(&p).unwrap_err();
        assert!(
            matches!(&e, KeyError::BadDer { reason, .. } if reason.contains("does not match")),
            "{e:?}"
        );

        // PEM -> C tor -> same address.
        let c = dir.path().join("ctor");
        id.write_ctor_secret_key_file(&c).unwrap();
        let back = MasterIdentity::from_ctor_secret_key_file(&c).unwrap();
        assert_eq!(back.onion_address(), id.onion_address());
    }

    #[test]
    fn pkcs8_errors() {
        let dir = tempfile::tempdir().unwrap();
        let seed = [0x22_u8; 32];
        let good = pem_of(PKCS8_PEM_LABEL, &v1_der(&seed));

        let p = write_file(dir.path(), "world.pem", good.as_bytes(), 0o644);
        let e = MasterIdentity::from_pkcs8_pem(&p).unwrap_err();
        assert!(e.to_string().contains("0644; run chmod 600") || e.to_string().contains("0644"));
        assert!(matches!(
            e,
            KeyError::InsecurePermissions { mode: 0o644, .. }
        ));

        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("text", b"this is not a key\n".to_vec()),
            ("empty", Vec::new()),
            ("truncated", good.as_bytes()[..good.len() - 10].to_vec()),
            ("badbase64", good.replacen("MC4C", "M!4C", 1).into_bytes()),
        ];
        let public_label = pem_of("PUBLIC KEY", &v1_der(&seed));
        cases.push(("public", public_label.into_bytes()));
        let encrypted = pem_of("ENCRYPTED PRIVATE KEY", &v1_der(&seed));
        cases.push(("encrypted", encrypted.into_bytes()));
        for (name, contents) in cases {
            let p = write_file(dir.path(), name, &contents, 0o600);
            let e = MasterIdentity::from_pkcs8_pem(&p).unwrap_err();
            assert!(matches!(e, KeyError::BadPem { .. }), "{name}: {e:?}");
            assert!(e.to_string().contains(name), "{e}");
        }

        // Valid PEM around bad DER.
        let mut short = v1_der(&seed);
        short.truncate(40);
        let mut trailing = v1_der(&seed);
        trailing.push(0);
        let mut wrong_inner = v1_der(&seed);
        wrong_inner[14] = 0x03; // inner OCTET STRING tag changed
        let mut long_seed = vec![0x30, 0x2f, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03];
        long_seed.extend_from_slice(&[0x2b, 0x65, 0x70, 0x04, 0x23, 0x04, 0x21]);
        long_seed.extend_from_slice(&[9; 33]);
        let mut params = vec![0x30, 0x30, 0x02, 0x01, 0x00, 0x30, 0x07, 0x06, 0x03];
        params.extend_from_slice(&[0x2b, 0x65, 0x70, 0x05, 0x00, 0x04, 0x22, 0x04, 0x20]);
        params.extend_from_slice(&seed);
        for (name, der) in [
            ("garbage", vec![0xde, 0xad, 0xbe, 0xef]),
            ("short", short),
            ("trailing", trailing),
            ("wrong_inner", wrong_inner),
            ("long_seed", long_seed),
            ("params", params),
        ] {
            let p = write_file(
                dir.path(),
                name,
                pem_of(PKCS8_PEM_LABEL, &der).as_bytes(),
                0o600,
            );
            let e = MasterIdentity::from_pkcs8_pem(&p).unwrap_err();
            assert!(matches!(e, KeyError::BadDer { .. }), "{name}: {e:?}");
        }

        // X25519 (1.3.101.110) instead of ed25519.
        let mut x25519 = v1_der(&seed);
        x25519[11] = 0x6e;
        let p = write_file(
            dir.path(),
            "x25519.pem",
            pem_of(PKCS8_PEM_LABEL, &x25519).as_bytes(),
            0o600,
        );
        let e = MasterIdentity::from_pkcs8_pem(&p).unwrap_err();
        assert!(
            matches!(&e, KeyError::NotEd25519 { oid, .. } if oid == "1.3.101.110"),
            "{e:?}"
        );

        // Oversized file.
        let big = vec![b'A'; PEM_FILE_LIMIT as usize + 1];
        let p = write_file(dir.path(), "big.pem", &big, 0o600);
        assert!(matches!(
            MasterIdentity::from_pkcs8_pem(&p),
            Err(KeyError::FileTooLarge { .. })
        ));
    }

    #[test]
    fn debug_and_errors_hide_the_secret() {
        let seed = [0xab_u8; 32];
        let kp = tor_ed25519::Keypair::from_bytes(&seed);
        let id = MasterIdentity::from(HsIdKeypair::from(tor_ed25519::ExpandedKeypair::from(&kp)));
        let dbg = format!("{id:?} {id:#?}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
        assert!(dbg.contains(&id.onion_address().to_string()), "{dbg}");
        let secret = secret_bytes(&id);
        let leaks = |text: &str| {
            [&seed[..], &secret[..32], &secret[32..]]
                .iter()
                .any(|bytes| {
                    let hex: String = bytes[..8].iter().map(|b| format!("{b:02x}")).collect();
                    let list = format!("{:?}", &bytes[..4]);
                    let list = list.trim_end_matches(']');
                    text.to_lowercase().contains(&hex) || text.contains(list)
                })
        };
        assert!(!leaks(&dbg), "{dbg}");

        // Errors on files holding key material never echo it.
        let dir = tempfile::tempdir().unwrap();
        let mut wrong_tag = vec![b'x'; 32];
        wrong_tag.extend_from_slice(&secret);
        let p = write_file(dir.path(), "tag", &wrong_tag, 0o600);
        let e = MasterIdentity::from_ctor_secret_key_file(&p).unwrap_err();
        let mut short = v1_der(&seed);
        short.pop();
        let p = write_file(
            dir.path(),
            "der",
            pem_of(PKCS8_PEM_LABEL, &short).as_bytes(),
            0o600,
        );
        let e2 = MasterIdentity::from_pkcs8_pem(&p).unwrap_err();
        let text = format!("{e} {e:?} {e2} {e2:?}");
        assert!(!leaks(&text), "{text}");
    }
}
