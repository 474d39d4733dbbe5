//! Two app servers sharing one limit through one Redis.
//!
//! ```sh
//! cargo run --example two_instances --features redis -- [--redis redis://127.0.0.1:6379] [--burst 10] [--requests 40]
//! ```
//!
//! Starts two axum servers on two loopback ports, each with its own `RedisStore` on the
//! same Redis, limited by one global key (1 per minute, bursts of `--burst`). A client
//! fires `--requests` concurrent requests, alternating between them, and prints how many
//! each admitted: together exactly the burst, however they were spread.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::{routing::get, Router};
use bytes::Bytes;
use clap::Parser;
use http::StatusCode;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_ratelimit::{key, store::RedisStore, Quota, RateLimitLayer};

#[derive(Parser)]
struct Args {
    /// The Redis both instances use.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// The shared burst.
    #[arg(long, default_value_t = 10)]
    burst: u64,
    /// Requests to send, half to each instance.
    #[arg(long, default_value_t = 40)]
    requests: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let quota = Quota::per_minute(1).burst(args.burst);
    // A fresh limit for every run of the demo.
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
    let prefix = format!("two-instances-demo:{run}");

    let mut instances: Vec<SocketAddr> = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::builder(&args.redis)
            .prefix(&prefix)
            .connect()
            .await?;
        let app = Router::new()
            .route("/api/ping", get(|| async { "pong" }))
            .layer(RateLimitLayer::new(key::Global, store, quota));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        instances.push(listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    println!(
        "instance A on http://{}, instance B on http://{}, one Redis at {}",
        instances[0], instances[1], args.redis
    );

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let requests = (0..args.requests).map(|i| {
        let (client, instance) = (client.clone(), i % 2);
        let uri = format!("http://{}/api/ping", instances[instance]);
        tokio::spawn(async move {
            let response = client.get(uri.parse().expect("uri")).await;
            (instance, response.map(|r| r.status()))
        })
    });
    let mut admitted = [0; 2];
    let mut limited = [0; 2];
    for request in requests.collect::<Vec<_>>() {
        match request.await? {
            (instance, Ok(StatusCode::OK)) => admitted[instance] += 1,
            (instance, Ok(StatusCode::TOO_MANY_REQUESTS)) => limited[instance] += 1,
            (instance, other) => println!("instance {instance}: unexpected {other:?}"),
        }
    }
    for (name, i) in [("A", 0), ("B", 1)] {
        println!(
            "instance {name}: {} admitted, {} limited",
            admitted[i], limited[i]
        );
    }
    let total = admitted[0] + admitted[1];
    println!(
        "admitted {total} of {} requests in total; the shared burst is {}",
        args.requests, args.burst
    );
    if total != args.burst.min(args.requests as u64) {
        return Err("the instances did not share one limit".into());
    }
    Ok(())
}
