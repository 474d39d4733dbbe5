//! The in-process decision: `MemoryStore` against governor's keyed `RateLimiter`
//! (`DashMap` state store, quanta clock), both keyed by `IpAddr`.
//!
//! Groups: one hot key; 100 000 keys round-robin; keys never seen before (each batch of
//! `NEW_KEYS` starts from an empty store, so both maps grow alike); two threads on one key
//! (time per check as seen by each thread); denials on a drained bucket. Each check asks
//! whether the request passed, as governor's `check_key` does; `hot_key/ours_decided` also
//! computes every decision in full (quota left, reset).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use governor::{DefaultKeyedRateLimiter, Quota as GQuota, RateLimiter};
use tower_ratelimit::store::{Change, MemoryStore, Store};
use tower_ratelimit::{Algorithm, Policies, Policy, Quota};

const MANY_KEYS: u32 = 100_000;
const NEW_KEYS: u64 = 10_000;
const GIG: u32 = 1_000_000_000;

/// A decider under test: `check` says whether the request for `key` passed.
trait Limiter: Sync {
    fn check(&self, key: &IpAddr) -> bool;
}

struct Ours {
    store: MemoryStore<IpAddr>,
    policy: Policies,
}

impl Ours {
    fn new(quota: Quota) -> Self {
        Self {
            store: MemoryStore::new(),
            policy: Policy::new("default", quota, Algorithm::TokenBucket)
                .unwrap()
                .into(),
        }
    }
}

/// Whether the request passed, as governor's `check_key` answers it: the decision (what
/// is left, when more comes) is computed only for a request held back.
impl Limiter for Ours {
    fn check(&self, key: &IpAddr) -> bool {
        let decided = self.store.charge_now(key, 1, &self.policy).unwrap();
        decided
            .unwrap()
            .is_none_or(|decisions| decisions.is_allowed())
    }
}

/// The same, with the whole decision of every request.
struct OursDecided(Ours);

impl Limiter for OursDecided {
    fn check(&self, key: &IpAddr) -> bool {
        let Ours { store, policy } = &self.0;
        let decided = store.apply(key, Change::Charge(1), policy).into_inner();
        decided.unwrap().is_allowed()
    }
}

impl Limiter for DefaultKeyedRateLimiter<IpAddr> {
    fn check(&self, key: &IpAddr) -> bool {
        self.check_key(key).is_ok()
    }
}

fn governor(quota: GQuota) -> DefaultKeyedRateLimiter<IpAddr> {
    RateLimiter::keyed(quota)
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

/// 10⁹ per second, burst 10⁹: every check in these benches is admitted.
fn ours_admitting() -> Ours {
    Ours::new(Quota::per_second(GIG.into()))
}

fn governor_admitting() -> DefaultKeyedRateLimiter<IpAddr> {
    governor(GQuota::per_second(nonzero(GIG)))
}

fn bench_pair(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ours: &impl Limiter,
    anchor: &impl Limiter,
    keys: &[IpAddr],
) {
    bench_one(group, "ours", ours, keys);
    bench_one(group, "governor", anchor, keys);
}

fn bench_one(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    limiter: &impl Limiter,
    keys: &[IpAddr],
) {
    group.bench_function(name, |b| {
        let mut keys = keys.iter().cycle();
        b.iter(|| limiter.check(black_box(keys.next().unwrap())))
    });
}

fn hot_key(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory/hot_key");
    let key = [ip(0x0a00_0001)];
    bench_pair(&mut group, &ours_admitting(), &governor_admitting(), &key);
    bench_one(
        &mut group,
        "ours_decided",
        &OursDecided(ours_admitting()),
        &key,
    );
    group.finish();
}

fn many_keys(c: &mut Criterion) {
    let keys: Vec<IpAddr> = (0..MANY_KEYS).map(|n| ip(0x0a00_0000 + n)).collect();
    let (ours, anchor) = (ours_admitting(), governor_admitting());
    // Both maps hold every key before timing starts.
    for key in &keys {
        assert!(ours.check(key) && anchor.check(key));
    }
    let mut group = c.benchmark_group("memory/100k_keys");
    bench_pair(&mut group, &ours, &anchor, &keys);
    group.finish();
}

/// Times `NEW_KEYS` first sights per fresh limiter, in whole batches, and scales the total
/// to `iters` checks. Making and dropping the limiters is not timed.
fn new_keys<L: Limiter>(iters: u64, make: impl Fn() -> L) -> Duration {
    let batches = iters.div_ceil(NEW_KEYS);
    let mut total = Duration::ZERO;
    for _ in 0..batches {
        let limiter = make();
        let start = Instant::now();
        for n in 0..NEW_KEYS as u32 {
            assert!(limiter.check(black_box(&ip(n))));
        }
        total += start.elapsed();
        drop(limiter);
    }
    total.mul_f64(iters as f64 / (batches * NEW_KEYS) as f64)
}

fn new_key(c: &mut Criterion) {
    // One unit back every 86.4 ms: no key goes idle (and so none is swept) within a batch.
    let interval = Duration::from_nanos(86_400_000);
    let mut group = c.benchmark_group("memory/new_key");
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| new_keys(iters, || Ours::new(Quota::per_day(1_000_000))))
    });
    group.bench_function("governor", |b| {
        b.iter_custom(|iters| {
            new_keys(iters, || {
                let quota = GQuota::with_period(interval).unwrap();
                governor(quota.allow_burst(nonzero(1_000_000)))
            })
        })
    });
    group.finish();
}

/// Two threads check one key `iters` times each; the slower thread's time.
fn two_threads(limiter: &impl Limiter, iters: u64) -> Duration {
    let key = ip(0x0a00_0001);
    let barrier = Barrier::new(2);
    thread::scope(|scope| {
        let run = || {
            barrier.wait();
            let start = Instant::now();
            for _ in 0..iters {
                black_box(limiter.check(black_box(&key)));
            }
            start.elapsed()
        };
        let other = scope.spawn(run);
        let mine = run();
        mine.max(other.join().unwrap())
    })
}

fn contended(c: &mut Criterion) {
    let (ours, anchor) = (ours_admitting(), governor_admitting());
    let mut group = c.benchmark_group("memory/2_threads_hot_key");
    group.bench_function("ours", |b| b.iter_custom(|iters| two_threads(&ours, iters)));
    group.bench_function("governor", |b| {
        b.iter_custom(|iters| two_threads(&anchor, iters))
    });
    group.finish();
}

fn denied(c: &mut Criterion) {
    let key = ip(0x0a00_0001);
    let ours = Ours::new(Quota::per_hour(1));
    let anchor = governor(GQuota::per_hour(nonzero(1)));
    assert!(ours.check(&key) && anchor.check(&key));
    assert!(!ours.check(&key) && !anchor.check(&key));
    let mut group = c.benchmark_group("memory/denied_hot_key");
    bench_pair(&mut group, &ours, &anchor, &[key]);
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = hot_key, many_keys, new_key, contended, denied
}
criterion_main!(benches);
