//! The network as the publisher sees it ([`NetworkView`]), read from Arti's consensus: the
//! periods to publish for, each one's upload ring, the consensus's validity and the
//! capabilities to declare.

use std::sync::Arc;

use tor_hscrypto::pk::HsBlindIdKeypair;
use tor_hscrypto::time::TimePeriod;
use tor_linkspec::HasRelayIds;
use tor_netdir::NetDir;

use super::state::{NetworkView, PeriodPlan};
use crate::descriptor::Capabilities;
use crate::keys::OnionAddress;

/// The view of `netdir` for `master`; `blinded` gives each period's blinded keypair (or why
/// there is none).
pub fn view(
    netdir: &NetDir,
    master: &OnionAddress,
    blinded: impl Fn(TimePeriod) -> Result<HsBlindIdKeypair, String>,
) -> NetworkView {
    let periods = netdir
        .hs_all_time_periods()
        .iter()
        .map(|params| {
            let period = params.time_period();
            let hsdirs = master
                .public_key()
                .compute_blinded_key(period)
                .ok()
                .and_then(|(blind, _)| netdir.hs_dirs_upload(blind.id(), period).ok())
                .map(|ring| {
                    ring.filter_map(|r| r.rsa_identity().map(|i| i.to_string()))
                        .collect()
                })
                .unwrap_or_default();
            PeriodPlan {
                period,
                srv_start: params.start_of_shard_rand_period(),
                blind: blinded(period).map(Arc::new),
                hsdirs,
            }
        })
        .collect();
    let lifetime = netdir.lifetime();
    NetworkView {
        periods,
        valid_after: lifetime.valid_after(),
        valid_until: lifetime.valid_until(),
        caps: Capabilities::declared(netdir.params()),
    }
}
