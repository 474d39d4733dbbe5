//! The admin router: authentication, every operation through `oneshot` on both stores,
//! over a real socket (JSON and the server-sent events), and what it logs.
#![cfg(feature = "admin")]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;
use tower_ratelimit::admin::{Admin, AdminError, Stats};
use tower_ratelimit::store::{MemoryStore, Store};
use tower_ratelimit::{key, Limiter, Quota, RateLimitLayer};

const TOKEN: &str = "operator-token-0123456789";

type Key = HeaderValue;

/// An app limited by `x-user` (1 per minute, bursts of 3) with the admin router at `/admin`.
fn limited_app<S: Store<Key>>(store: S) -> (Router, Limiter<Key, S>) {
    let stats = Stats::new();
    let layer = RateLimitLayer::new(
        key::Header::new("x-user"),
        store,
        Quota::per_minute(1).burst(3),
    )
    .on_decision(stats.observer());
    let limiter = layer.limiter().clone();
    let admin = Admin::new(limiter.clone(), stats)
        .token("ops", TOKEN)
        .token("ci", "another-token-0123456789")
        .build()
        .unwrap();
    let app = Router::new()
        .route("/api/ping", get(|| async { "pong" }))
        .layer(layer)
        .nest("/admin", admin);
    (app, limiter)
}

/// The status and body of `method uri` (with `body` as JSON), bearing `token`.
async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

async fn admin(app: &Router, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    call(app, method, &format!("/admin{uri}"), Some(TOKEN), body).await
}

/// A ping as `user`: its status and `RateLimit-Policy`.
async fn ping(app: &Router, user: &str) -> (StatusCode, String) {
    let request = Request::get("/api/ping")
        .header("x-user", user)
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let policy = response
        .headers()
        .get("ratelimit-policy")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status(), policy.unwrap_or_default())
}

fn remaining(answer: &Value) -> u64 {
    answer["policies"][0]["remaining"]
        .as_u64()
        .expect("remaining")
}

#[test]
fn the_router_refuses_to_be_built_without_a_token() {
    let limiter = Limiter::new(MemoryStore::<Key>::new(), Quota::per_second(1));
    let error = Admin::new(limiter.clone(), Stats::new())
        .build()
        .unwrap_err();
    assert_eq!(error, AdminError::NoToken);
    let weak = Admin::new(limiter, Stats::new())
        .token("ops", "short")
        .build()
        .unwrap_err();
    assert_eq!(weak, AdminError::WeakToken("ops".into()));
}

#[tokio::test]
async fn every_route_needs_a_valid_token() {
    let (app, _) = limited_app(MemoryStore::new());
    let routes = [
        ("GET", "/admin"),
        ("GET", "/admin/api/policies"),
        ("GET", "/admin/api/keys?key=alice"),
        ("POST", "/admin/api/keys/reset"),
        ("POST", "/admin/api/keys/refund"),
        ("POST", "/admin/api/keys/block"),
        ("PUT", "/admin/api/policies/default/quota"),
        ("DELETE", "/admin/api/policies/default/quota"),
        ("GET", "/admin/api/stats"),
        ("GET", "/admin/api/stats/stream"),
    ];
    for (method, uri) in routes {
        for token in [None, Some("operator-token-012345678"), Some("")] {
            let request = Request::builder().method(method).uri(uri);
            let request = match token {
                Some(token) => request.header("authorization", format!("Bearer {token}")),
                None => request,
            };
            let response = app
                .clone()
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {uri} {token:?}"
            );
            let challenges: Vec<_> = response
                .headers()
                .get_all("www-authenticate")
                .iter()
                .collect();
            assert_eq!(challenges.len(), 2, "Bearer and Basic");
        }
    }
    // The dashboard with the token, as a header or as a browser's Basic password.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("anyone:{TOKEN}"));
    for authorization in [format!("Bearer {TOKEN}"), format!("Basic {basic}")] {
        let request = Request::get("/admin").header("authorization", authorization);
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"));
        let page = response.into_body().collect().await.unwrap().to_bytes();
        let page = String::from_utf8(page.to_vec()).unwrap();
        assert!(page.contains("<canvas id=\"chart\""));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "nothing from outside"
        );
    }
}

/// Every operation, on `store` (and, when given, a second app server on the same state).
async fn every_operation<S: Store<Key>>(store: S, other: Option<S>) {
    let (app, _) = limited_app(store);
    // Policies.
    let (status, policies) = admin(&app, "GET", "/api/policies", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(policies["namespace"], "header:x-user");
    assert_eq!(policies["policies"][0]["name"], "default");
    assert_eq!(
        policies["policies"][0]["quota"],
        json!({"limit": 1, "period_secs": 60.0, "burst": 3})
    );
    assert_eq!(policies["policies"][0]["changed"], false);
    // Alice spends her burst; mallory is denied again and again.
    for _ in 0..3 {
        assert_eq!(ping(&app, "alice").await.0, StatusCode::OK);
    }
    for _ in 0..8 {
        ping(&app, "mallory").await;
    }
    // Inspect, hashed by default, raw when asked.
    let (status, alice) = admin(&app, "GET", "/api/keys?key=alice", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(remaining(&alice), 0);
    assert_eq!(alice["hash"].as_str().unwrap().len(), 16);
    assert!(alice.get("key").is_none(), "{alice}");
    let (_, raw) = admin(&app, "GET", "/api/keys?key=alice&raw=true", None).await;
    assert_eq!(raw["key"], "alice");
    assert_eq!(raw["hash"], alice["hash"]);
    // Refund two units, then reset.
    let (status, refunded) = admin(
        &app,
        "POST",
        "/api/keys/refund",
        Some(json!({"key": "alice", "units": 2})),
    )
    .await;
    assert_eq!((status, remaining(&refunded)), (StatusCode::OK, 2));
    let (status, reset) = admin(
        &app,
        "POST",
        "/api/keys/reset",
        Some(json!({"key": "alice"})),
    )
    .await;
    assert_eq!((status, remaining(&reset)), (StatusCode::OK, 3));
    assert_eq!(ping(&app, "alice").await.0, StatusCode::OK);
    // Block for ten minutes.
    let (status, blocked) = admin(
        &app,
        "POST",
        "/api/keys/block",
        Some(json!({"key": "alice", "seconds": 600})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let blocked_secs = blocked["policies"][0]["blocked_secs"].as_f64().unwrap();
    assert!((599.0..=600.0).contains(&blocked_secs), "{blocked}");
    assert_eq!(ping(&app, "alice").await.0, StatusCode::TOO_MANY_REQUESTS);
    // The statistics count every decision; mallory leads the denied keys, hashed.
    let (status, stats) = admin(&app, "GET", "/api/stats", None).await;
    assert_eq!(status, StatusCode::OK);
    let totals = &stats["policies"][0]["totals"];
    assert_eq!(stats["outcomes"][0], "allowed");
    assert_eq!(
        (totals[0].as_u64(), totals[2].as_u64()),
        (Some(7), Some(6)),
        "{stats}"
    );
    let top = &stats["top_denied"][0];
    assert_eq!(
        (top["denied"].as_u64(), top.get("key")),
        (Some(5), None),
        "{stats}"
    );
    let (_, raw) = admin(&app, "GET", "/api/stats?raw=true", None).await;
    assert_eq!(raw["top_denied"][0]["key"], "mallory");
    // Named by its hash, mallory is reset.
    let hash = top["hash"].as_str().unwrap().to_owned();
    let (status, reset) = admin(&app, "POST", "/api/keys/reset", Some(json!({"hash": hash}))).await;
    assert_eq!((status, remaining(&reset)), (StatusCode::OK, 3), "{reset}");
    assert_eq!(ping(&app, "mallory").await.0, StatusCode::OK);
    // A new quota: the headers say so, and alice's block and mallory's charge stay.
    let quota = json!({"limit": 2, "period_secs": 60, "burst": 6});
    let (status, policy) = admin(&app, "PUT", "/api/policies/default/quota", Some(quota)).await;
    assert_eq!(status, StatusCode::OK, "{policy}");
    assert_eq!(
        (
            policy["changed"].as_bool(),
            policy["quota"]["burst"].as_u64()
        ),
        (Some(true), Some(6))
    );
    let (status, header) = ping(&app, "mallory").await;
    assert_eq!(
        (status, header.as_str()),
        (StatusCode::OK, r#""default";q=6;w=180"#)
    );
    assert_eq!(ping(&app, "alice").await.0, StatusCode::TOO_MANY_REQUESTS);
    if let Some(other) = other {
        // Another app server on the same state follows the change.
        let (other, _) = limited_app(other);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (_, policies) = admin(&other, "GET", "/api/policies", None).await;
            if policies["policies"][0]["changed"] == true {
                assert_eq!(policies["policies"][0]["quota"]["burst"], 6);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the other server never followed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(ping(&other, "mallory").await.1, r#""default";q=6;w=180"#);
    }
    let (status, restored) = admin(&app, "DELETE", "/api/policies/default/quota", None).await;
    assert_eq!(
        (status, restored["quota"]["burst"].as_u64()),
        (StatusCode::OK, Some(3))
    );
    assert_eq!(ping(&app, "bob").await.1, r#""default";q=3;w=180"#);
    // The quota it was built with, set again, is no change.
    let same = json!({"limit": 1, "period_secs": 60, "burst": 3});
    let (_, policy) = admin(&app, "PUT", "/api/policies/default/quota", Some(same)).await;
    assert_eq!(policy["changed"], false, "{policy}");
}

#[tokio::test]
async fn every_operation_on_memory_store() {
    let store = MemoryStore::new();
    every_operation(store.clone(), Some(store)).await;
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx() {
    let (app, _) = limited_app(MemoryStore::new());
    let cases = [
        (
            "GET",
            "/api/keys",
            None,
            StatusCode::BAD_REQUEST,
            "exactly one of",
        ),
        (
            "GET",
            "/api/keys?key=a&hash=0123456789abcdef",
            None,
            StatusCode::BAD_REQUEST,
            "exactly one of",
        ),
        (
            "GET",
            "/api/keys?key=line%0Abreak",
            None,
            StatusCode::BAD_REQUEST,
            "malformed key",
        ),
        (
            "GET",
            "/api/keys?hash=xyz",
            None,
            StatusCode::BAD_REQUEST,
            "16 hexadecimal",
        ),
        (
            "GET",
            "/api/keys?hash=0123456789abcdef",
            None,
            StatusCode::NOT_FOUND,
            "no key denied",
        ),
        (
            "GET",
            "/api/stats?raw=maybe",
            None,
            StatusCode::BAD_REQUEST,
            "raw",
        ),
        (
            "POST",
            "/api/keys/reset",
            Some(json!({"key": "a".repeat(300)})),
            StatusCode::BAD_REQUEST,
            "more than 256",
        ),
        (
            "POST",
            "/api/keys/refund",
            Some(json!({"key": "a", "units": 0})),
            StatusCode::BAD_REQUEST,
            "at least 1",
        ),
        (
            "POST",
            "/api/keys/refund",
            Some(json!({"key": "a", "units": -1})),
            StatusCode::BAD_REQUEST,
            "units",
        ),
        (
            "POST",
            "/api/keys/block",
            Some(json!({"key": "a", "seconds": -5})),
            StatusCode::BAD_REQUEST,
            "seconds",
        ),
        (
            "POST",
            "/api/keys/block",
            Some(json!({"key": "a", "seconds": 0})),
            StatusCode::BAD_REQUEST,
            "seconds",
        ),
        (
            "POST",
            "/api/keys/block",
            Some(json!({"key": "a", "seconds": 1e30})),
            StatusCode::BAD_REQUEST,
            "100 years",
        ),
        (
            "POST",
            "/api/keys/block",
            Some(json!({"key": "a"})),
            StatusCode::BAD_REQUEST,
            "seconds",
        ),
        (
            "PUT",
            "/api/policies/nope/quota",
            Some(json!({"limit": 1, "period_secs": 1})),
            StatusCode::NOT_FOUND,
            "nope",
        ),
        (
            "PUT",
            "/api/policies/default/quota",
            Some(json!({"limit": 0, "period_secs": 1})),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            "PUT",
            "/api/policies/default/quota",
            Some(json!({"limit": 1, "period_secs": -1})),
            StatusCode::BAD_REQUEST,
            "period",
        ),
        (
            "PUT",
            "/api/policies/default/quota",
            Some(json!({"limit": 5})),
            StatusCode::BAD_REQUEST,
            "new state",
        ),
        (
            "PUT",
            "/api/policies/default/quota",
            Some(json!({"limit": 1, "period_secs": 1, "brust": 5})),
            StatusCode::BAD_REQUEST,
            "brust",
        ),
        (
            "DELETE",
            "/api/policies/nope/quota",
            None,
            StatusCode::NOT_FOUND,
            "nope",
        ),
    ];
    for (method, uri, body, expected, says) in cases {
        let (status, problem) = admin(&app, method, uri, body.clone()).await;
        assert_eq!(status, expected, "{method} {uri} {body:?}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{method} {uri} {body:?}: {detail:?}");
    }
    // Not JSON at all.
    let request = Request::post("/admin/api/keys/reset")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from("{not json"))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    // Nothing changed on the way.
    let (_, policies) = admin(&app, "GET", "/api/policies", None).await;
    assert_eq!(policies["policies"][0]["changed"], false);
}

/// Log lines, kept for a test to read.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn every_action_is_logged_with_who_and_the_hashed_key() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (app, _) = limited_app(MemoryStore::new());
    let (_, alice) = admin(
        &app,
        "POST",
        "/api/keys/block",
        Some(json!({"key": "alice", "seconds": 60})),
    )
    .await;
    admin(
        &app,
        "POST",
        "/api/keys/reset",
        Some(json!({"key": "bob-secret", "raw": true})),
    )
    .await;
    admin(
        &app,
        "PUT",
        "/api/policies/default/quota",
        Some(json!({"limit": 2, "period_secs": 60})),
    )
    .await;
    call(
        &app,
        "GET",
        "/admin/api/policies",
        Some("wrong-token-0123456789"),
        None,
    )
    .await;
    let log = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let line = |needle: &str| {
        log.lines()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{log}"))
            .to_owned()
    };
    let block = line("action=\"block\"");
    assert!(block.contains("who=ops"), "{block}");
    assert!(block.contains(alice["hash"].as_str().unwrap()), "{block}");
    assert!(
        !log.contains("alice"),
        "a key is logged hashed unless asked for raw:\n{log}"
    );
    assert!(line("action=\"reset\"").contains("key=\"bob-secret\""));
    let quota = line("action=\"set_quota\"");
    assert!(
        quota.contains("policy=\"default\"") && quota.contains("limit: 2"),
        "{quota}"
    );
    assert!(line("without a valid token").contains("WARN"));
    assert!(
        !log.contains(TOKEN) && !log.contains("wrong-token"),
        "no token is logged"
    );
}

/// Serves `app` on a loopback port, with peer addresses.
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    addr
}

#[tokio::test]
async fn over_a_socket_json_and_server_sent_events() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let (app, _) = limited_app(MemoryStore::new());
    let addr = serve(app).await;
    let client =
        Client::builder(TokioExecutor::new()).build_http::<http_body_util::Empty<bytes::Bytes>>();
    let get = |path: &str, token: Option<&str>| {
        let mut request = Request::get(format!("http://{addr}{path}"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        client.request(request.body(http_body_util::Empty::new()).unwrap())
    };
    for token in [None, Some("not-the-token-0123456789")] {
        assert_eq!(
            get("/admin/api/stats", token).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    for _ in 0..4 {
        let request = Request::get(format!("http://{addr}/api/ping")).header("x-user", "carol");
        client
            .request(request.body(http_body_util::Empty::new()).unwrap())
            .await
            .unwrap();
    }
    let response = get("/admin/api/stats", Some(TOKEN)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let stats: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(stats["policies"][0]["totals"], json!([3, 0, 1, 0, 0]));
    // The stream: one event a second, each the statistics as JSON.
    let response = get("/admin/api/stats/stream?raw=true", Some(TOKEN))
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut events = Vec::new();
    while events.len() < 2 {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("two events within 5 s");
        let frame = frame.expect("the stream goes on").unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            assert!(event.starts_with("event: stats\n"), "{event:?}");
            let data = event
                .lines()
                .find_map(|line| line.strip_prefix("data: "))
                .unwrap();
            events.push(serde_json::from_str::<Value>(data).unwrap());
        }
    }
    assert_eq!(events[0]["top_denied"][0]["key"], "carol");
    assert_eq!(events[1]["policies"][0]["totals"], json!([3, 0, 1, 0, 0]));
    assert!(events[1]["second"].as_u64() > events[0]["second"].as_u64());
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn every_operation_on_redis_store() {
    use support::redis_server::{unique_prefix, RedisServer};
    use tower_ratelimit::store::RedisStore;

    let server = RedisServer::start();
    let prefix = unique_prefix("admin");
    let store = || async {
        RedisStore::builder(server.url())
            .prefix(&prefix)
            .deadline(Duration::from_secs(5))
            .connect()
            .await
            .unwrap()
    };
    every_operation(store().await, Some(store().await)).await;
}
