//! Mesh key material: WireGuard x25519 node keys and the cluster preshared key.
//!
//! This module owns the text forms of the keys (standard base64, 44 characters, exactly what
//! `wg genkey`, `wg pubkey` and `wg genpsk` print and read) and the derivation of the WireGuard
//! preshared key from the cluster token.
//!
//! What it must never do: put secret bytes (private key, token, preshared key) in an error, a
//! `Debug` string or a log. Secrets are zeroized on drop.
//!
//! ## Cluster token → preshared key
//! Every node of a cluster uses the same WireGuard preshared key, so a leaked node key alone does
//! not let a stranger in. [`ClusterToken::preshared_key`] maps the operator's token to it:
//! 1. a token of exactly 32 raw bytes is the key itself;
//! 2. a token that is standard base64 of exactly 32 bytes (the output of `wg genpsk`, surrounding
//!    whitespace ignored) is decoded and used as is, so a system WireGuard interface configured
//!    with the same `PresharedKey` interoperates;
//! 3. any other token (at least [`MIN_TOKEN_LEN`] bytes) is hashed:
//!    `BLAKE2s-256("RustBalance mesh preshared key v1" || 0x00 || token)`. The label separates
//!    this use of the token from any other derivation made from the same token.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use blake2::{Blake2s256, Digest};
use boringtun::x25519::{PublicKey, StaticSecret};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, Zeroizing};

/// Length of every WireGuard key (private, public, preshared) in bytes.
pub const KEY_LEN: usize = 32;

/// Length of a key in its base64 text form (`wg genkey` output without the newline).
pub const KEY_BASE64_LEN: usize = 44;

/// Shortest cluster token accepted (in bytes), so the derived preshared key is not guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// Domain-separation label of the token → preshared-key hash (see the module doc).
const PSK_LABEL: &[u8] = b"RustBalance mesh preshared key v1";

/// Which key a [`MeshKeyError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A node's WireGuard private key.
    PrivateKey,
    /// A peer's WireGuard public key.
    PublicKey,
    /// The cluster token.
    ClusterToken,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::PrivateKey => "WireGuard private key",
            KeyKind::PublicKey => "WireGuard public key",
            KeyKind::ClusterToken => "cluster token",
        })
    }
}

/// A key or token that could not be used. The message names the key and what is wrong with it,
/// never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshKeyError {
    /// The text is empty (or only whitespace).
    #[error("{kind} is empty")]
    Empty {
        /// Which key.
        kind: KeyKind,
    },
    /// The text is not standard base64.
    #[error("{kind} is not valid base64 (expected {KEY_BASE64_LEN} characters as printed by `wg genkey`/`wg pubkey`)")]
    NotBase64 {
        /// Which key.
        kind: KeyKind,
    },
    /// The text decodes to the wrong number of bytes.
    #[error("{kind} decodes to {len} bytes, expected {KEY_LEN}")]
    WrongLength {
        /// Which key.
        kind: KeyKind,
        /// The decoded length.
        len: usize,
    },
    /// A public key of all zero bytes (an invalid x25519 point for WireGuard).
    #[error("{kind} is all zero bytes")]
    AllZero {
        /// Which key.
        kind: KeyKind,
    },
    /// The cluster token is too short to derive a key from.
    #[error("cluster token is {len} bytes, at least {MIN_TOKEN_LEN} are required")]
    TokenTooShort {
        /// The token's length in bytes.
        len: usize,
    },
}

/// Decode a 44-character base64 key into 32 bytes.
fn decode_key(text: &str, kind: KeyKind) -> Result<Zeroizing<[u8; KEY_LEN]>, MeshKeyError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(MeshKeyError::Empty { kind });
    }
    // Decode into a buffer large enough for any input; the length check comes after, so the
    // error can say how many bytes the text held. Bounded: input longer than 4 KiB is refused.
    if text.len() > 4096 {
        return Err(MeshKeyError::WrongLength {
            kind,
            len: text.len() / 4 * 3,
        });
    }
    let decoded = Zeroizing::new(
        BASE64
            .decode(text)
            .map_err(|_| MeshKeyError::NotBase64 { kind })?,
    );
    if decoded.len() != KEY_LEN {
        return Err(MeshKeyError::WrongLength {
            kind,
            len: decoded.len(),
        });
    }
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    out.copy_from_slice(&decoded);
    Ok(out)
}

/// A WireGuard public key: the identity of a mesh node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MeshPublicKey([u8; KEY_LEN]);

impl MeshPublicKey {
    /// Parse the base64 form printed by `wg pubkey`.
    pub fn from_base64(text: &str) -> Result<Self, MeshKeyError> {
        let bytes = decode_key(text, KeyKind::PublicKey)?;
        Self::from_bytes(*bytes)
    }

    /// Use 32 raw bytes as a public key (all-zero is refused).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Result<Self, MeshKeyError> {
        if bytes == [0u8; KEY_LEN] {
            return Err(MeshKeyError::AllZero {
                kind: KeyKind::PublicKey,
            });
        }
        Ok(MeshPublicKey(bytes))
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The base64 form, as `wg pubkey` prints it.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// A short form for logs: the first 8 base64 characters.
    pub fn short(&self) -> String {
        let mut s = self.to_base64();
        s.truncate(8);
        s
    }

    /// The key as boringtun's x25519 type.
    pub(crate) fn to_x25519(self) -> PublicKey {
        PublicKey::from(self.0)
    }
}

impl fmt::Display for MeshPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for MeshPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeshPublicKey({})", self.to_base64())
    }
}

impl FromStr for MeshPublicKey {
    type Err = MeshKeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

impl Serialize for MeshPublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for MeshPublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

/// A node's WireGuard key pair (x25519). `Debug` never shows the private key.
#[derive(Clone)]
pub struct MeshKeys {
    secret: StaticSecret,
    public: MeshPublicKey,
}

impl MeshKeys {
    /// Generate a new key pair from the operating system's random source. The private key is
    /// clamped like `wg genkey` does, so its base64 form is what that tool would print.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rand::fill(&mut bytes[..]);
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        Self::from_secret_bytes(*bytes)
    }

    /// Parse a private key in the base64 form printed by `wg genkey` (surrounding whitespace,
    /// such as the newline of a key file, is ignored).
    pub fn from_private_base64(text: &str) -> Result<Self, MeshKeyError> {
        let bytes = decode_key(text, KeyKind::PrivateKey)?;
        Ok(Self::from_secret_bytes(*bytes))
    }

    fn from_secret_bytes(mut bytes: [u8; KEY_LEN]) -> Self {
        let secret = StaticSecret::from(bytes);
        bytes.zeroize();
        let public = PublicKey::from(&secret);
        MeshKeys {
            secret,
            public: MeshPublicKey(*public.as_bytes()),
        }
    }

    /// The public key (what `wg pubkey` prints for this private key).
    pub fn public_key(&self) -> MeshPublicKey {
        self.public
    }

    /// The private key in `wg genkey` form, for writing a key file. Zeroized when dropped.
    pub fn private_key_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE64.encode(self.secret.as_bytes()))
    }

    /// The private key as boringtun's type.
    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

impl fmt::Debug for MeshKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshKeys")
            .field("public", &self.public.to_base64())
            .field("private", &"<redacted>")
            .finish()
    }
}

/// The shared secret all nodes of one cluster hold. `Debug` never shows it.
#[derive(Clone)]
pub struct ClusterToken(Zeroizing<Vec<u8>>);

impl ClusterToken {
    /// Wrap a token (text or raw bytes). Empty or shorter than [`MIN_TOKEN_LEN`] bytes is refused.
    pub fn new(token: impl Into<Vec<u8>>) -> Result<Self, MeshKeyError> {
        let token = Zeroizing::new(token.into());
        if token.is_empty() {
            return Err(MeshKeyError::Empty {
                kind: KeyKind::ClusterToken,
            });
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(MeshKeyError::TokenTooShort { len: token.len() });
        }
        Ok(ClusterToken(token))
    }

    /// The token's bytes: for handing to a joining node over the authenticated join channel,
    /// and nothing else. Never log them.
    pub fn secret_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A 32-byte key for one purpose (`label`), derived from the token: keyed BLAKE2s over the
    /// preshared key, so it reveals neither.
    pub fn derive_key(&self, label: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
        use blake2::digest::{FixedOutput as _, Mac as _};
        let psk = self.preshared_key();
        let mut mac = <blake2::Blake2sMac256 as blake2::digest::KeyInit>::new_from_slice(&psk.0)
            .expect("a 32-byte key is a valid BLAKE2s key");
        mac.update(label);
        Zeroizing::new(mac.finalize_fixed().into())
    }

    /// The WireGuard preshared key for this token (rules in the module doc).
    pub fn preshared_key(&self) -> PresharedKey {
        let token: &[u8] = &self.0;
        if token.len() == KEY_LEN {
            let mut key = [0u8; KEY_LEN];
            key.copy_from_slice(token);
            return PresharedKey(key);
        }
        if let Ok(text) = std::str::from_utf8(token) {
            let text = text.trim();
            if text.len() == KEY_BASE64_LEN {
                if let Ok(bytes) = decode_key(text, KeyKind::ClusterToken) {
                    return PresharedKey(*bytes);
                }
            }
        }
        let mut hasher = Blake2s256::new();
        hasher.update(PSK_LABEL);
        hasher.update([0u8]);
        hasher.update(token);
        PresharedKey(hasher.finalize().into())
    }
}

impl fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterToken(<redacted>)")
    }
}

/// The 32-byte WireGuard preshared key. Zeroized on drop; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    /// Use 32 raw bytes as the preshared key.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PresharedKey(bytes)
    }

    /// The raw bytes, for handing to boringtun.
    pub(crate) fn bytes(&self) -> [u8; KEY_LEN] {
        self.0
    }
}

impl Drop for PresharedKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7748 §6.1 test vector (Alice), in the base64 form WireGuard tools use.
    const ALICE_PRIV_HEX: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const ALICE_PUB_HEX: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let text = std::str::from_utf8(chunk).expect("ascii");
            out[i] = u8::from_str_radix(text, 16).expect("hex");
        }
        out
    }

    #[test]
    fn rfc7748_vector_round_trips_through_base64() {
        let private_b64 = BASE64.encode(hex32(ALICE_PRIV_HEX));
        let keys = MeshKeys::from_private_base64(&format!("{private_b64}\n")).expect("parse");
        assert_eq!(keys.public_key().as_bytes(), &hex32(ALICE_PUB_HEX));
        assert_eq!(*keys.private_key_base64(), private_b64);
        let public: MeshPublicKey = keys.public_key().to_base64().parse().expect("pub");
        assert_eq!(public, keys.public_key());
    }

    #[test]
    fn matches_wg_pubkey() {
        // Made with wireguard-tools: `wg genkey | tee k | wg pubkey`.
        let keys = MeshKeys::from_private_base64("AOiUxgHBBVdSCWPYHrqcTNzu6c+bINI3SHxH81yP300=\n")
            .expect("parse");
        assert_eq!(
            keys.public_key().to_base64(),
            "+3m8uHEBIcNgKot3GWm1NwMsjwpq34UZ6man7QVlQwk="
        );
    }

    #[test]
    fn generated_keys_are_clamped_and_parse_back() {
        let keys = MeshKeys::generate();
        let text = keys.private_key_base64();
        assert_eq!(text.len(), KEY_BASE64_LEN);
        let bytes = BASE64.decode(text.as_bytes()).expect("b64");
        assert_eq!(bytes[0] & 7, 0);
        assert_eq!(bytes[31] & 0xc0, 0x40);
        let again = MeshKeys::from_private_base64(&text).expect("parse");
        assert_eq!(again.public_key(), keys.public_key());
    }

    #[test]
    fn errors_name_the_key_and_not_the_content() {
        let err = MeshKeys::from_private_base64("not base64 !!").unwrap_err();
        assert_eq!(
            err,
            MeshKeyError::NotBase64 {
                kind: KeyKind::PrivateKey
            }
        );
        assert!(err.to_string().starts_with("WireGuard private key"));
        assert!(!err.to_string().contains("not base64 !!"));
        let err = MeshPublicKey::from_base64("AAAA").unwrap_err();
        assert_eq!(
            err,
            MeshKeyError::WrongLength {
                kind: KeyKind::PublicKey,
                len: 3
            }
        );
        assert!(matches!(
            MeshPublicKey::from_base64("  "),
            Err(MeshKeyError::Empty { .. })
        ));
        assert!(matches!(
            MeshPublicKey::from_base64(&BASE64.encode([0u8; 32])),
            Err(MeshKeyError::AllZero { .. })
        ));
    }

    #[test]
    fn debug_redacts_secrets() {
        let keys = MeshKeys::generate();
        let dbg = format!("{keys:?}");
        assert!(dbg.contains("<redacted>"));
        assert!(!dbg.contains(keys.private_key_base64().as_str()));
        let token = ClusterToken::new("a very secret cluster token").expect("token");
        assert!(!format!("{token:?}").contains("secret"));
        assert_eq!(
            format!("{:?}", token.preshared_key()),
            "PresharedKey(<redacted>)"
        );
    }

    #[test]
    fn token_derivation_rules() {
        let raw = [7u8; 32];
        assert_eq!(
            ClusterToken::new(raw.to_vec()).expect("t").preshared_key(),
            PresharedKey(raw)
        );
        let genpsk = format!("{}\n", BASE64.encode([9u8; 32]));
        assert_eq!(
            ClusterToken::new(genpsk).expect("t").preshared_key(),
            PresharedKey([9u8; 32])
        );
        let a = ClusterToken::new("correct horse battery staple").expect("t");
        let b = ClusterToken::new("correct horse battery stapler").expect("t");
        assert_ne!(a.preshared_key(), b.preshared_key());
        assert_eq!(a.preshared_key(), a.clone().preshared_key());
        assert_eq!(
            ClusterToken::new("short").unwrap_err(),
            MeshKeyError::TokenTooShort { len: 5 }
        );
        assert!(matches!(
            ClusterToken::new(""),
            Err(MeshKeyError::Empty { .. })
        ));
    }
}
