//! The whole layer, one request through `oneshot`: no layer, `RateLimitLayer` and
//! tower_governor's `GovernorLayer`, all keyed by the peer IP from axum's `ConnectInfo`, in
//! front of the same trivial service, for allowed and for rejected requests; allowed with
//! two headers on each side; and, with headers, in front of one that sets its response's
//! content type, as axum handlers do.
//!
//! Every future here is ready on its first poll, so it is polled once with a no-op waker:
//! no runtime is measured.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::GovernorLayer;
use tower_ratelimit::{key, store::MemoryStore, Quota, RateLimitHeaders, RateLimitLayer};

/// Requests made ahead of each timed batch.
const REQUESTS_PER_BATCH: u64 = 256;

fn request() -> Request<()> {
    let mut request = Request::get("/api/ping").body(()).unwrap();
    let peer: SocketAddr = ([10, 0, 0, 1], 40_000).into();
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

fn now<F: Future>(future: F) -> F::Output {
    let future = pin!(future);
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("every service here answers at once"),
    }
}

/// Sends one request, spending the quota of a one-request bucket.
fn spend<S>(service: &S)
where
    S: Service<Request<()>, Error = Infallible> + Clone,
{
    now(service.clone().oneshot(request())).unwrap();
}

/// Benchmarks `service` answering `status`, one fresh request per iteration.
fn bench<S, B>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, service: S, status: StatusCode)
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible> + Clone,
{
    assert_eq!(
        now(service.clone().oneshot(request())).unwrap().status(),
        status
    );
    group.bench_function(name, |b| {
        b.iter_batched(
            request,
            // The response is dropped here, as a server would, not kept for the batch.
            |request| now(service.clone().oneshot(request)).unwrap().status(),
            // Batches small enough to reuse the heap: with criterion's `SmallInput`, a
            // batch of a million requests is a fresh mapping whose pages fault in, and
            // those faults took up to a fifth of the time measured.
            BatchSize::NumIterations(REQUESTS_PER_BATCH),
        )
    });
}

fn layers(c: &mut Criterion) {
    let inner =
        service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(Body::empty())) });
    // As an axum handler answers text: the response has a header of its own.
    let typed = service_fn(|_: Request<()>| async {
        let mut response = Response::new(Body::empty());
        let text = HeaderValue::from_static("text/plain; charset=utf-8");
        response.headers_mut().insert(CONTENT_TYPE, text);
        Ok::<_, Infallible>(response)
    });
    let ours = |quota, headers| {
        RateLimitLayer::new(key::PeerIp, MemoryStore::new(), quota).headers(headers)
    };

    for (outcome, status) in [
        ("allowed", StatusCode::OK),
        ("denied", StatusCode::TOO_MANY_REQUESTS),
    ] {
        // Allowed: 10⁹ per second, never exhausted. Denied: one per hour, spent below.
        let allowed = outcome == "allowed";
        let quota = if allowed {
            Quota::per_second(1_000_000_000)
        } else {
            Quota::per_hour(1)
        };
        // Keyed by `PeerIpKeyExtractor` (the default): `ConnectInfo`, then `SocketAddr`.
        let mut config = GovernorConfigBuilder::default();
        if allowed {
            config.per_nanosecond(1).burst_size(1_000_000_000);
        } else {
            config.per_second(3600).burst_size(1);
        }

        let mut group = c.benchmark_group(format!("layer/{outcome}"));
        if allowed {
            bench(&mut group, "none", inner, status);
        }
        for (name, headers) in [
            ("ours", RateLimitHeaders::Both),
            ("ours_no_headers", RateLimitHeaders::None),
        ] {
            let service = ours(quota, headers).layer(inner);
            if !allowed {
                spend(&service);
            }
            bench(&mut group, name, service, status);
        }
        let plain = GovernorLayer::new(config.finish().unwrap()).layer(inner);
        let with_headers = GovernorLayer::new(config.use_headers().finish().unwrap()).layer(inner);
        if !allowed {
            spend(&plain);
            spend(&with_headers);
        }
        bench(&mut group, "tower_governor", plain, status);
        bench(&mut group, "tower_governor_headers", with_headers, status);
        if allowed {
            // Two headers each: `RateLimit` and `RateLimit-Policy` against tower_governor's
            // `x-ratelimit-limit` and `x-ratelimit-remaining`.
            let ietf = ours(quota, RateLimitHeaders::Ietf).layer(inner);
            bench(&mut group, "ours_ietf_headers", ietf, status);
            let ours = ours(quota, RateLimitHeaders::Both).layer(typed);
            let theirs = GovernorLayer::new(config.use_headers().finish().unwrap()).layer(typed);
            bench(&mut group, "ours_content_type", ours, status);
            bench(
                &mut group,
                "tower_governor_headers_content_type",
                theirs,
                status,
            );
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = layers
}
criterion_main!(benches);
