//! Reads a consensus document (ns or microdesc flavor, as C tor caches it) far enough to judge
//! readiness: which relays are listed, with which flags, and the voting interval it was made
//! with. Pure text parsing; unknown lines are ignored, nothing here panics on odd input.

use std::collections::BTreeMap;

use crate::plan::Role;

/// The facts of one consensus that readiness depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsensusSummary {
    /// `valid-after` as written (UTC, `YYYY-MM-DD HH:MM:SS`).
    pub valid_after: String,
    /// `fresh-until − valid-after`, in seconds: the voting interval the consensus was made with.
    pub voting_interval_secs: Option<i64>,
    /// Nickname → flags of every listed relay.
    pub relays: BTreeMap<String, Vec<String>>,
}

/// Parses the parts of a consensus readiness needs.
pub fn summarize(text: &str) -> ConsensusSummary {
    let mut out = ConsensusSummary::default();
    let mut fresh_until = None;
    let mut current: Option<String> = None;
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        match words.next() {
            Some("valid-after") => out.valid_after = words.collect::<Vec<_>>().join(" "),
            Some("fresh-until") => fresh_until = Some(words.collect::<Vec<_>>().join(" ")),
            Some("r") => {
                current = words.next().map(str::to_owned);
                if let Some(n) = &current {
                    out.relays.entry(n.clone()).or_default();
                }
            }
            Some("s") => {
                if let Some(n) = current.take() {
                    out.relays.insert(n, words.map(str::to_owned).collect());
                }
            }
            _ => {}
        }
    }
    if let (Some(a), Some(b)) = (
        parse_time(&out.valid_after),
        fresh_until.and_then(|f| parse_time(&f)),
    ) {
        out.voting_interval_secs = Some(b - a);
    }
    out
}

/// Seconds since the epoch of a `YYYY-MM-DD HH:MM:SS` UTC time, or `None` if malformed.
fn parse_time(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(' ')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if d.len() != 3 || t.len() != 3 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
}

/// The flags a relay of this role must carry for the tests to use it. (`Fast` and `Stable`
/// depend on measured bandwidth and uptime and come and go on a young network; the real proof of
/// usability is the sample onion service answering, checked after this.)
pub fn required_flags(role: Role) -> &'static [&'static str] {
    match role {
        Role::Exit => &["Exit", "Guard", "HSDir", "Running", "Valid"],
        Role::Authority | Role::Relay => &["Guard", "HSDir", "Running", "Valid"],
        Role::Client | Role::OnionService => &[],
    }
}

/// What is still missing for `expected` relays (name, role), or `None` if the consensus is
/// complete: every relay listed with its flags, made at the steady voting interval.
pub fn missing(
    summary: &ConsensusSummary,
    expected: &[(String, Role)],
    voting_interval_secs: i64,
) -> Option<String> {
    let mut problems = Vec::new();
    for (name, role) in expected {
        match summary.relays.get(name) {
            None => problems.push(format!("{name} not listed")),
            Some(flags) => {
                let lacking: Vec<&str> = required_flags(*role)
                    .iter()
                    .copied()
                    .filter(|f| !flags.iter().any(|g| g == f))
                    .collect();
                if !lacking.is_empty() {
                    problems.push(format!("{name} lacks {}", lacking.join(",")));
                }
            }
        }
    }
    if summary.voting_interval_secs != Some(voting_interval_secs) {
        problems.push(format!(
            "consensus voting interval is {:?} s, not yet the steady {voting_interval_secs} s",
            summary.voting_interval_secs
        ));
    }
    if problems.is_empty() {
        None
    } else {
        Some(format!(
            "consensus of {}: {}",
            summary.valid_after,
            problems.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "network-status-version 3 microdesc\n\
        valid-after 2026-11-24 08:00:00\n\
        fresh-until 2026-11-24 08:00:15\n\
        r auth0 lKx0 2026-11-24 07:59:50 127.0.0.1 16000 16001\n\
        m abc\n\
        s Authority Fast Guard HSDir Running Stable V2Dir Valid\n\
        r exit0 lKx1 2026-11-24 07:59:50 127.0.0.1 16010 16011\n\
        s Exit Fast Guard HSDir Running Stable V2Dir Valid\n\
        r relay0 lKx2 2026-11-24 07:59:50 127.0.0.1 16004 16005\n\
        s Fast Running Valid Exit\n";

    #[test]
    fn reads_relays_flags_and_interval() {
        let s = summarize(DOC);
        assert_eq!(s.voting_interval_secs, Some(15));
        assert_eq!(s.relays.len(), 3);
        assert!(s.relays["exit0"].contains(&"Exit".to_string()));
    }

    #[test]
    fn names_what_is_missing() {
        let s = summarize(DOC);
        let want = |n: &str, r| (n.to_string(), r);
        let ok = [want("auth0", Role::Authority), want("exit0", Role::Exit)];
        assert_eq!(missing(&s, &ok, 15), None);
        let m = missing(
            &s,
            &[want("relay0", Role::Relay), want("exit1", Role::Exit)],
            15,
        )
        .unwrap();
        assert!(m.contains("relay0 lacks Guard,HSDir"), "{m}");
        assert!(m.contains("exit1 not listed"), "{m}");
        assert!(missing(&s, &ok, 20)
            .unwrap()
            .contains("not yet the steady 20 s"));
    }

    #[test]
    fn garbage_and_times() {
        assert_eq!(
            summarize("r\ns\nvalid-after x\n\u{0}"),
            ConsensusSummary {
                valid_after: "x".into(),
                ..Default::default()
            }
        );
        assert_eq!(parse_time("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_time("2000-03-01 00:00:01"), Some(951_868_801));
        assert_eq!(parse_time("2000-03-01"), None);
    }
}
