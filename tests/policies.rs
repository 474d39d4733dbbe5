//! Exemptions, shadow mode, the decision in request extensions, per-key policies and
//! quota fingerprints, through the public API and axum.
#![cfg(feature = "axum")]

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::routing::get;
use axum::{Extension, Router};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_ratelimit::clock::ManualClock;
use tower_ratelimit::key::{self, KeyError};
use tower_ratelimit::store::MemoryStore;
use tower_ratelimit::{
    Algorithm, Policies, Policy, Quota, RateLimitInfo, RateLimitLayer, RequestHead,
};

fn get_with(path: &str, api_key: Option<&str>) -> Request<Body> {
    let mut builder = Request::get(path);
    if let Some(api_key) = api_key {
        builder = builder.header("x-api-key", api_key);
    }
    builder.body(Body::empty()).unwrap()
}

async fn send(app: &Router, request: Request<Body>) -> Response<Body> {
    app.clone().oneshot(request).await.unwrap()
}

async fn text(response: Response<Body>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn store() -> MemoryStore<http::HeaderValue, ManualClock> {
    MemoryStore::with_clock(ManualClock::new())
}

#[tokio::test]
async fn skipped_requests_pass_untouched_and_uncounted() {
    let layer = RateLimitLayer::new(key::Header::new("x-api-key"), store(), Quota::per_hour(1))
        .skip(|req| req.uri.path() == "/healthz")
        .skip(|req| req.headers.contains_key("x-internal"));
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/work", get(|| async { "done" }))
        .layer(layer);
    for _ in 0..3 {
        // No key needed, nothing counted, no headers.
        let health = send(&app, get_with("/healthz", None)).await;
        assert_eq!(health.status(), StatusCode::OK);
        assert!(health.headers().get("ratelimit").is_none());
    }
    let internal = Request::get("/work")
        .header("x-internal", "1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, internal).await.status(), StatusCode::OK);
    assert_eq!(send(&app, get_with("/work", Some("k"))).await.status(), 200);
    assert_eq!(send(&app, get_with("/work", Some("k"))).await.status(), 429);
}

#[tokio::test]
async fn a_key_extractor_skips_only_by_explicit_choice() {
    let tenant = |req: &RequestHead| match req.headers.get("x-tenant") {
        Some(tenant) => Ok(tenant.clone()),
        None if req.uri.path().starts_with("/internal/") => Err(KeyError::skip("internal")),
        None => Err(KeyError::new(StatusCode::UNAUTHORIZED, "no tenant")),
    };
    let app = Router::new()
        .route("/internal/stats", get(|| async { "stats" }))
        .route("/api", get(|| async { "api" }))
        .layer(RateLimitLayer::new(tenant, store(), Quota::per_hour(1)));
    for _ in 0..3 {
        let internal = send(&app, get_with("/internal/stats", None)).await;
        assert_eq!(internal.status(), StatusCode::OK);
        assert!(internal.headers().get("ratelimit").is_none());
    }
    assert_eq!(send(&app, get_with("/api", None)).await.status(), 401);
}

#[tokio::test]
async fn shadow_mode_reports_but_never_refuses() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let layer = RateLimitLayer::new(key::Header::new("x-api-key"), store(), Quota::per_hour(2))
        .shadow(true)
        .on_decision(move |event| log.lock().unwrap().push(event.outcome_label()));
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer);
    let mut remaining = Vec::new();
    for _ in 0..4 {
        let response = send(&app, get_with("/", Some("k"))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("retry-after").is_none());
        remaining.push(
            response.headers()["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["1", "0", "0", "0"]);
    // The would-be decisions are visible to the hook.
    assert_eq!(
        *seen.lock().unwrap(),
        ["allowed", "allowed", "denied", "denied"]
    );
}

#[tokio::test]
async fn handlers_read_the_decision_from_the_extensions() {
    let app = Router::new()
        .route(
            "/",
            get(|Extension(info): Extension<RateLimitInfo>| async move {
                format!(
                    "{} left under {}",
                    info.decision().remaining,
                    info.policy().name()
                )
            }),
        )
        .layer(
            RateLimitLayer::new(key::Header::new("x-api-key"), store(), Quota::per_hour(5))
                .expose_decision(true),
        );
    assert_eq!(
        text(send(&app, get_with("/", Some("k"))).await).await,
        "4 left under default"
    );
    assert_eq!(
        text(send(&app, get_with("/", Some("k"))).await).await,
        "3 left under default"
    );
}

#[tokio::test]
async fn per_key_policies_get_their_own_quota_state_and_headers() {
    let pro = Policy::new("pro", Quota::per_hour(20), Algorithm::TokenBucket).unwrap();
    let layer = RateLimitLayer::new(key::Header::new("x-api-key"), store(), Quota::per_hour(2))
        .policy_for(move |api_key, _| api_key.as_bytes().starts_with(b"pro_").then(|| pro.clone()))
        .expose_decision(true);
    let app = Router::new()
        .route(
            "/",
            get(|Extension(info): Extension<RateLimitInfo>| async move {
                info.policy().name().to_owned()
            }),
        )
        .layer(layer);
    let free = send(&app, get_with("/", Some("free_1"))).await;
    assert_eq!(
        free.headers()["ratelimit-policy"],
        r#""default";q=2;w=3600"#
    );
    let paid = send(&app, get_with("/", Some("pro_1"))).await;
    assert_eq!(paid.headers()["ratelimit-policy"], r#""pro";q=20;w=3600"#);
    assert_eq!(paid.headers()["ratelimit"], r#""pro";r=19;t=180"#);
    assert_eq!(text(paid).await, "pro");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            send(&app, get_with("/", Some("free_1")))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 429, 429]);
    for _ in 0..19 {
        assert_eq!(send(&app, get_with("/", Some("pro_1"))).await.status(), 200);
    }
    assert_eq!(send(&app, get_with("/", Some("pro_1"))).await.status(), 429);
}

#[tokio::test]
async fn one_store_refuses_two_quotas_under_one_policy_name() {
    let store = store();
    let layer =
        |quota| RateLimitLayer::try_new(key::Header::new("x-api-key"), store.clone(), quota);
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer(Quota::per_hour(2)).unwrap());
    for _ in 0..2 {
        assert_eq!(send(&app, get_with("/", Some("k"))).await.status(), 200);
    }
    // Another quota under the same name would share the state but count it otherwise.
    let Err(refused) = layer(Quota::per_hour(3)) else {
        panic!("refused")
    };
    assert!(refused.to_string().contains("another quota"), "{refused}");
    // The same quota again is the same limit.
    let again = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer(Quota::per_hour(2)).unwrap());
    assert_eq!(send(&again, get_with("/", Some("k"))).await.status(), 429);
    // Another algorithm is another policy, with its own state.
    let windowed = Router::new().route("/", get(|| async { "ok" })).layer(
        RateLimitLayer::new(
            key::Header::new("x-api-key"),
            store.clone(),
            Quota::per_hour(2),
        )
        .algorithm(Algorithm::FixedWindow),
    );
    assert_eq!(
        send(&windowed, get_with("/", Some("k"))).await.status(),
        200
    );
}

#[tokio::test]
async fn several_policies_are_all_reported_and_refusals_name_the_violated_ones() {
    let clock = ManualClock::new();
    let store = MemoryStore::with_clock(clock.clone());
    let policies = Policies::new([
        Policy::new("second", Quota::per_second(2), Algorithm::TokenBucket).unwrap(),
        Policy::new("hour", Quota::per_hour(3), Algorithm::TokenBucket).unwrap(),
    ])
    .unwrap();
    let layer = RateLimitLayer::with_policy(key::Header::new("x-api-key"), store, policies);
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer);
    let call = || send(&app, get_with("/", Some("k")));

    let first = call().await;
    assert_eq!(first.status(), StatusCode::OK);
    let headers = first.headers();
    assert_eq!(
        headers["ratelimit-policy"],
        r#""second";q=2;w=1, "hour";q=3;w=3600"#
    );
    assert_eq!(
        headers["ratelimit"],
        r#""second";r=1;t=1, "hour";r=2;t=1200"#
    );
    // The legacy headers describe the policy with the least left.
    assert_eq!(headers["x-ratelimit-limit"], "2");
    assert_eq!(headers["x-ratelimit-remaining"], "1");

    assert_eq!(call().await.status(), StatusCode::OK);
    let refused = call().await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    // "hour" was not charged for the refusal: one left.
    assert_eq!(
        refused.headers()["ratelimit"],
        r#""second";r=0;t=1, "hour";r=1;t=1200"#
    );
    assert!(text(refused)
        .await
        .ends_with(r#""violated-policies":["second"]}"#));

    clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(call().await.status(), StatusCode::OK);
    let refused = call().await;
    assert_eq!(refused.headers()["retry-after"], "1199");
    assert_eq!(refused.headers()["x-ratelimit-limit"], "3");
    assert!(text(refused)
        .await
        .ends_with(r#""violated-policies":["hour"]}"#));
}

#[tokio::test]
async fn keys_of_different_kinds_never_share_a_bucket_in_one_store() {
    let store = MemoryStore::<String, ManualClock>::with_clock(ManualClock::new());
    let from = |name: &'static str| {
        move |request: &RequestHead<'_>| {
            let value = request.headers.get(name).ok_or(KeyError::skip("none"))?;
            Ok::<_, KeyError>(value.to_str().unwrap_or_default().to_owned())
        }
    };
    let quota = Quota::per_hour(1);
    let users = RateLimitLayer::new(key::named("user", from("x-user")), store.clone(), quota);
    let tenants = RateLimitLayer::new(key::named("tenant", from("x-tenant")), store, quota);
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(users)
        .layer(tenants);
    let call = || {
        let request = http::Request::get("/")
            .header("x-user", "acme")
            .header("x-tenant", "acme")
            .body(axum::body::Body::empty())
            .unwrap();
        send(&app, request)
    };
    // User "acme" and tenant "acme": two buckets of one unit each, not one.
    assert_eq!(call().await.status(), 200);
    assert_eq!(call().await.status(), 429);
}
