//! The layer in a plain hyper server (no axum) on a loopback socket, under concurrent
//! clients: the peer address inserted per connection is the key.

mod support;

use tower_ratelimit::Quota;

#[path = "../examples/hyper.rs"]
#[allow(dead_code)] // the example's `main`
mod example;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_get_exactly_the_burst() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // One unit per hour: nothing refills while the test runs, so the count is exact.
    let server = tokio::spawn(example::serve(listener, Quota::per_hour(1).burst(25)));

    let url = format!("http://{addr}/");
    assert_eq!(support::client::concurrent_gets(&url, 100).await, (25, 75));
    server.abort();
}
