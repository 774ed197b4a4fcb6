use super::*;

/// A scratch directory with a key file and the Arti fragment the example config names.
fn base() -> PathBuf {
    let d = std::env::temp_dir().join(format!("rb-config-{}", std::process::id()));
    std::fs::create_dir_all(d.join("blinded")).unwrap();
    std::fs::write(d.join("hs_ed25519_secret_key"), b"x").unwrap();
    std::fs::write(d.join("arti.toml"), b"").unwrap();
    std::fs::write(d.join("mesh.key"), b"x").unwrap();
    std::fs::write(d.join("cluster.token"), b"x").unwrap();
    d
}

const ADDR: &str = "coaay4girgmvjbmaw6tlsbq7cmxpvwpnew5vbglx4cor2r5xpqhcdoyd.onion";

fn minimal() -> String {
    format!(
        "[node]\nid = \"node-a\"\n[master]\nonion_address = \"{ADDR}\"\nkey = \"hs_ed25519_secret_key\"\n\
         [target]\naddress = \"127.0.0.1:8080\"\n[tor]\nstate_dir = \"state\"\ncache_dir = \"cache\"\n"
    )
}

fn err(text: &str) -> String {
    Config::from_toml(text, &base()).unwrap_err().to_string()
}

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let b = base();
    let c = Config::from_toml(&minimal(), &b).unwrap();
    assert_eq!(c.node.priority, 100);
    assert_eq!(
        c.master.keys,
        MasterKeys::Identity(b.join("hs_ed25519_secret_key"))
    );
    assert_eq!(
        c.target.address,
        TargetAddr::Tcp {
            host: "127.0.0.1".into(),
            port: 8080
        }
    );
    assert_eq!(c.target.virtual_ports, vec![80]);
    assert_eq!(c.target.connect_timeout, Duration::from_secs(30));
    assert_eq!(c.target.idle_timeout, Duration::from_secs(300));
    assert_eq!(c.target.max_connections, 1024);
    assert_eq!(c.target.health.kind, ProbeKind::Tcp);
    assert_eq!(c.target.health.interval, Duration::from_secs(5));
    assert_eq!(c.publish.intro_points, 3);
    assert_eq!(c.publish.republish_interval, Duration::from_secs(3600));
    assert_eq!(c.publish.min_republish_gap, Duration::from_secs(1));
    assert_eq!(c.publish.descriptor_lifetime, Duration::from_secs(3 * 3600));
    assert_eq!(c.publish.max_clock_skew, Duration::from_secs(300));
    assert_eq!(c.tor.state_dir, b.join("state"));
    assert_eq!(c.status.listen, "127.0.0.1:9191".parse().unwrap());
    assert_eq!(c.mesh, None, "no [mesh] section: single-node mode");
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let e = err(&format!("{}[publish]\nintro_pionts = 5\n", minimal()));
    assert!(e.contains("unknown field `intro_pionts`"), "{e}");
    let e = err(&format!("{}[surprise]\n", minimal()));
    assert!(e.contains("unknown field `surprise`"), "{e}");
}

#[test]
fn each_rule_names_its_key_and_value() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "id = \"node-a\"",
            "id = \"bad id!\"",
            "node.id = \"bad id!\"",
        ),
        (ADDR, "abc.onion", "master.onion_address = \"abc.onion\""),
        (
            "key = \"hs_ed25519_secret_key\"",
            "key = \"nope\"",
            "master.key = ",
        ),
        (
            "key = \"hs_ed25519_secret_key\"",
            "blinded_keys = \"nope\"",
            "master.blinded_keys = ",
        ),
        (
            "key = \"hs_ed25519_secret_key\"",
            "",
            "set master.key (identity secret) or master.blinded_keys",
        ),
        (
            "key = \"hs_ed25519_secret_key\"",
            "key = \"hs_ed25519_secret_key\"\nblinded_keys = \"blinded\"",
            "not both",
        ),
        (
            "address = \"127.0.0.1:8080\"",
            "address = \"127.0.0.1\"",
            "target.address = (not shown): must be host:port",
        ),
        (
            "address = \"127.0.0.1:8080\"",
            "address = \"127.0.0.1:0\"",
            "the port must be a number from 1 to 65535",
        ),
        (
            "address = \"127.0.0.1:8080\"",
            "address = \"zzz.onion:80\"",
            "target.address = (not shown): not a valid v3 onion address",
        ),
        (
            "address = \"127.0.0.1:8080\"",
            "address = \"127.0.0.1:8080\"\nvirtual_ports = []",
            "target.virtual_ports = []",
        ),
        (
            "address = \"127.0.0.1:8080\"",
            "address = \"127.0.0.1:8080\"\nconnect_timeout = \"soon\"",
            "target.connect_timeout = \"soon\": not a duration",
        ),
        (
            "address = \"127.0.0.1:8080\"",
            "address = \"127.0.0.1:8080\"\nidle_timeout = \"0s\"",
            "target.idle_timeout = \"0s\": must be between",
        ),
        (
            "address = \"127.0.0.1:8080\"",
            "address = \"127.0.0.1:8080\"\nmax_connections = 0",
            "target.max_connections = 0",
        ),
        (
            "address = \"127.0.0.1:8080\"",
            "address = \"127.0.0.1:8080\"\n[target.health]\nkind = \"ping\"",
            "target.health.kind = \"ping\"",
        ),
        (
            "address = \"127.0.0.1:8080\"",
            "address = \"127.0.0.1:8080\"\n[target.health]\nkind = \"http\"\npath = \"x\"",
            "target.health.path = \"x\"",
        ),
        (
            "address = \"127.0.0.1:8080\"",
            "address = \"127.0.0.1:8080\"\n[target.health]\ninterval = \"2s\"\ntimeout = \"3s\"",
            "target.health.timeout = \"3s\": must not exceed",
        ),
        (
            "address = \"127.0.0.1:8080\"",
            "address = \"127.0.0.1:8080\"\n[target.health]\nfail_after = 0",
            "target.health.fail_after = 0",
        ),
        (
            "cache_dir = \"cache\"",
            "cache_dir = \"cache\"\narti_config = \"missing.toml\"",
            "tor.arti_config = ",
        ),
    ];
    for (from, to, want) in cases {
        let text = minimal().replacen(from, to, 1);
        let e = err(&text);
        assert!(e.contains(want), "{to:?}: got {e:?}, want {want:?}");
    }
    let publish = |body: &str| err(&format!("{}[publish]\n{body}\n", minimal()));
    assert!(
        publish("intro_points = 21").contains("publish.intro_points = 21: must be from 3 to 20")
    );
    assert!(publish("intro_points = 2").contains("publish.intro_points = 2"));
    assert!(publish("republish_interval = \"4h\"")
        .contains("must be shorter than publish.descriptor_lifetime"));
    assert!(
        publish("descriptor_lifetime = \"13h\"").contains("publish.descriptor_lifetime = \"13h\"")
    );
    assert!(publish("min_republish_gap = \"2h\"").contains("publish.min_republish_gap = \"2h\""));
    assert!(publish("max_clock_skew = \"2h\"").contains("publish.max_clock_skew = \"2h\""));
    assert!(publish("max_clock_skew = \"soon\"").contains("publish.max_clock_skew = \"soon\""));
    let status = err(&format!("{}[status]\nlisten = \"localhost\"\n", minimal()));
    assert!(status.contains("status.listen = \"localhost\""), "{status}");
    let remote = err(&format!(
        "{}[status]\nlisten = \"0.0.0.0:9191\"\n",
        minimal()
    ));
    assert!(
        remote.contains("status.listen = \"0.0.0.0:9191\": not a loopback address")
            && remote.contains("status.access_token_file"),
        "{remote}"
    );
    let missing = err(&format!(
        "{}[status]\nlisten = \"0.0.0.0:9191\"\naccess_token_file = \"nope.token\"\n",
        minimal()
    ));
    assert!(missing.contains("status.access_token_file"), "{missing}");
    let ok = Config::from_toml(
        &format!(
            "{}[status]\nlisten = \"0.0.0.0:9191\"\naccess_token_file = \"cluster.token\"\n",
            minimal()
        ),
        &base(),
    )
    .unwrap();
    assert_eq!(
        ok.status.access_token_file,
        Some(base().join("cluster.token"))
    );
}

#[test]
fn target_addresses_are_never_echoed() {
    let secret = "supersecretbackend.example:99999";
    let e = err(&minimal().replace("127.0.0.1:8080", secret));
    assert!(!e.contains("supersecret"), "{e}");
    let c = Config::from_toml(
        &minimal().replace("127.0.0.1:8080", "backend.internal:8080"),
        &base(),
    )
    .unwrap();
    assert!(!format!("{c:?}").contains("backend.internal"));
}

#[test]
fn a_toml_syntax_error_on_the_target_line_does_not_echo_the_target() {
    // toml's own message quotes the offending line; ours gives its position only.
    for broken in [
        "address = \"supersecretbackend.example:8080",
        "address = \"supersecretbackend.example:8080\" junk",
        "address = 'supersecretbackend.example:8080\\q\"",
    ] {
        let text = minimal().replace("address = \"127.0.0.1:8080\"", broken);
        let e = err(&text);
        assert!(!e.contains("supersecret"), "{e}");
        assert!(e.contains("line 7, column"), "the position is given: {e}");
    }
    // A type error names the key (from the line), not the value.
    let e = err(&minimal().replace("id = \"node-a\"", "id = 5"));
    assert!(e.contains("`node.id`"), "{e}");
}

#[test]
fn an_onion_target_with_a_trailing_dot_is_an_onion_not_a_dns_name() {
    let c = Config::from_toml(
        &minimal().replace("127.0.0.1:8080", &format!("{ADDR}.:80")),
        &base(),
    )
    .unwrap();
    assert!(matches!(
        c.target.address,
        TargetAddr::Onion { port: 80, .. }
    ));
    // A bad onion with a dot is refused as an onion, not resolved.
    let e = err(&minimal().replace("127.0.0.1:8080", "abc.onion.:80"));
    assert!(e.contains("not a valid v3 onion address"), "{e}");
}

#[test]
fn onion_targets_and_offline_master_parse() {
    let text = minimal()
        .replace("127.0.0.1:8080", &format!("{}:8080", ADDR.to_uppercase()))
        .replace(
            "key = \"hs_ed25519_secret_key\"",
            "blinded_keys = \"blinded\"",
        );
    let c = Config::from_toml(&text, &base()).unwrap();
    assert!(matches!(
        c.target.address,
        TargetAddr::Onion { port: 8080, .. }
    ));
    assert_eq!(
        c.master.keys,
        MasterKeys::BlindedDir(base().join("blinded"))
    );
}

/// docs/CONFIG.md's full example must be a valid configuration: the docs cannot drift.
#[test]
fn the_documented_example_is_valid() {
    let doc = include_str!("../../docs/CONFIG.md");
    let start = doc
        .find("```toml\n")
        .expect("CONFIG.md has a ```toml example")
        + 8;
    let len = doc[start..].find("```").unwrap();
    let example = &doc[start..start + len];
    let c =
        Config::from_toml(example, &base()).unwrap_or_else(|e| panic!("CONFIG.md example: {e}"));
    assert_eq!(c.node.id, "node-a");
    assert!(matches!(
        c.target.health.kind,
        ProbeKind::Http {
            expect_status: 200,
            ..
        }
    ));
    let mesh = c.mesh.expect("CONFIG.md example has a [mesh] section");
    assert_eq!(mesh.seeds.len(), 1);
    assert_eq!(mesh.election, crate::election::ElectionConfig::default());
    // Every key the example uses is described in a table row of CONFIG.md.
    let mut section = String::new();
    // Commented-out alternatives (`# key = …`) must be documented too.
    for line in example
        .lines()
        .map(|l| l.trim().trim_start_matches('#').trim())
    {
        if let Some(s) = line.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((k, _)) = line.split_once('=').filter(|(k, _)| !k.contains(' ')) {
            let key = format!("`{section}.{}`", k.trim());
            assert!(doc.contains(&key), "CONFIG.md does not describe {key}");
        }
    }
}

/// Two valid WireGuard public keys (any 32 non-zero bytes are accepted).
const KEY_A: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const KEY_B: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

/// `minimal()` plus a `[mesh]` section with only the required keys, then `extra` lines.
fn with_mesh(extra: &str) -> String {
    format!(
        "{}[mesh]\nlisten = \"192.0.2.10:51820\"\nprivate_key_file = \"mesh.key\"\n\
         cluster_token_file = \"cluster.token\"\n{extra}\n",
        minimal()
    )
}

fn public_key(text: &str) -> crate::mesh::MeshPublicKey {
    crate::mesh::MeshPublicKey::from_base64(text).unwrap()
}

#[test]
fn mesh_section_gets_the_documented_defaults() {
    let b = base();
    let m = Config::from_toml(&with_mesh(""), &b).unwrap().mesh.unwrap();
    let listen: SocketAddr = "192.0.2.10:51820".parse().unwrap();
    assert_eq!(m.listen, listen);
    assert_eq!(m.endpoint, listen, "endpoint defaults to listen");
    assert_eq!(m.private_key_file, b.join("mesh.key"));
    assert_eq!(m.cluster_token_file, b.join("cluster.token"));
    assert!(m.seeds.is_empty());
    assert_eq!(m.max_clock_skew, Duration::from_secs(5));
    assert_eq!(m.probe_period, Duration::from_secs(1));
    assert_eq!(m.probe_timeout, Duration::from_millis(500));
    assert_eq!(m.suspect_timeout, Duration::from_secs(2));
    assert_eq!(m.state_interval, Duration::from_secs(1));
    assert_eq!(
        m.election,
        crate::election::ElectionConfig::new(
            Duration::from_secs(6),
            Duration::from_secs(5),
            Duration::from_secs(10)
        )
        .unwrap()
    );
    assert_eq!(m.election, crate::election::ElectionConfig::default());
}

#[test]
fn full_mesh_section_parses_to_typed_values() {
    let b = base();
    let token = b.join("cluster.token");
    let text = format!(
        "{}[mesh]\n\
         listen = \"0.0.0.0:51820\"\n\
         endpoint = \"198.51.100.7:51821\"\n\
         private_key_file = \"mesh.key\"\n\
         cluster_token_file = {:?}\n\
         seeds = [\n\
           {{ public_key = \"{KEY_A}\", endpoint = \"192.0.2.1:51820\" }},\n\
           {{ public_key = \"{KEY_B}\", endpoint = \"[2001:db8::1]:51820\" }},\n\
         ]\n\
         max_clock_skew = \"2s\"\n\
         probe_period = \"2s\"\n\
         probe_timeout = \"300ms\"\n\
         suspect_timeout = \"10s\"\n\
         state_interval = \"3s\"\n\
         lease_duration = \"9s\"\n\
         handback_after = \"0s\"\n",
        minimal(),
        token.display().to_string()
    );
    let m = Config::from_toml(&text, &b).unwrap().mesh.unwrap();
    let want = MeshConfig {
        listen: "0.0.0.0:51820".parse().unwrap(),
        endpoint: "198.51.100.7:51821".parse().unwrap(),
        private_key_file: b.join("mesh.key"),
        cluster_token_file: token,
        seeds: vec![
            SeedConfig {
                public_key: public_key(KEY_A),
                endpoint: "192.0.2.1:51820".parse().unwrap(),
            },
            SeedConfig {
                public_key: public_key(KEY_B),
                endpoint: "[2001:db8::1]:51820".parse().unwrap(),
            },
        ],
        max_clock_skew: Duration::from_secs(2),
        probe_period: Duration::from_secs(2),
        probe_timeout: Duration::from_millis(300),
        suspect_timeout: Duration::from_secs(10),
        state_interval: Duration::from_secs(3),
        election: crate::election::ElectionConfig::new(
            Duration::from_secs(9),
            Duration::from_secs(2),
            Duration::ZERO,
        )
        .unwrap(),
    };
    assert_eq!(m, want);
}

#[test]
fn mesh_rules_name_their_key_and_value() {
    let seeds = |entries: &str| format!("seeds = [{entries}]");
    let cases: Vec<(String, &str)> = vec![
        (
            "probe_periodd = \"1s\"".into(),
            "unknown field `probe_periodd`",
        ),
        (
            seeds(&format!(
                "{{ public_key = \"{KEY_A}\", endpoint = \"192.0.2.1:51820\", name = \"a\" }}"
            )),
            "unknown field `name`",
        ),
        (
            seeds(&format!(
                "{{ public_key = \"{KEY_A}\", endpoint = \"192.0.2.1:51820\" }}, \
                 {{ public_key = \"nope\", endpoint = \"192.0.2.2:51820\" }}"
            )),
            "mesh.seeds = [1].public_key = \"nope\": WireGuard public key",
        ),
        (
            seeds(&format!(
                "{{ public_key = \"{KEY_A}\", endpoint = \"192.0.2.1:51820\" }}, \
                 {{ public_key = \"{KEY_B}\", endpoint = \"192.0.2.2:51820\" }}, \
                 {{ public_key = \"{KEY_A}\", endpoint = \"192.0.2.3:51820\" }}"
            )),
            "mesh.seeds = [2].public_key",
        ),
        (
            seeds(&format!(
                "{{ public_key = \"{KEY_A}\", endpoint = \"0.0.0.0:51820\" }}"
            )),
            "mesh.seeds = [0].endpoint = \"0.0.0.0:51820\"",
        ),
        (
            seeds(&format!(
                "{{ public_key = \"{KEY_A}\", endpoint = \"192.0.2.1:0\" }}"
            )),
            "mesh.seeds = [0].endpoint = \"192.0.2.1:0\"",
        ),
        (
            seeds(&format!(
                "{{ public_key = \"{KEY_A}\", endpoint = \"seed.example:51820\" }}"
            )),
            "mesh.seeds = [0].endpoint = \"seed.example:51820\": must be IP:port",
        ),
        (
            "endpoint = \"[::]:51820\"".into(),
            "mesh.endpoint = \"[::]:51820\"",
        ),
        (
            "probe_timeout = \"1s\"".into(),
            "mesh.probe_timeout = \"1s\": must be shorter than mesh.probe_period",
        ),
        (
            "probe_timeout = \"0s\"".into(),
            "mesh.probe_timeout = \"0s\": must be between",
        ),
        (
            "probe_period = \"50ms\"".into(),
            "mesh.probe_period = \"50ms\": must be between",
        ),
        (
            "max_clock_skew = \"6s\"".into(),
            "mesh.lease_duration = \"6s\": skew_margin",
        ),
        (
            "max_clock_skew = \"2m\"".into(),
            "mesh.max_clock_skew = \"2m\": must be between",
        ),
        (
            "suspect_timeout = \"soon\"".into(),
            "mesh.suspect_timeout = \"soon\": not a duration",
        ),
        (
            "state_interval = \"2m\"".into(),
            "mesh.state_interval = \"2m\"",
        ),
        (
            "handback_after = \"2h\"".into(),
            "mesh.handback_after = \"2h\"",
        ),
    ];
    for (extra, want) in &cases {
        let e = err(&with_mesh(extra));
        assert!(e.contains(want), "{extra:?}: got {e:?}, want {want:?}");
    }
    // Required keys, rewritten one at a time.
    let replaced: &[(&str, &str, &str)] = &[
        (
            "listen = \"192.0.2.10:51820\"",
            "listen = \"0.0.0.0:51820\"",
            "mesh.endpoint = (missing): required because mesh.listen (\"0.0.0.0:51820\")",
        ),
        (
            "listen = \"192.0.2.10:51820\"",
            "listen = \"51820\"",
            "mesh.listen = \"51820\": must be IP:port",
        ),
        (
            "listen = \"192.0.2.10:51820\"",
            "",
            "missing field `listen`",
        ),
        (
            "private_key_file = \"mesh.key\"",
            "private_key_file = \"no-such.key\"",
            "mesh.private_key_file = ",
        ),
        (
            "cluster_token_file = \"cluster.token\"",
            "cluster_token_file = \"no-such.token\"",
            "mesh.cluster_token_file = ",
        ),
    ];
    for (from, to, want) in replaced {
        let e = err(&with_mesh("").replacen(from, to, 1));
        assert!(e.contains(want), "{to:?}: got {e:?}, want {want:?}");
    }
    let missing = err(&with_mesh("").replacen("\"mesh.key\"", "\"no-such.key\"", 1));
    assert!(missing.ends_with("no-such.key: no such file"), "{missing}");
}

#[test]
fn repair_defaults_and_bounds() {
    let c = Config::from_toml(&minimal(), &base()).unwrap();
    assert!(c.repair.enabled);
    assert_eq!(c.repair.probe_interval, Duration::from_secs(30));
    assert_eq!(c.repair.probe_timeout, Duration::from_secs(20));
    assert_eq!((c.repair.fail_after, c.repair.recover_after), (2, 2));
    assert_eq!(c.repair.backoff_min, Duration::from_secs(30));
    assert_eq!(c.repair.backoff_max, Duration::from_secs(600));
    let with = |extra: &str| format!("{}[repair]\n{extra}\n", minimal());
    let e = err(&with("probe_interval = \"10s\"\nprobe_timeout = \"20s\""));
    assert!(e.contains("repair.probe_timeout"), "{e}");
    let e = err(&with("fail_after = 0"));
    assert!(e.contains("repair.fail_after"), "{e}");
    let e = err(&with("backoff_min = \"5m\"\nbackoff_max = \"1m\""));
    assert!(e.contains("repair.backoff_max"), "{e}");
    let e = err(&with("probes = 3"));
    assert!(e.contains("probes"), "{e}");
}

#[test]
fn restricted_discovery_keys() {
    const K: &str = "descriptor:x25519:ZPRRMIV6DV6SJFL7SFBSVLJ5VUNPGCDFEVZ7M23LTLVTCCXJQBKA";
    let b = base();
    let c = Config::from_toml(&minimal(), &b).unwrap();
    assert_eq!(c.master.restricted, None, "public by default");
    let with = |extra: &str| minimal().replace("[target]", &format!("{extra}\n[target]"));
    let c = Config::from_toml(&with(&format!("authorized_clients = [{K:?}]")), &b).unwrap();
    assert_eq!(c.master.restricted.unwrap().list, vec![K.to_string()]);
    // An empty list is restricted to nobody, never public.
    let c = Config::from_toml(&with("authorized_clients = []"), &b).unwrap();
    assert!(c.master.restricted.unwrap().list.is_empty());
    std::fs::create_dir_all(b.join("clients")).unwrap();
    let c = Config::from_toml(&with("authorized_clients_dir = \"clients\""), &b).unwrap();
    assert_eq!(c.master.restricted.unwrap().dir, Some(b.join("clients")));
    let e = err(&with("authorized_clients_dir = \"no-such-dir\""));
    assert!(
        e.contains("master.authorized_clients_dir") && e.contains("no such directory"),
        "{e}"
    );
    let e = err(&with(&format!(
        "authorized_clients = [{K:?}, \"descriptor:x25519:AAAA\"]"
    )));
    assert!(
        e.contains("master.authorized_clients") && e.contains("entry 1"),
        "{e}"
    );
    let many: Vec<String> = (0..161).map(|_| format!("{K:?}")).collect();
    let e = err(&with(&format!("authorized_clients = [{}]", many.join(","))));
    assert!(
        e.contains("161 entries") && e.contains("at most 160"),
        "{e}"
    );
}

#[test]
fn pow_defaults_and_bounds() {
    let c = Config::from_toml(&minimal(), &base()).unwrap();
    assert!(!c.pow.enabled, "off by default");
    assert_eq!(c.pow.queue_depth, 8192, "Arti's default");
    assert_eq!(c.pow.seed_rotation, Duration::from_secs(7200));
    assert_eq!((c.pow.min_effort, c.pow.max_effort), (0, 10_000));
    assert_eq!(c.pow.rendezvous_concurrency, 64);
    let with = |extra: &str| format!("{}[pow]\n{extra}\n", minimal());
    let c = Config::from_toml(
        &with("enabled = true\nseed_rotation = \"30m\"\nmin_effort = 5\nmax_effort = 500"),
        &base(),
    )
    .unwrap();
    assert!(c.pow.enabled);
    assert_eq!(c.pow.seed_rotation, Duration::from_secs(1800));
    assert_eq!((c.pow.min_effort, c.pow.max_effort), (5, 500));
    for (extra, want) in [
        ("queue_depth = 0", "pow.queue_depth"),
        ("seed_rotation = \"10s\"", "pow.seed_rotation"),
        ("seed_rotation = \"2d\"", "pow.seed_rotation"),
        ("min_effort = 20\nmax_effort = 10", "pow.min_effort"),
        ("max_effort = 0", "pow.max_effort"),
        ("rendezvous_concurrency = 0", "pow.rendezvous_concurrency"),
        ("effort = 3", "effort"),
    ] {
        let e = err(&with(extra));
        assert!(e.contains(want), "{extra:?}: {e}");
    }
}

#[test]
fn node_weight_defaults_to_one_and_is_bounded() {
    let c = Config::from_toml(&minimal(), &base()).unwrap();
    assert_eq!(c.node.weight, 1);
    let with = |w: &str| minimal().replacen("[node]\n", &format!("[node]\nweight = {w}\n"), 1);
    assert_eq!(
        Config::from_toml(&with("3"), &base()).unwrap().node.weight,
        3
    );
    for bad in ["0", "101"] {
        let e = err(&with(bad));
        assert!(e.contains("node.weight"), "{bad}: {e}");
    }
}

#[test]
fn node_worker_threads_defaults_to_one_and_is_bounded() {
    let c = Config::from_toml(&minimal(), &base()).unwrap();
    assert_eq!(c.node.worker_threads, 1);
    let with =
        |w: &str| minimal().replacen("[node]\n", &format!("[node]\nworker_threads = {w}\n"), 1);
    assert_eq!(
        Config::from_toml(&with("4"), &base())
            .unwrap()
            .node
            .worker_threads,
        4
    );
    for bad in ["0", "257"] {
        let e = err(&with(bad));
        assert!(
            e.contains("node.worker_threads") && e.contains(bad),
            "{bad}: {e}"
        );
    }
}
