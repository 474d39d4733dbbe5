//! The layer in a real axum server on a loopback socket, under concurrent clients.

mod support;

use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
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

    let url = format!("http://{addr}/api/ping");
    assert_eq!(support::client::concurrent_gets(&url, 100).await, (25, 75));
    server.abort();
}
