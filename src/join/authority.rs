//! The cluster side's checks of a join request, as an I/O-free state machine (time is passed
//! in): rate limit, frame and fields, the invite proof, expiry, clock, replay and uses.
//!
//! Uses and replays are shared: a node that grants a join tells the mesh
//! ([`ClusterMsg::InviteRedeemed`](crate::membership::ClusterMsg)), and every node records the
//! redemption ([`Authority::redeemed`]). Two nodes answering the same invite within the same
//! gossip round could both grant it; that window is one mesh round trip.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::invite::{secret_for, unix_secs, verify_mac, Terms};
use super::wire::{self, FrameKind, JoinRequest, RefusalCode, REQUEST_LABEL};
use crate::keys::OnionAddress;
use crate::mesh::ClusterToken;

/// How far a joiner's clock may be from ours.
pub const MAX_JOIN_SKEW: Duration = Duration::from_secs(600);
/// Most invites remembered (redeemed ones; the oldest-expiring are forgotten first).
pub const MAX_REMEMBERED: usize = 4096;

/// The rate limit on join attempts at one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Attempts per minute, sustained.
    pub per_minute: u32,
    /// Attempts allowed at once.
    pub burst: u32,
}

/// A request that passed every check.
pub struct Checked {
    /// The request.
    pub request: JoinRequest,
    /// Its invite's terms.
    pub terms: Terms,
    /// The invite secret (for the reply's MAC).
    pub secret: Zeroizing<[u8; 32]>,
    /// The request's proof (bound into the reply's MAC).
    pub proof: [u8; 32],
}

/// Join counters, for `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinCounters {
    /// Joins granted by this node.
    pub granted: u64,
    /// Refusals by this node, by reason.
    pub refused: BTreeMap<RefusalCode, u64>,
    /// Invites known to be redeemed (by any node), not yet expired.
    pub invites_redeemed: u64,
}

/// The checks' state.
pub struct Authority {
    token: ClusterToken,
    master: OnionAddress,
    limit: RateLimit,
    tokens: f64,
    refilled: Option<Instant>,
    /// Invite id → (expiry, redeeming nonces).
    redeemed: HashMap<[u8; 8], (u64, HashSet<[u8; 16]>)>,
    counters: JoinCounters,
}

impl Authority {
    /// Checks for invites of `master`'s cluster (`token`), limited to `limit`.
    pub fn new(token: ClusterToken, master: OnionAddress, limit: RateLimit) -> Authority {
        Authority {
            token,
            master,
            limit,
            tokens: f64::from(limit.burst),
            refilled: None,
            redeemed: HashMap::new(),
            counters: JoinCounters::default(),
        }
    }

    /// Takes one attempt from the rate limit (before the request is even read).
    pub fn admit(&mut self, at: Instant) -> Result<(), RefusalCode> {
        let rate = f64::from(self.limit.per_minute) / 60.0;
        if let Some(last) = self.refilled {
            let dt = at.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * rate).min(f64::from(self.limit.burst));
        }
        self.refilled = Some(at);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.refuse(RefusalCode::RateLimited))
        }
    }

    /// Counts a refusal and returns its code.
    pub fn refuse(&mut self, code: RefusalCode) -> RefusalCode {
        *self.counters.refused.entry(code).or_default() += 1;
        code
    }

    /// Checks a whole request frame at `now`. A refusal is counted.
    pub fn check(&mut self, frame: &[u8], now: SystemTime) -> Result<Checked, RefusalCode> {
        let r = self.check_inner(frame, now);
        r.map_err(|c| self.refuse(c))
    }

    fn check_inner(&mut self, frame: &[u8], now: SystemTime) -> Result<Checked, RefusalCode> {
        let f = wire::split(frame, FrameKind::Request).map_err(|_| RefusalCode::Malformed)?;
        let request = JoinRequest::decode(f.body).map_err(|_| RefusalCode::Malformed)?;
        let terms = Terms {
            id: request.invite,
            expires: request.expires,
            uses: request.uses,
        };
        let secret = secret_for(&self.token, &self.master, &terms);
        if !verify_mac(&secret, REQUEST_LABEL, &[&f.header, f.body], &f.mac) {
            return Err(RefusalCode::BadInvite);
        }
        let now_s = unix_secs(now);
        if terms.expires <= now_s {
            return Err(RefusalCode::Expired);
        }
        if request.timestamp.abs_diff(now_s) > MAX_JOIN_SKEW.as_secs() {
            return Err(RefusalCode::ClockSkew);
        }
        if let Some((_, nonces)) = self.redeemed.get(&terms.id) {
            if nonces.contains(&request.nonce) {
                return Err(RefusalCode::Replayed);
            }
            if nonces.len() >= usize::from(terms.uses) {
                return Err(RefusalCode::UsedUp);
            }
        }
        Ok(Checked {
            proof: f.mac,
            request,
            terms,
            secret,
        })
    }

    /// Records a grant made here (the caller tells the mesh).
    pub fn granted(&mut self, terms: &Terms, nonce: [u8; 16], now: SystemTime) {
        self.counters.granted += 1;
        self.redeemed(terms.id, nonce, terms.expires, now);
    }

    /// Records a redemption (here, or by another node as the mesh says).
    pub fn redeemed(&mut self, id: [u8; 8], nonce: [u8; 16], expires: u64, now: SystemTime) {
        self.prune(now);
        if !self.redeemed.contains_key(&id) && self.redeemed.len() >= MAX_REMEMBERED {
            // Forget the invite that expires first (an invite forgotten before it expires
            // could be redeemed again: the bound is far above any real use).
            if let Some(first) = self
                .redeemed
                .iter()
                .min_by_key(|(_, (e, _))| *e)
                .map(|(k, _)| *k)
            {
                self.redeemed.remove(&first);
            }
        }
        let entry = self.redeemed.entry(id).or_insert((expires, HashSet::new()));
        if entry.1.len() < usize::from(super::invite::MAX_USES) {
            entry.1.insert(nonce);
        }
        self.counters.invites_redeemed = self.redeemed.len() as u64;
    }

    /// Forgets invites that have expired (they are refused as expired anyway).
    pub fn prune(&mut self, now: SystemTime) {
        let now_s = unix_secs(now);
        self.redeemed.retain(|_, (e, _)| *e > now_s);
        self.counters.invites_redeemed = self.redeemed.len() as u64;
    }

    /// The counters.
    pub fn counters(&self) -> &JoinCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::join::client::request_frame;
    use crate::join::invite::Invite;

    fn setup() -> (Authority, Invite, SystemTime) {
        let token = ClusterToken::new(vec![5u8; 32]).unwrap();
        let master = crate::keys::MasterIdentity::generate(&mut rand::rng()).onion_address();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let inv = Invite::mint(&token, &master, Duration::from_secs(3600), 2, now).unwrap();
        let auth = Authority::new(
            token,
            master,
            RateLimit {
                per_minute: 6,
                burst: 3,
            },
        );
        (auth, inv, now)
    }

    fn endpoint() -> std::net::SocketAddr {
        "192.0.2.9:51820".parse().unwrap()
    }

    #[test]
    fn a_valid_request_passes_and_uses_are_counted_across_nodes() {
        let (mut a, inv, now) = setup();
        let key = crate::mesh::MeshKeys::generate().public_key();
        let (frame, req) = request_frame(&inv, key, endpoint(), None, now).unwrap();
        let ok = a.check(&frame, now).unwrap_or_else(|c| panic!("{c:?}"));
        assert_eq!(ok.request, req);
        a.granted(&ok.terms, req.nonce, now);
        // The same request again: a replay.
        assert_eq!(a.check(&frame, now).err(), Some(RefusalCode::Replayed));
        // A second join with the same two-use invite redeemed elsewhere (told by the mesh):
        let (f2, r2) = request_frame(&inv, key, endpoint(), None, now).unwrap();
        a.redeemed(inv.terms.id, r2.nonce, inv.terms.expires, now);
        assert_eq!(a.check(&f2, now).err(), Some(RefusalCode::Replayed));
        let (f3, _) = request_frame(&inv, key, endpoint(), None, now).unwrap();
        assert_eq!(a.check(&f3, now).err(), Some(RefusalCode::UsedUp));
        assert_eq!(a.counters().granted, 1);
        assert_eq!(a.counters().refused[&RefusalCode::Replayed], 2);
        assert_eq!(a.counters().refused[&RefusalCode::UsedUp], 1);
    }

    #[test]
    fn wrong_tampered_expired_skewed_and_garbage_requests_are_refused() {
        let (mut a, inv, now) = setup();
        let key = crate::mesh::MeshKeys::generate().public_key();
        // Another cluster's invite for the same master: the proof does not verify.
        let other = ClusterToken::new(vec![6u8; 32]).unwrap();
        let foreign = Invite::mint(&other, &inv.master, Duration::from_secs(60), 1, now).unwrap();
        let (f, _) = request_frame(&foreign, key, endpoint(), None, now).unwrap();
        assert_eq!(a.check(&f, now).err(), Some(RefusalCode::BadInvite));
        // Tampered: one body byte changed.
        let (mut f, _) = request_frame(&inv, key, endpoint(), None, now).unwrap();
        f[12] ^= 1;
        assert!(matches!(
            a.check(&f, now).err(),
            Some(RefusalCode::BadInvite | RefusalCode::Malformed)
        ));
        // Terms stretched by the joiner (more uses): the proof no longer matches the secret.
        let mut stretched = inv.clone();
        stretched.terms.uses = 100;
        let (f, _) = request_frame(&stretched, key, endpoint(), None, now).unwrap();
        assert_eq!(a.check(&f, now).err(), Some(RefusalCode::BadInvite));
        // Expired.
        let later = now + Duration::from_secs(3601);
        let (f, _) = request_frame(&inv, key, endpoint(), None, later).unwrap();
        assert_eq!(a.check(&f, later).err(), Some(RefusalCode::Expired));
        // The joiner's clock 20 minutes off.
        let (f, _) =
            request_frame(&inv, key, endpoint(), None, now + Duration::from_secs(1200)).unwrap();
        assert_eq!(a.check(&f, now).err(), Some(RefusalCode::ClockSkew));
        // Garbage, an HTTP request, an empty frame.
        for junk in [&b""[..], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &[0u8; 5000]] {
            assert_eq!(a.check(junk, now).err(), Some(RefusalCode::Malformed));
        }
        assert_eq!(a.counters().granted, 0);
    }

    #[test]
    fn the_rate_limit_refills_with_time() {
        let (mut a, _, _) = setup();
        let t0 = Instant::now();
        for _ in 0..3 {
            a.admit(t0).unwrap();
        }
        assert_eq!(a.admit(t0), Err(RefusalCode::RateLimited));
        // 6 per minute: one every 10 s.
        assert_eq!(
            a.admit(t0 + Duration::from_secs(5)),
            Err(RefusalCode::RateLimited)
        );
        a.admit(t0 + Duration::from_secs(16)).unwrap();
        assert_eq!(a.counters().refused[&RefusalCode::RateLimited], 2);
    }

    #[test]
    fn expired_redemptions_are_forgotten_and_memory_is_bounded() {
        let (mut a, _, now) = setup();
        for i in 0..(MAX_REMEMBERED as u64 + 10) {
            a.redeemed(i.to_be_bytes(), [0; 16], 1_800_000_000 + 100 + i, now);
        }
        assert_eq!(a.counters().invites_redeemed, MAX_REMEMBERED as u64);
        a.prune(now + Duration::from_secs(100 + MAX_REMEMBERED as u64));
        assert!(a.counters().invites_redeemed <= 11);
    }
}
