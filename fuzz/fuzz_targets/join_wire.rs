//! Fuzzes every decoder of untrusted join bytes: whatever arrives, nothing panics.
//!
//! Each input goes through:
//! 1. the join line parser (`Invite::parse`, on the input as text);
//! 2. the frame splitter and both body decoders (`JoinRequest::decode`, `JoinReply::decode`),
//!    on the raw input and on the input framed with a valid header (so the body decoders are
//!    reached without the fuzzer finding the magic), with a round trip of what decodes;
//! 3. the cluster side's whole check (`Authority::check`, the rate limit aside) as a node of a
//!    fixed cluster would run it on a request frame, and the joiner's check of a reply frame
//!    (`check_reply`);
//! 4. the cluster message decoder (`ClusterMsg::decode`, key pushes and invite redemptions).

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use rustbalance::join::authority::{Authority, RateLimit};
use rustbalance::join::client::{check_reply, request_frame};
use rustbalance::join::invite::Invite;
use rustbalance::join::wire::{self, FrameKind, JoinReply, JoinRequest};
use rustbalance::membership::ClusterMsg;

struct Fixed {
    invite: Invite,
    request: Vec<u8>,
    token: rustbalance::mesh::ClusterToken,
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
        let token = rustbalance::mesh::ClusterToken::new(vec![3u8; 32]).unwrap();
        let id = rustbalance::keys::MasterIdentity::generate(&mut rand::rng());
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let invite = Invite::mint(
            &token,
            &id.onion_address(),
            Duration::from_secs(3600),
            2,
            now,
        )
        .unwrap();
        let key = rustbalance::mesh::MeshKeys::generate().public_key();
        let (request, _) =
            request_frame(&invite, key, "192.0.2.1:51820".parse().unwrap(), None, now).unwrap();
        Fixed {
            invite,
            request,
            token,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixed();
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(inv) = Invite::parse(text) {
            let again = Invite::parse(&inv.to_line()).expect("a line we wrote parses");
            assert_eq!(again.terms, inv.terms);
        }
    }
    for kind in [FrameKind::Request, FrameKind::Reply] {
        let _ = wire::split(data, kind);
        let mut framed = wire::header(kind, data.len()).to_vec();
        framed.extend_from_slice(data);
        framed.extend_from_slice(&[0u8; 32]);
        if let Ok(fr) = wire::split(&framed, kind) {
            if let Ok(r) = JoinRequest::decode(fr.body) {
                let bytes = postcard::to_allocvec(&r).unwrap();
                assert_eq!(JoinRequest::decode(&bytes).unwrap(), r);
            }
            if let Ok(r) = JoinReply::decode(fr.body) {
                let bytes = postcard::to_allocvec(&r).unwrap();
                assert_eq!(JoinReply::decode(&bytes).unwrap(), r);
            }
        }
        let mut auth = Authority::new(
            f.token.clone(),
            f.invite.master.clone(),
            RateLimit {
                per_minute: 600,
                burst: 10,
            },
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let _ = auth.check(data, now);
        let _ = auth.check(&framed, now);
        let _ = check_reply(&f.invite, &f.request, data);
        let _ = check_reply(&f.invite, &f.request, &framed);
    }
    let _ = ClusterMsg::decode(data);
});
