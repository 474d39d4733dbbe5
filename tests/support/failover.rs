//! A failover under load, for the Cluster and Sentinel tests: two app servers (a layer with
//! `FallbackLocal` each, keyed by the request path `/key7`) send 50 requests per second
//! per key; the test kills a master; the run goes on until decisions are back on Redis,
//! and then checks what was admitted.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use tokio::time::MissedTickBehavior;
use tower::{service_fn, Layer, ServiceExt};
use tower_ratelimit::key::KeyError;
use tower_ratelimit::store::{Change, RedisStore, Store};
use tower_ratelimit::{
    Algorithm, DecisionSource, FailurePolicy, Policies, Policy, Quota, RateLimitLayer, RequestHead,
};

/// What the decision hook saw of one request.
struct Seen {
    key: usize,
    at: Instant,
    source: DecisionSource,
    allowed: bool,
}

/// The run's quota and the fallback's share of it (both per hour, so nothing refills).
pub struct Limits {
    pub burst: u64,
    pub share: u64,
    pub keys: usize,
    /// The stores' deadline; every request must be answered within it, plus `slack`.
    pub deadline: Duration,
    pub slack: Duration,
}

impl Limits {
    pub fn quota(&self) -> Quota {
        Quota::per_hour(1).burst(self.burst)
    }

    pub fn policy(&self) -> Policies {
        Policy::new("default", self.quota(), Algorithm::TokenBucket)
            .unwrap()
            .into()
    }
}

/// The name of key `key`.
pub fn name(key: usize) -> String {
    format!("key{key}")
}

/// What the run saw.
pub struct Run {
    seen: Vec<Seen>,
    admitted: Vec<u64>,
    /// Just before and just after the kill.
    killing: Instant,
    killed: Instant,
}

/// Runs two app servers, one on each of `stores`, for a second, calls `kill`, and goes on
/// until decisions are back on Redis: none has failed for a second, and since the last
/// failure every key was decided by Redis and has used up its burst there (within
/// `within` of the kill). Every request is answered within the deadline (plus slack), by
/// Redis or by the fallback.
pub async fn run(
    limits: &Limits,
    stores: [RedisStore; 2],
    kill: impl FnOnce(),
    within: Duration,
) -> Run {
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let share = Policy::new(
        "default",
        Quota::per_hour(1).burst(limits.share),
        Algorithm::TokenBucket,
    );
    let share = share.unwrap();
    let mut clients = Vec::new();
    for store in stores {
        let key = |request: &RequestHead<'_>| Ok::<_, KeyError>(request.uri.path()[1..].to_owned());
        let hook = Arc::clone(&seen);
        let layer = RateLimitLayer::new(key, store, limits.quota())
            .on_store_error(FailurePolicy::FallbackLocal)
            .fallback_policy(share.clone())
            .on_decision(move |event| {
                hook.lock().unwrap().push(Seen {
                    key: event.key[3..].parse().unwrap(),
                    at: Instant::now(),
                    source: event.source,
                    allowed: event.decision.is_some_and(|d| d.is_allowed()),
                })
            });
        let server = layer.layer(service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
        for key in 0..limits.keys {
            let (server, stop) = (server.clone(), Arc::clone(&stop));
            clients.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let (mut admitted, mut slowest) = (0, Duration::ZERO);
                while !stop.load(Relaxed) {
                    tick.tick().await;
                    let request = Request::get(format!("/{}", name(key))).body(()).unwrap();
                    let started = Instant::now();
                    let status = server.clone().oneshot(request).await.unwrap().status();
                    slowest = slowest.max(started.elapsed());
                    match status {
                        StatusCode::OK => admitted += 1,
                        StatusCode::TOO_MANY_REQUESTS => {}
                        other => panic!("{other} for key {key}"),
                    }
                }
                (key, admitted, slowest)
            }));
        }
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let killing = Instant::now();
    kill();
    let killed = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen = seen.lock().unwrap();
        let failed = |s: &&Seen| s.source != DecisionSource::Store;
        let Some(last_failure) = seen.iter().filter(failed).map(|s| s.at).max() else {
            assert!(killed.elapsed() < within, "no failure at all");
            continue;
        };
        let settled = (0..limits.keys).all(|key| {
            seen.iter().any(|s| {
                s.key == key
                    && s.at > last_failure
                    && s.source == DecisionSource::Store
                    && !s.allowed
            })
        });
        if settled && last_failure.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "decisions back on Redis {:?} after the kill",
                last_failure - killed
            );
            break;
        }
        assert!(
            killed.elapsed() < within,
            "decisions not back on Redis {within:?} after the kill"
        );
    }
    stop.store(true, Relaxed);
    let mut admitted = vec![0; limits.keys];
    for client in clients {
        let (key, count, slowest) = client.await.unwrap();
        assert!(
            slowest <= limits.deadline + limits.slack,
            "a request took {slowest:?}"
        );
        admitted[key] += count;
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    Run {
        seen,
        admitted,
        killing,
        killed,
    }
}

impl Run {
    /// Checks each key against what `observer` (a store without a deny cache, on the new
    /// master) reads. A key of the dead master (`on_victim`) may lose, at most, what that
    /// master acknowledged in its last `window` before the kill (writes not yet
    /// replicated die with it); other keys lose nothing. So no key is admitted more than
    /// its burst, plus those lost writes, plus the fallback's share per app server.
    pub async fn check(
        &self,
        limits: &Limits,
        observer: &RedisStore,
        on_victim: &[bool],
        window: Duration,
    ) {
        let policy = limits.policy();
        assert_eq!(on_victim.len(), limits.keys);
        for (key, &dead) in on_victim.iter().enumerate() {
            let allowed = |source| {
                self.seen
                    .iter()
                    .filter(move |s| s.key == key && s.allowed && s.source == source)
            };
            let by_redis = allowed(DecisionSource::Store).count() as u64;
            let by_fallback = allowed(DecisionSource::Fallback).count() as u64;
            let remaining = observer
                .apply(&name(key), Change::Charge(0), &policy)
                .await
                .unwrap()[0]
                .remaining;
            let lost = by_redis.saturating_sub(limits.burst - remaining);
            let start = self.killing - window;
            let recent = allowed(DecisionSource::Store)
                .filter(|s| s.at >= start && s.at <= self.killed)
                .count() as u64;
            let before = allowed(DecisionSource::Store)
                .filter(|s| s.at < start)
                .count();
            let context = format!(
                "key {key}{}: {} admitted, {by_redis} by Redis ({before} before the window, \
                 {recent} in it), {by_fallback} by the fallback, {remaining} left in Redis",
                if dead { " (dead master)" } else { "" },
                self.admitted[key],
            );
            eprintln!("{context}");
            assert_eq!(self.admitted[key], by_redis + by_fallback, "{context}");
            assert!(before >= 20, "too little traffic to tell: {context}");
            assert!(by_fallback <= 2 * limits.share, "{context}");
            if dead {
                assert!(by_fallback > 0, "the outage went unseen: {context}");
                assert!(lost <= recent, "lost {lost}: {context}");
            } else {
                assert_eq!(lost, 0, "{context}");
            }
            assert!(
                self.admitted[key] <= limits.burst + recent + 2 * limits.share,
                "{context}"
            );
        }
    }
}
