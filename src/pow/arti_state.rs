//! Arti's PoW state file (`pow_manager.json` in the service's state directory): written with
//! the cluster's seeds before the service launches, read back for the suggested effort Arti
//! computed.
//!
//! Arti 0.47 (`tor-hsservice` `src/pow/v1.rs`, `PowManagerStateRecord`) loads the file at
//! launch and builds a verifier for every stored seed whose period's blinded key is in the
//! keystore. It rotates a period's seeds itself only once `next_expiration_time` is less than
//! 5 minutes away; we set it past our own next relaunch, so Arti never replaces our seeds with
//! random ones while the node works. It rewrites the file every few minutes (at the latest
//! every 5 minutes, its effort update period), with the suggested effort of its previous
//! update: that is where a node reads its own suggestion, at most one update late.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tor_hscrypto::pow::v1::{Effort, Seed};
use tor_hscrypto::time::TimePeriod;

use super::seeds::{PowKey, Schedule};
use super::PowError;

/// The file's name in the service's state directory.
pub const FILE_NAME: &str = "pow_manager.json";

/// The most a state file may hold (a few periods' seeds are a few KiB).
const MAX_FILE: u64 = 1 << 20;

/// How far past the next epoch's end Arti's own rotation is put off: our relaunch for that
/// epoch comes first (at the latest half a rotation into it).
const ARTI_ROTATION_MARGIN: Duration = Duration::from_secs(10 * 60);

/// Arti's record, field for field (`PowManagerStateRecord`).
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    seeds: Vec<(TimePeriod, SeedsForPeriod)>,
    #[serde(default)]
    suggested_effort: Effort,
}

/// Arti's `SeedsForTimePeriod`: the previous and current seed (current last), and when the
/// current one expires.
#[derive(Debug, Serialize, Deserialize)]
struct SeedsForPeriod {
    seeds: Vec<Seed>,
    next_expiration_time: SystemTime,
}

/// Writes the state Arti must load to verify `epoch`'s and the next epoch's seeds for every
/// period in `periods`, keeping the suggested effort the file already holds (a restart does
/// not reset it). Written to a temporary file and renamed, `0600`.
pub fn write(
    path: &Path,
    key: &PowKey,
    schedule: Schedule,
    epoch: u64,
    periods: &[TimePeriod],
) -> Result<(), PowError> {
    let effort = read_effort(path).ok().flatten().unwrap_or(0);
    let record = Record {
        seeds: periods
            .iter()
            .map(|&tp| {
                (
                    tp,
                    SeedsForPeriod {
                        seeds: vec![key.seed(tp, epoch), key.seed(tp, epoch + 1)],
                        next_expiration_time: schedule.expires(epoch + 1) + ARTI_ROTATION_MARGIN,
                    },
                )
            })
            .collect(),
        suggested_effort: Effort::from(effort),
    };
    let bad = |problem: String| PowError::StateFile {
        path: path.display().to_string(),
        problem,
    };
    let text = serde_json::to_vec_pretty(&record).map_err(|e| bad(e.to_string()))?;
    if let Some(dir) = path.parent() {
        // Private, as Arti's permission checks require of its state directories.
        crate::keys::ensure_dir(dir).map_err(|e| bad(format!("its directory: {e}")))?;
    }
    let tmp = path.with_extension("json.tmp");
    {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp).map_err(|e| bad(e.to_string()))?;
        f.write_all(&text).map_err(|e| bad(e.to_string()))?;
        f.sync_all().map_err(|e| bad(e.to_string()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| bad(e.to_string()))
}

/// The suggested effort Arti last stored (`None`: no file yet).
pub fn read_effort(path: &Path) -> Result<Option<u32>, PowError> {
    let bad = |problem: String| PowError::StateFile {
        path: path.display().to_string(),
        problem,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    if meta.len() > MAX_FILE {
        return Err(bad(format!("{} bytes, more than {MAX_FILE}", meta.len())));
    }
    let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    parse_effort(&text).map(Some).map_err(bad)
}

/// The suggested effort in a state file's bytes (the fuzz target's entry point).
pub fn parse_effort(bytes: &[u8]) -> Result<u32, String> {
    let record: Record = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(record.suggested_effort.into())
}

/// The seed heads (hex) a written file makes a node verify, per period: for `status`.
pub fn loaded_heads(
    key: &PowKey,
    epoch: u64,
    periods: &[TimePeriod],
) -> Vec<(TimePeriod, [String; 2])> {
    periods
        .iter()
        .map(|&tp| {
            (
                tp,
                [
                    super::seeds::head_hex(&key.seed(tp, epoch)),
                    super::seeds::head_hex(&key.seed(tp, epoch + 1)),
                ],
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    #[test]
    fn the_file_holds_both_seeds_per_period_in_arti_s_layout_and_keeps_the_effort() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hss/rustbalance").join(FILE_NAME);
        let key = PowKey::new(Zeroizing::new([4; 32]));
        let s = Schedule::new(Duration::from_secs(3600));
        let periods = [
            TimePeriod::from_parts(1440, 20573, 43200),
            TimePeriod::from_parts(1440, 20574, 43200),
        ];
        write(&path, &key, s, 500, &periods).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let entries = v["seeds"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        let (tp, seeds) = (&entries[0][0], &entries[0][1]);
        assert_eq!(tp["interval_num"], 20573);
        let back: TimePeriod = serde_json::from_value(tp.clone()).unwrap();
        assert_eq!(back, periods[0]);
        let stored: Vec<Seed> = serde_json::from_value(seeds["seeds"].clone()).unwrap();
        assert_eq!(
            stored,
            vec![key.seed(periods[0], 500), key.seed(periods[0], 501)]
        );
        let expires: SystemTime =
            serde_json::from_value(seeds["next_expiration_time"].clone()).unwrap();
        assert_eq!(expires, s.expires(501) + ARTI_ROTATION_MARGIN);
        assert_eq!(read_effort(&path).unwrap(), Some(0));

        // Arti stored an effort meanwhile: the next write keeps it.
        let mut v = v;
        v["suggested_effort"] = serde_json::json!(77);
        std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        write(&path, &key, s, 501, &periods).unwrap();
        assert_eq!(read_effort(&path).unwrap(), Some(77));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "mode {mode:o}");
            // Arti refuses to launch with a state directory others can read.
            let dir_mode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(dir_mode & 0o077, 0, "directory mode {dir_mode:o}");
        }
    }

    #[test]
    fn a_missing_file_is_no_effort_and_a_bad_one_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert_eq!(read_effort(&path).unwrap(), None);
        std::fs::write(&path, b"{\"seeds\": 5}").unwrap();
        let e = read_effort(&path).unwrap_err().to_string();
        assert!(e.contains(FILE_NAME), "{e}");
    }
}
