//! The shape of a private network: which tor processes exist, their roles and ports, and the
//! configuration text each one gets (torrc) plus the Arti fragment for clients. Pure: no I/O, so
//! every rule here is unit-tested.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What a tor process does in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A v3 directory authority (also a relay, guard and HSDir).
    Authority,
    /// A non-exit relay (guard, middle, HSDir).
    Relay,
    /// An exit relay whose exit policy allows 127.0.0.0/8 only.
    Exit,
    /// The C-tor client tests fetch through (SocksPort + ControlPort).
    Client,
    /// The C-tor onion service in front of the sample target.
    OnionService,
}

impl Role {
    /// Whether this process is listed in the consensus.
    pub fn is_relay(self) -> bool {
        matches!(self, Role::Authority | Role::Relay | Role::Exit)
    }
}

/// Tunable shape of the network.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Number of directory authorities (≥ 1; 3 gives real voting).
    pub authorities: u16,
    /// Number of non-exit relays.
    pub relays: u16,
    /// Number of exit relays.
    pub exits: u16,
    /// First port; the network uses consecutive ports from here.
    pub base_port: u16,
    /// `V3AuthVotingInterval` once the network has a consensus, in seconds.
    pub voting_interval_secs: u32,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            authorities: 3,
            relays: 3,
            exits: 2,
            base_port: 16000,
            voting_interval_secs: 15,
        }
    }
}

impl Shape {
    /// The time-period length C tor uses under `TestingTorNetwork` (one shared-random run:
    /// 24 voting intervals), in minutes. Arti must be told the same through `hsdir_interval`.
    pub fn hsdir_interval_minutes(&self) -> u32 {
        24 * self.voting_interval_secs / 60
    }

    /// Checks the shape against what C tor and Arti accept.
    pub fn validate(&self) -> Result<(), String> {
        if self.authorities == 0 {
            return Err("authorities: at least 1 directory authority is needed".into());
        }
        if self.exits == 0 {
            return Err("exits: at least 1 exit is needed to reach 127.0.0.1 targets".into());
        }
        // Arti bounds the `hsdir_interval` parameter to 5..=14400 minutes, and C tor derives the
        // period from the voting interval: both must agree, so the interval must give ≥ 5 min
        // in whole minutes.
        if !(24 * self.voting_interval_secs).is_multiple_of(60) || self.hsdir_interval_minutes() < 5
        {
            return Err(format!(
                "voting_interval_secs = {}: 24 × interval must be a whole number of minutes ≥ 5 \
                 (Arti's hsdir_interval bounds); use 15, 20, 25, 30, …",
                self.voting_interval_secs
            ));
        }
        Ok(())
    }
}

/// One tor process of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    /// Nickname and directory name (`auth0`, `relay1`, `exit0`, `client`, `hs`).
    pub name: String,
    /// What it does.
    pub role: Role,
    /// ORPort (relays only).
    pub or_port: Option<u16>,
    /// DirPort (relays only).
    pub dir_port: Option<u16>,
    /// SocksPort (client only).
    pub socks_port: Option<u16>,
    /// ControlPort (client only).
    pub control_port: Option<u16>,
}

/// The whole network before anything runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The shape it was made from.
    pub shape: Shape,
    /// Every tor process, authorities first.
    pub nodes: Vec<NodePlan>,
    /// Port of the sample HTTP target on 127.0.0.1.
    pub target_port: u16,
}

impl Plan {
    /// Lays out names and ports for a shape.
    pub fn new(shape: Shape) -> Result<Plan, crate::TestnetError> {
        let relays = shape.authorities + shape.relays + shape.exits;
        let needed = relays * 2 + 3;
        if u32::from(shape.base_port) + u32::from(needed) > 65535 || shape.base_port < 1024 {
            return Err(crate::TestnetError::PortRange {
                base: shape.base_port,
                needed,
            });
        }
        let mut next = shape.base_port;
        let mut take = || {
            let p = next;
            next += 1;
            p
        };
        let mut nodes = Vec::new();
        let groups = [
            (Role::Authority, "auth", shape.authorities),
            (Role::Relay, "relay", shape.relays),
            (Role::Exit, "exit", shape.exits),
        ];
        for (role, prefix, count) in groups {
            for i in 0..count {
                nodes.push(NodePlan {
                    name: format!("{prefix}{i}"),
                    role,
                    or_port: Some(take()),
                    dir_port: Some(take()),
                    socks_port: None,
                    control_port: None,
                });
            }
        }
        nodes.push(NodePlan {
            name: "client".into(),
            role: Role::Client,
            or_port: None,
            dir_port: None,
            socks_port: Some(take()),
            control_port: Some(take()),
        });
        nodes.push(NodePlan {
            name: "hs".into(),
            role: Role::OnionService,
            or_port: None,
            dir_port: None,
            socks_port: None,
            control_port: None,
        });
        let target_port = take();
        Ok(Plan {
            shape,
            nodes,
            target_port,
        })
    }

    /// Every port the plan binds, with who binds it (for the "port in use" check).
    pub fn ports(&self) -> Vec<(u16, String)> {
        let mut out = Vec::new();
        for n in &self.nodes {
            for (p, what) in [
                (n.or_port, "ORPort"),
                (n.dir_port, "DirPort"),
                (n.socks_port, "SocksPort"),
                (n.control_port, "ControlPort"),
            ] {
                if let Some(p) = p {
                    out.push((p, format!("{} {what}", n.name)));
                }
            }
        }
        out.push((self.target_port, "sample HTTP target".into()));
        out
    }

    /// The relays (authorities, relays, exits) in plan order.
    pub fn relays(&self) -> impl Iterator<Item = &NodePlan> {
        self.nodes.iter().filter(|n| n.role.is_relay())
    }
}

/// Identity facts of an authority, known once its keys exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorityIds {
    /// Nickname.
    pub name: String,
    /// ORPort.
    pub or_port: u16,
    /// DirPort.
    pub dir_port: u16,
    /// v3 signing identity (hex), from `authority_certificate`.
    pub v3ident: String,
    /// Relay RSA identity fingerprint (hex).
    pub fingerprint: String,
}

/// Identity facts of any relay, for Arti's fallback list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayIds {
    /// Nickname.
    pub name: String,
    /// ORPort.
    pub or_port: u16,
    /// RSA identity fingerprint (hex).
    pub rsa_identity: String,
    /// Ed25519 identity (unpadded base64).
    pub ed_identity: String,
}

/// The `DirAuthority` lines every node carries.
pub fn dir_authority_lines(auths: &[AuthorityIds]) -> String {
    let mut s = String::new();
    for a in auths {
        let _ = writeln!(
            s,
            "DirAuthority {} orport={} no-v2 v3ident={} 127.0.0.1:{} {}",
            a.name, a.or_port, a.v3ident, a.dir_port, a.fingerprint
        );
    }
    s
}

/// The torrc of one node. `data_dir` is the node's own directory; `target_port` is used by the
/// onion service only.
pub fn torrc(plan: &Plan, node: &NodePlan, data_dir: &Path, auths: &[AuthorityIds]) -> String {
    let d = data_dir.display();
    let vi = plan.shape.voting_interval_secs;
    let mut s = format!(
        "# Generated by RustBalance's testing/testnet for node {name}. Do not edit.\n\
         TestingTorNetwork 1\n\
         DataDirectory {d}\n\
         RunAsDaemon 1\n\
         PidFile {d}/tor.pid\n\
         Log notice file {d}/notice.log\n\
         Nickname {name}\n\
         ContactInfo {name}@testnet.invalid\n\
         ShutdownWaitLength 0\n\
         AssumeReachable 1\n\
         PathsNeededToBuildCircuits 0.25\n\
         TestingDirAuthVoteExit {exits}\n\
         TestingDirAuthVoteGuard *\n\
         TestingDirAuthVoteHSDir *\n\
         TestingMinExitFlagThreshold 0\n\
         TestingMinFastFlagThreshold 0\n\
         V3AuthNIntervalsValid 2\n\
         ClientUseIPv6 0\n",
        name = node.name,
        exits = plan
            .nodes
            .iter()
            .filter(|n| n.role == Role::Exit)
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
    );
    s.push_str(&dir_authority_lines(auths));
    if node.role.is_relay() {
        let or = node.or_port.unwrap_or_default();
        let dir = node.dir_port.unwrap_or_default();
        let _ = write!(
            s,
            "SocksPort 0\n\
             Address 127.0.0.1\n\
             ORPort 127.0.0.1:{or}\n\
             DirPort 127.0.0.1:{dir}\n"
        );
    }
    match node.role {
        Role::Authority => {
            let _ = write!(
                s,
                "AuthoritativeDirectory 1\n\
                 V3AuthoritativeDirectory 1\n\
                 ExitRelay 0\n\
                 ExitPolicy reject *:*\n\
                 TestingV3AuthInitialVotingInterval 5\n\
                 TestingV3AuthInitialVoteDelay 2\n\
                 TestingV3AuthInitialDistDelay 2\n\
                 TestingV3AuthVotingStartOffset 0\n\
                 V3AuthVotingInterval {vi}\n\
                 V3AuthVoteDelay 2\n\
                 V3AuthDistDelay 2\n\
                 ConsensusParams hsdir_interval={}\n",
                plan.shape.hsdir_interval_minutes()
            );
        }
        Role::Relay => s.push_str("ExitRelay 0\nExitPolicy reject *:*\n"),
        Role::Exit => s.push_str(
            "ExitRelay 1\n\
             ExitPolicyRejectPrivate 0\n\
             ExitPolicy accept 127.0.0.0/8:*\n\
             ExitPolicy reject *:*\n",
        ),
        Role::Client => {
            let _ = write!(
                s,
                "SocksPort 127.0.0.1:{} ExtendedErrors\n\
                 ControlPort 127.0.0.1:{}\n\
                 CookieAuthentication 1\n",
                node.socks_port.unwrap_or_default(),
                node.control_port.unwrap_or_default()
            );
        }
        Role::OnionService => {
            let _ = write!(
                s,
                "SocksPort 0\n\
                 HiddenServiceDir {d}/hs_service\n\
                 HiddenServicePort 80 127.0.0.1:{}\n",
                plan.target_port
            );
        }
    }
    s
}

/// The Arti configuration fragment (TOML) that points an Arti client at this network.
pub fn arti_fragment(
    plan: &Plan,
    auths: &[AuthorityIds],
    relays: &[RelayIds],
    dir: &Path,
) -> String {
    let mut s = format!(
        "# Arti configuration fragment for the private test network in {}.\n\
         # Generated by RustBalance's testing/testnet; valid only while that network runs.\n\n\
         [tor_network]\nfallback_caches = [\n",
        dir.display()
    );
    for r in relays {
        let _ = writeln!(
            s,
            "  {{ rsa_identity = \"{}\", ed_identity = \"{}\", orports = [\"127.0.0.1:{}\"] }},",
            r.rsa_identity, r.ed_identity, r.or_port
        );
    }
    s.push_str("]\n\n[tor_network.authorities]\nv3idents = [\n");
    for a in auths {
        let _ = writeln!(s, "  \"{}\",", a.v3ident);
    }
    s.push_str("]\n");
    let dirports: Vec<String> = auths
        .iter()
        .map(|a| format!("[\"127.0.0.1:{}\"]", a.dir_port))
        .collect();
    for key in ["uploads", "downloads", "votes"] {
        let _ = writeln!(s, "{key} = [{}]", dirports.join(", "));
    }
    let _ = write!(
        s,
        "\n[address_filter]\nallow_local_addrs = true\n\n\
         [path_rules]\n\
         # Every relay is on 127.0.0.1: do not treat them as one family.\n\
         ipv4_subnet_family_prefix = 33\n\
         ipv6_subnet_family_prefix = 129\n\n\
         [override_net_params]\n\
         # C tor under TestingTorNetwork uses a time period of 24 voting intervals ({} s).\n\
         hsdir_interval = {}\n\
         # Circuits on 127.0.0.1 build in milliseconds, so Arti learns a build timeout of a few\n\
         # ms (floor 10 ms) and gives a rendezvous circuit 2/3 of it: a burst of new circuits\n\
         # that slows building by CPU alone then times out. On the real network the learned\n\
         # timeout is seconds; this floor gives loopback the same margin.\n\
         cbtmintimeout = {}\n",
        plan.shape.voting_interval_secs,
        plan.shape.hsdir_interval_minutes(),
        ARTI_CBT_MIN_TIMEOUT_MS
    );
    s
}

/// The floor (ms) on Arti's learned circuit-build timeout in the fragment (`cbtmintimeout`).
/// Measured (benches/data_path.rs, docs/PERFORMANCE.md): without it about a third of a burst
/// of 100 new rendezvous circuits failed on both Arti services, with 2000 none did.
pub const ARTI_CBT_MIN_TIMEOUT_MS: u32 = 2000;

/// Where each node's files live inside the network directory.
pub fn node_dir(root: &Path, node: &NodePlan) -> PathBuf {
    root.join(&node.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auths() -> Vec<AuthorityIds> {
        vec![AuthorityIds {
            name: "auth0".into(),
            or_port: 16000,
            dir_port: 16001,
            v3ident: "AA".repeat(20),
            fingerprint: "BB".repeat(20),
        }]
    }

    #[test]
    fn default_plan_has_the_issue_shape_and_distinct_ports() {
        let plan = Plan::new(Shape::default()).unwrap();
        let count = |r: Role| plan.nodes.iter().filter(|n| n.role == r).count();
        assert_eq!(count(Role::Authority), 3);
        assert_eq!(count(Role::Relay) + count(Role::Exit), 5);
        assert_eq!(count(Role::Exit), 2);
        assert_eq!(count(Role::Client), 1);
        assert_eq!(count(Role::OnionService), 1);
        let mut ports: Vec<u16> = plan.ports().into_iter().map(|(p, _)| p).collect();
        let n = ports.len();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), n, "ports must be distinct");
        assert_eq!(n, 8 * 2 + 3);
    }

    #[test]
    fn port_range_and_shape_are_checked() {
        let shape = Shape {
            base_port: 65530,
            ..Shape::default()
        };
        assert!(matches!(
            Plan::new(shape),
            Err(crate::TestnetError::PortRange { base: 65530, .. })
        ));
        let bad = Shape {
            voting_interval_secs: 10,
            ..Shape::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.contains("voting_interval_secs = 10"), "{err}");
        assert!(Shape::default().validate().is_ok());
        assert_eq!(Shape::default().hsdir_interval_minutes(), 6);
    }

    #[test]
    fn exits_reach_loopback_only_and_authorities_announce_the_period() {
        let plan = Plan::new(Shape::default()).unwrap();
        let exit = plan.nodes.iter().find(|n| n.role == Role::Exit).unwrap();
        let rc = torrc(&plan, exit, Path::new("/x/exit0"), &auths());
        assert!(rc.contains("ExitPolicy accept 127.0.0.0/8:*\nExitPolicy reject *:*\n"));
        assert!(rc.contains("DirAuthority auth0 orport=16000 no-v2 v3ident=AAAA"));
        let auth = &plan.nodes[0];
        let rc = torrc(&plan, auth, Path::new("/x/auth0"), &auths());
        assert!(rc.contains("V3AuthVotingInterval 15\n"));
        assert!(rc.contains("ConsensusParams hsdir_interval=6\n"));
        let relay = plan.nodes.iter().find(|n| n.role == Role::Relay).unwrap();
        let rc = torrc(&plan, relay, Path::new("/x/relay0"), &auths());
        assert!(rc.contains("ExitPolicy reject *:*") && !rc.contains("accept"));
        // Only the real exits get the Exit flag voted for them.
        assert!(rc.contains("TestingDirAuthVoteExit exit0,exit1\n"));
        let hs = plan
            .nodes
            .iter()
            .find(|n| n.role == Role::OnionService)
            .unwrap();
        let rc = torrc(&plan, hs, Path::new("/x/hs"), &auths());
        assert!(rc.contains(&format!(
            "HiddenServicePort 80 127.0.0.1:{}",
            plan.target_port
        )));
    }

    #[test]
    fn arti_fragment_is_valid_toml_with_the_network_facts() {
        let plan = Plan::new(Shape::default()).unwrap();
        let relays = vec![RelayIds {
            name: "auth0".into(),
            or_port: 16000,
            rsa_identity: "BB".repeat(20),
            ed_identity: "Wsl/wwxSVG8AGZLE+c5MNAC7oljsF7Q7GDCToRC9JNE".into(),
        }];
        let text = arti_fragment(&plan, &auths(), &relays, Path::new("/x"));
        let v: toml::Value = toml::from_str(&text).expect("fragment parses");
        assert_eq!(
            v["override_net_params"]["hsdir_interval"].as_integer(),
            Some(6)
        );
        assert_eq!(
            v["override_net_params"]["cbtmintimeout"].as_integer(),
            Some(2000)
        );
        assert_eq!(
            v["path_rules"]["ipv4_subnet_family_prefix"].as_integer(),
            Some(33)
        );
        assert_eq!(
            v["address_filter"]["allow_local_addrs"].as_bool(),
            Some(true)
        );
        let fb = v["tor_network"]["fallback_caches"].as_array().unwrap();
        assert_eq!(fb[0]["orports"][0].as_str(), Some("127.0.0.1:16000"));
        let auth = &v["tor_network"]["authorities"];
        assert_eq!(auth["v3idents"][0].as_str(), Some("AA".repeat(20).as_str()));
        assert_eq!(auth["uploads"][0][0].as_str(), Some("127.0.0.1:16001"));
    }
}
