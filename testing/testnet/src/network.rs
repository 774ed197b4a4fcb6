//! Starting, describing, checking and stopping one private network in one directory.
//!
//! Layout of a network directory: one sub-directory per tor process (named after the node, with
//! its `torrc`, `notice.log` and data), `www/` (the target's content), `arti.toml` (the Arti
//! fragment), `testnet.json` (the [`Description`], rewritten as processes start so `stop` always
//! knows every PID) and the `.rustbalance-testnet` marker.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::plan::{self, AuthorityIds, Plan, RelayIds, Role, Shape};
use crate::process::{self, Started};
use crate::{client, consensus, target, TestnetError};

/// Marker file that says a directory belongs to this launcher.
pub const MARKER: &str = ".rustbalance-testnet";
/// The description file inside a network directory.
pub const DESCRIPTION: &str = "testnet.json";
/// Version of the description format.
pub const DESCRIPTION_VERSION: u32 = 1;

/// How to start a network.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The network directory (created; must be ours or absent).
    pub dir: PathBuf,
    /// Shape and ports.
    pub shape: Shape,
    /// The `tor` program.
    pub tor: String,
    /// The `tor-gencert` program.
    pub tor_gencert: String,
    /// The program that serves the target (`testnet` itself, run as `serve-http`).
    pub server_program: PathBuf,
    /// How long to wait for a usable network.
    pub ready_timeout: Duration,
    /// Size of the large target file.
    pub large_bytes: u64,
    /// Leave processes running when the start fails (to debug them).
    pub keep_on_failure: bool,
}

impl StartOptions {
    /// Defaults for `dir`, serving the target with `server_program`.
    pub fn new(dir: PathBuf, server_program: PathBuf) -> Self {
        StartOptions {
            dir,
            shape: Shape::default(),
            tor: "tor".into(),
            tor_gencert: "tor-gencert".into(),
            server_program,
            ready_timeout: Duration::from_secs(180),
            large_bytes: target::DEFAULT_LARGE_BYTES,
            keep_on_failure: false,
        }
    }
}

/// Lifecycle state recorded in the description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetState {
    /// Processes are being started or the network is not yet usable.
    Starting,
    /// Usable: consensus complete and the sample onion service answers.
    Ready,
    /// Stopped by `stop`.
    Stopped,
}

/// A relay of the network, with its identities.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayInfo {
    /// Nickname.
    pub name: String,
    /// Role.
    pub role: Role,
    /// ORPort on 127.0.0.1.
    pub or_port: u16,
    /// DirPort on 127.0.0.1.
    pub dir_port: u16,
    /// RSA identity (hex).
    pub rsa_identity: String,
    /// Ed25519 identity (unpadded base64).
    pub ed_identity: String,
    /// v3 authority identity (authorities only).
    pub v3ident: Option<String>,
}

/// The C-tor client tests fetch through.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientInfo {
    /// SOCKS5 address.
    pub socks: SocketAddr,
    /// Control port address.
    pub control: SocketAddr,
    /// Control cookie file (`AUTHENTICATE <hex>`).
    pub control_cookie: PathBuf,
    /// The client's data directory (cached consensus etc.).
    pub data_dir: PathBuf,
}

/// The sample target and the C-tor onion service in front of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetInfo {
    /// The HTTP server on 127.0.0.1.
    pub http: SocketAddr,
    /// Its content directory.
    pub root: PathBuf,
    /// The nonce the content derives from.
    pub nonce: String,
    /// URL path of the index page.
    pub index_path: String,
    /// URL path of the large file.
    pub large_path: String,
    /// Size of the large file in bytes.
    pub large_bytes: u64,
    /// The onion service's address (`….onion`), once known.
    pub onion_address: Option<String>,
    /// The onion service's virtual port.
    pub onion_port: u16,
}

/// Time from `start` to each milestone, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Keys generated and configs written.
    pub prepared_ms: u64,
    /// Every process running.
    pub processes_ms: u64,
    /// The client holds a complete consensus.
    pub consensus_ms: Option<u64>,
    /// The sample onion service answered: the network is usable.
    pub usable_ms: Option<u64>,
}

/// Machine-readable description of a network (`testnet.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Description {
    /// Format version ([`DESCRIPTION_VERSION`]).
    pub version: u32,
    /// Lifecycle state.
    pub state: NetState,
    /// The network directory.
    pub data_dir: PathBuf,
    /// `tor --version`'s first line.
    pub tor_version: String,
    /// Steady voting interval.
    pub voting_interval_secs: u32,
    /// Onion-service time period length (what Arti gets as `hsdir_interval`).
    pub hsdir_interval_minutes: u32,
    /// Relays, authorities first.
    pub relays: Vec<RelayInfo>,
    /// The C-tor client.
    pub client: ClientInfo,
    /// The sample target and its onion service.
    pub target: TargetInfo,
    /// The Arti configuration fragment for this network.
    pub arti_config: PathBuf,
    /// Every process started, with PIDs.
    pub processes: Vec<Started>,
    /// Milestones.
    pub timings: Timings,
}

impl Description {
    /// Reads `testnet.json` from a network directory.
    pub fn load(dir: &Path) -> Result<Description, TestnetError> {
        let path = dir.join(DESCRIPTION);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TestnetError::NotStarted {
                    dir: dir.to_path_buf(),
                    file: DESCRIPTION,
                })
            }
            Err(e) => return Err(TestnetError::io(&path)(e)),
        };
        let d: Description = serde_json::from_str(&text).map_err(|e| TestnetError::BadFile {
            path: path.clone(),
            problem: e.to_string(),
        })?;
        if d.version != DESCRIPTION_VERSION {
            return Err(TestnetError::BadFile {
                path,
                problem: format!(
                    "description version {} (this launcher reads {DESCRIPTION_VERSION})",
                    d.version
                ),
            });
        }
        Ok(d)
    }

    fn save(&self) -> Result<(), TestnetError> {
        let path = self.data_dir.join(DESCRIPTION);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("description serializes");
        std::fs::write(&tmp, text).map_err(TestnetError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(TestnetError::io(&path))
    }

    /// The processes still alive.
    pub fn alive(&self) -> Vec<&Started> {
        self.processes.iter().filter(|p| p.alive()).collect()
    }

    /// The onion service's address, or an error if the network never got that far.
    pub fn onion_address(&self) -> Result<&str, TestnetError> {
        self.target
            .onion_address
            .as_deref()
            .ok_or_else(|| TestnetError::BadFile {
                path: self.data_dir.join(DESCRIPTION),
                problem: "the sample onion service's address is not known yet".into(),
            })
    }

    /// The exact bytes of the target's index page.
    pub fn index_body(&self) -> Vec<u8> {
        target::index_body(&self.target.nonce)
    }

    /// The exact bytes of the target's large file.
    pub fn large_body(&self) -> Vec<u8> {
        target::large_body(&self.target.nonce, self.target.large_bytes)
    }

    /// GET a path of the sample onion service through the C-tor client.
    pub fn fetch_sample_onion(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<client::HttpResponse, TestnetError> {
        let onion = self.onion_address()?;
        Ok(client::http_get_via_socks(
            self.client.socks,
            onion,
            self.target.onion_port,
            path,
            None,
            timeout,
        )?)
    }

    /// Sum of the resident memory of every live process, in KiB.
    pub fn total_rss_kib(&self) -> u64 {
        self.processes.iter().filter_map(Started::rss_kib).sum()
    }

    /// Summary of the consensus the client holds now.
    pub fn client_consensus(&self) -> Option<consensus::ConsensusSummary> {
        let text = std::fs::read_to_string(self.client.data_dir.join("cached-microdesc-consensus"))
            .ok()?;
        Some(consensus::summarize(&text))
    }
}

/// Starts a network and blocks until it is usable. `progress` receives one line per change of
/// what the launcher waits for.
pub fn start(
    opts: &StartOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Description, TestnetError> {
    let t0 = Instant::now();
    // tor changes directory to / when it daemonizes: every path it gets must be absolute.
    let opts = &StartOptions {
        dir: std::path::absolute(&opts.dir).map_err(TestnetError::io(&opts.dir))?,
        ..opts.clone()
    };
    opts.shape
        .validate()
        .map_err(|problem| TestnetError::BadFile {
            path: opts.dir.clone(),
            problem: format!("network shape: {problem}"),
        })?;
    let plan = Plan::new(opts.shape.clone())?;
    let tor_version = process::run_tool(&opts.tor, &["--version"], b"")?
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    process::run_tool(&opts.tor_gencert, &["--help"], b"").or_else(|e| match e {
        // `tor-gencert --help` exits non-zero by design; only its absence matters.
        TestnetError::ToolFailed { .. } => Ok(String::new()),
        other => Err(other),
    })?;
    prepare_dir(&opts.dir, progress)?;
    for (port, what) in plan.ports() {
        TcpListener::bind(("127.0.0.1", port)).map_err(|source| TestnetError::PortInUse {
            port,
            what,
            source,
        })?;
    }

    // Keys and identities.
    let dir = &opts.dir;
    let mut auths = Vec::new();
    let mut relay_ids = Vec::new();
    for node in plan.relays() {
        let ndir = plan::node_dir(dir, node);
        let keys = ndir.join("keys");
        std::fs::create_dir_all(&keys).map_err(TestnetError::io(&keys))?;
        set_private(&ndir)?;
        if node.role == Role::Authority {
            let k = |f: &str| keys.join(f).to_string_lossy().into_owned();
            let addr = format!("127.0.0.1:{}", node.dir_port.unwrap_or_default());
            process::run_tool(
                &opts.tor_gencert,
                &[
                    "--create-identity-key",
                    "-m",
                    "12",
                    "-a",
                    &addr,
                    "-i",
                    &k("authority_identity_key"),
                    "-s",
                    &k("authority_signing_key"),
                    "-c",
                    &k("authority_certificate"),
                    "--passphrase-fd",
                    "0",
                ],
                b"testnet\n",
            )?;
        }
        let ndir_s = ndir.to_string_lossy().into_owned();
        process::run_tool(
            &opts.tor,
            &[
                "--ignore-missing-torrc",
                "-f",
                "/dev/null",
                "--quiet",
                "--list-fingerprint",
                "--orport",
                "1",
                "--datadirectory",
                &ndir_s,
                "--nickname",
                &node.name,
            ],
            b"",
        )?;
        let rsa = read_second_word(&ndir.join("fingerprint"))?;
        let ed = read_second_word(&ndir.join("fingerprint-ed25519"))?;
        if node.role == Role::Authority {
            let cert = keys.join("authority_certificate");
            let text = std::fs::read_to_string(&cert).map_err(TestnetError::io(&cert))?;
            let v3ident = text
                .lines()
                .find_map(|l| l.strip_prefix("fingerprint "))
                .map(|s| s.trim().to_string())
                .ok_or_else(|| TestnetError::BadFile {
                    path: cert.clone(),
                    problem: "no fingerprint line".into(),
                })?;
            auths.push(AuthorityIds {
                name: node.name.clone(),
                or_port: node.or_port.unwrap_or_default(),
                dir_port: node.dir_port.unwrap_or_default(),
                v3ident,
                fingerprint: rsa.clone(),
            });
        }
        relay_ids.push(RelayIds {
            name: node.name.clone(),
            or_port: node.or_port.unwrap_or_default(),
            rsa_identity: rsa,
            ed_identity: ed,
        });
    }
    for node in &plan.nodes {
        let ndir = plan::node_dir(dir, node);
        std::fs::create_dir_all(&ndir).map_err(TestnetError::io(&ndir))?;
        set_private(&ndir)?;
        let torrc = ndir.join("torrc");
        std::fs::write(&torrc, plan::torrc(&plan, node, &ndir, &auths))
            .map_err(TestnetError::io(&torrc))?;
    }
    let arti_config = dir.join("arti.toml");
    std::fs::write(
        &arti_config,
        plan::arti_fragment(&plan, &auths, &relay_ids, dir),
    )
    .map_err(TestnetError::io(&arti_config))?;
    let nonce = random_hex(8)?;
    let www = dir.join("www");
    target::write_content(&www, &nonce, opts.large_bytes)?;

    let client_node = plan
        .nodes
        .iter()
        .find(|n| n.role == Role::Client)
        .expect("plan has a client");
    let client_dir = plan::node_dir(dir, client_node);
    let mut desc = Description {
        version: DESCRIPTION_VERSION,
        state: NetState::Starting,
        data_dir: dir.clone(),
        tor_version,
        voting_interval_secs: plan.shape.voting_interval_secs,
        hsdir_interval_minutes: plan.shape.hsdir_interval_minutes(),
        relays: plan
            .relays()
            .zip(&relay_ids)
            .map(|(n, ids)| RelayInfo {
                name: n.name.clone(),
                role: n.role,
                or_port: n.or_port.unwrap_or_default(),
                dir_port: n.dir_port.unwrap_or_default(),
                rsa_identity: ids.rsa_identity.clone(),
                ed_identity: ids.ed_identity.clone(),
                v3ident: auths
                    .iter()
                    .find(|a| a.name == n.name)
                    .map(|a| a.v3ident.clone()),
            })
            .collect(),
        client: ClientInfo {
            socks: SocketAddr::from(([127, 0, 0, 1], client_node.socks_port.unwrap_or_default())),
            control: SocketAddr::from((
                [127, 0, 0, 1],
                client_node.control_port.unwrap_or_default(),
            )),
            control_cookie: client_dir.join("control_auth_cookie"),
            data_dir: client_dir,
        },
        target: TargetInfo {
            http: SocketAddr::from(([127, 0, 0, 1], plan.target_port)),
            root: www.clone(),
            nonce,
            index_path: "/".into(),
            large_path: format!("/{}", target::LARGE),
            large_bytes: opts.large_bytes,
            onion_address: None,
            onion_port: 80,
        },
        arti_config,
        processes: Vec::new(),
        timings: Timings {
            prepared_ms: ms(t0),
            ..Timings::default()
        },
    };
    desc.save()?;
    progress(&format!(
        "keys and configs ready in {:.1} s; starting processes",
        t0.elapsed().as_secs_f64()
    ));

    let result = launch_and_wait(opts, &plan, &mut desc, t0, progress);
    if let Err(e) = result {
        if !opts.keep_on_failure {
            process::stop_all(&desc.processes, Duration::from_secs(5));
            desc.state = NetState::Stopped;
            let _ = desc.save();
        }
        return Err(e);
    }
    Ok(desc)
}

fn launch_and_wait(
    opts: &StartOptions,
    plan: &Plan,
    desc: &mut Description,
    t0: Instant,
    progress: &mut dyn FnMut(&str),
) -> Result<(), TestnetError> {
    let dir = &opts.dir;
    let www = desc.target.root.clone();
    let listen = desc.target.http.to_string();
    let log = dir.join("target.log");
    let www_s = www.to_string_lossy().into_owned();
    desc.processes.push(process::start_detached(
        "target",
        &opts.server_program,
        &["serve-http", "--root", &www_s, "--listen", &listen],
        &www,
        &log,
    )?);
    desc.save()?;
    for node in &plan.nodes {
        let started = process::start_tor(&opts.tor, &node.name, &plan::node_dir(dir, node))?;
        desc.processes.push(started);
        desc.save()?;
    }
    desc.timings.processes_ms = ms(t0);
    progress(&format!(
        "{} processes running after {:.1} s",
        desc.processes.len(),
        t0.elapsed().as_secs_f64()
    ));

    let expected: Vec<(String, Role)> = plan.relays().map(|n| (n.name.clone(), n.role)).collect();
    let hostname = plan
        .nodes
        .iter()
        .find(|n| n.role == Role::OnionService)
        .map(|n| plan::node_dir(dir, n).join("hs_service").join("hostname"))
        .expect("plan has an onion service");
    let mut last = String::new();
    let mut say = |what: String, progress: &mut dyn FnMut(&str)| {
        if what != last {
            progress(&format!(
                "[{:5.1} s] waiting: {what}",
                t0.elapsed().as_secs_f64()
            ));
            last = what;
        }
    };
    loop {
        if let Some(dead) = desc.processes.iter().find(|p| !p.alive()) {
            return Err(TestnetError::ProcessDied {
                name: dead.name.clone(),
                pid: dead.pid,
                log: dead.log.clone(),
                tail: dead.log_tail(15),
            });
        }
        if t0.elapsed() > opts.ready_timeout {
            return Err(TestnetError::NotReady {
                waited_secs: t0.elapsed().as_secs(),
                missing: last,
            });
        }
        let missing = match desc.client_consensus() {
            None => Some("the client has no consensus yet".to_string()),
            Some(summary) => consensus::missing(
                &summary,
                &expected,
                i64::from(plan.shape.voting_interval_secs),
            ),
        };
        if let Some(m) = missing {
            say(m, progress);
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        if desc.timings.consensus_ms.is_none() {
            desc.timings.consensus_ms = Some(ms(t0));
            progress(&format!(
                "[{:5.1} s] consensus complete",
                t0.elapsed().as_secs_f64()
            ));
        }
        if desc.target.onion_address.is_none() {
            match std::fs::read_to_string(&hostname) {
                Ok(h) => {
                    desc.target.onion_address = Some(h.trim().to_string());
                    desc.save()?;
                }
                Err(_) => {
                    say(
                        "the onion service has not written its hostname".into(),
                        progress,
                    );
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            }
        }
        match desc.fetch_sample_onion(&desc.target.index_path, Duration::from_secs(30)) {
            Ok(r) if r.status == 200 && r.body == desc.index_body() => break,
            Ok(r) => say(
                format!(
                    "sample onion answered HTTP {} with {} unexpected bytes",
                    r.status,
                    r.body.len()
                ),
                progress,
            ),
            Err(e) => {
                say(
                    format!("sample onion not answering through the client yet: {e}"),
                    progress,
                );
                // The C-tor client remembers which HSDirs it already asked for this address
                // and a descriptor it failed to use; NEWNYM purges that client state so the
                // next try fetches afresh instead of waiting out the re-query period.
                if let Ok(mut c) = client::ControlConn::connect(
                    desc.client.control,
                    &desc.client.control_cookie,
                    Duration::from_secs(5),
                ) {
                    let _ = c.command("SIGNAL NEWNYM");
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    desc.timings.usable_ms = Some(ms(t0));
    desc.state = NetState::Ready;
    desc.save()
}

/// Makes `dir` ready for a new network: creates it, or cleans a stale network of ours.
fn prepare_dir(dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<(), TestnetError> {
    if dir.exists() {
        let marker = dir.join(MARKER);
        let empty = std::fs::read_dir(dir)
            .map_err(TestnetError::io(dir))?
            .next()
            .is_none();
        if !empty && !marker.exists() {
            return Err(TestnetError::NotOurDir {
                dir: dir.to_path_buf(),
                marker: MARKER,
            });
        }
        if let Ok(d) = Description::load(dir) {
            let alive: Vec<u32> = d.alive().iter().map(|p| p.pid).collect();
            if !alive.is_empty() {
                return Err(TestnetError::AlreadyRunning {
                    dir: dir.to_path_buf(),
                    pids: alive,
                });
            }
        }
        if !empty {
            progress(&format!(
                "removing the stale test network in {} (none of its processes is alive)",
                dir.display()
            ));
            std::fs::remove_dir_all(dir).map_err(TestnetError::io(dir))?;
        }
    }
    std::fs::create_dir_all(dir).map_err(TestnetError::io(dir))?;
    std::fs::write(dir.join(MARKER), "made by RustBalance testing/testnet\n")
        .map_err(TestnetError::io(dir.join(MARKER)))
}

/// What `stop` did.
#[derive(Debug, Clone, Default)]
pub struct StopReport {
    /// Processes that were alive and were stopped.
    pub stopped: Vec<String>,
    /// Of those, the ones that needed SIGKILL.
    pub killed: Vec<String>,
}

/// Stops every process of the network in `dir` (exactly the PIDs it started).
pub fn stop(dir: &Path) -> Result<StopReport, TestnetError> {
    let mut desc = Description::load(dir)?;
    let alive: Vec<Started> = desc.alive().into_iter().cloned().collect();
    let killed = process::stop_all(&alive, Duration::from_secs(10));
    desc.state = NetState::Stopped;
    desc.save()?;
    Ok(StopReport {
        stopped: alive.into_iter().map(|p| p.name).collect(),
        killed,
    })
}

fn read_second_word(path: &Path) -> Result<String, TestnetError> {
    let text = std::fs::read_to_string(path).map_err(TestnetError::io(path))?;
    text.split_whitespace()
        .nth(1)
        .map(str::to_string)
        .ok_or_else(|| TestnetError::BadFile {
            path: path.to_path_buf(),
            problem: "expected `nickname fingerprint`".into(),
        })
}

fn set_private(dir: &Path) -> Result<(), TestnetError> {
    use std::os::unix::fs::PermissionsExt;
    // tor refuses a DataDirectory that others can read.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(TestnetError::io(dir))
}

fn random_hex(bytes: usize) -> Result<String, TestnetError> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(TestnetError::io("/dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn ms(t0: Instant) -> u64 {
    t0.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("testnet-unit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_stale_network_dir_is_cleaned_and_reused() {
        let dir = scratch("stale");
        prepare_dir(&dir, &mut |_| {}).unwrap();
        std::fs::write(dir.join("leftover.log"), "old").unwrap();
        let mut said = Vec::new();
        prepare_dir(&dir, &mut |l| said.push(l.to_string())).unwrap();
        assert!(!dir.join("leftover.log").exists());
        assert!(dir.join(MARKER).exists());
        assert!(
            said[0].contains("removing the stale test network"),
            "{said:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_foreign_dir_is_refused_and_an_empty_one_adopted() {
        let dir = scratch("foreign");
        std::fs::create_dir_all(&dir).unwrap();
        prepare_dir(&dir, &mut |_| {}).unwrap();
        std::fs::remove_file(dir.join(MARKER)).unwrap();
        std::fs::write(dir.join("mine"), "x").unwrap();
        let err = prepare_dir(&dir, &mut |_| {}).unwrap_err();
        assert!(matches!(err, TestnetError::NotOurDir { .. }), "{err}");
        assert!(dir.join("mine").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
