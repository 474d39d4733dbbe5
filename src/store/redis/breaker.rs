//! [`Breaker`]: a circuit breaker, so a dead Redis costs nothing per request; [`Breakers`],
//! one for the store or (on a Redis Cluster) one per master.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::connection::Connection;
#[cfg(feature = "redis-cluster")]
use super::masters::MasterBreakers;

/// Closed while calls succeed. After `threshold` failures in a row it opens: calls fail at
/// once for `cool_down`. Then it is half-open: one call (the probe) goes through; its
/// success closes the breaker, its failure opens it for another `cool_down`.
#[derive(Debug)]
pub(super) struct Breaker {
    /// What fails, for the logs: `Redis`, or a cluster's `Redis master <host:port>`.
    what: String,
    threshold: u32,
    cool_down: u64,
    failures: AtomicU32,
    /// Until when (local nanoseconds) calls fail at once; 0 while closed.
    open_until: AtomicU64,
    probing: AtomicBool,
}

/// Permission to make a call; report its result with [`Breaker::record`].
#[derive(Debug)]
pub(super) struct Pass {
    breaker: Arc<Breaker>,
    probe: bool,
}

impl Breaker {
    pub(super) fn new(threshold: u32, cool_down: Duration, what: String) -> Self {
        Self {
            what,
            threshold: threshold.max(1),
            cool_down: cool_down.as_nanos() as u64,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    /// A pass for a call at `now`, or `None` while the breaker is open (or half-open with
    /// its probe under way).
    pub(super) fn pass(self: &Arc<Self>, now: u64) -> Option<Pass> {
        let open_until = self.open_until.load(Relaxed);
        let probe = open_until != 0;
        if probe && (now < open_until || self.probing.swap(true, Relaxed)) {
            return None;
        }
        Some(Pass {
            breaker: Arc::clone(self),
            probe,
        })
    }

    /// Whether calls fail at once at `now` (open, and not yet half-open).
    pub(super) fn is_open(&self, now: u64) -> bool {
        now < self.open_until.load(Relaxed)
    }

    /// What fails when it opens.
    #[cfg(feature = "redis-cluster")]
    pub(super) fn what(&self) -> &str {
        &self.what
    }

    fn open(&self, now: u64) {
        self.open_until
            .store((now + self.cool_down).max(1), Relaxed);
    }
}

impl Pass {
    /// Records the call's result at `now`.
    pub(super) fn record(self, ok: bool, now: u64) {
        let breaker = &*self.breaker;
        if ok {
            breaker.failures.store(0, Relaxed);
            if breaker.open_until.swap(0, Relaxed) != 0 {
                tracing::warn!(
                    server = breaker.what,
                    "Redis answers again; the rate limiter uses it again"
                );
            }
        } else if self.probe {
            breaker.open(now);
        } else {
            let failures = breaker.failures.fetch_add(1, Relaxed) + 1;
            if failures == breaker.threshold {
                breaker.open(now);
                tracing::warn!(
                    server = breaker.what,
                    failures,
                    cool_down = ?Duration::from_nanos(breaker.cool_down),
                    "Redis keeps failing; circuit open, the rate limiter stops calling it for now"
                );
            }
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        // A probe abandoned before it ended (its caller went away) lets the next one try.
        if self.probe {
            self.breaker.probing.store(false, Relaxed);
        }
    }
}

/// The breakers of a store: one, or one per master of a Redis Cluster.
#[derive(Debug)]
pub(super) enum Breakers {
    One(Arc<Breaker>),
    #[cfg(feature = "redis-cluster")]
    PerMaster(super::masters::MasterBreakers),
}

impl Breakers {
    /// The breakers for calls over `connection` (needs a Tokio runtime).
    pub(super) fn new(connection: &Connection, threshold: u32, cool_down: Duration) -> Self {
        match connection {
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(cluster) => {
                let masters = MasterBreakers::start(cluster.clone(), threshold, cool_down);
                Self::PerMaster(masters)
            }
            _ => Self::One(Arc::new(Breaker::new(
                threshold,
                cool_down,
                "Redis".to_owned(),
            ))),
        }
    }

    /// The breaker for a call on the Redis key `key`.
    #[cfg_attr(not(feature = "redis-cluster"), allow(unused_variables))]
    pub(super) fn for_key(&self, key: &[u8]) -> Arc<Breaker> {
        match self {
            Self::One(breaker) => Arc::clone(breaker),
            #[cfg(feature = "redis-cluster")]
            Self::PerMaster(masters) => masters.for_key(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn opens_after_consecutive_failures_and_probes_once() {
        let breaker = Arc::new(Breaker::new(3, Duration::from_millis(100), "Redis".into()));
        for _ in 0..2 {
            breaker.pass(0).unwrap().record(false, 0);
        }
        breaker.pass(0).unwrap().record(true, 0);
        for _ in 0..3 {
            breaker.pass(MS).unwrap().record(false, MS);
        }
        assert!(breaker.pass(50 * MS).is_none(), "open during the cool-down");
        let probe = breaker
            .pass(101 * MS)
            .expect("half-open after the cool-down");
        assert!(breaker.pass(101 * MS).is_none(), "one probe at a time");
        probe.record(false, 102 * MS);
        assert!(
            breaker.pass(150 * MS).is_none(),
            "a failed probe opens it again"
        );
        breaker.pass(202 * MS).unwrap().record(true, 203 * MS);
        assert!(breaker.pass(203 * MS).is_some(), "a good probe closes it");
    }

    #[test]
    fn an_abandoned_probe_lets_another_try() {
        let breaker = Arc::new(Breaker::new(1, Duration::from_millis(1), "Redis".into()));
        breaker.pass(0).unwrap().record(false, 0);
        drop(breaker.pass(2 * MS).unwrap());
        assert!(breaker.pass(2 * MS).is_some());
    }
}
