//! The limiter without HTTP: checks, looks and the management of a key's state, on the
//! in-process store (exact, on a manual or Tokio's paused clock) and on a real Redis.

mod support;

use std::time::Duration;

use tower_ratelimit::clock::{ManualClock, TokioClock};
use tower_ratelimit::store::{MemoryStore, StoreErrorKind, MAX_BLOCK};
use tower_ratelimit::{Algorithm, Limiter, Outcome, Policy, Quota, WaitError};

fn limiter(
    quota: Quota,
) -> (
    Limiter<&'static str, MemoryStore<&'static str, ManualClock>>,
    ManualClock,
) {
    let clock = ManualClock::new();
    let store = MemoryStore::with_clock(clock.clone());
    (Limiter::new(store, quota), clock)
}

#[tokio::test]
async fn login_throttling_counts_failures_and_a_success_resets() {
    let (logins, _) = limiter(Quota::per_minute(1).burst(3));
    for left in [2, 1, 0] {
        let decision = logins.check(&"alice").await.unwrap();
        assert_eq!((decision.is_allowed(), decision[0].remaining), (true, left));
    }
    assert!(!logins.check_now(&"alice").is_allowed());
    // Someone else is not affected; a successful login starts alice afresh.
    assert!(logins.check_now(&"bob").is_allowed());
    assert_eq!(logins.reset(&"alice").await.unwrap()[0].remaining, 3);
    assert_eq!(logins.peek(&"alice").await.unwrap()[0].remaining, 3);
    assert_eq!(
        logins.peek(&"alice").await.unwrap()[0].remaining,
        3,
        "a look charges nothing"
    );
}

#[tokio::test]
async fn refunds_penalties_and_blocks_move_the_next_admission() {
    let (limiter, clock) = limiter(Quota::per_second(1).burst(4));
    assert_eq!(limiter.check_n_now(&"k", 4)[0].remaining, 0);
    assert_eq!(limiter.refund(&"k", 2).await.unwrap()[0].remaining, 2);
    // Into debt: 2 units + 3 more than the bucket holds, so 3 s before the next unit.
    let debt = limiter.penalize(&"k", 5).await.unwrap();
    let retry = |decisions: &tower_ratelimit::Decisions| match decisions[0].outcome {
        Outcome::Denied { retry_after } => retry_after,
        other => panic!("not denied: {other:?}"),
    };
    assert_eq!(retry(&debt), Some(Duration::from_secs(3)));
    clock.advance(Duration::from_secs(4));
    assert!(limiter.check_now(&"k").is_allowed());
    let blocked = limiter.block(&"k", Duration::from_secs(30)).await.unwrap();
    assert_eq!(retry(&blocked), Some(Duration::from_secs(30)));
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        retry(&limiter.check_now(&"k")),
        Some(Duration::from_secs(1))
    );
    clock.advance(Duration::from_secs(1));
    assert!(limiter.check_now(&"k").is_allowed());
}

#[tokio::test]
async fn a_block_beyond_100_years_is_a_typed_error() {
    let (limiter, _) = limiter(Quota::per_second(1));
    let error = limiter
        .block(&"k", MAX_BLOCK + Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::InvalidChange);
    assert!(limiter.block(&"k", MAX_BLOCK).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn until_ready_waits_for_the_slot_and_gives_up_past_its_longest_wait() {
    let store = MemoryStore::with_clock(TokioClock::new());
    let limiter = Limiter::new(store, Quota::per_second(2).burst(1));
    let started = tokio::time::Instant::now();
    for _ in 0..3 {
        limiter
            .until_ready(&"job", Duration::from_secs(1))
            .await
            .unwrap();
    }
    // One at once, then one every 500 ms.
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    let too_long = limiter
        .until_ready_n(&"job", 1, Duration::from_millis(100))
        .await;
    assert!(
        matches!(too_long, Err(WaitError::TooLong(_))),
        "{too_long:?}"
    );
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "gave up without waiting"
    );
    let never = limiter
        .until_ready_n(&"job", 2, Duration::from_secs(60))
        .await;
    assert!(matches!(never, Err(WaitError::TooLong(_))));
}

#[test]
fn a_quota_the_store_cannot_enforce_is_refused_when_built() {
    let store = MemoryStore::<&str>::new();
    let first = Limiter::new(store.clone(), Quota::per_minute(5));
    assert_eq!(first.policies()[0].name(), "default");
    let other = Policy::new("default", Quota::per_minute(6), Algorithm::TokenBucket).unwrap();
    let error = Limiter::builder(store, other).build().unwrap_err();
    assert!(error.to_string().contains("another quota"), "{error}");
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use support::redis_server::{store, unique_prefix, RedisServer};
    use tower_ratelimit::store::RedisStore;

    #[tokio::test]
    async fn every_operation_runs_on_redis() {
        let server = RedisServer::start();
        let store = store(&server, &unique_prefix("limiter")).await;
        let limiter = Limiter::new(store, Quota::per_hour(1).burst(4));
        let key = "user".to_owned();
        assert_eq!(limiter.check_n(&key, 4).await.unwrap()[0].remaining, 0);
        assert!(!limiter.check(&key).await.unwrap().is_allowed());
        assert_eq!(limiter.refund(&key, 3).await.unwrap()[0].remaining, 3);
        assert_eq!(limiter.peek(&key).await.unwrap()[0].remaining, 3);
        assert!(!limiter.penalize(&key, 5).await.unwrap().is_allowed());
        assert_eq!(limiter.reset(&key).await.unwrap()[0].remaining, 4);
        let blocked = limiter.block(&key, Duration::from_secs(60)).await.unwrap();
        assert_eq!(blocked[0].remaining, 0);
        assert!(!limiter.check(&key).await.unwrap().is_allowed());
        assert!(limiter.reset(&key).await.unwrap().is_allowed());
        assert!(limiter.check(&key).await.unwrap().is_allowed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refunds_and_resets_racing_charges_never_over_admit_across_stores() {
        let server = RedisServer::start();
        let prefix = unique_prefix("race");
        let mut limiters = Vec::new();
        for _ in 0..3 {
            let store = store(&server, &prefix).await;
            limiters.push(Limiter::new(store, Quota::per_hour(1).burst(40)));
        }
        let key = || "hot".to_owned();
        let mut charges = Vec::new();
        for limiter in &limiters {
            for _ in 0..32 {
                let limiter = limiter.clone();
                charges.push(tokio::spawn(async move {
                    let mut admitted = 0;
                    for _ in 0..4 {
                        admitted += u64::from(limiter.check(&key()).await.unwrap().is_allowed());
                    }
                    admitted
                }));
            }
        }
        let refunder = {
            let limiter = limiters[0].clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    limiter.refund(&key(), 1).await.unwrap();
                }
            })
        };
        let mut admitted = 0;
        for charge in charges {
            admitted += charge.await.unwrap();
        }
        refunder.await.unwrap();
        let left = limiters[1].peek(&key()).await.unwrap()[0].remaining;
        // 384 requests for 40 units and at most 20 given back: nothing lost, nothing extra.
        assert!(
            (40..=60).contains(&(admitted + left)),
            "{admitted} + {left}"
        );
        // A reset on one app server is seen by the others at once.
        limiters[2].reset(&key()).await.unwrap();
        assert_eq!(limiters[0].peek(&key()).await.unwrap()[0].remaining, 40);
    }

    #[tokio::test]
    async fn a_changed_quota_inherits_the_spent_state_during_a_rolling_deploy() {
        let server = RedisServer::start();
        let prefix = unique_prefix("deploy");
        // The old and the new release, side by side on one Redis.
        let old = Limiter::new(store(&server, &prefix).await, Quota::per_hour(10));
        let new = Limiter::new(store(&server, &prefix).await, Quota::per_hour(20));
        assert_eq!(
            old.check_n(&"k".to_owned(), 10).await.unwrap()[0].remaining,
            0
        );
        // The debt is an hour: under the new quota that is 20 units spent, none left.
        assert!(!new.check(&"k".to_owned()).await.unwrap().is_allowed());
        assert!(!old.check(&"k".to_owned()).await.unwrap().is_allowed());
        // A window keeps its count when its burst changes.
        let window = |burst| Policy::new("w", Quota::per_hour(burst), Algorithm::FixedWindow);
        let old = Limiter::builder(store(&server, &prefix).await, window(5).unwrap());
        let new = Limiter::builder(store(&server, &prefix).await, window(8).unwrap());
        let (old, new) = (old.build().unwrap(), new.build().unwrap());
        assert_eq!(
            old.check_n(&"k".to_owned(), 4).await.unwrap()[0].remaining,
            1
        );
        assert_eq!(new.check(&"k".to_owned()).await.unwrap()[0].remaining, 3);
        let lowered = Limiter::builder(store(&server, &prefix).await, window(2).unwrap());
        let lowered = lowered
            .build()
            .unwrap()
            .check(&"k".to_owned())
            .await
            .unwrap();
        assert_eq!((lowered.is_allowed(), lowered[0].remaining), (false, 0));
    }

    /// Two app servers on one Redis; the first has spent key `k`'s burst of 2 and cached
    /// the denial that followed.
    async fn two_servers_with_a_cached_denial(
        server: &RedisServer,
        name: &str,
    ) -> (
        Limiter<String, RedisStore>,
        Limiter<String, RedisStore>,
        String,
    ) {
        let prefix = unique_prefix(name);
        let quota = Quota::per_hour(1).burst(2);
        let (a, b) = (
            Limiter::new(store(server, &prefix).await, quota),
            Limiter::new(store(server, &prefix).await, quota),
        );
        let key = "k".to_owned();
        assert_eq!(a.check_n(&key, 2).await.unwrap()[0].remaining, 0);
        assert!(
            !a.check(&key).await.unwrap().is_allowed(),
            "denied, and cached"
        );
        (a, b, key)
    }

    /// What the deny cache does when a key's state vanishes behind its back (an external
    /// `DEL`, Redis losing its data): the app server that saw the denial keeps denying
    /// locally until the bound it recorded has passed; the others ask Redis and admit. A
    /// reset through the limiter clears this server's cache at once.
    #[tokio::test]
    async fn an_external_del_is_seen_by_other_servers_and_by_a_reset() {
        let server = RedisServer::start();
        let (a, b, key) = two_servers_with_a_cached_denial(&server, "del").await;
        let storage_key = a.store().storage_key(&key, a.policies(), 0);
        let client = ::redis::Client::open(server.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = ::redis::cmd("DEL")
            .arg(&storage_key)
            .query_async(&mut connection)
            .await
            .unwrap();
        let local = a.check(&key).await.unwrap();
        assert!(!local.is_allowed(), "still denied from the deny cache");
        assert!(b.check(&key).await.unwrap().is_allowed(), "Redis admits");
        a.reset(&key).await.unwrap();
        assert!(a.check(&key).await.unwrap().is_allowed());
    }

    /// How long `limiter` keeps denying `key` from its deny cache, up to 5 s.
    async fn denied_for(limiter: &Limiter<String, RedisStore>, key: &String) -> Duration {
        let started = std::time::Instant::now();
        while !limiter.check(key).await.unwrap().is_allowed() {
            assert!(started.elapsed() < Duration::from_secs(5), "still denied");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        started.elapsed()
    }

    #[tokio::test]
    async fn a_reset_or_refund_on_one_app_server_reaches_the_deny_caches_of_the_others() {
        let server = RedisServer::start();
        let (a, b, key) = two_servers_with_a_cached_denial(&server, "coherent").await;
        b.reset(&key).await.unwrap();
        // One pub/sub delivery, not the hour the cached bound would have held.
        assert!(denied_for(&a, &key).await < Duration::from_secs(1));
        // That check spent one of the two units: spend the other, and be denied again.
        assert_eq!(a.check(&key).await.unwrap()[0].remaining, 0);
        assert!(!a.check(&key).await.unwrap().is_allowed());
        b.refund(&key, 1).await.unwrap();
        assert!(denied_for(&a, &key).await < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_quota_redis_cannot_compute_exactly_is_refused_when_built() {
        let server = RedisServer::start();
        let store = store(&server, &unique_prefix("exact")).await;
        // 200 000 per day in a sliding window: (burst + 1) × period exceeds 2^53 µs.
        let policy =
            Policy::new("daily", Quota::per_day(200_000), Algorithm::SlidingWindow).unwrap();
        let error = Limiter::<String, _>::builder(store, policy)
            .build()
            .unwrap_err();
        assert!(error.to_string().contains("exactly"), "{error}");
    }
}
