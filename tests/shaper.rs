//! The leaky-bucket shaper through the layer, on tokio's paused clock: a burst is spread
//! out at the rate instead of rejected, and the queue is bounded by `max_delay`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};
use tower_ratelimit::clock::TokioClock;
use tower_ratelimit::{key, store::MemoryStore, Algorithm, Policy, Quota, RateLimitLayer};

/// When requests reached the inner service, from the start of the test.
type Forwarded = Arc<Mutex<Vec<Duration>>>;

/// A shaped service: two per second with no burst (one slot every 500 ms), a 5 s queue.
fn shaped(
    forwarded: &Forwarded,
) -> impl Service<
    http::Request<()>,
    Response = http::Response<tower_ratelimit::ResponseBody<()>>,
    Error = Infallible,
    Future: Send,
> + Clone
       + Send
       + 'static {
    let shaper = Algorithm::LeakyBucketShaper {
        max_delay: Duration::from_secs(5),
    };
    let policy = Policy::new("default", Quota::per_second(2).burst(1), shaper).unwrap();
    let store = MemoryStore::with_clock(TokioClock::new());
    let layer = RateLimitLayer::with_policy(key::Global, store, policy);
    let start = Instant::now();
    let seen = Arc::clone(forwarded);
    layer.layer(tower::service_fn(move |_: http::Request<()>| {
        seen.lock().unwrap().push(start.elapsed());
        async { Ok::<_, Infallible>(http::Response::new(())) }
    }))
}

#[tokio::test(start_paused = true)]
async fn a_burst_is_spread_at_the_rate_and_the_queue_is_bounded() {
    let forwarded = Forwarded::default();
    let service = shaped(&forwarded);
    let calls: Vec<_> = (0..15)
        .map(|_| tokio::spawn(service.clone().oneshot(http::Request::new(()))))
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        let response = call.await.unwrap().unwrap();
        if response.status() == 429 {
            // The queue has room again 500 ms later: rounded up to 1 s.
            assert_eq!(response.headers()["retry-after"], "1");
        }
        statuses.push(response.status().as_u16());
    }
    // Slots at 0, 0.5, ..., 5 s: eleven fit within the 5 s queue, four do not.
    assert_eq!(statuses.iter().filter(|&&s| s == 200).count(), 11);
    assert_eq!(statuses.iter().filter(|&&s| s == 429).count(), 4);
    let mut times = forwarded.lock().unwrap().clone();
    times.sort();
    let expected: Vec<Duration> = (0..11).map(|i| Duration::from_millis(500 * i)).collect();
    assert_eq!(times, expected);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_keeps_its_slot() {
    let forwarded = Forwarded::default();
    let service = shaped(&forwarded);
    let first = service
        .clone()
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    // The second request waits 500 ms for its slot; it is cancelled after 100 ms.
    let waiting = tokio::spawn(service.clone().oneshot(http::Request::new(())));
    tokio::time::sleep(Duration::from_millis(100)).await;
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    // The slot at 500 ms stays taken: the next request gets the one at 1 s.
    let third = service.oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(third.status(), 200);
    assert_eq!(
        *forwarded.lock().unwrap(),
        [Duration::ZERO, Duration::from_secs(1)]
    );
}
