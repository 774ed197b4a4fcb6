//! Arti's PoW counters. Arti's service reports them (feature `metrics`) through the `metrics`
//! facade only; this process-wide recorder keeps the PoW ones (every other metric is dropped)
//! so `status` and our Prometheus endpoint can show them. They count across relaunches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use serde::{Deserialize, Serialize};

/// The PoW counters, since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowCounts {
    /// Introduction requests whose solution verified against one of the loaded seeds.
    pub verified: u64,
    /// The sum of their efforts.
    pub verified_effort: u64,
    /// Requests whose solution did not verify (unknown seed, replayed nonce, wrong solution):
    /// dropped.
    pub failed: u64,
    /// Requests queued (with or without a solution).
    pub enqueued: u64,
    /// Requests dropped because the queue was full (the lowest effort goes first).
    pub dropped: u64,
    /// Requests dropped because they waited too long in the queue.
    pub expired: u64,
}

#[derive(Default)]
struct Cells {
    verified: Arc<Hist>,
    failed: Arc<AtomicU64>,
    enqueued: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    expired: Arc<AtomicU64>,
}

#[derive(Default)]
struct Hist {
    count: AtomicU64,
    sum: AtomicU64,
}

impl HistogramFn for Hist {
    fn record(&self, value: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        // Efforts are u32: the cast saturates.
        self.sum.fetch_add(value.max(0.0) as u64, Ordering::Relaxed);
    }
}

static CELLS: OnceLock<Cells> = OnceLock::new();

fn cells() -> &'static Cells {
    CELLS.get_or_init(Cells::default)
}

/// The recorder: the PoW counters by their Arti names, nothing else.
struct PowRecorder;

impl Recorder for PowRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let c = cells();
        match key.name() {
            "arti_hss_pow_rendrequest_verification_failure_total" => {
                Counter::from_arc(c.failed.clone())
            }
            "arti_hss_pow_rendrequest_enqueued_total" => Counter::from_arc(c.enqueued.clone()),
            "arti_hss_pow_rend_queue_overflow_total" => Counter::from_arc(c.dropped.clone()),
            "arti_hss_pow_rendrequest_expired_total" => Counter::from_arc(c.expired.clone()),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        match key.name() {
            "arti_hss_pow_rendrequest_effort_hist" => Histogram::from_arc(cells().verified.clone()),
            _ => Histogram::noop(),
        }
    }
}

/// Installs the recorder (once per process; later calls do nothing). Call before the service
/// launches: Arti registers its counters when it starts.
pub fn install() {
    let _ = metrics::set_global_recorder(PowRecorder);
}

/// The counters now.
pub fn snapshot() -> PowCounts {
    let c = cells();
    PowCounts {
        verified: c.verified.count.load(Ordering::Relaxed),
        verified_effort: c.verified.sum.load(Ordering::Relaxed),
        failed: c.failed.load(Ordering::Relaxed),
        enqueued: c.enqueued.load(Ordering::Relaxed),
        dropped: c.dropped.load(Ordering::Relaxed),
        expired: c.expired.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arti_s_pow_counters_are_kept_and_others_dropped() {
        install();
        let before = snapshot();
        metrics::counter!("arti_hss_pow_rend_queue_overflow_total", "nickname" => "x").increment(3);
        metrics::counter!("arti_hss_pow_rendrequest_verification_failure_total").increment(1);
        metrics::histogram!("arti_hss_pow_rendrequest_effort_hist").record(40.0);
        metrics::histogram!("arti_hss_pow_rendrequest_effort_hist").record(2.0);
        metrics::counter!("something_else_total").increment(9);
        let after = snapshot();
        assert_eq!(after.dropped - before.dropped, 3);
        assert_eq!(after.failed - before.failed, 1);
        assert_eq!(after.verified - before.verified, 2);
        assert_eq!(after.verified_effort - before.verified_effort, 42);
        assert_eq!(after.enqueued, before.enqueued);
    }
}
