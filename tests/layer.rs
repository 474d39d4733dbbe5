//! The layer through axum and tower, one request at a time (`oneshot`).
#![cfg(feature = "axum")]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::{Service, ServiceExt};
use tower_ratelimit::clock::ManualClock;
use tower_ratelimit::key::{self, ClientIp};
use tower_ratelimit::store::{Change, MemoryStore, Store, StoreError, StoreErrorKind};
use tower_ratelimit::{
    weight, Algorithm, DecisionEvent, DecisionSource, Decisions, FailurePolicy, Policies, Policy,
    Quota, RateLimitHeaders, RateLimitLayer,
};

const CLIENT: &str = "192.0.2.10:5000";

fn demo_app(clock: &ManualClock) -> Router {
    Router::new()
        .route("/api/ping", get(|| async { "pong" }))
        .route("/api/upload", post(|| async { "stored" }))
        .layer(
            RateLimitLayer::new(
                key::PeerIp,
                MemoryStore::with_clock(clock.clone()),
                Quota::per_second(1).burst(5),
            )
            .weight(weight::by_path([("/api/upload", 3)]).default(1)),
        )
}

fn request(method: &str, path: &str, peer: &str) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    request.extensions_mut().insert(axum::extract::ConnectInfo(
        peer.parse::<SocketAddr>().unwrap(),
    ));
    request
}

async fn send(app: &Router, request: Request<Body>) -> Response<Body> {
    app.clone().oneshot(request).await.unwrap()
}

fn header<'a>(response: &'a Response<Body>, name: &str) -> &'a str {
    response.headers()[name].to_str().unwrap()
}

async fn body_text(response: Response<Body>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn five_pings_pass_and_the_sixth_gets_429() {
    let app = demo_app(&ManualClock::new());
    for remaining in (0..5).rev() {
        let response = send(&app, request("GET", "/api/ping", CLIENT)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, "ratelimit-policy"),
            r#""default";q=5;w=5"#
        );
        assert_eq!(
            header(&response, "ratelimit"),
            format!(r#""default";r={remaining};t=1"#)
        );
        assert_eq!(header(&response, "x-ratelimit-limit"), "5");
        assert_eq!(
            header(&response, "x-ratelimit-remaining"),
            remaining.to_string()
        );
        assert_eq!(header(&response, "x-ratelimit-reset"), "1");
        assert!(response.headers().get("retry-after").is_none());
        assert_eq!(body_text(response).await, "pong");
    }
    let response = send(&app, request("GET", "/api/ping", CLIENT)).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&response, "retry-after"), "1");
    assert_eq!(header(&response, "ratelimit"), r#""default";r=0;t=1"#);
    assert_eq!(header(&response, "x-ratelimit-remaining"), "0");
    assert_eq!(
        header(&response, "content-type"),
        "application/problem+json"
    );
    let body = body_text(response).await;
    assert!(body.starts_with(
        r#"{"type":"https://iana.org/assignments/http-problem-types#quota-exceeded","title":"Too Many Requests","status":429,"detail":"#
    ), "{body}");
    assert!(
        body.ends_with(r#","violated-policies":["default"]}"#),
        "{body}"
    );
    // The next refusal: the same body, headers of its own, each once.
    let again = send(&app, request("GET", "/api/ping", CLIENT)).await;
    assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    for name in [
        "ratelimit",
        "retry-after",
        "content-type",
        "x-ratelimit-limit",
    ] {
        assert_eq!(again.headers().get_all(name).iter().count(), 1, "{name}");
    }
    assert_eq!(body_text(again).await, body);
    // Another client has its own bucket.
    let other = send(&app, request("GET", "/api/ping", "198.51.100.1:1")).await;
    assert_eq!(other.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_upload_costs_three() {
    let clock = ManualClock::new();
    let app = demo_app(&clock);
    let response = send(&app, request("POST", "/api/upload", CLIENT)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-ratelimit-remaining"), "2");
    let response = send(&app, request("POST", "/api/upload", CLIENT)).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // One unit is missing: it is back after one second.
    assert_eq!(header(&response, "retry-after"), "1");
    assert_eq!(header(&response, "x-ratelimit-remaining"), "2");
    // A ping still fits, then the bucket refills at one per second.
    assert_eq!(
        send(&app, request("GET", "/api/ping", CLIENT))
            .await
            .status(),
        200
    );
    clock.advance(Duration::from_secs(2));
    let response = send(&app, request("POST", "/api/upload", CLIENT)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "x-ratelimit-remaining"), "0");
}

#[tokio::test]
async fn per_route_weights_with_route_layer() {
    let store = MemoryStore::with_clock(ManualClock::new());
    let app = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/search", get(|| async { "results" }))
        .route_layer(
            RateLimitLayer::new(key::PeerIp, store, Quota::per_minute(10))
                .weight(weight::by_route([("/users/{id}", 1), ("/search", 4)])),
        );
    let response = send(&app, request("GET", "/users/7", CLIENT)).await;
    assert_eq!(header(&response, "x-ratelimit-remaining"), "9");
    let response = send(&app, request("GET", "/search", CLIENT)).await;
    assert_eq!(header(&response, "x-ratelimit-remaining"), "5");
    // Both routes share the client's bucket.
    let response = send(&app, request("GET", "/users/8", CLIENT)).await;
    assert_eq!(header(&response, "x-ratelimit-remaining"), "4");
    // Unrouted requests are not limited by a route layer.
    let missing = send(&app, request("GET", "/nowhere", CLIENT)).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.headers().get("x-ratelimit-remaining").is_none());
}

#[tokio::test]
async fn per_route_weights_with_router_layer() {
    let store = MemoryStore::with_clock(ManualClock::new());
    let app = Router::new()
        .route("/api/upload/{id}", post(|| async { "stored" }))
        .layer(
            RateLimitLayer::new(key::PeerIp, store, Quota::per_minute(10))
                .weight(weight::by_route([("/api/upload/{id}", 3)])),
        );
    // axum matches the route before the router's own layers run: charged 3 here too.
    let response = send(&app, request("POST", "/api/upload/42", CLIENT)).await;
    assert_eq!(header(&response, "x-ratelimit-remaining"), "7");
    // An unrouted request reaches the layer with no matched route: the default cost.
    let missing = send(&app, request("GET", "/nowhere", CLIENT)).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&missing, "x-ratelimit-remaining"), "6");
}

#[tokio::test]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let key = ClientIp::new(["10.0.0.0/8"]).unwrap();
    let store = MemoryStore::with_clock(ManualClock::new());
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(RateLimitLayer::new(key, store, Quota::per_hour(3)));
    let spoofed = |n: u32| {
        let mut request = request("GET", "/", CLIENT);
        let forged = format!("203.0.113.{n}");
        request
            .headers_mut()
            .insert("x-forwarded-for", forged.parse().unwrap());
        request
    };
    let statuses: Vec<u16> = {
        let mut statuses = Vec::new();
        for n in 0..5 {
            statuses.push(send(&app, spoofed(n)).await.status().as_u16());
        }
        statuses
    };
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
}

#[tokio::test]
async fn a_request_without_a_peer_address_is_a_500_not_a_shared_bucket() {
    let app = demo_app(&ManualClock::new());
    let request = Request::get("/api/ping").body(Body::empty()).unwrap();
    let response = send(&app, request).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body_text(response).await.contains("connect_info"));
}

#[tokio::test]
async fn grpc_calls_get_resource_exhausted_in_a_trailers_only_response() {
    let store = MemoryStore::with_clock(ManualClock::new());
    let app = Router::new()
        .route("/pkg.Svc/Method", post(|| async { "ok" }))
        .layer(RateLimitLayer::new(key::Global, store, Quota::per_hour(1)));
    let grpc = |version| {
        Request::post("/pkg.Svc/Method")
            .version(version)
            .header("content-type", "application/grpc+proto")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&app, grpc(http::Version::HTTP_2)).await.status(),
        StatusCode::OK
    );
    let response = send(&app, grpc(http::Version::HTTP_2)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "grpc-status"), "8");
    assert_eq!(header(&response, "content-type"), "application/grpc");
    assert_eq!(header(&response, "cache-control"), "no-store");
    assert!(header(&response, "grpc-message").contains("exceeded"));
    assert!(http_body::Body::is_end_stream(response.body()));
    // gRPC runs over HTTP/2 only: an HTTP/1.1 request asking for it gets a plain 429.
    let response = send(&app, grpc(http::Version::HTTP_11)).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&response, "content-type"),
        "application/problem+json"
    );
    assert_eq!(header(&response, "cache-control"), "no-store");
}

#[tokio::test]
async fn a_cost_above_the_burst_gets_413_without_retry_after() {
    let store = MemoryStore::with_clock(ManualClock::new());
    let app = Router::new().route("/big", post(|| async { "ok" })).layer(
        RateLimitLayer::new(key::Global, store, Quota::per_second(1).burst(2))
            .weight(weight::constant(3)),
    );
    let response = send(&app, request("POST", "/big", CLIENT)).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(response.headers().get("retry-after").is_none());
    assert_eq!(header(&response, "x-ratelimit-remaining"), "2");
}

#[tokio::test]
async fn a_zero_cost_request_passes_uncounted() {
    let store = MemoryStore::with_clock(ManualClock::new());
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/work", get(|| async { "done" }))
        .layer(
            RateLimitLayer::new(key::Global, store, Quota::per_hour(1))
                .weight(weight::by_path([("/health", 0)])),
        );
    assert_eq!(
        send(&app, request("GET", "/work", CLIENT)).await.status(),
        200
    );
    for _ in 0..3 {
        let response = send(&app, request("GET", "/health", CLIENT)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-ratelimit-remaining"), "0");
    }
}

#[tokio::test]
async fn header_sets_and_custom_rejections() {
    let store = MemoryStore::with_clock(ManualClock::new());
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        RateLimitLayer::new(key::Global, store, Quota::per_hour(1))
            .headers(RateLimitHeaders::None)
            .on_rejection(|rejection| {
                let mut response =
                    Response::new(Bytes::from(format!("wait, cost {}", rejection.cost)));
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                response
            }),
    );
    let allowed = send(&app, request("GET", "/", CLIENT)).await;
    for name in [
        "ratelimit",
        "ratelimit-policy",
        "x-ratelimit-limit",
        "retry-after",
    ] {
        assert!(allowed.headers().get(name).is_none(), "{name}");
    }
    let rejected = send(&app, request("GET", "/", CLIENT)).await;
    assert_eq!(rejected.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&rejected, "retry-after"), "3600");
    assert!(rejected.headers().get("ratelimit").is_none());
    assert_eq!(body_text(rejected).await, "wait, cost 1");
}

/// A service counting the requests that reach it.
fn counting_service(
    calls: &Arc<AtomicUsize>,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send> + Clone
{
    let calls = Arc::clone(calls);
    tower::service_fn(move |_: Request<Body>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(Response::new(Body::from("ok"))) }
    })
}

#[tokio::test]
async fn a_layer_reading_no_decision_charges_exactly_and_shadows_refusals() {
    for shadow in [false, true] {
        let calls = Arc::new(AtomicUsize::new(0));
        let store = MemoryStore::with_clock(ManualClock::new());
        let layer = RateLimitLayer::new(key::Global, store, Quota::per_hour(2))
            .headers(RateLimitHeaders::None)
            .shadow(shadow);
        let service = tower::Layer::layer(&layer, counting_service(&calls));
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let response = service.clone().oneshot(request("GET", "/", CLIENT)).await;
            statuses.push(response.unwrap().status().as_u16());
        }
        let (expected, reached) = match shadow {
            false => ([200, 200, 429, 429], 2),
            true => ([200; 4], 4),
        };
        assert_eq!(statuses, expected, "shadow: {shadow}");
        assert_eq!(calls.load(Ordering::SeqCst), reached);
        // Both passing requests were charged, though nothing read their decisions.
        let left = layer.limiter().peek(&()).await.unwrap();
        assert_eq!(left[0].remaining, 0, "shadow: {shadow}");
    }
}

#[tokio::test]
async fn refused_requests_never_reach_the_service_and_poll_ready_reserves_nothing() {
    let calls = Arc::new(AtomicUsize::new(0));
    let store = MemoryStore::with_clock(ManualClock::new());
    let layer = RateLimitLayer::new(key::Global, store, Quota::per_hour(2));
    let mut service = tower::Layer::layer(&layer, counting_service(&calls));
    // Readiness alone costs nothing.
    for _ in 0..10 {
        ServiceExt::<Request<Body>>::ready(&mut service)
            .await
            .unwrap();
    }
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = service
            .ready()
            .await
            .unwrap()
            .call(request("GET", "/", CLIENT))
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A store that always fails, after yielding once (like a network store would).
#[derive(Clone)]
struct FailingStore;

struct YieldThenFail(bool);

impl Future for YieldThenFail {
    type Output = Result<Decisions, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if std::mem::replace(&mut self.0, true) {
            Poll::Ready(Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "connection refused",
            )))
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

impl<K> Store<K> for FailingStore {
    type Future = YieldThenFail;

    fn apply(&self, _: &K, _: Change, _: &Policies) -> YieldThenFail {
        YieldThenFail(false)
    }
}

async fn statuses_with(policy: FailurePolicy, calls: &Arc<AtomicUsize>) -> Vec<(u16, bool)> {
    let layer =
        RateLimitLayer::new(key::Global, FailingStore, Quota::per_hour(2)).on_store_error(policy);
    let service = tower::Layer::layer(&layer, counting_service(calls));
    let mut seen = Vec::new();
    for _ in 0..3 {
        let response = service
            .clone()
            .oneshot(request("GET", "/", CLIENT))
            .await
            .unwrap();
        seen.push((
            response.status().as_u16(),
            response.headers().contains_key("ratelimit"),
        ));
    }
    seen
}

#[tokio::test]
async fn store_failures_follow_the_failure_policy() {
    let calls = Arc::new(AtomicUsize::new(0));
    // Open: every request passes, without headers that would claim a count.
    let open = statuses_with(FailurePolicy::Open, &calls).await;
    assert_eq!(open, [(200, false); 3]);
    assert_eq!(calls.swap(0, Ordering::SeqCst), 3);
    // Closed: 503, the service is never called.
    let closed = statuses_with(FailurePolicy::Closed, &calls).await;
    assert_eq!(closed, [(503, false); 3]);
    assert_eq!(calls.swap(0, Ordering::SeqCst), 0);
    // Local fallback: the quota is enforced in process.
    let local = statuses_with(FailurePolicy::FallbackLocal, &calls).await;
    assert_eq!(local, [(200, true), (200, true), (429, true)]);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_on_one_key_admit_exactly_the_burst() {
    let calls = Arc::new(AtomicUsize::new(0));
    let store = MemoryStore::with_clock(ManualClock::new());
    let layer = RateLimitLayer::new(key::Global, store, Quota::per_second(1).burst(50));
    let service = tower::Layer::layer(&layer, counting_service(&calls));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move {
                let mut admitted = 0;
                for _ in 0..20 {
                    let response = service.clone().oneshot(request("GET", "/", CLIENT)).await;
                    admitted += usize::from(response.unwrap().status() == StatusCode::OK);
                }
                admitted
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.unwrap();
    }
    assert_eq!(admitted, 50);
    assert_eq!(calls.load(Ordering::SeqCst), 50);
}

#[tokio::test]
async fn the_decision_hook_sees_every_decision() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    type Seen = Arc<std::sync::Mutex<Vec<(String, &'static str, DecisionSource)>>>;
    let log = |seen: &Seen| {
        let seen = Arc::clone(seen);
        move |event: &DecisionEvent<'_, ()>| {
            assert!(event.latency < Duration::from_secs(5));
            seen.lock().unwrap().push((
                event.policy.name().to_owned(),
                event.outcome_label(),
                event.source,
            ));
        }
    };
    let store = MemoryStore::with_clock(ManualClock::new());
    let layer = RateLimitLayer::new(key::Global, store, Quota::per_hour(1)).on_decision(log(&seen));
    let service = tower::Layer::layer(&layer, counting_service(&Arc::new(AtomicUsize::new(0))));
    for _ in 0..2 {
        service
            .clone()
            .oneshot(request("GET", "/", CLIENT))
            .await
            .unwrap();
    }
    let failing =
        RateLimitLayer::new(key::Global, FailingStore, Quota::per_hour(1)).on_decision(log(&seen));
    let service = tower::Layer::layer(&failing, counting_service(&Arc::new(AtomicUsize::new(0))));
    service.oneshot(request("GET", "/", CLIENT)).await.unwrap();
    let seen = seen.lock().unwrap();
    let default = || "default".to_owned();
    assert_eq!(
        *seen,
        [
            (default(), "allowed", DecisionSource::Store),
            (default(), "denied", DecisionSource::Store),
            (default(), "allowed", DecisionSource::Fallback),
        ]
    );
}

#[tokio::test]
async fn per_route_quotas_compose_layers_over_one_store() {
    let store = MemoryStore::with_clock(ManualClock::new());
    // Layers on one store are told apart by their policies' names.
    let limit = |name, quota| {
        let policy = Policy::new(name, quota, Algorithm::TokenBucket).unwrap();
        RateLimitLayer::with_policy(key::PeerIp, store.clone(), policy)
    };
    let app = Router::new()
        .route(
            "/api/ping",
            get(|| async { "pong" }).layer(limit("ping", Quota::per_minute(3))),
        )
        .route(
            "/api/upload",
            post(|| async { "stored" }).layer(limit("upload", Quota::per_hour(1))),
        );
    // Unnamed, two quotas would meet under "default": refused when built.
    let _default = RateLimitLayer::new(key::PeerIp, store.clone(), Quota::per_minute(3));
    assert!(RateLimitLayer::try_new(key::PeerIp, store.clone(), Quota::per_hour(1)).is_err());
    let upload = send(&app, request("POST", "/api/upload", CLIENT)).await;
    assert_eq!(
        header(&upload, "ratelimit-policy"),
        r#""upload";q=1;w=3600"#
    );
    assert_eq!(
        send(&app, request("POST", "/api/upload", CLIENT))
            .await
            .status(),
        429
    );
    // The ping quota is kept apart from the upload quota in the shared store.
    for remaining in ["2", "1", "0"] {
        let ping = send(&app, request("GET", "/api/ping", CLIENT)).await;
        assert_eq!(header(&ping, "x-ratelimit-remaining"), remaining);
    }
    assert_eq!(
        send(&app, request("GET", "/api/ping", CLIENT))
            .await
            .status(),
        429
    );
}

/// The `RateLimit` field of each of `count` requests through `layer` over a failing store.
async fn fallback_fields(
    layer: RateLimitLayer<key::Global, FailingStore>,
    count: usize,
) -> Vec<String> {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = tower::Layer::layer(&layer, counting_service(&calls));
    let mut fields = Vec::new();
    for _ in 0..count {
        let response = service
            .clone()
            .oneshot(request("GET", "/", CLIENT))
            .await
            .unwrap();
        let field = response.headers()["ratelimit"].to_str().unwrap().to_owned();
        fields.push(format!("{} {field}", response.status().as_u16()));
    }
    fields
}

#[tokio::test]
async fn the_fallback_share_scales_every_policy_of_a_set() {
    let policies = Policies::new([
        Policy::new("burst", Quota::per_hour(4), Algorithm::TokenBucket).unwrap(),
        Policy::new("daily", Quota::per_day(6), Algorithm::TokenBucket).unwrap(),
    ])
    .unwrap();
    let layer = RateLimitLayer::with_policy(key::Global, FailingStore, policies).fallback_share(2);
    // Half of each: 2 per hour and 3 per day, and the daily allowance is still there.
    assert_eq!(
        fallback_fields(layer, 3).await,
        [
            r#"200 "burst";r=1;t=1800, "daily";r=2;t=28800"#,
            r#"200 "burst";r=0;t=1800, "daily";r=1;t=28800"#,
            r#"429 "burst";r=0;t=1800, "daily";r=1;t=28800"#,
        ]
    );
}

#[tokio::test]
async fn builder_methods_commute() {
    let layer = || RateLimitLayer::new(key::Global, FailingStore, Quota::per_hour(4));
    let one = layer().algorithm(Algorithm::FixedWindow).fallback_share(2);
    let other = layer().fallback_share(2).algorithm(Algorithm::FixedWindow);
    let (one, other) = (
        fallback_fields(one, 3).await,
        fallback_fields(other, 3).await,
    );
    assert_eq!(one, other);
    assert!(one[2].starts_with("429"), "{one:?}");
}

#[tokio::test]
async fn a_key_error_releases_the_readiness_the_inner_service_reserved() {
    let layer = RateLimitLayer::new(
        key::Header::new("x-api-key"),
        MemoryStore::new(),
        Quota::per_second(5),
    );
    let inner = tower::limit::ConcurrencyLimit::new(
        tower::service_fn(|_: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::empty()))
        }),
        1,
    );
    let service = tower::Layer::layer(&layer, inner);
    let mut first = service.clone();
    let response = first
        .ready()
        .await
        .unwrap()
        .call(request("GET", "/", CLIENT))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // The only permit went back with the refused request: a clone can get ready.
    let mut second = service.clone();
    let ready = tokio::time::timeout(Duration::from_secs(5), second.ready()).await;
    assert!(ready.is_ok(), "the permit is still held");
}

#[tokio::test]
async fn refund_if_counts_only_failed_logins() {
    let store = MemoryStore::with_clock(ManualClock::new());
    let layer = RateLimitLayer::new(key::PeerIp, store, Quota::per_hour(1).burst(3))
        .refund_if(|status, _| status.is_success());
    let app = Router::new()
        .route(
            "/login",
            post(|body: String| async move {
                if body == "right" {
                    StatusCode::OK
                } else {
                    StatusCode::UNAUTHORIZED
                }
            }),
        )
        .layer(layer.clone());
    let login = |password: &str| {
        let mut request = request("POST", "/login", CLIENT);
        *request.body_mut() = Body::from(password.to_owned());
        send(&app, request)
    };
    // Successes are free, any number of them.
    for _ in 0..5 {
        assert_eq!(login("right").await.status(), 200);
    }
    for _ in 0..3 {
        assert_eq!(login("wrong").await.status(), 401);
    }
    assert_eq!(login("right").await.status(), 429);
    // The layer's limiter is the very state: a reset lets the client in again.
    let peer: std::net::IpAddr = CLIENT.parse::<std::net::SocketAddr>().unwrap().ip();
    layer.limiter().reset(&peer).await.unwrap();
    assert_eq!(login("right").await.status(), 200);
}
