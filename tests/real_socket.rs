//! The layer in a real axum server on a loopback socket, under concurrent clients.

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_ratelimit::{key, store::MemoryStore, Quota, RateLimitLayer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_get_exactly_the_burst() {
    // One unit per hour: nothing refills while the test runs, so the count is exact.
    let app = Router::new()
        .route("/api/ping", get(|| async { "pong" }))
        .layer(RateLimitLayer::new(
            key::PeerIp,
            MemoryStore::new(),
            Quota::per_hour(1).burst(25),
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let url: http::Uri = format!("http://{addr}/api/ping").parse().unwrap();
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move { client.get(url).await.unwrap() })
        })
        .collect();
    let mut ok = 0;
    let mut limited = 0;
    for request in requests {
        let response = request.await.unwrap();
        match response.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert!(response.headers().contains_key("retry-after"));
                limited += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, limited), (25, 75));
    server.abort();
}
