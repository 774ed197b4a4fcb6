//! Hosting the master onion service on the embedded Arti client without the identity secret.
//!
//! This module owns the node's Arti keystore discipline and the facts Arti keeps private:
//! - the keystore holds the master PUBLIC identity key (`kp_hs_id`) and the BLINDED keypairs
//!   (`ks_hs_blind_id+<period>`) of the relevant time periods, inserted and expired by us; it
//!   must never hold the identity secret (`ks_hs_id`), so Arti's own descriptor publisher cannot
//!   run ([`precheck`] refuses to launch otherwise, and refuses a missing `kp_hs_id`, with which
//!   Arti would silently generate a new identity);
//! - this node's current introduction points, read from Arti's persisted state (`ipts.json`) and
//!   keystore, turned into descriptor entries with the relays' link specifiers and onion keys
//!   from the network directory.
//!
//! Facts and file:line references: docs/arti-hosting.md.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tor_hscrypto::pk::{
    HsBlindIdKey, HsBlindIdKeypair, HsIdKey, HsIdKeypair, HsIntroPtSessionIdKey,
    HsIntroPtSessionIdKeypair, HsSvcNtorKeypair,
};
use tor_hscrypto::time::TimePeriod;
use tor_hsservice::{
    BlindIdKeypairSpecifier, HsIdKeypairSpecifier, HsIdPublicKeySpecifier, HsNickname,
};
use tor_keymgr::{ArtiPath, KeyMgr, KeyPathPattern, KeystoreSelector};
use tor_linkspec::{CircTarget, RelayIds};
use tor_netdoc::doc::hsdesc::IntroPointDesc;

use crate::keys::OnionAddress;

pub mod service;

/// Bootstraps `client`, handing each new progress line to `report` (the daemon logs it and
/// tells systemd; `join` prints it).
pub async fn bootstrap_reporting<R: tor_rtcompat::Runtime>(
    client: &arti_client::TorClient<R>,
    mut report: impl FnMut(&str) + Send + 'static,
) -> Result<(), arti_client::Error> {
    use futures::StreamExt as _;
    let mut events = client.bootstrap_events();
    let progress = tokio::spawn(async move {
        let mut last = String::new();
        while let Some(ev) = events.next().await {
            let now = format!("{ev}");
            if now != last {
                report(&now);
                last = now;
            }
            if ev.ready_for_traffic() {
                break;
            }
        }
    });
    let r = client.bootstrap().await;
    progress.abort();
    r
}

/// The client's current network directory and onion-service circuit pool (what the publisher's
/// uploads and the Tor self-check need), or why not, in words.
pub fn netdir_and_pool<R: tor_rtcompat::Runtime>(
    client: &arti_client::TorClient<R>,
) -> Result<
    (
        std::sync::Arc<tor_netdir::NetDir>,
        std::sync::Arc<tor_circmgr::hspool::HsCircPool<R>>,
    ),
    String,
> {
    let netdir = client
        .dirmgr()
        .map_err(|e| format!("directory manager: {e}"))?
        .timely_netdir()
        .map_err(|e| format!("no usable consensus: {e}"))?;
    let pool = client
        .hs_circ_pool()
        .map_err(|e| format!("circuit pool: {e}"))?;
    Ok((netdir, pool))
}

/// The nickname under which every node hosts the master service in its Arti state.
pub const NICKNAME: &str = "rustbalance";

/// The service nickname as Arti's type.
pub fn nickname() -> HsNickname {
    HsNickname::new(NICKNAME.to_string()).expect("constant nickname is valid")
}

/// Hosting failures.
#[derive(Debug, thiserror::Error)]
pub enum HostingError {
    /// The keystore holds the master identity secret: Arti's own publisher would run.
    #[error(
        "the Arti keystore holds the master identity secret (hss/{0}/ks_hs_id); nodes must hold \
         only the public identity and blinded keys: remove it"
    )]
    IdentitySecretPresent(String),
    /// The public identity key is missing: Arti would generate a new identity.
    #[error("the Arti keystore lacks the master public identity (hss/{0}/kp_hs_id)")]
    PublicIdentityMissing(String),
    /// The keystore's identity is not the configured master.
    #[error("the Arti keystore's identity is {found}, not the master address {master}")]
    WrongIdentity {
        /// What the keystore holds.
        found: String,
        /// The configured master address.
        master: String,
    },
    /// A keystore operation failed.
    #[error("Arti keystore: {what}: {source}")]
    Keystore {
        /// What was being done.
        what: String,
        /// The keystore's error.
        source: tor_keymgr::Error,
    },
    /// Blinding failed (should not happen for a valid identity and period).
    #[error("blinding the master identity for period {period}: {source}")]
    Blinding {
        /// The period.
        period: String,
        /// The cause.
        source: tor_llcrypto::pk::keymanip::BlindingError,
    },
    /// The master onion service could not be launched.
    #[error("launching the master onion service: {0}")]
    Launch(String),
    /// Arti's intro-point state file is missing or unreadable.
    #[error("{path}: {problem}")]
    IptState {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Arti has no usable network directory (or key manager) yet.
    #[error("no usable network directory: {0}")]
    NoNetDir(String),
    /// The current period's blinded key is missing: no client could connect.
    #[error("the current period's blinded key: {0}")]
    CurrentPeriodKey(crate::keys::KeyError),
    /// An intro point's relay or keys could not be resolved.
    #[error("intro point {lid}: {problem}")]
    IntroPoint {
        /// The intro point's local id (not secret).
        lid: String,
        /// What is missing.
        problem: String,
    },
}

fn keystore(what: impl Into<String>) -> impl FnOnce(tor_keymgr::Error) -> HostingError {
    let what = what.into();
    move |source| HostingError::Keystore { what, source }
}

/// Installs the master public identity key (idempotent).
pub fn install_public_identity(
    keymgr: &KeyMgr,
    nick: &HsNickname,
    master: &HsIdKey,
) -> Result<(), HostingError> {
    keymgr
        .insert(
            master.clone(),
            &HsIdPublicKeySpecifier::new(nick.clone()),
            KeystoreSelector::Primary,
            true,
        )
        .map_err(keystore("insert kp_hs_id"))?;
    Ok(())
}

/// Refuses to host unless the keystore holds the master public identity and no identity
/// secret.
pub fn precheck(
    keymgr: &KeyMgr,
    nick: &HsNickname,
    master: &OnionAddress,
) -> Result<(), HostingError> {
    let secret = keymgr
        .get::<HsIdKeypair>(&HsIdKeypairSpecifier::new(nick.clone()))
        .map_err(keystore("read ks_hs_id"))?;
    if secret.is_some() {
        return Err(HostingError::IdentitySecretPresent(nick.to_string()));
    }
    let public = keymgr
        .get::<HsIdKey>(&HsIdPublicKeySpecifier::new(nick.clone()))
        .map_err(keystore("read kp_hs_id"))?
        .ok_or_else(|| HostingError::PublicIdentityMissing(nick.to_string()))?;
    let found = OnionAddress::from(&public);
    if &found != master {
        return Err(HostingError::WrongIdentity {
            found: found.to_string(),
            master: master.to_string(),
        });
    }
    Ok(())
}

/// The keystore slug of a period, as Arti writes it: `<interval>_<length min>_<offset s>`.
pub fn period_slug(tp: TimePeriod) -> String {
    format!(
        "{}_{}_{}",
        tp.interval_num(),
        tp.length().as_minutes(),
        tp.epoch_offset_in_sec()
    )
}

/// Makes the keystore's blinded keypairs exactly `wanted`: inserts missing ones, removes any
/// other `ks_hs_blind_id+*` (Arti never expires them itself in this mode). Every key is checked
/// to be the master's blinded key for its period before it is inserted. Returns the slugs of
/// the periods removed.
pub fn sync_blinded_keys(
    keymgr: &KeyMgr,
    nick: &HsNickname,
    master: &HsIdKey,
    wanted: Vec<(TimePeriod, HsBlindIdKeypair)>,
) -> Result<Vec<String>, HostingError> {
    let mut keep = Vec::new();
    for (tp, kp) in wanted {
        let (expected, _) =
            master
                .compute_blinded_key(tp)
                .map_err(|source| HostingError::Blinding {
                    period: period_slug(tp),
                    source,
                })?;
        if HsBlindIdKey::from(&kp).id() != expected.id() {
            return Err(HostingError::WrongIdentity {
                found: format!(
                    "a blinded key for period {} of another identity",
                    period_slug(tp)
                ),
                master: OnionAddress::from(master).to_string(),
            });
        }
        keymgr
            .insert(
                kp,
                &BlindIdKeypairSpecifier::new(nick.clone(), tp),
                KeystoreSelector::Primary,
                true,
            )
            .map_err(keystore(format!(
                "insert ks_hs_blind_id+{}",
                period_slug(tp)
            )))?;
        keep.push(period_slug(tp));
    }
    let pattern = KeyPathPattern::Arti(format!("hss/{nick}/ks_hs_blind_id+*"));
    let mut removed = Vec::new();
    for entry in keymgr
        .list_matching(&pattern)
        .map_err(keystore("list blinded keys"))?
    {
        let path = entry.key_path().to_string();
        let slug = path.rsplit('+').next().unwrap_or_default().to_string();
        if !keep.contains(&slug) {
            keymgr
                .remove_entry(&entry)
                .map_err(keystore(format!("remove {path}")))?;
            removed.push(slug);
        }
    }
    Ok(removed)
}

/// The blinded keypairs for `periods`, computed from the identity secret (online mode).
pub fn blind_for_periods(
    identity: &HsIdKeypair,
    periods: &[TimePeriod],
) -> Result<Vec<(TimePeriod, HsBlindIdKeypair)>, HostingError> {
    periods
        .iter()
        .map(|tp| {
            identity
                .compute_blinded_key(*tp)
                .map(|(_, kp, _)| (*tp, kp))
                .map_err(|source| HostingError::Blinding {
                    period: period_slug(*tp),
                    source,
                })
        })
        .collect()
}

/// One of this node's current introduction points as Arti persisted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptRecord {
    /// The intro point relay.
    pub relay: RelayIds,
    /// Arti's local id for the intro point (64 hex characters; names its keys).
    pub lid: String,
}

#[derive(Deserialize)]
struct IptsFile {
    ipt_relays: Vec<IptRelayEntry>,
}

#[derive(Deserialize)]
struct IptRelayEntry {
    relay: RelayIds,
    ipts: Vec<IptEntry>,
}

#[derive(Deserialize)]
struct IptEntry {
    lid: String,
    #[serde(default)]
    is_current: bool,
}

/// Where Arti persists the intro points of the service.
pub fn ipts_file(state_dir: &Path, nick: &HsNickname) -> PathBuf {
    state_dir
        .join("hss")
        .join(nick.to_string())
        .join("ipts.json")
}

/// Where Arti persists the service's PoW state (the seeds it verifies, its suggested effort).
pub fn pow_state_file(state_dir: &Path, nick: &HsNickname) -> PathBuf {
    state_dir
        .join("hss")
        .join(nick.to_string())
        .join(crate::pow::arti_state::FILE_NAME)
}

/// Reads the current intro points from Arti's `ipts.json` (empty if the file does not exist
/// yet).
pub fn read_current_ipts(
    state_dir: &Path,
    nick: &HsNickname,
) -> Result<Vec<IptRecord>, HostingError> {
    let path = ipts_file(state_dir, nick);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(HostingError::IptState {
                path,
                problem: e.to_string(),
            })
        }
    };
    parse_ipts(&text).map_err(|problem| HostingError::IptState { path, problem })
}

/// Parses `ipts.json` text into the current intro points.
pub fn parse_ipts(text: &str) -> Result<Vec<IptRecord>, String> {
    let file: IptsFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(file
        .ipt_relays
        .into_iter()
        .flat_map(|r| {
            let relay = r.relay;
            r.ipts
                .into_iter()
                .filter(|i| i.is_current)
                .map(move |i| IptRecord {
                    relay: relay.clone(),
                    lid: i.lid,
                })
        })
        .collect())
}

/// The descriptor entry for one intro point: the relay's link specifiers and ntor key from the
/// network directory, and the public halves of the intro point's keys from the keystore.
pub fn intro_point_desc(
    keymgr: &KeyMgr,
    netdir: &tor_netdir::NetDir,
    nick: &HsNickname,
    ipt: &IptRecord,
) -> Result<IntroPointDesc, HostingError> {
    let fail = |problem: String| HostingError::IntroPoint {
        lid: ipt.lid.clone(),
        problem,
    };
    let path = |kind: &str| {
        ArtiPath::new(format!("hss/{nick}/ipts/{kind}+{}", ipt.lid))
            .map_err(|e| fail(format!("key path: {e}")))
    };
    let sid: HsIntroPtSessionIdKeypair = keymgr
        .get(&path("k_sid")?)
        .map_err(keystore("read k_sid"))?
        .ok_or_else(|| fail("k_sid missing from the keystore".into()))?;
    let ntor: HsSvcNtorKeypair = keymgr
        .get(&path("k_hss_ntor")?)
        .map_err(keystore("read k_hss_ntor"))?
        .ok_or_else(|| fail("k_hss_ntor missing from the keystore".into()))?;
    let relay = netdir
        .by_ids(&ipt.relay)
        .ok_or_else(|| fail("its relay is not in the current consensus".into()))?;
    let linkspecs = relay
        .linkspecs()
        .map_err(|e| fail(format!("link specifiers: {e}")))?;
    IntroPointDesc::builder()
        .link_specifiers(linkspecs)
        .ipt_kp_ntor(*relay.ntor_onion_key())
        .kp_hs_ipt_sid(HsIntroPtSessionIdKey::from(sid.as_ref().verifying_key()))
        .kp_hss_ntor(ntor.public().clone())
        .build()
        .map_err(|e| fail(format!("descriptor entry: {e}")))
}

/// The periods a node must hold blinded keys for: those the network publishes for, plus the
/// previous and next of the current one (clients near a boundary may use either).
pub fn wanted_periods(netdir: &tor_netdir::NetDir) -> Vec<TimePeriod> {
    let current = netdir.hs_time_period();
    let mut out: Vec<TimePeriod> = netdir
        .hs_all_time_periods()
        .iter()
        .map(|p| p.time_period())
        .collect();
    for tp in [current.prev(), Some(current), current.next()]
        .into_iter()
        .flatten()
    {
        if !out.contains(&tp) {
            out.push(tp);
        }
    }
    out.sort_by_key(|tp| tp.interval_num());
    out
}

/// Makes the keystore hold exactly the blinded keys of [`wanted_periods`] for the current
/// network directory, from `source`. Returns the periods it holds. Without the current
/// period's key no client can connect: that is an error; a neighbour's missing key is a
/// warning.
pub fn sync_for_netdir<R: tor_rtcompat::Runtime>(
    client: &arti_client::TorClient<R>,
    source: &crate::keys::KeySource,
    master: &OnionAddress,
) -> Result<Vec<TimePeriod>, HostingError> {
    let netdir = client
        .dirmgr()
        .map_err(|e| HostingError::NoNetDir(e.to_string()))?
        .timely_netdir()
        .map_err(|e| HostingError::NoNetDir(e.to_string()))?;
    let current = netdir.hs_time_period();
    let mut wanted = Vec::new();
    let mut periods = Vec::new();
    for tp in wanted_periods(&netdir) {
        match source.blinded(tp) {
            Ok(k) => {
                wanted.push((tp, k));
                periods.push(tp);
            }
            Err(e) if tp == current => return Err(HostingError::CurrentPeriodKey(e)),
            Err(e) => tracing::warn!(error = %e, "blinded key missing for a neighbouring period"),
        }
    }
    let keymgr = client
        .keymgr()
        .map_err(|e| HostingError::NoNetDir(format!("key manager: {e}")))?;
    let removed = sync_blinded_keys(keymgr, &nickname(), master.public_key(), wanted)?;
    tracing::info!(
        periods = ?periods.iter().map(|p| period_slug(*p)).collect::<Vec<_>>(),
        removed = ?removed,
        "blinded keys in the keystore"
    );
    Ok(periods)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_current_ipts_only() {
        let text = r#"{"ipt_relays":[
            {"relay":{"ed25519":"Wsl/wwxSVG8AGZLE+c5MNAC7oljsF7Q7GDCToRC9JNE","rsa":"96EBBA01BACAFDF8573BDFF822D1FFE3A0C947EF"},
             "planned_retirement":"T+19h","ipts":[{"lid":"aa","is_current":true},{"lid":"bb"}]},
            {"relay":{"rsa":"96EBBA01BACAFDF8573BDFF822D1FFE3A0C947EE"},"planned_retirement":"T+1h","ipts":[]}
        ],"stored":"2026-11-24T08:27:25Z"}"#;
        let ipts = parse_ipts(text).unwrap();
        assert_eq!(ipts.len(), 1);
        assert_eq!(ipts[0].lid, "aa");
        assert!(parse_ipts("{").is_err());
        assert!(parse_ipts("{\"ipt_relays\": 3}").is_err());
    }

    #[test]
    fn period_slugs_match_artis_key_paths() {
        // Arti's own test: TimePeriod::from_parts(1, 2, 3) is `ks_hs_blind_id+2_1_3`.
        assert_eq!(period_slug(TimePeriod::from_parts(1, 2, 3)), "2_1_3");
        assert_eq!(
            period_slug(TimePeriod::from_parts(1440, 20573, 43200)),
            "20573_1440_43200"
        );
    }
}
