//! [`OnionAddress`]: a verified v3 onion address (rend-spec-v3 §6 \[ONIONADDRESS\]).
//!
//! `address = base32(PUBKEY || CHECKSUM || VERSION) + ".onion"` with
//! `CHECKSUM = SHA3-256(".onion checksum" || PUBKEY || VERSION)[..2]` and `VERSION = 0x03`.
//! Encoding and checksum are tor-hscrypto's `HsId`; this module adds the stricter input rules
//! (exact length, optional suffix, no subdomains) and precise errors.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use safelog::DisplayRedacted as _;
use tor_hscrypto::pk::{HsId, HsIdKey, HsIdParseError};

use super::KeyError;

/// The suffix of onion domain names.
const ONION_SUFFIX: &str = ".onion";

/// The length of a v3 address without the suffix: 35 bytes in base32.
const V3_LABEL_LEN: usize = 56;

/// A v3 onion address whose version, checksum and key have been verified.
///
/// Parsed with [`FromStr`] from `<56 base32 chars>` or `<56 base32 chars>.onion`, in any
/// letter case; leading/trailing whitespace and subdomains are rejected. [`Display`](fmt::Display)
/// gives the canonical lowercase form with `.onion`.
#[derive(Clone)]
pub struct OnionAddress {
    /// The public identity key (`KP_hs_id`), validated as an ed25519 point.
    key: HsIdKey,
}

impl OnionAddress {
    /// The public identity key (`KP_hs_id`) this address encodes.
    pub fn public_key(&self) -> &HsIdKey {
        &self.key
    }

    /// The compact identity (`HsId`) this address encodes.
    pub fn hs_id(&self) -> HsId {
        self.key.id()
    }

    /// The address of a raw public identity key; `None` if the bytes are not a valid ed25519
    /// point.
    pub fn from_public_key_bytes(bytes: [u8; 32]) -> Option<OnionAddress> {
        HsIdKey::try_from(HsId::from(bytes))
            .ok()
            .map(|key| OnionAddress { key })
    }
}

impl From<HsIdKey> for OnionAddress {
    fn from(key: HsIdKey) -> Self {
        OnionAddress { key }
    }
}

impl From<&HsIdKey> for OnionAddress {
    fn from(key: &HsIdKey) -> Self {
        OnionAddress { key: key.clone() }
    }
}

impl From<OnionAddress> for HsIdKey {
    fn from(addr: OnionAddress) -> Self {
        addr.key
    }
}

impl FromStr for OnionAddress {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let label = strip_onion_suffix(s);
        if label.is_empty() {
            return Err(KeyError::AddressLength { got: 0 });
        }
        if label.contains('.') {
            return Err(KeyError::AddressSyntax {
                reason: "contains '.': subdomains are not accepted",
            });
        }
        // Checked here because HsId's parser ignores bytes after the 35 it needs.
        let got = label.chars().count();
        if got != V3_LABEL_LEN {
            return Err(KeyError::AddressLength { got });
        }
        if let Some(position) = label.chars().position(|c| !c.is_ascii_alphanumeric()) {
            return Err(KeyError::AddressBase32 { position });
        }

        let id = HsId::from_str(&format!("{label}{ONION_SUFFIX}")).map_err(|e| match e {
            HsIdParseError::InvalidBase32(e) => KeyError::AddressBase32 {
                position: e.position,
            },
            HsIdParseError::UnsupportedVersion(version) => KeyError::AddressVersion { version },
            HsIdParseError::WrongChecksum => KeyError::AddressChecksum,
            // Unreachable after the checks above (suffix present, no '.', 35 bytes);
            // report them as what they would mean.
            HsIdParseError::HsIdContainsSubdomain => KeyError::AddressSyntax {
                reason: "contains '.': subdomains are not accepted",
            },
            _ => KeyError::AddressLength { got },
        })?;
        let key = HsIdKey::try_from(id).map_err(|_| KeyError::AddressNotAKey)?;
        Ok(OnionAddress { key })
    }
}

/// `s` without a trailing `.onion` (any letter case), or `s` itself.
fn strip_onion_suffix(s: &str) -> &str {
    let Some(cut) = s.len().checked_sub(ONION_SUFFIX.len()) else {
        return s;
    };
    match (s.get(..cut), s.get(cut..)) {
        (Some(head), Some(tail)) if tail.eq_ignore_ascii_case(ONION_SUFFIX) => head,
        _ => s,
    }
}

impl fmt::Display for OnionAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // HsId's unredacted form is the lowercase base32 address with ".onion".
        fmt::Display::fmt(&self.hs_id().display_unredacted(), f)
    }
}

impl fmt::Debug for OnionAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A public address; showing it in full is safe.
        write!(f, "OnionAddress({self})")
    }
}

impl PartialEq for OnionAddress {
    fn eq(&self, other: &Self) -> bool {
        self.hs_id() == other.hs_id()
    }
}

impl Eq for OnionAddress {}

impl Hash for OnionAddress {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.hs_id().hash(state);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tor_hscrypto::pk::HsIdKeypair;
    use tor_llcrypto::pk::ed25519;

    /// A fixed key's address, for tests that need a valid one.
    fn sample() -> (OnionAddress, String) {
        let kp = ed25519::Keypair::from_bytes(&[42; 32]);
        let kp = HsIdKeypair::from(ed25519::ExpandedKeypair::from(&kp));
        let addr = OnionAddress::from(HsIdKey::from(&kp));
        let s = addr.to_string();
        (addr, s)
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        let (addr, s) = sample();
        assert_eq!(s.len(), 62);
        assert!(s.ends_with(".onion"));
        assert!(
            s.ends_with("d.onion"),
            "version 3 encodes as a final 'd': {s}"
        );
        assert_eq!(s, s.to_ascii_lowercase());
        let label = &s[..56];
        for input in [
            s.clone(),
            s.to_ascii_uppercase(),
            label.to_owned(),
            label.to_ascii_uppercase(),
            format!("{label}.OnIoN"),
        ] {
            let parsed: OnionAddress = input.parse().unwrap();
            assert_eq!(parsed, addr, "{input}");
            assert_eq!(parsed.to_string(), s);
            assert_eq!(parsed.public_key(), addr.public_key());
        }
        assert_eq!(format!("{addr:?}"), format!("OnionAddress({s})"));
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        let (_, s) = sample();
        let label = &s.as_bytes()[..56];
        for pos in 0..56 {
            for c in b"abcdefghijklmnopqrstuvwxyz234567" {
                if *c == label[pos] {
                    continue;
                }
                let mut typo = label.to_vec();
                typo[pos] = *c;
                let typo = String::from_utf8(typo).unwrap();
                let err = typo.parse::<OnionAddress>().unwrap_err();
                assert!(
                    matches!(
                        err,
                        KeyError::AddressChecksum | KeyError::AddressVersion { .. }
                    ),
                    "{typo}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn version_checksum_length_and_syntax_errors() {
        let (_, s) = sample();
        let label = &s[..56];

        // The last character carries the low 5 bits of the version byte: 'd' = 3, 'e' = 4.
        let v4 = format!("{}e", &label[..55]);
        assert!(matches!(
            v4.parse::<OnionAddress>(),
            Err(KeyError::AddressVersion { version: 4 })
        ));

        // Swapping two different characters in the key part.
        let mut swapped: Vec<char> = label.chars().collect();
        let j = (1..56).find(|&j| swapped[j] != swapped[0]).unwrap();
        swapped.swap(0, j);
        let swapped: String = swapped.into_iter().collect();
        assert!(matches!(
            swapped.parse::<OnionAddress>(),
            Err(KeyError::AddressChecksum)
        ));

        for (input, got) in [
            (&label[..55], 55),
            (&format!("{label}a")[..], 57),
            ("", 0),
            (".onion", 0),
            ("x.onion", 1),
        ] {
            match input.parse::<OnionAddress>() {
                Err(KeyError::AddressLength { got: g }) => assert_eq!(g, got, "{input}"),
                other => panic!("{input}: {other:?}"),
            }
        }

        // Characters outside the base32 alphabet: 0, 1, 8, 9, punctuation, non-ASCII.
        for (bad, pos) in [
            ('0', 0),
            ('1', 10),
            ('8', 20),
            ('9', 55),
            ('-', 30),
            ('é', 5),
        ] {
            let mut chars: Vec<char> = label.chars().collect();
            chars[pos] = bad;
            let input: String = chars.into_iter().collect();
            match input.parse::<OnionAddress>() {
                Err(KeyError::AddressBase32 { position }) => assert_eq!(position, pos, "{input}"),
                other => panic!("{input}: {other:?}"),
            }
        }

        for input in [
            format!("www.{s}"),
            format!("{label}.onion.onion"),
            format!("{s}."),
        ] {
            assert!(
                matches!(
                    input.parse::<OnionAddress>(),
                    Err(KeyError::AddressSyntax { .. })
                ),
                "{input}"
            );
        }
        for input in [format!(" {s}"), format!("{s}\n"), format!("{label}.onio")] {
            assert!(input.parse::<OnionAddress>().is_err(), "{input:?}");
        }
    }

    #[test]
    fn key_that_is_not_a_point_is_rejected() {
        // y = 2 has no x on the curve: not a valid compressed ed25519 point.
        let mut pk = [0_u8; 32];
        pk[0] = 2;
        let addr = HsId::from(pk).display_unredacted().to_string();
        assert!(tor_llcrypto::pk::ed25519::PublicKey::from_bytes(&pk).is_err());
        assert!(matches!(
            addr.parse::<OnionAddress>(),
            Err(KeyError::AddressNotAKey)
        ));
    }

    /// xorshift64*: a tiny deterministic generator for the no-panic loop.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics() {
        let (_, s) = sample();
        let alphabet = b"abcdefghijklmnopqrstuvwxyz234567ABCDEFXYZ0189.-\0 \xc3\xa9\xff";
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut ok = 0;
        for i in 0..50_000 {
            let bytes: Vec<u8> = match i % 3 {
                // Uniform bytes of any length up to 80.
                0 => (0..rng.next() % 80).map(|_| rng.next() as u8).collect(),
                // Biased towards the alphabet, lengths around 56 and 62.
                1 => {
                    let len = [55, 56, 57, 61, 62, 63][(rng.next() % 6) as usize];
                    (0..len)
                        .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
                        .collect()
                }
                // A valid address with a few bytes mutated, inserted or removed.
                _ => {
                    let mut b = s.as_bytes().to_vec();
                    for _ in 0..=rng.next() % 3 {
                        let at = (rng.next() as usize) % (b.len() + 1);
                        let byte = rng.next() as u8;
                        match rng.next() % 3 {
                            0 if at < b.len() => b[at] = byte,
                            1 => b.insert(at, byte),
                            _ if at < b.len() => {
                                b.remove(at);
                            }
                            _ => {}
                        }
                    }
                    b
                }
            };
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(addr) = text.parse::<OnionAddress>() {
                // Whatever parses must print back to the same address, canonicalised.
                assert_eq!(
                    addr.to_string(),
                    format!("{}.onion", strip_onion_suffix(&text).to_ascii_lowercase())
                );
                ok += 1;
            }
        }
        assert!(ok > 0, "the mutation branch should leave some inputs valid");
    }
}
