//! Is this node's clock fit to publish? The revision counter of every descriptor is computed
//! from the local clock (as Arti does), and HSDirs keep the highest counter they were given:
//! a node whose clock runs ahead uploads counters the real publisher cannot beat until wall
//! time catches up, and the HSDirs keep serving ITS descriptor (and its intro points, even
//! after it died). So a node checks its clock against network time, the consensus it uses,
//! before it builds a descriptor, and refuses to publish when they disagree.
//!
//! The consensus says when it was made (`valid-after`) and until when it may be used
//! (`valid-until`): a clock that agrees with the network reads a time within that range. The
//! check allows `publish.max_clock_skew` on either side. Pure: times are arguments.
//!
//! How precise this is depends on the network: the test network's consensus is valid for
//! about 40 s, so a clock 15 minutes off is caught; the public network's is valid for 3 hours,
//! so only errors beyond that (plus the bound) are caught there.

use std::time::{Duration, SystemTime};

/// The local clock disagrees with the consensus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// The clock reads later than the consensus may be used.
    #[error(
        "the local clock is at least {} ahead of the network (the consensus in use is valid \
         until {}; publish.max_clock_skew is {}): not publishing, since this node's revision \
         counters would lock the real publisher out of the HSDirs; fix the clock (NTP)",
        secs(*.ahead), humantime::format_rfc3339_seconds(*.valid_until), secs(*.bound)
    )]
    Ahead {
        /// By how much the clock is past `valid_until`.
        ahead: Duration,
        /// The consensus's `valid-until`.
        valid_until: SystemTime,
        /// The configured bound.
        bound: Duration,
    },
    /// The clock reads earlier than the consensus was made.
    #[error(
        "the local clock is at least {} behind the network (the consensus in use was made at \
         {}; publish.max_clock_skew is {}): not publishing; fix the clock (NTP)",
        secs(*.behind), humantime::format_rfc3339_seconds(*.valid_after), secs(*.bound)
    )]
    Behind {
        /// By how much the clock is before `valid_after`.
        behind: Duration,
        /// The consensus's `valid-after`.
        valid_after: SystemTime,
        /// The configured bound.
        bound: Duration,
    },
}

fn secs(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
}

/// Checks the local clock `now` against a consensus valid from `valid_after` to
/// `valid_until`, allowing `bound` on either side.
pub fn check(
    now: SystemTime,
    valid_after: SystemTime,
    valid_until: SystemTime,
    bound: Duration,
) -> Result<(), ClockError> {
    if let Ok(ahead) = now.duration_since(valid_until) {
        if ahead > bound {
            return Err(ClockError::Ahead {
                ahead,
                valid_until,
                bound,
            });
        }
    }
    if let Ok(behind) = valid_after.duration_since(now) {
        if behind > bound {
            return Err(ClockError::Behind {
                behind,
                valid_after,
                bound,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_clock_within_the_consensus_validity_and_the_bound_may_publish() {
        let va = SystemTime::UNIX_EPOCH + S(1_800_000_000);
        let vu = va + S(40);
        let bound = S(300);
        for now in [va, va + S(20), vu, vu + bound, va - bound] {
            assert_eq!(check(now, va, vu, bound), Ok(()));
        }
    }

    #[test]
    fn a_clock_fifteen_minutes_ahead_is_refused_with_a_clear_error() {
        // The audit's case: the test network's consensus is valid for 40 s, the node's clock
        // runs 15 minutes ahead.
        let va = SystemTime::UNIX_EPOCH + S(1_800_000_000);
        let vu = va + S(40);
        let bound = S(300);
        let err = check(va + S(15 * 60), va, vu, bound).unwrap_err();
        assert_eq!(
            err,
            ClockError::Ahead {
                ahead: S(15 * 60 - 40),
                valid_until: vu,
                bound
            }
        );
        let text = err.to_string();
        assert!(text.contains("14m 20s ahead"), "{text}");
        assert!(text.contains("publish.max_clock_skew is 5m"), "{text}");
        assert!(text.contains("not publishing"), "{text}");
        // Just past the bound is refused too; behind is refused alike.
        assert!(check(vu + bound + S(1), va, vu, bound).is_err());
        let behind = check(va - bound - S(1), va, vu, bound).unwrap_err();
        assert!(matches!(behind, ClockError::Behind { .. }));
        assert!(behind.to_string().contains("behind the network"));
    }
}
