//! A real HTTP client for the loopback-server tests.

use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Sends `n` concurrent `GET url` requests; returns how many were answered `200` and how
/// many `429` (each with `Retry-After`). Panics on any other status.
pub async fn concurrent_gets(url: &str, n: usize) -> (usize, usize) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let url: http::Uri = url.parse().unwrap();
    let requests: Vec<_> = (0..n)
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
    (ok, limited)
}
