//! The cluster's failover figures. `cargo bench --bench cluster` (harness = false) PRINTS:
//!
//! 1. Simulated mesh (in process, simulated time, default timers, 5 ms ± 5 ms links):
//!    convergence time of 10 / 100 / 1000 nodes all joining through one seed, and detection /
//!    takeover time after a crash in a 10-node mesh over many seeds.
//! 2. Real processes on the private Tor network: 3 `rustbalance` nodes on loopback; the
//!    publisher is `kill -9`ed `RB_BENCH_KILLS` times (default 5) and a standby as often:
//!    detection time (every survivor's status lists it down) and takeover time (one survivor
//!    reports itself publisher), polling the status endpoints every 100 ms.
//!
//! `RB_BENCH_SIM_MAX` caps the simulated sizes (default 1000); `RB_BENCH_SKIP_PROCESSES=1`
//! runs only the simulation. Figures only: nothing here asserts a timing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use rustbalance::membership::sim::Sim;
use rustbalance::membership::Liveness;
use support::*;

fn sim(seed: u64) -> Sim {
    Sim::with_defaults(seed)
}

fn convergence(n: usize, elect: bool) {
    let wall = Instant::now();
    let mut s = sim(n as u64);
    s.elect = elect;
    let first = s.add_node("n0", 0, &[]);
    for i in 1..n {
        s.add_node(&format!("n{i}"), i as u32, &[first]);
    }
    let mut next_report = Duration::from_secs(5);
    let took = s.run_until(Duration::from_secs(300), |s| {
        if s.elapsed() >= next_report {
            eprintln!(
                "    {n} nodes at {:?}: fewest live members seen by a node {}",
                s.elapsed(),
                s.min_live_members()
            );
            next_report += Duration::from_secs(5);
        }
        s.converged()
    });
    let sim_took = took.map_or("no convergence in 300 s".to_string(), |t| {
        format!("{:.1} s", t.as_secs_f64())
    });
    let publisher = if elect {
        let settled = s.run_until(Duration::from_secs(60), |s| s.publishers().len() == 1);
        format!(
            "one publisher {} later",
            settled.map_or("never".to_string(), |t| format!("{:.1} s", t.as_secs_f64()))
        )
    } else {
        "election not run".to_string()
    };
    println!(
        "  {n:>5} nodes: all see all alive after {sim_took} (simulated); {publisher}; {} datagrams; \
         computed in {:.1} s",
        s.delivered,
        wall.elapsed().as_secs_f64()
    );
}

fn sim_failover(runs: u64) {
    let mut detect = Vec::new();
    let mut takeover = Vec::new();
    for seed in 0..runs {
        let mut s = sim(1000 + seed);
        let first = s.add_node("n0", 0, &[]);
        for i in 1..10 {
            s.add_node(&format!("n{i}"), i, &[first]);
        }
        s.run_for(Duration::from_secs(20));
        assert_eq!(s.publishers(), vec![0], "settled");
        s.crash(0);
        let t0 = s.elapsed();
        let mut detected = None;
        s.run_until(Duration::from_secs(60), |s| {
            if detected.is_none()
                && (1..10).all(|o| {
                    s.agent(o).is_some_and(|a| {
                        a.membership_ref()
                            .peers()
                            .iter()
                            .any(|p| p.id.node_id == "n0" && p.liveness == Liveness::Down)
                    })
                })
            {
                detected = Some(s.elapsed() - t0);
            }
            s.publishers() == vec![1] && detected.is_some()
        })
        .expect("taken over");
        detect.push(detected.unwrap().as_secs_f64());
        takeover.push((s.elapsed() - t0).as_secs_f64());
    }
    println!("  10 nodes, publisher crashed, {runs} seeds:");
    println!(
        "    detected by all survivors: {}",
        summary(&detect, "s", 2)
    );
    println!(
        "    next priority publishing:  {}",
        summary(&takeover, "s", 2)
    );
}

struct Proc {
    nodes: Vec<ClusterNode>,
}

impl Proc {
    fn roles(&self) -> Vec<Option<String>> {
        self.nodes
            .iter()
            .map(|n| {
                n.node.child.as_ref()?;
                n.mesh().map(|m| role(&m))
            })
            .collect()
    }

    fn publisher(&self) -> Option<usize> {
        let r = self.roles();
        let p: Vec<usize> = (0..r.len())
            .filter(|&i| r[i].as_deref() == Some("publisher"))
            .collect();
        (p.len() == 1).then(|| p[0])
    }

    /// Kills `victim`; returns (detection, takeover if `expect_takeover`) in seconds.
    fn kill(&mut self, victim: usize, expect_takeover: bool) -> (f64, Option<f64>) {
        let name = self.nodes[victim].node.name.clone();
        let survivors: Vec<usize> = (0..self.nodes.len()).filter(|&i| i != victim).collect();
        let t0 = Instant::now();
        self.nodes[victim].node.kill9();
        let mut detected = None;
        let mut took_over = None;
        while t0.elapsed() < Duration::from_secs(60) {
            if detected.is_none()
                && survivors.iter().all(|&i| {
                    self.nodes[i]
                        .mesh()
                        .is_some_and(|m| !live_members(&m).contains(&name))
                })
            {
                detected = Some(t0.elapsed().as_secs_f64());
            }
            if expect_takeover && took_over.is_none() {
                if let Some(p) = self.publisher() {
                    if p != victim {
                        took_over = Some(t0.elapsed().as_secs_f64());
                    }
                }
            }
            if detected.is_some() && (took_over.is_some() || !expect_takeover) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (detected.expect("detected within 60 s"), took_over)
    }

    /// Restarts `idx` and waits until all three see each other and the best node publishes.
    fn restore(&mut self, idx: usize) {
        self.nodes[idx].node.start();
        let names: Vec<String> = self.nodes.iter().map(|n| n.node.name.clone()).collect();
        wait_for(Duration::from_secs(90), "cluster restored", || {
            let full = self.nodes.iter().all(|n| {
                n.mesh()
                    .is_some_and(|m| live_members(&m).len() == names.len() - 1)
            });
            (full && self.publisher() == Some(0)).then_some(())
        });
    }
}

fn processes(kills: usize) {
    locate_testnet_bin();
    let net = testnet::fixture::shared().unwrap_or_else(|e| panic!("private Tor network: {e}"));
    let dir = scratch("bench-cluster");
    let token = new_token(&dir, "cluster.token");
    let mut p = Proc {
        nodes: trio("bench", net, &token).into(),
    };
    for n in p.nodes.iter_mut() {
        n.node.start();
    }
    wait_for(Duration::from_secs(90), "cluster up", || {
        (p.publisher() == Some(0)).then_some(())
    });
    let mut pub_detect = Vec::new();
    let mut pub_takeover = Vec::new();
    let mut standby_detect = Vec::new();
    for round in 0..kills {
        let (d, t) = p.kill(0, true);
        pub_detect.push(d);
        pub_takeover.push(t.expect("taken over"));
        eprintln!(
            "  kill {round}: publisher detected {d:.2} s, replaced {:.2} s",
            t.unwrap()
        );
        p.restore(0);
        let (d, _) = p.kill(2, false);
        standby_detect.push(d);
        eprintln!("  kill {round}: standby detected {d:.2} s");
        p.restore(2);
    }
    println!("  3 processes, default timers (probe 1 s, suspect 2 s, lease 6 s):");
    println!(
        "    publisher kill -9, detected by both survivors: {}",
        summary(&pub_detect, "s", 2)
    );
    println!(
        "    publisher kill -9, survivor publishing:        {}",
        summary(&pub_takeover, "s", 2)
    );
    println!(
        "    standby kill -9, detected by both survivors:   {}",
        summary(&standby_detect, "s", 2)
    );
    for n in p.nodes.iter_mut() {
        let _ = n.node.stop();
    }
}

fn main() {
    let max = env_usize("RB_BENCH_SIM_MAX", 1000);
    println!("simulated mesh: convergence");
    for n in [10, 100, 1000] {
        if n <= max {
            // The election over a 1000-member view on every node of one process is the
            // simulator's cost, not the protocol's: membership only at that size.
            convergence(n, n <= 100);
        }
    }
    println!("simulated mesh: failover");
    sim_failover(25);
    if std::env::var_os("RB_BENCH_SKIP_PROCESSES").is_none() {
        println!("real processes on the private Tor network");
        processes(env_usize("RB_BENCH_KILLS", 5));
    }
}
