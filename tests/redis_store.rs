//! `RedisStore` against a real Redis: every reference table, exact admission counts and
//! shaper slots across stores and tasks, Redis time, script flushes, hostile keys and the
//! deny cache.
#![cfg(feature = "redis")]

mod support;

use std::task::{Context, Poll, Waker};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use support::multi;
use support::redis_server::{store, unique_prefix, RedisServer};
use support::redis_tables::{self as tables, redis_time};
use tower_ratelimit::store::{Change, RedisStore, Store};
use tower_ratelimit::{Algorithm, Decisions, Outcome, Policies, Policy, Quota};

/// Generous: these tests are about counting, not latency, and share a loaded machine.
const DEADLINE: Duration = Duration::from_secs(5);

async fn connection(server: &RedisServer) -> MultiplexedConnection {
    let client = redis::Client::open(server.url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

fn policy(quota: Quota) -> Policies {
    Policy::new("default", quota, Algorithm::TokenBucket)
        .unwrap()
        .into()
}

/// A store without the deny cache (the table runners move state back in time).
async fn uncached_store(server: &RedisServer, prefix: &str) -> RedisStore {
    RedisStore::builder(server.url())
        .prefix(&unique_prefix(prefix))
        .deadline(DEADLINE)
        .deny_cache(false)
        .connect()
        .await
        .unwrap()
}

/// Runs a GCRA table on a server of its own.
async fn gcra_table(name: &str) -> usize {
    let server = RedisServer::start();
    let store = uncached_store(&server, name).await;
    tables::gcra_table(&store, &mut connection(&server).await, name).await
}

/// The token-bucket reference table, all 26 cases.
#[tokio::test]
async fn token_bucket_table() {
    assert!(gcra_table("token_bucket").await >= 25);
}

/// The leaky-bucket (meter) table.
#[tokio::test]
async fn leaky_bucket_table() {
    gcra_table("leaky_bucket").await;
}

/// The shaper table: delays, reserved slots and a full queue, as in process.
#[tokio::test]
async fn shaper_table() {
    gcra_table("shaper").await;
}

/// Runs a window table on a server of its own, a table second being 2 seconds.
async fn window_table(name: &str) {
    let server = RedisServer::start();
    let store = uncached_store(&server, name).await;
    tables::window_table(&store, &connection(&server).await, name, 2).await;
}

/// The fixed-window table on Redis's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_window_table() {
    window_table("fixed_window").await;
}

/// The sliding-window table on Redis's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_window_table() {
    window_table("sliding_window").await;
}

/// A key lives exactly until its TAT; looks and denials write nothing; a fixed quota's
/// count has no TTL.
#[tokio::test]
async fn keys_live_exactly_until_their_tat() {
    let server = RedisServer::start();
    let store = store(&server, &unique_prefix("ttl")).await;
    let connection = connection(&server).await;
    let pttl = |key: Vec<u8>| {
        let mut connection = connection.clone();
        async move {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(key)
                .query_async(&mut connection)
                .await
                .unwrap();
            ttl
        }
    };
    let mut connection = connection.clone();

    let refilling = policy(Quota::per_minute(6).burst(5));
    let key = store.storage_key(&"k", &refilling, 0);
    store
        .apply(&"k", Change::Charge(0), &refilling)
        .await
        .unwrap();
    assert_eq!(pttl(key.clone()).await, -2, "a look writes nothing");
    let before = redis_time(&mut connection).await;
    store
        .apply(&"k", Change::Charge(2), &refilling)
        .await
        .unwrap();
    let ttl = pttl(key.clone()).await;
    let elapsed = (redis_time(&mut connection).await - before) / 1000 + 1;
    // TAT = now + 2 × 10 s.
    assert!(
        ttl <= 20_000 && ttl >= 20_000 - elapsed as i64,
        "ttl {ttl} ms"
    );
    let decision = store
        .apply(&"k", Change::Charge(5), &refilling)
        .await
        .unwrap();
    assert!(!decision.is_allowed());
    assert!(
        pttl(key.clone()).await <= ttl,
        "a denial does not extend the key"
    );

    let fixed = policy(Quota::fixed(3));
    store.apply(&"k", Change::Charge(1), &fixed).await.unwrap();
    assert_eq!(pttl(store.storage_key(&"k", &fixed, 0)).await, -1);
}

/// Counts what `stores × tasks` concurrent requests on one key were admitted.
async fn admit_concurrently(
    stores: &[RedisStore],
    tasks: usize,
    policy: &Policies,
    cost_of: impl Fn(usize) -> u64,
) -> Vec<(u64, bool)> {
    let mut handles = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for t in 0..tasks {
            let (store, policy) = (store.clone(), policy.clone());
            let cost = cost_of(s * tasks + t);
            handles.push(tokio::spawn(async move {
                let decision = store
                    .apply(&"shared", Change::Charge(cost), &policy)
                    .await
                    .expect("no store error");
                (cost, decision.is_allowed())
            }));
        }
    }
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

async fn stores(server: &RedisServer, prefix: &str, n: usize) -> Vec<RedisStore> {
    let mut stores = Vec::new();
    for _ in 0..n {
        stores.push(store(server, prefix).await);
    }
    stores
}

/// 4 stores (4 app servers) × 64 tasks on one key admit exactly `burst`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_share_one_limit_exactly() {
    let server = RedisServer::start();
    let stores = stores(&server, &unique_prefix("exact"), 4).await;
    let policy = policy(Quota::per_hour(1).burst(100));
    let results = admit_concurrently(&stores, 64, &policy, |_| 1).await;
    let admitted = results.iter().filter(|(_, allowed)| *allowed).count();
    assert_eq!(admitted, 100);
}

/// Several policies on one key: all pass, then all are charged, in one script call, as
/// the in-process store decides them; every policy's key carries the same hash tag.
#[tokio::test]
async fn several_policies_charge_all_or_nothing() {
    let server = RedisServer::start();
    let prefix = unique_prefix("multi");
    let store = store(&server, &prefix).await;
    let policies = multi::policies();
    for (step, (cost, ..)) in multi::STEPS.iter().enumerate() {
        let decisions = store
            .apply(&"key", Change::Charge(*cost), &policies)
            .await
            .unwrap();
        multi::check(step, &policies, &decisions).unwrap();
    }
    let mut connection = connection(&server).await;
    let mut names: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut connection)
        .await
        .unwrap();
    // The state keys, not the stores' heartbeats.
    names.retain(|name| *name != format!("{prefix}:{{instances}}"));
    assert_eq!(names.len(), 3, "{names:?}");
    // One hash tag (the key, hashed: a string may carry a secret) for every policy.
    let tag = |name: &String| {
        name[name.find('{').unwrap()..]
            .split(':')
            .next()
            .unwrap()
            .to_owned()
    };
    assert!(
        names.iter().all(|name| tag(name) == tag(&names[0])),
        "{names:?}"
    );
}

/// 4 stores × 64 tasks under two policies: exactly the narrower one's burst is admitted,
/// and the thousands of refusals spent nothing of the wider one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_policies_stay_atomic_across_stores() {
    let server = RedisServer::start();
    let stores = stores(&server, &unique_prefix("multi_exact"), 4).await;
    let policy = |name, quota, algorithm| Policy::new(name, quota, algorithm).unwrap();
    let policies = Policies::new([
        policy(
            "wide",
            Quota::per_hour(1).burst(100),
            Algorithm::TokenBucket,
        ),
        policy("narrow", Quota::per_day(60), Algorithm::FixedWindow),
    ])
    .unwrap();
    let results = admit_concurrently(&stores, 64, &policies, |_| 1).await;
    let admitted = results.iter().filter(|(_, allowed)| *allowed).count();
    assert_eq!(admitted, 60);
    let look = stores[0]
        .apply(&"shared", Change::Charge(0), &policies)
        .await
        .unwrap();
    assert_eq!((look[0].remaining, look[1].remaining), (40, 0));
}

/// The same with weights: nothing over the burst, nothing lost, and no request denied that
/// would have fitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weighted_requests_share_one_limit_exactly() {
    let server = RedisServer::start();
    let stores = stores(&server, &unique_prefix("weighted"), 4).await;
    let policy = policy(Quota::per_hour(1).burst(300));
    let results = admit_concurrently(&stores, 64, &policy, |i| 1 + (i as u64 * 7) % 5).await;
    let spent: u64 = results
        .iter()
        .filter(|(_, allowed)| *allowed)
        .map(|(cost, _)| cost)
        .sum();
    assert!(spent <= 300, "over-admitted: {spent}");
    let left = stores[0]
        .apply(&"shared", Change::Charge(0), &policy)
        .await
        .unwrap()[0]
        .remaining;
    assert_eq!(left, 300 - spent, "every admission charged once");
    // Without refill, quota only shrinks: a denied request that fits what is left now
    // would have fitted when it was denied.
    let cheapest_denied = results
        .iter()
        .filter(|(_, allowed)| !allowed)
        .map(|(cost, _)| *cost)
        .min();
    assert!(
        cheapest_denied.is_some_and(|cost| cost > left),
        "under-admitted: {left} left, {results:?}"
    );
}

/// Decisions are made on Redis's clock from the state in Redis: a TAT written in Redis
/// time 3.5 s ahead of `TIME` is read as 3.5 s of waiting, whatever the app's clock says.
#[tokio::test]
async fn decisions_follow_redis_time() {
    let server = RedisServer::start();
    let store = store(&server, &unique_prefix("clock")).await;
    let mut connection = connection(&server).await;
    let policy = policy(Quota::per_second(1).burst(1));
    let key = store.storage_key(&"k", &policy, 0);
    let seeded = redis_time(&mut connection).await + 3_500_000;
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(seeded)
        .arg("PX")
        .arg(3_500)
        .query_async(&mut connection)
        .await
        .unwrap();
    let before = redis_time(&mut connection).await;
    let decision = store.apply(&"k", Change::Charge(1), &policy).await.unwrap();
    let after = redis_time(&mut connection).await;
    // retry = TAT + 1 s − 1 s − now, with `now` Redis's time during the call.
    let retry = decision_retry(&decision);
    assert!(retry <= Duration::from_micros(seeded - before));
    assert!(retry >= Duration::from_micros(seeded - after));
}

fn decision_retry(decision: &Decisions) -> Duration {
    match decision.summary().outcome {
        tower_ratelimit::Outcome::Denied {
            retry_after: Some(retry),
        } => retry,
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// `FUNCTION FLUSH` and `SCRIPT FLUSH` while 4 stores decide: every call is answered
/// (the library loaded again where Redis no longer knows it), and exactly `burst` are
/// admitted: nothing is counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn script_flush_mid_run_is_invisible() {
    let server = RedisServer::start();
    let stores = stores(&server, &unique_prefix("flush"), 4).await;
    let mut connection = connection(&server).await;
    let policy = policy(Quota::per_hour(1).burst(400));
    let flusher = tokio::spawn(async move {
        for _ in 0..50 {
            let _: () = redis::pipe()
                .cmd("FUNCTION")
                .arg("FLUSH")
                .ignore()
                .cmd("SCRIPT")
                .arg("FLUSH")
                .ignore()
                .query_async(&mut connection)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    // Several rounds, so calls keep running while the flushes go on.
    let mut admitted = 0;
    for _ in 0..4 {
        let results = admit_concurrently(&stores, 64, &policy, |_| 1).await;
        admitted += results.iter().filter(|(_, allowed)| *allowed).count();
    }
    flusher.await.unwrap();
    assert_eq!(admitted, 400);
    assert_eq!(
        stores[0]
            .apply(&"shared", Change::Charge(0), &policy)
            .await
            .unwrap()[0]
            .remaining,
        0
    );
}

/// A Redis without functions (as before 7.0: the commands are gone) gets the script with
/// `EVALSHA`: the same exact answers, and the script reloaded after `SCRIPT FLUSH`.
#[tokio::test]
async fn a_redis_without_functions_runs_the_script() {
    let disabled = ["FUNCTION", "FCALL"].map(|command| ["--rename-command", command, ""]);
    let disabled: Vec<String> = disabled.concat().into_iter().map(String::from).collect();
    let server = RedisServer::start_with(&disabled);
    let store = store(&server, &unique_prefix("no-functions")).await;
    let policy = policy(Quota::per_hour(1).burst(3));
    let mut connection = connection(&server).await;
    for round in 0..2 {
        for i in 0..3 {
            let decision = &store
                .apply(&round, Change::Charge(1), &policy)
                .await
                .unwrap()[0];
            assert_eq!(
                (decision.outcome, decision.remaining),
                (Outcome::Allowed, 2 - i)
            );
        }
        let refused = &store
            .apply(&round, Change::Charge(1), &policy)
            .await
            .unwrap()[0];
        assert!(
            matches!(refused.outcome, Outcome::Denied { .. }),
            "{refused:?}"
        );
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut connection)
            .await
            .unwrap();
    }
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(info.contains("cmdstat_evalsha:"), "{info}");
    assert!(!info.contains("cmdstat_fcall:"), "{info}");
}

/// Hostile keys: 1 MiB, binary, braces. Each gets its own bucket, under a short key name
/// that keeps its braces balanced (so it cannot pick its Cluster slot).
#[tokio::test]
async fn hostile_keys_are_safe() {
    let server = RedisServer::start();
    let store = store(&server, &unique_prefix("hostile")).await;
    let policy = policy(Quota::per_hour(1).burst(1));
    let keys: Vec<Vec<u8>> = vec![
        vec![b'x'; 1 << 20],
        vec![0, 255, b'\r', b'\n', b' '],
        b"}{".to_vec(),
        b"a}b".to_vec(),
        b"{victim}".to_vec(),
        b"victim".to_vec(),
    ];
    for key in &keys {
        let name = store.storage_key(key, &policy, 0);
        assert!(name.len() < 128, "{} bytes", name.len());
        assert_eq!(name.iter().filter(|&&b| b == b'{').count(), 1);
        assert_eq!(name.iter().filter(|&&b| b == b'}').count(), 1);
        assert!(
            store
                .apply(key, Change::Charge(1), &policy)
                .await
                .unwrap()
                .is_allowed(),
            "own bucket"
        );
    }
    for key in &keys {
        assert!(!store
            .apply(key, Change::Charge(1), &policy)
            .await
            .unwrap()
            .is_allowed());
    }
}

/// Whether a decision was answered without waiting (the deny cache, for a denial).
fn answered_locally<F: std::future::Future + Unpin>(future: &mut F) -> Option<F::Output> {
    match std::pin::Pin::new(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// The deny cache answers denied traffic locally, and never denies a request Redis would
/// allow: random costs at random times, each local denial checked at once against Redis
/// through a store without a cache, with the time since the local denial as allowance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_cache_never_denies_what_redis_would_allow() {
    let server = RedisServer::start();
    let prefix = unique_prefix("deny");
    let cached = store(&server, &prefix).await;
    let uncached = RedisStore::builder(server.url())
        .prefix(&prefix)
        .deadline(DEADLINE)
        .deny_cache(false)
        .connect()
        .await
        .unwrap();
    let policy = policy(Quota::new(10, Duration::from_millis(200)).burst(6));
    let mut random = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: u64| {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random % n
    };
    let (mut local, mut checked_denied) = (0, 0);
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_micros(next(15_000))).await;
        let cost = 1 + next(6);
        let started = std::time::Instant::now();
        let mut decision = cached.apply(&"k", Change::Charge(cost), &policy);
        let Some(answer) = answered_locally(&mut decision) else {
            decision.await.unwrap();
            continue;
        };
        let answer = answer.unwrap();
        if answer.is_allowed() {
            continue; // Redis answered within the first poll
        }
        local += 1;
        let retry = decision_retry(&answer);
        let redis = uncached
            .apply(&"k", Change::Charge(cost), &policy)
            .await
            .unwrap();
        if redis.is_allowed() {
            // Only if the cached bound had passed by the time Redis decided.
            assert!(
                started.elapsed() >= retry,
                "denied locally for {retry:?}, Redis allowed within {:?}",
                started.elapsed()
            );
        } else {
            checked_denied += 1;
        }
    }
    assert!(local >= 50, "the cache answered only {local} requests");
    assert!(
        checked_denied >= local / 2,
        "{checked_denied} of {local} confirmed at once"
    );
}

/// The shaper over real Redis time: 40 concurrent requests from 2 stores on one key, at
/// 10/s with burst 1 and 1 s of queue. Made within one interval of each other, exactly
/// 1 + 1 s / 100 ms = 11 pass (one at once, ten delayed) and the rest are denied. Each
/// admitted request is released at `now + wait` with `now` its script's Redis time, which
/// lies between the Redis times read around its call: every release must be one of the
/// slots `TAT − k·T` (k = 1..=11, TAT read at the end), each slot taken exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shaper_hands_out_distinct_slots_at_the_rate() {
    const INTERVAL: u64 = 100_000;
    let server = RedisServer::start();
    let prefix = unique_prefix("slots");
    let stores = stores(&server, &prefix, 2).await;
    let connection = connection(&server).await;
    let algorithm = Algorithm::LeakyBucketShaper {
        max_delay: Duration::from_secs(1),
    };
    let policy: Policies = Policy::new("default", Quota::per_second(10).burst(1), algorithm)
        .unwrap()
        .into();
    let mut handles = Vec::new();
    for i in 0..40 {
        let (store, policy) = (stores[i % 2].clone(), policy.clone());
        let mut connection = connection.clone();
        handles.push(tokio::spawn(async move {
            let before = redis_time(&mut connection).await;
            let decision = store
                .apply(&"shared", Change::Charge(1), &policy)
                .await
                .unwrap();
            let after = redis_time(&mut connection).await;
            (before, decision[0].outcome, after)
        }));
    }
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    let first = results.iter().map(|r| r.0).min().unwrap();
    let last = results.iter().map(|r| r.2).max().unwrap();
    assert!(
        last - first < INTERVAL,
        "the requests took {} µs, more than one interval",
        last - first
    );
    let mut connection = connection.clone();
    let tat: u64 = redis::cmd("GET")
        .arg(stores[0].storage_key(&"shared", &policy, 0))
        .query_async(&mut connection)
        .await
        .unwrap();
    let mut slots = Vec::new();
    for &(before, outcome, after) in &results {
        let wait = match outcome {
            Outcome::Allowed => 0,
            Outcome::Delayed { wait } => wait.as_micros() as u64,
            Outcome::Denied {
                retry_after: Some(retry),
            } => {
                assert!(!retry.is_zero());
                continue;
            }
            other => panic!("unexpected {other:?}"),
        };
        let (earliest, latest) = (before + wait, after + wait);
        let in_bracket: Vec<u64> = (1..=11)
            .filter(|k| (earliest..=latest).contains(&(tat - k * INTERVAL)))
            .collect();
        assert_eq!(
            in_bracket.len(),
            1,
            "release in [{earliest}, {latest}], TAT {tat}"
        );
        slots.push(in_bracket[0]);
    }
    slots.sort_unstable();
    assert_eq!(slots, (1..=11).collect::<Vec<_>>(), "one request per slot");
}

/// Changes submitted together leave in a few batched calls, and each gets exactly the
/// answer the same changes one by one would: keys, costs, several policies, refusals, a
/// cost above the burst, a block and a refund, mixed in one batch.
#[tokio::test]
async fn a_batch_answers_each_change_as_calls_one_by_one_would() {
    let server = RedisServer::start();
    let slow = |name, quota, algorithm| Policy::new(name, quota, algorithm).unwrap();
    let bucket = Policies::from(slow(
        "bucket",
        Quota::per_hour(1).burst(5),
        Algorithm::TokenBucket,
    ));
    let both = Policies::new([
        slow(
            "hourly",
            Quota::per_hour(1).burst(4),
            Algorithm::TokenBucket,
        ),
        slow("daily", Quota::per_day(6), Algorithm::SlidingWindow),
    ])
    .unwrap();
    let window = Policies::from(slow("window", Quota::per_day(3), Algorithm::FixedWindow));
    let mut changes = Vec::new();
    for round in 0..6u64 {
        for key in ["a", "b", "c"] {
            changes.push((key, Change::Charge(round % 3 + 1), bucket.clone()));
            changes.push((key, Change::Charge(1), both.clone()));
            changes.push((key, Change::Charge(2), window.clone()));
        }
        changes.push(("a", Change::Charge(9), bucket.clone()));
        changes.push(("b", Change::Refund(2), bucket.clone()));
        if round == 3 {
            changes.push(("c", Change::Block(Duration::from_secs(60)), both.clone()));
        }
    }
    // What each change answers when it is alone in its call.
    let one_by_one = RedisStore::builder(server.url())
        .prefix(&unique_prefix("one-by-one"))
        .deadline(DEADLINE)
        .max_batch(1)
        .connect()
        .await
        .unwrap();
    let mut expected = Vec::new();
    for (key, change, policies) in &changes {
        expected.push(one_by_one.apply(key, *change, policies).await.unwrap());
    }

    let mut stats = connection(&server).await;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut stats)
        .await
        .unwrap();
    let batched = store(&server, &unique_prefix("batched")).await;
    let mut pending: Vec<_> = changes
        .iter()
        .map(|(key, change, policies)| batched.apply(key, *change, policies))
        .collect();
    // Polled once each, in order: every change is queued before the first answer comes.
    for decision in &mut pending {
        let _ = std::future::Future::poll(
            std::pin::Pin::new(decision),
            &mut Context::from_waker(Waker::noop()),
        );
    }
    let mut answered = Vec::new();
    for decision in pending {
        answered.push(decision.await.unwrap());
    }
    let shape = |decisions: &Decisions| -> Vec<(Outcome, u64)> {
        decisions
            .iter()
            .map(|d| {
                // Retry times depend on the instant; whether there is one does not.
                let outcome = match d.outcome {
                    Outcome::Denied { retry_after } => Outcome::Denied {
                        retry_after: retry_after.map(|_| Duration::ZERO),
                    },
                    other => other,
                };
                (outcome, d.remaining)
            })
            .collect()
    };
    for (i, (answer, expected)) in answered.iter().zip(&expected).enumerate() {
        assert_eq!(
            shape(answer),
            shape(expected),
            "change {i}: {:?}",
            changes[i].1
        );
    }
    if server.owned() {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut stats)
            .await
            .unwrap();
        let calls: usize = ["cmdstat_fcall:calls=", "cmdstat_evalsha:calls="]
            .iter()
            .filter_map(|stat| {
                let rest = info.lines().find_map(|line| line.strip_prefix(stat))?;
                rest.split(',').next()?.parse::<usize>().ok()
            })
            .sum();
        // Two calls may leave alone before the rest gather behind them (and the stores'
        // heartbeats are script calls too): far fewer calls than changes.
        assert!(
            calls * 8 <= changes.len(),
            "{} changes took {calls} calls",
            changes.len()
        );
    }
}
