//! The layer in front of a real tonic server, called by a real tonic client.
#![cfg(feature = "tonic")]

use std::net::SocketAddr;

use tonic::Code;
use tower_ratelimit::Quota;

#[path = "../examples/grpc.rs"]
#[allow(dead_code)] // the example's `main`
mod example;

use example::{Client, PING, UPLOAD};

/// Starts the example server on a free loopback port, with `burst` units that do not
/// refill while a test runs, and connects a client to it.
async fn server_and_client(burst: u64) -> Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let limiter = example::limiter(Quota::per_hour(1).burst(burst));
    tokio::spawn(example::serve(listener, limiter));
    Client::connect(addr).await.unwrap()
}

fn remaining<T>(response: &tonic::Response<T>) -> &str {
    let value = response.metadata().get("x-ratelimit-remaining").unwrap();
    value.to_str().unwrap()
}

#[tokio::test]
async fn calls_past_the_burst_get_resource_exhausted_keyed_by_the_peer() {
    let mut client = server_and_client(3).await;
    // Without tonic's `TcpConnectInfo`, `PeerIp` has no key and every call is `Internal`.
    for left in ["2", "1", "0"] {
        let response = client.call(PING).await.unwrap();
        assert_eq!(response.get_ref().text, "pong");
        assert_eq!(remaining(&response), left);
    }
    let status = client.call(PING).await.unwrap_err();
    // An HTTP 429 would reach the client as `Unavailable`.
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("retry in"), "{status:?}");
    // The next unit comes an hour after the first call; the headers travel as metadata.
    let retry_after = status.metadata().get("retry-after").unwrap();
    assert_eq!(retry_after.to_str().unwrap(), "3600");
}

#[tokio::test]
async fn the_expensive_method_costs_three() {
    let mut client = server_and_client(3).await;
    let response = client.call(UPLOAD).await.unwrap();
    assert_eq!(response.get_ref().text, "stored");
    assert_eq!(remaining(&response), "0");
    let status = client.call(PING).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}
