//! Building one signed, encrypted v3 descriptor from a set of intro points.
//!
//! This module owns the descriptor rules: at most [`MAX_INTRO_POINTS`] intro points (clients
//! keep only 20; Arti's builder does not enforce it), at most [`MAX_DESCRIPTOR_BYTES`], Arti's
//! parameters (NTOR, 54 h certificates), and the revision counter, computed exactly as Arti does
//! (order-preserving encryption of the offset into the SRV period, keyed by the blinded secret)
//! so that every node holding the blinded key derives the same monotonic value, and the
//! capabilities Arti's own publisher declares ([`Capabilities`]: `flow-control` and `proto`).
//! Pure: time, network parameters and randomness come from the caller.

use std::time::{Duration, SystemTime};

use rand::{CryptoRng, Rng};
use tor_cell::chancell::msg::HandshakeType;
use tor_hscrypto::ope::AesOpeKey;
use tor_hscrypto::pk::{HsBlindIdKey, HsBlindIdKeypair, HsIdKey};
use tor_hscrypto::time::TimePeriod;
use tor_hscrypto::RevisionCounter;
use tor_llcrypto::pk::{curve25519, ed25519};
use tor_netdir::params::NetParameters;
use tor_netdir::HsDirParams;
use tor_netdoc::doc::hsdesc::pow::v1::PowParamsV1;
use tor_netdoc::doc::hsdesc::pow::PowParams;
use tor_netdoc::doc::hsdesc::{create_desc_sign_key_cert, HsDescBuilder, IntroPointDesc};
use tor_netdoc::NetdocBuilder;
use tor_protover::named::{
    FLOWCTRL_AUTH_SENDME, FLOWCTRL_CC, RELAY_CRYPT_CGO, RELAY_NEGOTIATE_SUBPROTO,
};
use tor_protover::Protocols;
use tor_units::IntegerMinutes;

mod merge;
#[cfg(test)]
pub(crate) use merge::test_ipt_wire;
pub use merge::{
    intro_relay, ipt_from_wire, ipt_to_wire, merged_windows, merged_windows_weighted, pick_window,
    pick_window_weighted, IptWire,
};

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
    /// Certificate or encoding failure.
    #[error("building the descriptor: {0}")]
    Build(String),
    /// Over [`MAX_DESCRIPTOR_BYTES`] (many authorized clients and intro points).
    #[error("the descriptor with {intro_points} intro points is {bytes} bytes, over {MAX_DESCRIPTOR_BYTES}")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The intro points it listed.
        intro_points: usize,
    },
}

/// What a descriptor declares about how clients may talk to the service, exactly as Arti's own
/// publisher decides it (`tor-hsservice` `caps.rs` with `negotiate-extensions`, which this build
/// enables so the service side also honours what it declares):
/// - `flow-control`: the flow-control protocols this Arti supports among `FlowCtrl=1-2`
///   (authenticated SENDMEs, congestion control) and the consensus's `cc_sendme_inc`. Without
///   this line C-tor clients never negotiate congestion control with the service and run on
///   fixed SENDME windows (measured: 0.6x of a C-tor service's throughput; with it, 1.1-1.26x).
/// - `proto`: the subprotocols a client may request (`Relay=5` negotiation, CGO), as supported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Flow-control protocols and the `sendme_inc` clients must use (`None`: no line).
    pub flow_control: Option<(Protocols, u8)>,
    /// The `proto` line's protocols (empty: no line).
    pub protocols: Protocols,
    /// Restricted discovery: the clients the descriptor is encrypted for (`None`: anyone who
    /// knows the address can read it; `Some` of an empty list: nobody).
    pub auth_clients: Option<Vec<curve25519::PublicKey>>,
    /// Proof of work: the `pow-params v1` line (`None`: no line).
    pub pow: Option<PowOffer>,
}

/// What a descriptor's `pow-params v1` line says: the cluster's seed for the descriptor's
/// period in `epoch` (derived with `key`), expiring at `expires`, and the suggested effort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowOffer {
    /// The cluster's seed key.
    pub key: crate::pow::PowKey,
    /// The epoch whose seed is advertised.
    pub epoch: u64,
    /// When that seed expires.
    pub expires: SystemTime,
    /// The suggested effort.
    pub effort: u32,
}

impl PowOffer {
    /// The `pow-params` for `period`.
    pub fn params(&self, period: TimePeriod) -> PowParams {
        PowParams::V1(PowParamsV1::new(
            tor_checkable::timed::TimeRangeBound::new(
                self.key.seed(period, self.epoch),
                ..self.expires,
            ),
            tor_hscrypto::pow::v1::Effort::from(self.effort),
        ))
    }
}

impl Capabilities {
    /// The capabilities for a service under the consensus parameters `params`.
    pub fn declared(params: &NetParameters) -> Capabilities {
        let supported = tor_proto::supported_client_protocols();
        let flowctrl: Protocols = [FLOWCTRL_AUTH_SENDME, FLOWCTRL_CC].into_iter().collect();
        let advertisable: Protocols = [RELAY_CRYPT_CGO, RELAY_NEGOTIATE_SUBPROTO]
            .into_iter()
            .collect();
        Capabilities {
            flow_control: supported.supports_named_subver(FLOWCTRL_CC).then(|| {
                (
                    supported.intersection(&flowctrl),
                    params.cc_sendme_inc.into(),
                )
            }),
            protocols: supported.intersection(&advertisable),
            auth_clients: None,
            pow: None,
        }
    }
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

/// The smallest offset in `from..=to` (seconds into the SRV period) whose revision counter
/// is above `held`, if any: how a publisher gets past a descriptor an HSDir holds with a
/// higher counter (one uploaded by a node whose clock ran ahead). OPE grows with the offset,
/// so a binary search finds it.
pub fn offset_above(blind: &HsBlindIdKeypair, held: u64, from: u32, to: u32) -> Option<u32> {
    let rev = |o: u32| u64::from(revision_at_offset(blind, Duration::from_secs(u64::from(o))));
    if from > to || rev(to) <= held {
        return None;
    }
    let (mut lo, mut hi) = (from, to);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if rev(mid) > held {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo)
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

/// What one descriptor says: for whom, for which period, with which revision counter, listing
/// which intro points and declaring which capabilities.
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    /// The master identity (public).
    pub master: &'a HsIdKey,
    /// The period's blinded keypair (signs the descriptor-signing key).
    pub blind: &'a HsBlindIdKeypair,
    /// The time period.
    pub period: TimePeriod,
    /// The revision counter ([`revision_counter`]).
    pub revision: RevisionCounter,
    /// The intro points, at most [`MAX_INTRO_POINTS`].
    pub intro_points: &'a [IntroPointDesc],
    /// The declared capabilities.
    pub caps: &'a Capabilities,
    /// The descriptor lifetime.
    pub lifetime: Duration,
}

/// Builds and signs the descriptor `spec` describes; certificates run from `now`.
pub fn build<R: Rng + CryptoRng>(
    spec: &Spec<'_>,
    now: SystemTime,
    rng: &mut R,
) -> Result<BuiltDescriptor, DescriptorError> {
    check_intro_point_count(spec.intro_points.len())?;
    let minutes = lifetime_minutes(spec.lifetime)?;
    let blind_pk = HsBlindIdKey::from(spec.blind);
    let subcredential = spec.master.compute_subcredential(&blind_pk, spec.period);
    let desc_sign = ed25519::Keypair::generate(rng);
    let expiry = now + CERT_VALIDITY;
    let cert = create_desc_sign_key_cert(&desc_sign.verifying_key(), spec.blind, expiry)
        .map_err(|e| DescriptorError::Build(format!("signing-key certificate: {e}")))?;
    // Restricted to nobody: encrypted for a throwaway key no one holds (Arti's builder cannot
    // make a descriptor with an empty client list), so removing the last client locks every
    // client out instead of making the descriptor public.
    let throwaway;
    let auth_clients = match spec.caps.auth_clients.as_deref() {
        Some([]) => {
            let secret = curve25519::StaticSecret::random_from_rng(&mut *rng);
            throwaway = [curve25519::PublicKey::from(&secret)];
            Some(&throwaway[..])
        }
        other => other,
    };
    let pow = spec.caps.pow.as_ref().map(|p| p.params(spec.period));
    let text = HsDescBuilder::default()
        .blinded_id(&blind_pk)
        .hs_desc_sign(&desc_sign)
        .hs_desc_sign_cert(cert)
        .create2_formats(&[HandshakeType::NTOR])
        .auth_required(None)
        .is_single_onion_service(false)
        .intro_points(spec.intro_points)
        .intro_auth_key_cert_expiry(expiry)
        .intro_enc_key_cert_expiry(expiry)
        .lifetime(IntegerMinutes::new(minutes))
        .revision_counter(spec.revision)
        .subcredential(subcredential)
        .flow_control(spec.caps.flow_control.clone())
        .supported_protocols(spec.caps.protocols.clone())
        .auth_clients(auth_clients)
        .pow_params(pow.as_ref())
        .max_generated_len(MAX_DESCRIPTOR_BYTES * 4)
        .build_sign(rng)
        .map_err(|e| DescriptorError::Build(e.to_string()))?;
    if text.len() > MAX_DESCRIPTOR_BYTES {
        return Err(DescriptorError::TooLarge {
            bytes: text.len(),
            intro_points: spec.intro_points.len(),
        });
    }
    Ok(BuiltDescriptor {
        text,
        revision: u64::from(spec.revision),
        intro_points: spec.intro_points.len(),
    })
}

/// [`build`], listing as many of `spec`'s intro points (in their order) as fit in
/// [`MAX_DESCRIPTOR_BYTES`]: with many authorized clients not all 20 do (160 clients leave
/// room for 15; Arti pads each encrypted layer to whole 10,000-byte blocks).
pub fn build_fitting<R: Rng + CryptoRng>(
    spec: &Spec<'_>,
    now: SystemTime,
    rng: &mut R,
) -> Result<BuiltDescriptor, DescriptorError> {
    let mut n = spec.intro_points.len();
    loop {
        let attempt = Spec {
            intro_points: &spec.intro_points[..n],
            ..*spec
        };
        match build(&attempt, now, rng) {
            Err(DescriptorError::TooLarge { .. }) if n > 1 => n -= (n / 4).max(1),
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tor_hscrypto::pk::HsIdKeypair;

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

    /// One intro point with made-up (well-formed) relay details.
    /// A master identity from `seed`, this period, its blinded keys and subcredential.
    fn master(
        seed: u8,
    ) -> (
        HsIdKey,
        TimePeriod,
        HsBlindIdKey,
        HsBlindIdKeypair,
        tor_hscrypto::Subcredential,
        SystemTime,
    ) {
        let kp = ed25519::Keypair::from_bytes(&[seed; 32]);
        let id = HsIdKeypair::from(ed25519::ExpandedKeypair::from(&kp));
        let now = SystemTime::now();
        let tp =
            TimePeriod::new(Duration::from_secs(86400), now, Duration::from_secs(43200)).unwrap();
        let (blind_pk, blind, subcred) = id.compute_blinded_key(tp).unwrap();
        (HsIdKey::from(&id), tp, blind_pk, blind, subcred, now)
    }

    /// A spec for `master`'s period with `ipts` and `caps`, revision at offset 100 s.
    fn spec<'a>(
        hsid: &'a HsIdKey,
        tp: TimePeriod,
        blind: &'a HsBlindIdKeypair,
        ipts: &'a [IntroPointDesc],
        caps: &'a Capabilities,
    ) -> Spec<'a> {
        Spec {
            master: hsid,
            blind,
            period: tp,
            revision: revision_at_offset(blind, Duration::from_secs(100)),
            intro_points: ipts,
            caps,
            lifetime: Duration::from_secs(3 * 3600),
        }
    }

    fn intro_point() -> IntroPointDesc {
        ipt_from_wire(&merge::test_ipt_wire(9)).unwrap()
    }

    #[test]
    fn the_descriptor_declares_flow_control_and_protocols_as_arti_does() {
        use tor_checkable::Timebound;
        use tor_netdoc::doc::hsdesc::HsDesc;
        let mut params = NetParameters::default();
        let caps = Capabilities::declared(&params);
        let (fc, inc) = caps
            .flow_control
            .clone()
            .expect("Arti supports congestion control");
        assert!(fc.supports_named_subver(FLOWCTRL_CC));
        assert!(fc.supports_named_subver(FLOWCTRL_AUTH_SENDME));
        assert_eq!(inc, 31, "the consensus default cc_sendme_inc");
        assert!(caps
            .protocols
            .supports_named_subver(RELAY_NEGOTIATE_SUBPROTO));
        // The consensus value is what is declared.
        params.cc_sendme_inc = tor_units::BoundedInt32::checked_new(40).unwrap();
        assert_eq!(Capabilities::declared(&params).flow_control.unwrap().1, 40);

        // Built and parsed back as a client parses it: both lines are there.
        let (hsid, tp, blind_pk, blind, subcred, now) = master(5);
        let ipts = [intro_point()];
        let spec = spec(&hsid, tp, &blind, &ipts, &caps);
        let built = build(&spec, now, &mut rand::rng()).unwrap();
        assert!(built.text.len() <= MAX_DESCRIPTOR_BYTES);
        let desc = HsDesc::parse_decrypt_validate(&built.text, &blind_pk.id(), &subcred, None)
            .unwrap()
            .if_valid_at(&now)
            .unwrap();
        let (served, inc) = desc.flow_control().expect("flow-control line");
        assert_eq!(Some((served, inc.get())), caps.flow_control);
        assert_eq!(desc.declared_capabilities(), &caps.protocols);
        // Without capabilities (what we published before): no line, no congestion control.
        let none = Capabilities::default();
        let plain = build(
            &Spec {
                caps: &none,
                ..spec
            },
            now,
            &mut rand::rng(),
        )
        .unwrap();
        let desc = HsDesc::parse_decrypt_validate(&plain.text, &blind_pk.id(), &subcred, None)
            .unwrap()
            .if_valid_at(&now)
            .unwrap();
        assert!(desc.flow_control().is_none());
    }

    #[test]
    fn a_restricted_descriptor_opens_for_its_clients_only_and_fits_160_of_them() {
        use tor_checkable::Timebound;
        use tor_hscrypto::pk::{
            HsClientDescEncKey, HsClientDescEncKeypair, HsClientDescEncSecretKey,
        };
        use tor_netdoc::doc::hsdesc::HsDesc;
        let (hsid, tp, blind_pk, blind, subcred, now) = master(6);
        let client = |seed: u8| {
            let secret = curve25519::StaticSecret::from([seed; 32]);
            let public = curve25519::PublicKey::from(&secret);
            HsClientDescEncKeypair::new(
                HsClientDescEncKey::from(public),
                HsClientDescEncSecretKey::from(secret),
            )
        };
        let (alice, bob) = (client(1), client(2));
        let mut caps = Capabilities::declared(&NetParameters::default());
        caps.auth_clients = Some(vec![*alice.public().as_ref()]);
        let ipts = [intro_point()];
        let spec = spec(&hsid, tp, &blind, &ipts, &caps);
        let text = build(&spec, now, &mut rand::rng()).unwrap().text;
        let open = |kp: Option<&HsClientDescEncKeypair>| {
            HsDesc::parse_decrypt_validate(&text, &blind_pk.id(), &subcred, kp)
                .map(|d| d.dangerously_assume_timely().intro_points().len())
        };
        assert_eq!(
            open(Some(&alice)).unwrap(),
            1,
            "the authorized client reads it"
        );
        assert!(open(Some(&bob)).is_err(), "another client cannot");
        assert!(open(None).is_err(), "nor can anyone with only the address");
        // Nobody authorized: nobody reads it (never public by accident).
        let mut nobody = caps.clone();
        nobody.auth_clients = Some(Vec::new());
        let text = build(
            &Spec {
                caps: &nobody,
                ..spec
            },
            now,
            &mut rand::rng(),
        )
        .unwrap()
        .text;
        assert!(HsDesc::parse_decrypt_validate(&text, &blind_pk.id(), &subcred, None).is_err());
        // The cap: 160 clients and 20 intro points stay within the 50 kB.
        let mut many = caps.clone();
        many.auth_clients = Some((0..160u8).map(|i| *client(i).public().as_ref()).collect());
        let twenty: Vec<IntroPointDesc> = (0..20u8)
            .map(|i| ipt_from_wire(&merge::test_ipt_wire(i)).unwrap())
            .collect();
        let spec20 = Spec {
            caps: &many,
            intro_points: &twenty,
            ..spec
        };
        assert!(matches!(
            build(&spec20, now, &mut rand::rng()),
            Err(DescriptorError::TooLarge { .. })
        ));
        let fitted = build_fitting(&spec20, now, &mut rand::rng()).unwrap();
        eprintln!(
            "160 clients: {} of 20 intro points fit, {} bytes",
            fitted.intro_points,
            fitted.text.len()
        );
        assert!(fitted.text.len() <= MAX_DESCRIPTOR_BYTES);
        assert!(
            (5..20).contains(&fitted.intro_points),
            "{}",
            fitted.intro_points
        );
        let desc = HsDesc::parse_decrypt_validate(
            &fitted.text,
            &blind_pk.id(),
            &subcred,
            Some(&client(3)),
        )
        .unwrap()
        .dangerously_assume_timely();
        assert_eq!(desc.intro_points().len(), fitted.intro_points);
        // Without clients all 20 fit at once.
        assert_eq!(
            build_fitting(
                &Spec {
                    intro_points: &twenty,
                    ..spec
                },
                now,
                &mut rand::rng()
            )
            .unwrap()
            .intro_points,
            20
        );
    }

    #[test]
    fn offset_above_finds_the_first_counter_past_a_held_one() {
        let tp = TimePeriod::from_parts(1440, 20573, 43200);
        let b = blinded(12, tp);
        let held = u64::from(revision_at_offset(&b, Duration::from_secs(1000 + 900)));
        let o = offset_above(&b, held, 1000, 1000 + 86_400).unwrap();
        assert_eq!(o, 1901, "one second past the held counter's");
        assert!(u64::from(revision_at_offset(&b, Duration::from_secs(o.into()))) > held);
        assert!(u64::from(revision_at_offset(&b, Duration::from_secs((o - 1).into()))) <= held);
        // Already above: the first offset itself.
        assert_eq!(offset_above(&b, 0, 5, 10), Some(5));
        // Out of reach within the bound.
        assert_eq!(offset_above(&b, held, 1000, 1500), None);
        assert_eq!(offset_above(&b, held, 10, 5), None);
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
