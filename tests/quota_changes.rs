//! Quotas changed at run time (`Limiter::set_quota`): every limiter over the store follows,
//! the spent state stays, the layer's headers report the new quota; on one `MemoryStore`
//! and across app servers sharing a Redis.

mod support;

use std::convert::Infallible;

use http::{Request, Response};
use tower::{Layer, ServiceExt};
use tower_ratelimit::clock::ManualClock;
use tower_ratelimit::store::{MemoryStore, Store};
use tower_ratelimit::{
    key, Algorithm, Limiter, Policies, Policy, Quota, QuotaChangeError, RateLimitLayer,
};

type Memory = MemoryStore<&'static str, ManualClock>;

fn window(quota: Quota) -> Policy {
    Policy::new("window", quota, Algorithm::FixedWindow).unwrap()
}

#[tokio::test]
async fn every_limiter_over_the_store_follows_and_the_spent_state_stays() {
    let store: Memory = MemoryStore::with_clock(ManualClock::new());
    let a = Limiter::new(store.clone(), Quota::per_hour(1).burst(4));
    let b = Limiter::new(store.clone(), Quota::per_hour(1).burst(4));
    assert!(a.check_n_now(&"k", 3).is_allowed());
    let policy = a
        .set_quota("default", Quota::per_hour(1).burst(10))
        .await
        .unwrap();
    assert_eq!(policy.quota().burst_size(), 10);
    // Both limiters decide under the new burst, with the 3 units spent.
    for limiter in [&a, &b] {
        assert_eq!(limiter.peek(&"k").await.unwrap()[0].remaining, 7);
        assert_eq!(limiter.current_policies()[0].quota().burst_size(), 10);
    }
    assert_eq!(b.check_n_now(&"k", 7)[0].remaining, 0);
    assert!(!a.check_now(&"k").is_allowed());
    // A limiter built now, with the quota of the code, follows the change too.
    let c = Limiter::new(store.clone(), Quota::per_hour(1).burst(4));
    assert_eq!(c.check_now(&"other")[0].remaining, 9);
    // Back to the quota each was built with: the debt of 10 units stays.
    b.restore_quota("default").await.unwrap();
    for limiter in [&a, &b, &c] {
        assert_eq!(limiter.current_policies(), *limiter.policies());
        assert!(!limiter.check_now(&"k").is_allowed());
    }
    assert_eq!(a.peek(&"other").await.unwrap()[0].limit, 4);
    // Unchanged, two quotas under one name are still refused.
    let other = Policy::new("default", Quota::per_hour(2), Algorithm::TokenBucket).unwrap();
    assert!(Limiter::builder(store, other).build().is_err());
}

#[tokio::test]
async fn a_change_that_cannot_hold_is_refused_and_changes_nothing() {
    let store: Memory = MemoryStore::with_clock(ManualClock::new());
    let policies = Policies::new([
        Policy::new("burst", Quota::per_second(5), Algorithm::TokenBucket).unwrap(),
        window(Quota::per_minute(100)),
    ])
    .unwrap();
    let limiter = Limiter::builder(store, policies).build().unwrap();
    let refused = [
        ("nope", Quota::per_second(1)),
        ("burst", Quota::per_second(0)),
        ("burst", Quota::per_second(5).burst(0)),
        // A refilling bucket turned fixed, a window's new period: new states.
        ("burst", Quota::fixed(5)),
        ("window", Quota::per_hour(100)),
    ];
    for (name, quota) in refused {
        let error = limiter.set_quota(name, quota).await.unwrap_err();
        let expected = match (name, quota.period()) {
            ("nope", _) => matches!(error, QuotaChangeError::UnknownPolicy(_)),
            ("window", _) | ("burst", None) => matches!(error, QuotaChangeError::Identity(_)),
            _ => matches!(error, QuotaChangeError::Invalid(_)),
        };
        assert!(expected, "{name} {quota:?}: {error:?}");
    }
    assert_eq!(limiter.current_policies(), *limiter.policies());
    // A window's burst may change within its period.
    let raised = limiter
        .set_quota("window", Quota::per_minute(200))
        .await
        .unwrap();
    assert_eq!(raised.quota().burst_size(), 200);
    assert_eq!(limiter.check_now(&"k")[1].remaining, 199);
    assert_eq!(
        limiter.check_now(&"k")[0].remaining,
        3,
        "the other policy kept its quota"
    );
}

/// `RateLimit-Policy`, `RateLimit` and `X-RateLimit-Limit` of one more request.
async fn headers_after<S, B>(service: &S) -> (String, String, String)
where
    S: tower::Service<Request<()>, Response = Response<B>, Error = Infallible> + Clone,
{
    let response = service.clone().oneshot(Request::new(())).await.unwrap();
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    (
        header("ratelimit-policy"),
        header("ratelimit"),
        header("x-ratelimit-limit"),
    )
}

#[tokio::test]
async fn the_layer_reports_the_new_quota() {
    let layer = RateLimitLayer::new(
        key::Global,
        MemoryStore::new(),
        Quota::per_minute(1).burst(2),
    );
    let limiter = layer.limiter().clone();
    let service = layer.layer(tower::service_fn(|_: Request<()>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(())))
    }));
    let before = headers_after(&service).await;
    assert_eq!(before.0, r#""default";q=2;w=120"#);
    assert_eq!(before.2, "2");
    limiter
        .set_quota("default", Quota::per_minute(2).burst(6))
        .await
        .unwrap();
    let (policy, field, limit) = headers_after(&service).await;
    assert_eq!(policy, r#""default";q=6;w=180"#);
    // The minute spent under the old quota is two units of the new one.
    assert_eq!(field, r#""default";r=3;t=30"#);
    assert_eq!(limit, "6");
    limiter.restore_quota("default").await.unwrap();
    assert_eq!(headers_after(&service).await.0, r#""default";q=2;w=120"#);
}

#[tokio::test]
async fn a_store_that_shares_no_quotas_refuses_changes() {
    /// A store of its own over a `MemoryStore`, without a quota board.
    #[derive(Clone)]
    struct Plain(MemoryStore<&'static str>);

    impl Store<&'static str> for Plain {
        type Future = <MemoryStore<&'static str> as Store<&'static str>>::Future;

        fn apply(
            &self,
            key: &&'static str,
            change: tower_ratelimit::store::Change,
            policies: &Policies,
        ) -> Self::Future {
            self.0.apply(key, change, policies)
        }
    }

    let limiter = Limiter::new(Plain(MemoryStore::new()), Quota::per_second(1));
    let error = limiter
        .set_quota("default", Quota::per_second(2))
        .await
        .unwrap_err();
    assert!(matches!(error, QuotaChangeError::Store(_)), "{error}");
    assert_eq!(limiter.current_policies(), *limiter.policies());
}

#[cfg(feature = "redis")]
mod redis {
    use std::time::Duration;

    use super::*;
    use support::redis_server::{store, unique_prefix, RedisServer};
    use tower_ratelimit::store::RedisStore;

    /// Polls `f` until it holds, for at most 5 s.
    async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn burst(limiter: &Limiter<String, RedisStore>) -> u64 {
        limiter.current_policies()[0].quota().burst_size()
    }

    #[tokio::test]
    async fn a_change_on_one_app_server_reaches_the_others_and_newcomers() {
        let server = RedisServer::start();
        let prefix = unique_prefix("quota-change");
        let quota = Quota::per_hour(1).burst(4);
        let a = Limiter::new(store(&server, &prefix).await, quota);
        let b = Limiter::new(store(&server, &prefix).await, quota);
        let elsewhere = Limiter::new(store(&server, &unique_prefix("other")).await, quota);
        let key = "user".to_owned();
        assert!(a.check_n(&key, 3).await.unwrap().is_allowed());
        a.set_quota("default", Quota::per_hour(1).burst(10))
            .await
            .unwrap();
        assert_eq!(burst(&a), 10, "the server that made it, at once");
        eventually("b follows", || burst(&b) == 10).await;
        // The state in Redis is the one state: 3 spent of 10.
        let decisions = b.check(&key).await.unwrap();
        assert_eq!((decisions[0].limit, decisions[0].remaining), (10, 6));
        // A server started now reads the change when it connects.
        let c = Limiter::new(store(&server, &prefix).await, quota);
        assert_eq!(burst(&c), 10);
        assert_eq!(burst(&elsewhere), 4, "another prefix is another limit");
        b.restore_quota("default").await.unwrap();
        eventually("a and c restore", || burst(&a) == 4 && burst(&c) == 4).await;
        assert_eq!(burst(&b), 4);
        assert!(!c.check(&key).await.unwrap().is_allowed(), "the debt stays");
    }

    #[tokio::test]
    async fn a_quota_redis_cannot_compute_exactly_is_refused_at_run_time() {
        let server = RedisServer::start();
        let daily = Policy::new("daily", Quota::per_day(1000), Algorithm::SlidingWindow).unwrap();
        let store = store(&server, &unique_prefix("quota-exact")).await;
        let limiter: Limiter<String, _> = Limiter::builder(store, daily).build().unwrap();
        // Fine in process; beyond what Lua's doubles count exactly.
        let error = limiter
            .set_quota("daily", Quota::per_day(200_000))
            .await
            .unwrap_err();
        assert!(matches!(error, QuotaChangeError::Store(_)), "{error}");
        assert_eq!(limiter.current_policies(), *limiter.policies());
    }
}
