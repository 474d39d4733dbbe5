//! `RedisStore` when Redis fails: killed and restarted, slowed down, overloaded. Each
//! failure policy does what it says, nothing waits past the deadline, and decisions go
//! back to Redis on their own.
#![cfg(feature = "redis")]

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use support::redis_server::{unique_prefix, RedisServer};
use support::slow_proxy::SlowProxy;
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_ratelimit::store::{Change, RedisStore, Store};
use tower_ratelimit::{
    key, Algorithm, FailurePolicy, Policies, Policy, Quota, RateLimitLayer, ResponseBody,
};

const DEADLINE: Duration = Duration::from_millis(50);
/// Scheduling slack on a busy machine, on top of the deadline.
const SLACK: Duration = Duration::from_millis(150);
const QUOTA: Quota = Quota::per_hour(1).burst(3);

/// A service behind a layer with `policy` (and its own in-process fallback store).
fn limited(
    store: &RedisStore,
    policy: FailurePolicy,
) -> impl Service<Request<()>, Response = Response<ResponseBody<String>>, Error = Infallible> + Clone
{
    let layer = RateLimitLayer::new(key::Global, store.clone(), QUOTA).on_store_error(policy);
    layer.layer(service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(String::from("ok")))
    }))
}

/// One request; its status and how long it took.
async fn request<S>(service: &S) -> (StatusCode, Duration)
where
    S: Service<Request<()>, Response = Response<ResponseBody<String>>, Error = Infallible> + Clone,
{
    let started = Instant::now();
    let response = service.clone().oneshot(Request::new(())).await.unwrap();
    (response.status(), started.elapsed())
}

async fn exists(url: &str, key: &[u8]) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<bool>(&mut connection)
        .await
        .unwrap_or(false)
}

/// Kill Redis, then restart it on the same port.
async fn outage(policy: FailurePolicy, during: &[StatusCode]) {
    let mut server = RedisServer::start();
    if server.skip_unless_owned("outage") {
        return;
    }
    let store = RedisStore::builder(server.url())
        .prefix(&unique_prefix("outage"))
        .deadline(DEADLINE)
        .connect()
        .await
        .unwrap();
    let service = limited(&store, policy);
    // One request only: a denial would be remembered by the deny cache and answered
    // locally during the outage, whatever the failure policy.
    assert_eq!(request(&service).await.0, StatusCode::OK, "Redis up");

    server.kill();
    for (i, expected) in during.iter().enumerate() {
        let (status, took) = request(&service).await;
        assert_eq!(
            status, *expected,
            "{policy:?}, request {i} while Redis is down"
        );
        assert!(took <= DEADLINE + SLACK, "request {i} took {took:?}");
    }

    server.restart();
    let restarted = Instant::now();
    // The layer counts `key::Global` in its namespace.
    let policy_key = Policies::from(Policy::new("default", QUOTA, Algorithm::TokenBucket).unwrap())
        .in_namespace("global");
    let key = store.storage_key(&(), &policy_key, 0);
    loop {
        let (_, took) = request(&service).await;
        assert!(took <= DEADLINE + SLACK, "request took {took:?}");
        // A fresh Redis holds the key once a decision was made there again.
        if exists(server.url(), &key).await {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(1),
            "still not back on Redis after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let decision = store.apply(&(), Change::Charge(0), &policy_key).await;
    assert!(
        decision.is_ok_and(|d| d[0].remaining < 3),
        "decided on the restarted Redis"
    );
}

#[tokio::test]
async fn outage_with_open_lets_requests_through() {
    outage(FailurePolicy::Open, &[StatusCode::OK; 12]).await;
}

#[tokio::test]
async fn outage_with_closed_answers_503() {
    outage(
        FailurePolicy::Closed,
        &[StatusCode::SERVICE_UNAVAILABLE; 12],
    )
    .await;
}

#[tokio::test]
async fn outage_with_local_fallback_limits_in_process() {
    let mut during = [StatusCode::TOO_MANY_REQUESTS; 12];
    during[..3].fill(StatusCode::OK);
    outage(FailurePolicy::FallbackLocal, &during).await;
}

/// Redis answers, but too late: the deadline fires, the policy applies, the breaker opens
/// (then calls fail without waiting), and Redis is used again once it is quick again.
#[tokio::test]
async fn slow_redis_hits_the_deadline() {
    let server = RedisServer::start();
    if server.skip_unless_owned("slow_redis_hits_the_deadline") {
        return;
    }
    let proxy = SlowProxy::start(server.port()).await;
    let store = RedisStore::builder(&proxy.url())
        .prefix(&unique_prefix("slow"))
        .deadline(DEADLINE)
        .breaker(3, Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let closed = limited(&store, FailurePolicy::Closed);
    let open = limited(&store, FailurePolicy::Open);
    assert_eq!(request(&closed).await.0, StatusCode::OK);

    proxy.set_delay(Duration::from_millis(300));
    for policy in [
        FailurePolicy::Closed,
        FailurePolicy::Open,
        FailurePolicy::Closed,
    ] {
        let service = if policy == FailurePolicy::Open {
            &open
        } else {
            &closed
        };
        let (status, took) = request(service).await;
        let expected = if policy == FailurePolicy::Open {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        assert_eq!(status, expected, "{policy:?}");
        assert!(
            took >= DEADLINE && took <= DEADLINE + SLACK,
            "took {took:?}"
        );
    }
    // Three failures in a row: the circuit is open and calls fail without a round trip.
    let mut decision = store.apply(
        &(),
        Change::Charge(1),
        &Policy::new("default", QUOTA, Algorithm::TokenBucket)
            .unwrap()
            .into(),
    );
    let poll = std::pin::Pin::new(&mut decision).poll(&mut Context::from_waker(Waker::noop()));
    assert!(
        matches!(poll, Poll::Ready(Err(_))),
        "open circuit fails at once"
    );

    proxy.set_delay(Duration::ZERO);
    let quick = Instant::now();
    // The slow calls ran on Redis (only their replies were late), so the bucket may be
    // empty by now: any answer but 503 comes from Redis.
    while request(&closed).await.0 == StatusCode::SERVICE_UNAVAILABLE {
        assert!(
            quick.elapsed() < Duration::from_secs(2),
            "Redis not used again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// No more calls under way than allowed: the others fail at once.
#[tokio::test]
async fn in_flight_cap_holds() {
    let server = RedisServer::start();
    if server.skip_unless_owned("in_flight_cap_holds") {
        return;
    }
    let proxy = SlowProxy::start(server.port()).await;
    let store = RedisStore::builder(&proxy.url())
        .prefix(&unique_prefix("cap"))
        .deadline(Duration::from_secs(5))
        .max_in_flight(8)
        .connect()
        .await
        .unwrap();
    proxy.set_delay(Duration::from_millis(300));
    let policy: Policies = Policy::new(
        "default",
        Quota::per_hour(1).burst(100),
        Algorithm::TokenBucket,
    )
    .unwrap()
    .into();
    let mut pending = Vec::new();
    let mut refused = 0;
    for i in 0..32u64 {
        let mut decision = store.apply(&i, Change::Charge(1), &policy);
        match std::pin::Pin::new(&mut decision).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Err(_)) => refused += 1,
            Poll::Ready(Ok(decision)) => {
                panic!("answered through a 300 ms proxy at once: {decision:?}")
            }
            Poll::Pending => pending.push(decision),
        }
    }
    assert_eq!((pending.len(), refused), (8, 24));
    for decision in pending {
        assert!(decision.await.unwrap().is_allowed());
    }
    // Calls finished: room again.
    assert!(store
        .apply(&99u64, Change::Charge(1), &policy)
        .await
        .unwrap()
        .is_allowed());
}

/// A store built lazily while Redis is down: the app starts, its decisions fail within the
/// deadline (the failure policy answers), and once Redis is up they are made there.
#[tokio::test]
async fn a_lazy_store_starts_while_redis_is_down_and_uses_it_once_up() {
    let mut server = RedisServer::start();
    if server.skip_unless_owned("a_lazy_store_starts_while_redis_is_down") {
        return;
    }
    server.kill();
    let store = RedisStore::builder(server.url())
        .prefix(&unique_prefix("lazy"))
        .deadline(DEADLINE)
        .connect_lazy()
        .expect("built without Redis");
    let service = limited(&store, FailurePolicy::Closed);
    let (status, took) = request(&service).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(took <= DEADLINE + SLACK, "took {took:?}");

    server.restart();
    let restarted = Instant::now();
    loop {
        let (status, took) = request(&service).await;
        assert!(took <= DEADLINE + SLACK, "took {took:?}");
        if status == StatusCode::OK {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "Redis still unused 5 s after it started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The script was sent with the first call, under the name an eager store loads it by.
    let eager = RedisStore::connect(server.url()).await.unwrap();
    assert_eq!(store.script_sha(), eager.script_sha());
}

/// A server that accepts connections and never answers: `connect` gives up within its
/// connect timeout (1 s by default), with a timeout error, instead of hanging.
#[tokio::test]
async fn connecting_to_a_silent_server_fails_within_the_connect_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let error = RedisStore::connect(&url).await.unwrap_err();
    assert_eq!(
        error.kind(),
        tower_ratelimit::store::StoreErrorKind::Timeout,
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    let quick = RedisStore::builder(&url).connect_timeout(Duration::from_millis(200));
    let started = Instant::now();
    assert!(quick.connect().await.is_err());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    silent.abort();
}

/// Redis at `maxmemory` under `noeviction` refuses the script's writes: decisions fail
/// with their own kind, so operators can tell a full Redis from a dead one. The store
/// also reports the eviction policy it found when connecting.
#[tokio::test]
async fn a_full_redis_is_an_out_of_memory_error_and_eviction_policies_are_reported() {
    let server = RedisServer::start();
    if server.skip_unless_owned("a_full_redis_is_an_out_of_memory_error") {
        return;
    }
    let client = redis::Client::open(server.url()).unwrap();
    let connection = client.get_multiplexed_async_connection().await.unwrap();
    let set = |name: &'static str, value: &'static str| {
        let mut connection = connection.clone();
        async move {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg(name)
                .arg(value)
                .query_async(&mut connection)
                .await
                .unwrap();
        }
    };
    set("maxmemory-policy", "allkeys-lru").await;
    let evicting = RedisStore::connect(server.url()).await.unwrap();
    assert_eq!(evicting.maxmemory_policy(), Some("allkeys-lru"));
    set("maxmemory-policy", "noeviction").await;
    let store = RedisStore::connect(server.url()).await.unwrap();
    assert_eq!(store.maxmemory_policy(), Some("noeviction"));
    set("maxmemory", "1").await;
    let policy = Policy::new("default", QUOTA, Algorithm::TokenBucket)
        .unwrap()
        .into();
    let error = store
        .apply(&"k".to_owned(), Change::Charge(1), &policy)
        .await
        .unwrap_err();
    assert_eq!(
        error.kind(),
        tower_ratelimit::store::StoreErrorKind::OutOfMemory,
        "{error}"
    );
    set("maxmemory", "0").await;
}

/// Three app servers on one Redis count each other through their heartbeats; when Redis
/// dies, each one's fallback enforces a third of the quota, so together they admit one
/// burst, not three.
#[tokio::test]
async fn an_outage_does_not_multiply_the_limit_by_the_app_servers() {
    let mut server = RedisServer::start();
    if server.skip_unless_owned("an_outage_does_not_multiply_the_limit_by_the_app_servers") {
        return;
    }
    let prefix = unique_prefix("outage-share");
    let mut limiters = Vec::new();
    for _ in 0..3 {
        let store = RedisStore::builder(server.url())
            .prefix(&prefix)
            .heartbeat(Duration::from_millis(50))
            .connect()
            .await
            .unwrap();
        limiters.push(tower_ratelimit::Limiter::new(
            store,
            Quota::per_hour(1).burst(30),
        ));
    }
    let started = Instant::now();
    let counted = |limiter: &tower_ratelimit::Limiter<(), RedisStore>| {
        Store::<()>::instances(limiter.store())
    };
    while limiters.iter().any(|limiter| counted(limiter) != Some(3)) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the servers never saw each other"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    let mut admitted = 0;
    for limiter in &limiters {
        for _ in 0..30 {
            let decisions = limiter.check(&()).await.expect("the fallback decides");
            admitted += usize::from(decisions.is_allowed());
        }
    }
    // Each a third of the burst: 10 + 10 + 10 (it was 30 + 30 + 30).
    assert_eq!(admitted, 30);
}

/// A batch that times out fails every change in it within the deadline, and counts as one
/// failure for the breaker: 48 late changes do not open a breaker of 5.
#[tokio::test]
async fn a_late_batch_fails_each_change_in_time_and_counts_once() {
    let server = RedisServer::start();
    if server.skip_unless_owned("a_late_batch_fails_each_change_in_time_and_counts_once") {
        return;
    }
    let proxy = SlowProxy::start(server.port()).await;
    let store = RedisStore::builder(&proxy.url())
        .prefix(&unique_prefix("late-batch"))
        .deadline(DEADLINE)
        .breaker(5, Duration::from_secs(60))
        .connect()
        .await
        .unwrap();
    let policies: Policies = Policy::new("default", QUOTA, Algorithm::TokenBucket)
        .unwrap()
        .into();
    proxy.set_delay(Duration::from_millis(300));
    let started = Instant::now();
    let changes = (0..48u64).map(|key| store.apply(&key, Change::Charge(1), &policies));
    let answers = futures_join_all(changes.collect()).await;
    let took = started.elapsed();
    assert!(took <= DEADLINE + SLACK, "took {took:?}");
    for answer in answers {
        let error = answer.unwrap_err();
        assert_eq!(
            error.kind(),
            tower_ratelimit::store::StoreErrorKind::Timeout,
            "{error}"
        );
    }
    // At most three calls failed (two alone, then the rest together): the breaker is
    // still closed, so the next change is sent (and waits behind the late replies) instead
    // of failing at once.
    let next = store.apply(&0u64, Change::Charge(0), &policies).await;
    let kind = next.map(drop).map_err(|error| error.kind());
    assert_ne!(
        kind,
        Err(tower_ratelimit::store::StoreErrorKind::CircuitOpen)
    );
}

/// Awaits every future, concurrently.
async fn futures_join_all<F: Future + Send + 'static>(futures: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send,
{
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for task in tasks {
        outputs.push(task.await.unwrap());
    }
    outputs
}
