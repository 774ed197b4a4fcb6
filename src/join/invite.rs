//! Join invites: the one line an operator copies to a new machine.
//!
//! An invite is stateless: its secret is a MAC, under a key derived from the cluster token, of
//! its terms (master address, id, expiry, uses), so ANY node of the cluster can recompute and
//! check it; nothing is stored when an invite is minted. The line carries the master address
//! (where to connect), the terms and the secret:
//!
//! ```text
//! rbjoin1:<base64url, no padding, of 84 bytes>
//! 0    1   version (1)
//! 1    32  master public identity key (KP_hs_id)
//! 33   8   invite id (random)
//! 41   8   expiry, Unix seconds, big endian
//! 49   1   uses allowed (1..=100)
//! 50   32  secret = BLAKE2s-MAC(K_invite, "rustbalance invite v1" ‖ bytes 0..50)
//! 82   2   check: the first 2 bytes of BLAKE2s(bytes 0..82), so a damaged line fails here
//! ```
//!
//! `K_invite` = BLAKE2s-MAC(preshared key of the token, "rustbalance join invite key v1").
//! The secret never crosses the network: the joiner proves it holds it with a MAC over its
//! request (see [`super::wire`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use blake2::digest::{FixedOutput as _, KeyInit, Mac as _};
use blake2::{Blake2s256, Blake2sMac256, Digest as _};
use zeroize::Zeroizing;

use crate::keys::OnionAddress;
use crate::mesh::ClusterToken;

/// What every join line starts with.
pub const LINE_PREFIX: &str = "rbjoin1:";
/// The invite format version.
pub const VERSION: u8 = 1;
/// Bytes in a decoded line.
pub const LINE_BYTES: usize = 84;
/// The default lifetime of an invite.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// The longest lifetime an invite may have.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most uses an invite may allow.
pub const MAX_USES: u8 = 100;

const KEY_LABEL: &[u8] = b"rustbalance join invite key v1";
const SECRET_LABEL: &[u8] = b"rustbalance invite v1";

/// What an invite allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Terms {
    /// Random id (names the invite in counters and logs; not secret).
    pub id: [u8; 8],
    /// Expiry, Unix seconds.
    pub expires: u64,
    /// How many nodes may join with it.
    pub uses: u8,
}

impl Terms {
    /// The id as hex, for logs and errors.
    pub fn id_hex(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A decoded join line. Holds the invite secret: `Debug` hides it.
#[derive(Clone)]
pub struct Invite {
    /// The master address to connect to.
    pub master: OnionAddress,
    /// Its terms.
    pub terms: Terms,
    secret: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Invite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invite")
            .field("master", &self.master.to_string())
            .field("terms", &self.terms)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a join line or invite request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    /// Not a join line.
    #[error("not a join line: it must start with {LINE_PREFIX:?}")]
    Prefix,
    /// Not base64url.
    #[error("the join line is damaged: not base64url after {LINE_PREFIX:?}")]
    Encoding,
    /// Wrong length.
    #[error("the join line is damaged: {got} bytes, expected {LINE_BYTES} (copy the whole line)")]
    Length {
        /// Bytes found.
        got: usize,
    },
    /// Another version.
    #[error("join line version {0} is not supported by this build (it speaks {VERSION})")]
    Version(u8),
    /// The check bytes do not match.
    #[error("the join line is damaged: its check bytes do not match (copy it again)")]
    Checksum,
    /// The master key in it is not a valid ed25519 point.
    #[error("the join line's master key is not a valid onion service key")]
    Master,
    /// A lifetime out of range.
    #[error("invite ttl {0:?} is out of range (1 s to 7 days)")]
    Ttl(Duration),
    /// A use count out of range.
    #[error("invite uses {0} is out of range (1 to {MAX_USES})")]
    Uses(u32),
}

/// The MAC key invites are made under.
fn invite_key(token: &ClusterToken) -> Zeroizing<[u8; 32]> {
    token.derive_key(KEY_LABEL)
}

/// BLAKE2s-MAC of `parts` under `key`, with a domain `label`.
pub fn mac(key: &[u8; 32], label: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Blake2sMac256 as KeyInit>::new_from_slice(key).expect("a 32-byte BLAKE2s key");
    m.update(label);
    for p in parts {
        m.update(&(p.len() as u32).to_be_bytes());
        m.update(p);
    }
    m.finalize_fixed().into()
}

/// Checks `tag` against [`mac`] in constant time.
pub fn verify_mac(key: &[u8; 32], label: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    let mut m = <Blake2sMac256 as KeyInit>::new_from_slice(key).expect("a 32-byte BLAKE2s key");
    m.update(label);
    for p in parts {
        m.update(&(p.len() as u32).to_be_bytes());
        m.update(p);
    }
    m.verify_slice(tag).is_ok()
}

/// The first 50 bytes of a line: version, master, terms.
fn head(master: &OnionAddress, terms: &Terms) -> [u8; 50] {
    let mut out = [0u8; 50];
    out[0] = VERSION;
    out[1..33].copy_from_slice(master.hs_id().as_ref());
    out[33..41].copy_from_slice(&terms.id);
    out[41..49].copy_from_slice(&terms.expires.to_be_bytes());
    out[49] = terms.uses;
    out
}

/// The secret of the invite with `terms` for `master`, as any node holding `token` computes it.
pub fn secret_for(
    token: &ClusterToken,
    master: &OnionAddress,
    terms: &Terms,
) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(mac(
        &invite_key(token),
        SECRET_LABEL,
        &[&head(master, terms)],
    ))
}

/// Seconds since the Unix epoch at `t` (0 before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Invite {
    /// Mints an invite valid for `ttl` from `now`, for `uses` joins.
    pub fn mint(
        token: &ClusterToken,
        master: &OnionAddress,
        ttl: Duration,
        uses: u32,
        now: SystemTime,
    ) -> Result<Invite, InviteError> {
        if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
            return Err(InviteError::Ttl(ttl));
        }
        let uses_u8 = u8::try_from(uses)
            .ok()
            .filter(|u| (1..=MAX_USES).contains(u))
            .ok_or(InviteError::Uses(uses))?;
        let terms = Terms {
            id: rand::random(),
            expires: unix_secs(now) + ttl.as_secs(),
            uses: uses_u8,
        };
        Ok(Invite {
            master: master.clone(),
            secret: secret_for(token, master, &terms),
            terms,
        })
    }

    /// The invite secret (the joiner's MAC key).
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The join line. It is a secret: whoever holds it can join the cluster.
    pub fn to_line(&self) -> Zeroizing<String> {
        let mut bytes = Zeroizing::new([0u8; LINE_BYTES]);
        bytes[..50].copy_from_slice(&head(&self.master, &self.terms));
        bytes[50..82].copy_from_slice(&self.secret[..]);
        let check = Blake2s256::digest(&bytes[..82]);
        bytes[82..84].copy_from_slice(&check[..2]);
        let mut line = Zeroizing::new(String::from(LINE_PREFIX));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&bytes[..], &mut line);
        line
    }

    /// Parses a join line (surrounding whitespace ignored). Never panics.
    pub fn parse(line: &str) -> Result<Invite, InviteError> {
        let body = line
            .trim()
            .strip_prefix(LINE_PREFIX)
            .ok_or(InviteError::Prefix)?;
        if body.len() > 4 * LINE_BYTES {
            return Err(InviteError::Length { got: body.len() });
        }
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(body)
                .map_err(|_| InviteError::Encoding)?,
        );
        if bytes.len() != LINE_BYTES {
            return Err(InviteError::Length { got: bytes.len() });
        }
        if bytes[0] != VERSION {
            return Err(InviteError::Version(bytes[0]));
        }
        let check = Blake2s256::digest(&bytes[..82]);
        if bytes[82..84] != check[..2] {
            return Err(InviteError::Checksum);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[1..33]);
        let master = OnionAddress::from_public_key_bytes(key).ok_or(InviteError::Master)?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[33..41]);
        let mut expires = [0u8; 8];
        expires.copy_from_slice(&bytes[41..49]);
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&bytes[50..82]);
        Ok(Invite {
            master,
            terms: Terms {
                id,
                expires: u64::from_be_bytes(expires),
                uses: bytes[49],
            },
            secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(b: u8) -> ClusterToken {
        ClusterToken::new(vec![b; 32]).unwrap()
    }

    fn master() -> OnionAddress {
        let id = crate::keys::MasterIdentity::generate(&mut rand::rng());
        id.onion_address()
    }

    #[test]
    fn a_line_round_trips_and_any_token_holder_recomputes_its_secret() {
        let m = master();
        let now = SystemTime::now();
        let inv = Invite::mint(&token(1), &m, DEFAULT_TTL, 1, now).unwrap();
        let line = inv.to_line();
        assert!(line.starts_with(LINE_PREFIX), "{}", line.as_str());
        assert_eq!(line.len(), LINE_PREFIX.len() + 112);
        let back = Invite::parse(&format!("  {}\n", line.as_str())).unwrap();
        assert_eq!(back.master, m);
        assert_eq!(back.terms, inv.terms);
        assert_eq!(back.terms.expires, unix_secs(now) + 3600);
        assert_eq!(back.secret(), inv.secret());
        assert_eq!(*secret_for(&token(1), &m, &back.terms), *back.secret());
        assert_ne!(*secret_for(&token(2), &m, &back.terms), *back.secret());
        let mut longer = back.terms;
        longer.expires += 1;
        assert_ne!(*secret_for(&token(1), &m, &longer), *back.secret());
        assert!(!format!("{back:?}").contains(&format!("{:?}", &back.secret()[..4])));
    }

    #[test]
    fn damaged_lines_are_refused_with_a_reason() {
        let inv = Invite::mint(&token(1), &master(), DEFAULT_TTL, 3, SystemTime::now()).unwrap();
        let line = inv.to_line().to_string();
        assert_eq!(Invite::parse("hello").unwrap_err(), InviteError::Prefix);
        assert_eq!(
            Invite::parse("rbjoin1:!!!").unwrap_err(),
            InviteError::Encoding
        );
        assert!(matches!(
            Invite::parse(&line[..line.len() - 4]).unwrap_err(),
            InviteError::Length { .. }
        ));
        // One character changed: the check bytes catch it.
        let mut chars: Vec<char> = line.chars().collect();
        let i = LINE_PREFIX.len() + 60;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let damaged: String = chars.into_iter().collect();
        assert_eq!(Invite::parse(&damaged).unwrap_err(), InviteError::Checksum);
        assert!(matches!(
            Invite::mint(&token(1), &master(), Duration::ZERO, 1, SystemTime::now()),
            Err(InviteError::Ttl(_))
        ));
        assert!(matches!(
            Invite::mint(&token(1), &master(), DEFAULT_TTL, 0, SystemTime::now()),
            Err(InviteError::Uses(0))
        ));
        assert!(matches!(
            Invite::mint(&token(1), &master(), DEFAULT_TTL, 101, SystemTime::now()),
            Err(InviteError::Uses(101))
        ));
    }

    #[test]
    fn macs_bind_every_part_and_compare_in_constant_time() {
        let k = [9u8; 32];
        let t = mac(&k, b"l", &[b"ab", b"c"]);
        assert!(verify_mac(&k, b"l", &[b"ab", b"c"], &t));
        // Length-prefixed parts: moving a byte between parts changes the MAC.
        assert!(!verify_mac(&k, b"l", &[b"a", b"bc"], &t));
        assert!(!verify_mac(&k, b"m", &[b"ab", b"c"], &t));
        assert!(!verify_mac(&[8u8; 32], b"l", &[b"ab", b"c"], &t));
        assert!(!verify_mac(&k, b"l", &[b"ab", b"c"], &t[..31]));
    }
}
