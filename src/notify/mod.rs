//! systemd's service notifications (`Type=notify`): `READY=1` once this node serves (the
//! master onion service is launched and the node is in its mesh), `STATUS=` lines as it goes,
//! `WATCHDOG=1` from the node task's loop while the watchdog is on, `STOPPING=1` on shutdown.
//! Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op. Uses the `sd-notify` crate.
//!
//! What it must never do: fail the daemon (a notification that cannot be sent is logged at
//! debug), or put secrets or the target address in a status line.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "systemd notification not sent");
    }
}

/// A `STATUS=` line (shown by `systemctl status`).
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// `READY=1`, with a status line.
pub fn ready(text: &str) {
    tracing::info!(status = text, "ready");
    send(&[NotifyState::Ready, NotifyState::Status(text)]);
}

/// `STOPPING=1`.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The watchdog interval systemd asked for (`WatchdogSec=`), if any.
fn watchdog_interval() -> Option<Duration> {
    static INTERVAL: OnceLock<Option<Duration>> = OnceLock::new();
    // As sd_watchdog_enabled(3): WATCHDOG_USEC sets it; WATCHDOG_PID, when set, must be this
    // process (the crate's helper also refuses an unset WATCHDOG_PID).
    *INTERVAL.get_or_init(|| {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            if pid.parse::<u32>().ok() != Some(std::process::id()) {
                return None;
            }
        }
        (usec > 0).then(|| Duration::from_micros(usec))
    })
}

/// Pings the watchdog, at most every half interval: call it from a loop that must keep
/// running (if it stalls, systemd restarts the service).
pub fn watchdog() {
    static LAST: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    let Some(interval) = watchdog_interval() else {
        return;
    };
    let Ok(mut last) = LAST.lock() else { return };
    if last.is_none_or(|t| t.elapsed() >= interval / 2) {
        *last = Some(Instant::now());
        send(&[NotifyState::Watchdog]);
    }
}
