//! Shared by the publisher's tests: a master identity, a period, network views with fake
//! HSDirs, and intro points with real keys.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tor_hscrypto::pk::HsIdKeypair;
use tor_hscrypto::time::TimePeriod;
use tor_llcrypto::pk::ed25519;
use tor_netdoc::doc::hsdesc::IntroPointDesc;

use super::select::NodeIntroPoints;
use super::state::{NetworkView, PeriodPlan};
use crate::descriptor::{self, Capabilities};

/// A fixed master identity.
pub fn identity() -> HsIdKeypair {
    let kp = ed25519::Keypair::from_bytes(&[11; 32]);
    HsIdKeypair::from(ed25519::ExpandedKeypair::from(&kp))
}

/// The period around `wall`.
pub fn period_at(wall: SystemTime) -> TimePeriod {
    TimePeriod::new(Duration::from_secs(86400), wall, Duration::from_secs(43200)).unwrap()
}

/// One period with `hsdirs` fake HSDirs `h0…`, a consensus valid around `wall`.
pub fn view(id: &HsIdKeypair, period: TimePeriod, wall: SystemTime, hsdirs: usize) -> NetworkView {
    let (_, blind, _) = id.compute_blinded_key(period).unwrap();
    NetworkView {
        periods: vec![PeriodPlan {
            period,
            srv_start: wall - Duration::from_secs(3600),
            blind: Ok(Arc::new(blind)),
            hsdirs: (0..hsdirs).map(|i| format!("h{i}")).collect(),
        }],
        valid_after: wall - Duration::from_secs(10),
        valid_until: wall + Duration::from_secs(30),
        caps: Capabilities::declared(&tor_netdir::params::NetParameters::default()),
    }
}

/// An intro point on relay `relay` (its RSA identity is 20 times that byte), real keys.
pub fn ipt(relay: u8) -> IntroPointDesc {
    descriptor::ipt_from_wire(&descriptor::test_ipt_wire(relay)).unwrap()
}

/// Another node with intro points on `relays`.
pub fn peer(node: &str, healthy: bool, relays: &[u8]) -> NodeIntroPoints {
    NodeIntroPoints {
        node_id: node.into(),
        healthy,
        descs: relays.iter().map(|r| ipt(*r)).collect(),
        weight: 1,
    }
}
