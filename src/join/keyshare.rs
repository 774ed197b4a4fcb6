//! Blinded keys across the cluster: a node holding the identity secret (a key holder) pushes
//! fresh blinded keys over the mesh to the members that have none ahead, so a cluster of one
//! holder and N blinded-only nodes runs with no operator action. A member advertises how far
//! its keys reach ([`KeyCoverage`]); the holder pushes when a live member's coverage falls
//! short of `join.share_periods` ahead, at most every [`PUSH_EVERY`].

use std::path::Path;
use std::time::{Duration, Instant};

use tor_hscrypto::time::TimePeriod;

use crate::keys::{KeyError, KeySource, OnionAddress};
use crate::membership::wire::KEYS_PER_MSG;
use crate::membership::{ClusterMsg, KeyCoverage, Liveness, MemberStatus};

/// The shortest time between two pushes.
pub const PUSH_EVERY: Duration = Duration::from_secs(10);

/// This node's coverage from its key source at `current`.
pub fn coverage(source: &KeySource, current: Option<TimePeriod>) -> KeyCoverage {
    match source {
        KeySource::Identity(_) => KeyCoverage {
            holder: true,
            until_period: 0,
        },
        KeySource::BlindedDir { keys, .. } => KeyCoverage {
            holder: false,
            until_period: keys
                .iter()
                .filter(|k| {
                    current.is_none_or(|c| {
                        k.period.length() == c.length()
                            && k.period.epoch_offset_in_sec() == c.epoch_offset_in_sec()
                    })
                })
                .map(|k| k.period.interval_num())
                .max()
                .unwrap_or(0),
        },
    }
}

/// Whether a live member lacks keys for the periods up to `share` ahead of `current`.
pub fn someone_short(members: &[MemberStatus], current: TimePeriod, share: u8) -> bool {
    let want = current.interval_num() + u64::from(share);
    members.iter().any(|m| {
        m.liveness != Liveness::Down
            && !m.duplicate_id
            && m.keys.is_some_and(|k| !k.holder && k.until_period < want)
    })
}

/// The push schedule (time is passed in).
#[derive(Debug, Default)]
pub struct Pusher {
    last: Option<Instant>,
}

impl Pusher {
    /// The messages to broadcast now, if any: when this node holds the identity, a member is
    /// short, and the last push is [`PUSH_EVERY`] old. Keys from the previous period to
    /// `share` ahead, [`KEYS_PER_MSG`] per message.
    pub fn due(
        &mut self,
        at: Instant,
        source: &KeySource,
        current: TimePeriod,
        share: u8,
        members: &[MemberStatus],
    ) -> Vec<ClusterMsg> {
        let KeySource::Identity(identity) = source else {
            return Vec::new();
        };
        if !someone_short(members, current, share) {
            return Vec::new();
        }
        if self
            .last
            .is_some_and(|t| at.saturating_duration_since(t) < PUSH_EVERY)
        {
            return Vec::new();
        }
        self.last = Some(at);
        let mut keys = Vec::new();
        let mut tp = current.prev().unwrap_or(current);
        for _ in 0..(usize::from(share) + 2) {
            match crate::keys::blinded_key_bytes(identity, tp) {
                Ok(k) => keys.push(k.to_vec()),
                Err(e) => tracing::warn!(error = %e, "blinded key not computed for the push"),
            }
            let Some(next) = tp.next() else { break };
            tp = next;
        }
        keys.chunks(KEYS_PER_MSG)
            .map(|c| ClusterMsg::BlindedKeys { keys: c.to_vec() })
            .collect()
    }
}

/// Stores pushed blinded keys in `dir` (each verified against `master`; existing files are
/// kept). Returns how many were new.
pub fn store_pushed(
    dir: &Path,
    master: &OnionAddress,
    keys: &[Vec<u8>],
    from: &str,
) -> Result<usize, KeyError> {
    let mut new = 0;
    for k in keys {
        let (_, fresh) =
            crate::keys::store_blinded_key(dir, k, master, &format!("key pushed by {from}"))?;
        new += usize::from(fresh);
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::MasterIdentity;
    use crate::membership::Lifecycle;

    fn member(keys: Option<KeyCoverage>, liveness: Liveness) -> MemberStatus {
        MemberStatus {
            node_id: "node-b".into(),
            public_key: String::new(),
            endpoint: "192.0.2.1:1".into(),
            boot: 1,
            liveness,
            priority: None,
            health: None,
            role: None,
            lease: None,
            intro_points: None,
            last_seen_ms_ago: None,
            rtt_ms: None,
            clock_offset_ms: None,
            rejected_skew: 0,
            wireguard_handshake_age_ms: None,
            duplicate_id: false,
            lifecycle: Lifecycle::Healthy,
            keys,
            pow_effort: None,
            weight: None,
        }
    }

    #[test]
    fn the_holder_pushes_when_a_member_falls_short_and_not_more_often() {
        let id = MasterIdentity::generate(&mut rand::rng());
        let master = id.onion_address();
        let src = KeySource::Identity(id);
        let current = TimePeriod::from_parts(6, 1000, 180);
        let short = [member(
            Some(KeyCoverage {
                holder: false,
                until_period: 1001,
            }),
            Liveness::Alive,
        )];
        let covered = [member(
            Some(KeyCoverage {
                holder: false,
                until_period: 1008,
            }),
            Liveness::Alive,
        )];
        let down = [member(
            Some(KeyCoverage {
                holder: false,
                until_period: 0,
            }),
            Liveness::Down,
        )];
        let mut p = Pusher::default();
        let t0 = Instant::now();
        assert!(p.due(t0, &src, current, 8, &covered).is_empty());
        assert!(p.due(t0, &src, current, 8, &down).is_empty());
        let msgs = p.due(t0, &src, current, 8, &short);
        // periods 999..=1008: 10 keys, two messages
        assert_eq!(msgs.len(), 2);
        assert!(p
            .due(t0 + Duration::from_secs(5), &src, current, 8, &short)
            .is_empty());
        assert_eq!(p.due(t0 + PUSH_EVERY, &src, current, 8, &short).len(), 2);

        // A blinded-only member stores them and then covers 8 periods ahead.
        let dir = tempfile::tempdir().unwrap();
        let mut new = 0;
        for m in &msgs {
            let ClusterMsg::BlindedKeys { keys } = m else {
                panic!()
            };
            new += store_pushed(dir.path(), &master, keys, "node-a").unwrap();
        }
        assert_eq!(new, 10);
        for m in &msgs {
            let ClusterMsg::BlindedKeys { keys } = m else {
                panic!()
            };
            assert_eq!(
                store_pushed(dir.path(), &master, keys, "node-a").unwrap(),
                0
            );
        }
        let keys = crate::keys::load_blinded_dir(dir.path(), &master).unwrap();
        let src = KeySource::BlindedDir {
            dir: dir.path().into(),
            master: master.clone(),
            keys,
        };
        let c = coverage(&src, Some(current));
        assert_eq!(
            c,
            KeyCoverage {
                holder: false,
                until_period: 1008
            }
        );
        // A non-holder never pushes.
        assert!(Pusher::default()
            .due(t0, &src, current, 8, &short)
            .is_empty());
    }

    #[test]
    fn pushed_keys_of_another_master_are_refused_and_nothing_is_written() {
        let id = MasterIdentity::generate(&mut rand::rng());
        let other = MasterIdentity::generate(&mut rand::rng());
        let tp = TimePeriod::from_parts(6, 1000, 180);
        let k = crate::keys::blinded_key_bytes(&other, tp).unwrap().to_vec();
        let dir = tempfile::tempdir().unwrap();
        assert!(store_pushed(dir.path(), &id.onion_address(), &[k], "node-x").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
