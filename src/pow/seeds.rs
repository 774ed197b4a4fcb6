//! The cluster's PoW seeds: derived, not random, so every node verifies the same ones.
//!
//! `seed(period, epoch) = BLAKE2s-MAC(key, "rustbalance pow seed v1" ‖ period ‖ epoch)` with
//! the period as (interval number, length in minutes, offset in seconds), all big-endian. The
//! key is derived from the cluster token (or, on a single node, a random secret kept in its
//! state directory). Seeds are published in descriptors; the key never leaves the node.
//! Epochs are `unix time / rotation`: every node with a sane clock agrees on the epoch.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blake2::digest::{FixedOutput as _, Mac as _};
use tor_hscrypto::pow::v1::Seed;
use tor_hscrypto::time::TimePeriod;
use zeroize::Zeroizing;

/// The label the cluster token's PoW key is derived under.
pub const KEY_LABEL: &[u8] = b"rustbalance pow key v1";

/// The domain-separation prefix of every seed.
const SEED_LABEL: &[u8] = b"rustbalance pow seed v1";

/// The secret every node derives its seeds from.
#[derive(Clone)]
pub struct PowKey(Zeroizing<[u8; 32]>);

impl PowKey {
    /// A key from 32 secret bytes.
    pub fn new(bytes: Zeroizing<[u8; 32]>) -> PowKey {
        PowKey(bytes)
    }

    /// The cluster's key, derived from its token (every member holds the token).
    pub fn from_cluster(token: &crate::mesh::ClusterToken) -> PowKey {
        PowKey(token.derive_key(KEY_LABEL))
    }

    /// The seed for `period` in `epoch`. A seed whose 4-byte head equals the previous epoch's
    /// is derived again with a counter, so a node's two loaded seeds never share a head (Arti
    /// finds a seed's verifier by its head).
    pub fn seed(&self, period: TimePeriod, epoch: u64) -> Seed {
        let first = self.raw(period, epoch, 0);
        if epoch > 0 && head(&first) == head(&self.raw(period, epoch - 1, 0)) {
            self.raw(period, epoch, 1)
        } else {
            first
        }
    }

    fn raw(&self, period: TimePeriod, epoch: u64, counter: u8) -> Seed {
        let mut mac =
            <blake2::Blake2sMac256 as blake2::digest::KeyInit>::new_from_slice(&self.0[..])
                .expect("a 32-byte key is a valid BLAKE2s key");
        mac.update(SEED_LABEL);
        mac.update(&period.interval_num().to_be_bytes());
        mac.update(&period.length().as_minutes().to_be_bytes());
        mac.update(&period.epoch_offset_in_sec().to_be_bytes());
        mac.update(&epoch.to_be_bytes());
        mac.update(&[counter]);
        let out: [u8; 32] = mac.finalize_fixed().into();
        Seed::from(out)
    }
}

impl PartialEq for PowKey {
    fn eq(&self, other: &PowKey) -> bool {
        self.0[..] == other.0[..]
    }
}

impl Eq for PowKey {}

impl fmt::Debug for PowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PowKey(<secret>)")
    }
}

/// A seed's head: the 4 bytes a client's solution names it by (shown in `status`; the seed
/// itself is public in the descriptor, but the head is all an operator needs to compare).
pub fn head(seed: &Seed) -> [u8; 4] {
    let bytes: &[u8; 32] = seed.as_ref();
    [bytes[0], bytes[1], bytes[2], bytes[3]]
}

/// [`head`] as 8 hex digits.
pub fn head_hex(seed: &Seed) -> String {
    head(seed).iter().map(|b| format!("{b:02x}")).collect()
}

/// The rotation schedule: epoch `e` runs from `e × rotation` to `(e + 1) × rotation` after
/// the Unix epoch; its seed is advertised during it and expires at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    rotation: Duration,
}

impl Schedule {
    /// A schedule rotating every `rotation` (at least one second).
    pub fn new(rotation: Duration) -> Schedule {
        Schedule {
            rotation: rotation.max(Duration::from_secs(1)),
        }
    }

    /// The rotation interval.
    pub fn rotation(&self) -> Duration {
        self.rotation
    }

    /// The epoch `at` falls in.
    pub fn epoch_at(&self, at: SystemTime) -> u64 {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
        since.as_secs() / self.rotation.as_secs().max(1)
    }

    /// When `epoch` starts.
    pub fn start(&self, epoch: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(epoch.saturating_mul(self.rotation.as_secs().max(1)))
    }

    /// When `epoch`'s seed expires (the next epoch's start).
    pub fn expires(&self, epoch: u64) -> SystemTime {
        self.start(epoch.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PowKey {
        PowKey::new(Zeroizing::new([b; 32]))
    }

    #[test]
    fn nodes_with_one_key_derive_one_seed_and_other_keys_others() {
        let tp = TimePeriod::from_parts(1440, 20573, 43200);
        assert_eq!(key(1).seed(tp, 7), key(1).seed(tp, 7));
        assert_ne!(key(1).seed(tp, 7), key(2).seed(tp, 7));
        assert_ne!(key(1).seed(tp, 7), key(1).seed(tp, 8));
        let next = TimePeriod::from_parts(1440, 20574, 43200);
        assert_ne!(key(1).seed(tp, 7), key(1).seed(next, 7));
        let other_length = TimePeriod::from_parts(6, 20573, 43200);
        assert_ne!(key(1).seed(tp, 7), key(1).seed(other_length, 7));
    }

    #[test]
    fn consecutive_seeds_never_share_a_head() {
        let tp = TimePeriod::from_parts(1440, 20573, 43200);
        let k = key(3);
        for e in 1..2000 {
            assert_ne!(head(&k.seed(tp, e)), head(&k.seed(tp, e - 1)), "epoch {e}");
        }
    }

    #[test]
    fn epochs_follow_the_rotation() {
        let s = Schedule::new(Duration::from_secs(7200));
        let t = UNIX_EPOCH + Duration::from_secs(7200 * 100 + 5);
        assert_eq!(s.epoch_at(t), 100);
        assert_eq!(s.start(100), UNIX_EPOCH + Duration::from_secs(720_000));
        assert_eq!(s.expires(100), s.start(101));
        assert_eq!(s.epoch_at(s.expires(100)), 101);
        assert_eq!(s.epoch_at(s.expires(100) - Duration::from_secs(1)), 100);
    }

    #[test]
    fn the_key_is_not_printed() {
        assert_eq!(format!("{:?}", key(9)), "PowKey(<secret>)");
    }
}
