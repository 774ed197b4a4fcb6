//! Building one signed, encrypted v3 descriptor from a set of intro points.
//!
//! This module owns the descriptor rules: at most [`MAX_INTRO_POINTS`] intro points (clients
//! keep only 20; Arti's builder does not enforce it), at most [`MAX_DESCRIPTOR_BYTES`], Arti's
//! parameters (NTOR, 54 h certificates), and the revision counter, computed exactly as Arti does
//! (order-preserving encryption of the offset into the SRV period, keyed by the blinded secret)
//! so that every node holding the blinded key derives the same monotonic value. Pure: time and
//! randomness come from the caller.

use std::time::{Duration, SystemTime};

use rand::{CryptoRng, Rng};
use tor_cell::chancell::msg::HandshakeType;
use tor_hscrypto::ope::AesOpeKey;
use tor_hscrypto::pk::{HsBlindIdKey, HsBlindIdKeypair, HsIdKey};
use tor_hscrypto::RevisionCounter;
use tor_llcrypto::pk::ed25519;
use tor_netdir::HsDirParams;
use tor_netdoc::doc::hsdesc::{create_desc_sign_key_cert, HsDescBuilder, IntroPointDesc};
use tor_netdoc::NetdocBuilder;
use tor_units::IntegerMinutes;

mod merge;
pub use merge::{intro_relay, ipt_from_wire, ipt_to_wire, merged_windows, pick_window};

/// Clients use at most this many intro points of a descriptor.
pub const MAX_INTRO_POINTS: usize = 20;
/// Clients refuse descriptors larger than this (consensus `HSV3MaxDescriptorSize` default).
pub const MAX_DESCRIPTOR_BYTES: usize = 50_000;
/// Validity of the descriptor-signing and intro-point certificates (Arti's value).
pub const CERT_VALIDITY: Duration = Duration::from_secs(54 * 3600);

/// Descriptor building failures.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorError {
    /// No intro points: a descriptor would be useless.
    #[error("no intro points to publish")]
    NoIntroPoints,
    /// More than 20 intro points.
    #[error("{0} intro points: a descriptor carries at most {MAX_INTRO_POINTS}")]
    TooManyIntroPoints(usize),
    /// The clock is before the start of the period's SRV period.
    #[error("the clock is before the start of the shared-random period of this time period")]
    ClockBeforePeriod,
    /// The lifetime does not fit in minutes.
    #[error("descriptor lifetime {0:?} is not 1..=720 minutes")]
    BadLifetime(Duration),
    /// An intro point received from another node does not convert back.
    #[error("intro point from the mesh: {0}")]
    BadIntroPoint(String),
    /// Certificate or encoding failure (including exceeding the size limit).
    #[error("building the descriptor: {0}")]
    Build(String),
}

/// A built descriptor.
#[derive(Debug, Clone)]
pub struct BuiltDescriptor {
    /// The descriptor text, ready to upload.
    pub text: String,
    /// Its revision counter.
    pub revision: u64,
    /// How many intro points it lists.
    pub intro_points: usize,
}

/// The revision counter for a descriptor of `params`' period published at `now`: Arti's
/// OPE of the offset into the SRV period, keyed by the blinded secret scalar.
pub fn revision_counter(
    blind: &HsBlindIdKeypair,
    params: &HsDirParams,
    now: SystemTime,
) -> Result<RevisionCounter, DescriptorError> {
    let start = params.start_of_shard_rand_period();
    let offset = now
        .duration_since(start)
        .map_err(|_| DescriptorError::ClockBeforePeriod)?;
    Ok(revision_at_offset(blind, offset))
}

/// The revision counter `offset` into the SRV period (whole seconds), as Arti computes it:
/// order-preserving encryption keyed by the blinded secret scalar, so it grows with the offset
/// and every holder of the blinded key gets the same value.
pub fn revision_at_offset(blind: &HsBlindIdKeypair, offset: Duration) -> RevisionCounter {
    let key: &ed25519::ExpandedKeypair = blind.as_ref();
    let secret = key.to_secret_key_bytes();
    let ope = AesOpeKey::from_secret(&secret[..32]);
    let secs = u32::try_from(offset.as_secs()).unwrap_or(u32::MAX);
    RevisionCounter::from(ope.encrypt(tor_hscrypto::ope::SrvPeriodOffset::from(secs)))
}

/// Checks an intro-point count against the descriptor rules.
pub fn check_intro_point_count(n: usize) -> Result<(), DescriptorError> {
    match n {
        0 => Err(DescriptorError::NoIntroPoints),
        n if n > MAX_INTRO_POINTS => Err(DescriptorError::TooManyIntroPoints(n)),
        _ => Ok(()),
    }
}

/// The descriptor lifetime in whole minutes, 1..=720 (rend-spec's bounds).
pub fn lifetime_minutes(lifetime: Duration) -> Result<u16, DescriptorError> {
    u16::try_from(lifetime.as_secs() / 60)
        .ok()
        .filter(|m| (1..=720).contains(m))
        .ok_or(DescriptorError::BadLifetime(lifetime))
}

/// Builds and signs a descriptor for `params`' period listing `intro_points`.
pub fn build<R: Rng + CryptoRng>(
    master: &HsIdKey,
    blind: &HsBlindIdKeypair,
    params: &HsDirParams,
    intro_points: &[IntroPointDesc],
    lifetime: Duration,
    now: SystemTime,
    rng: &mut R,
) -> Result<BuiltDescriptor, DescriptorError> {
    check_intro_point_count(intro_points.len())?;
    let minutes = lifetime_minutes(lifetime)?;
    let tp = params.time_period();
    let blind_pk = HsBlindIdKey::from(blind);
    let subcredential = master.compute_subcredential(&blind_pk, tp);
    let desc_sign = ed25519::Keypair::generate(rng);
    let expiry = now + CERT_VALIDITY;
    let cert = create_desc_sign_key_cert(&desc_sign.verifying_key(), blind, expiry)
        .map_err(|e| DescriptorError::Build(format!("signing-key certificate: {e}")))?;
    let revision = revision_counter(blind, params, now)?;
    let text = HsDescBuilder::default()
        .blinded_id(&blind_pk)
        .hs_desc_sign(&desc_sign)
        .hs_desc_sign_cert(cert)
        .create2_formats(&[HandshakeType::NTOR])
        .auth_required(None)
        .is_single_onion_service(false)
        .intro_points(intro_points)
        .intro_auth_key_cert_expiry(expiry)
        .intro_enc_key_cert_expiry(expiry)
        .lifetime(IntegerMinutes::new(minutes))
        .revision_counter(revision)
        .subcredential(subcredential)
        .max_generated_len(MAX_DESCRIPTOR_BYTES)
        .build_sign(rng)
        .map_err(|e| DescriptorError::Build(e.to_string()))?;
    Ok(BuiltDescriptor {
        text,
        revision: u64::from(revision),
        intro_points: intro_points.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tor_hscrypto::pk::HsIdKeypair;
    use tor_hscrypto::time::TimePeriod;

    fn blinded(seed: u8, tp: TimePeriod) -> HsBlindIdKeypair {
        let kp = ed25519::Keypair::from_bytes(&[seed; 32]);
        let id = HsIdKeypair::from(ed25519::ExpandedKeypair::from(&kp));
        id.compute_blinded_key(tp).unwrap().1
    }

    #[test]
    fn revision_counters_grow_with_time_and_agree_across_nodes() {
        let tp = TimePeriod::from_parts(1440, 20573, 43200);
        let node_a = blinded(7, tp);
        let node_b = blinded(7, tp); // another node holding the same blinded key
        let mut last = 0u64;
        for secs in [0u64, 1, 2, 60, 3600, 86_399, 2 * 86_400 - 1] {
            let a = u64::from(revision_at_offset(&node_a, Duration::from_secs(secs)));
            let b = u64::from(revision_at_offset(&node_b, Duration::from_secs(secs)));
            assert_eq!(a, b, "same key, same second: same counter");
            assert!(a > last, "strictly increasing at {secs} s");
            last = a;
        }
        // A different key gives a different sequence (keys are not interchangeable).
        let other = blinded(8, tp);
        assert_ne!(
            u64::from(revision_at_offset(&other, Duration::from_secs(60))),
            u64::from(revision_at_offset(&node_a, Duration::from_secs(60)))
        );
    }

    #[test]
    fn a_new_publisher_continues_the_old_ones_counter() {
        // Publisher A uploads at 100 s into the SRV period and dies; B (same blinded key, its
        // own clock) takes over 4 s later, or in the same second: never a lower counter.
        let tp = TimePeriod::from_parts(1440, 20573, 43200);
        let a = blinded(9, tp);
        let b = blinded(9, tp);
        let last_a = u64::from(revision_at_offset(&a, Duration::from_secs(100)));
        let first_b = u64::from(revision_at_offset(&b, Duration::from_secs(104)));
        assert!(first_b > last_a);
        assert_eq!(
            u64::from(revision_at_offset(&b, Duration::from_secs(100))),
            last_a,
            "same second: equal, which HSDirs treat as not newer (the old one stays valid)"
        );
    }

    #[test]
    fn intro_point_count_and_lifetime_rules() {
        assert!(matches!(
            check_intro_point_count(0),
            Err(DescriptorError::NoIntroPoints)
        ));
        assert!(check_intro_point_count(1).is_ok());
        assert!(check_intro_point_count(MAX_INTRO_POINTS).is_ok());
        assert!(matches!(
            check_intro_point_count(21),
            Err(DescriptorError::TooManyIntroPoints(21))
        ));
        assert_eq!(
            lifetime_minutes(Duration::from_secs(3 * 3600)).unwrap(),
            180
        );
        assert!(lifetime_minutes(Duration::from_secs(59)).is_err());
        assert!(lifetime_minutes(Duration::from_secs(721 * 60)).is_err());
        assert_eq!(
            lifetime_minutes(Duration::from_secs(720 * 60)).unwrap(),
            720
        );
    }
}
