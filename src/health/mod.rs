//! The target health probe, a service of its own (the daemon starts it): every
//! `target.health.interval`, connect to the target (and for `kind = "http"`, `GET path` and
//! check the status). `fail_after` consecutive failures mark
//! the target down, `recover_after` consecutive successes mark it up again. A node whose target
//! is down advertises `target_down`: the publisher leaves its intro points out of the merged
//! descriptor, and it is not eligible to publish.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::config::{HealthConfig, ProbeKind};
use crate::proxy::{Connector, TargetConnector};

/// Consecutive results → up or down, with hysteresis. Pure.
#[derive(Debug, Clone)]
pub struct Tracker {
    fail_after: u32,
    recover_after: u32,
    up: bool,
    streak: u32,
}

impl Tracker {
    /// Starts up (a node is not withdrawn before its first failures).
    pub fn new(fail_after: u32, recover_after: u32) -> Tracker {
        Tracker {
            fail_after: fail_after.max(1),
            recover_after: recover_after.max(1),
            up: true,
            streak: 0,
        }
    }

    /// Records one probe; returns the new state if it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up {
            self.fail_after
        } else {
            self.recover_after
        };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            return Some(ok);
        }
        None
    }

    /// Whether the target counts as up.
    pub fn is_up(&self) -> bool {
        self.up
    }
}

/// One probe; `Err` says why it failed (never the target's address).
pub async fn probe(connector: &TargetConnector, config: &HealthConfig) -> Result<(), String> {
    let attempt = async {
        let mut stream = connector.connect().await.map_err(|e| e.to_string())?;
        if let ProbeKind::Http {
            path,
            expect_status,
        } = &config.kind
        {
            let req = format!("GET {path} HTTP/1.0\r\nUser-Agent: rustbalance-health\r\n\r\n");
            stream
                .write_all(req.as_bytes())
                .await
                .map_err(|e| format!("writing the request: {e}"))?;
            let mut head = [0u8; 64];
            let mut n = 0;
            while n < 12 {
                let got = stream
                    .read(&mut head[n..])
                    .await
                    .map_err(|e| format!("reading the answer: {e}"))?;
                if got == 0 {
                    break;
                }
                n += got;
            }
            let line = String::from_utf8_lossy(&head[..n]);
            let status: Option<u16> = line
                .strip_prefix("HTTP/1.")
                .and_then(|r| r.get(2..5))
                .and_then(|s| s.parse().ok());
            match status {
                Some(s) if s == *expect_status => {}
                Some(s) => return Err(format!("HTTP status {s}, expected {expect_status}")),
                None => return Err("not an HTTP answer".into()),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(config.timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", config.timeout)),
    }
}

/// Probes until shutdown, sending `true`/`false` on changes of the target's state.
pub async fn probe_loop(
    connector: TargetConnector,
    config: HealthConfig,
    up: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tracker = Tracker::new(config.fail_after, config.recover_after);
    let mut tick = tokio::time::interval(config.interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let result = tokio::select! {
            r = probe(&connector, &config) => r,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        if let Err(why) = &result {
            tracing::debug!(reason = %why, "target probe failed");
        }
        if let Some(now_up) = tracker.record(result.is_ok()) {
            if now_up {
                tracing::info!("target answers again: intro points return");
            } else {
                tracing::warn!(
                    reason = %result.err().unwrap_or_default(),
                    failures = config.fail_after,
                    "target is down: withdrawing this node's intro points"
                );
            }
            up.send_replace(now_up);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_consecutive_failures_up_after_consecutive_successes() {
        let mut t = Tracker::new(3, 2);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None, "a success resets the streak");
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert!(!t.is_up());
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None, "a failure resets the recovery");
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
        assert!(t.is_up());
    }

    #[tokio::test]
    async fn probes_a_real_listener_and_a_closed_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.0 503 Busy\r\n\r\n").await;
            }
        });
        let tcp = crate::proxy::TcpConnector::new("127.0.0.1", port);
        let connector = TargetConnector::Tcp(tcp);
        let mut config = HealthConfig {
            kind: ProbeKind::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            fail_after: 1,
            recover_after: 1,
        };
        assert_eq!(probe(&connector, &config).await, Ok(()));
        config.kind = ProbeKind::Http {
            path: "/".into(),
            expect_status: 200,
        };
        let e = probe(&connector, &config).await.unwrap_err();
        assert!(e.contains("503"), "{e}");
        config.kind = ProbeKind::Http {
            path: "/".into(),
            expect_status: 503,
        };
        assert_eq!(probe(&connector, &config).await, Ok(()));
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = closed.local_addr().unwrap().port();
        drop(closed);
        let connector = TargetConnector::Tcp(crate::proxy::TcpConnector::new("127.0.0.1", dead));
        assert!(probe(&connector, &config).await.is_err());
    }
}
