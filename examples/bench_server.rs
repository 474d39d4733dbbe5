//! A hello-world axum server (`GET /` answers `hello`) for end-to-end load tests, behind
//! no layer, `RateLimitLayer` (in-process or Redis store) or tower_governor's
//! `GovernorLayer`. Every limiter is keyed by the peer IP and never limits, so each request
//! costs one allowed decision. `static-headers` has no layer either: its handler answers
//! with the five rate-limit headers that `ours` adds, fixed, which is what carrying them
//! costs without deciding anything.
//!
//! ```text
//! cargo run --release --example bench_server [--features redis] --
//!     [--addr 127.0.0.1:0]
//!     [--mode none|static-headers|ours|ours-no-headers|ours-redis|governor]
//!     [--redis URL] [--threads N]
//! ```
//!
//! `benches/e2e.sh` runs `wrk` against each mode and prints the table.

mod support;

use std::net::SocketAddr;

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use clap::{Parser, ValueEnum};
use http::{HeaderName, HeaderValue};
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::PeerIpKeyExtractor;
use tower_governor::GovernorLayer;
use tower_ratelimit::store::MemoryStore;
use tower_ratelimit::{key, Quota, RateLimitHeaders, RateLimitLayer};

#[derive(Parser)]
#[command(name = "bench_server", about = "A hello-world server for load tests")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// The layer in front of the handler.
    #[arg(long, value_enum, default_value_t = Mode::None)]
    mode: Mode,
    /// The Redis server for `--mode ours-redis`.
    #[arg(long, value_name = "URL", default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// No layer.
    None,
    /// No layer; the answer carries the rate-limit headers of `ours`, fixed.
    StaticHeaders,
    /// `RateLimitLayer` with a `MemoryStore`.
    Ours,
    /// The same without rate-limit headers (`RateLimitHeaders::None`).
    OursNoHeaders,
    /// `RateLimitLayer` with a `RedisStore` (needs `--features redis`).
    OursRedis,
    /// tower_governor's `GovernorLayer`.
    Governor,
}

/// Exits with a usage error naming `flag`.
fn fail(flag: &str, message: impl std::fmt::Display) -> ! {
    support::fail::<Args>(flag, message)
}

/// 10⁹ requests per second per peer: never reached, so every decision admits.
fn quota() -> Quota {
    Quota::per_second(1_000_000_000)
}

#[cfg(feature = "redis")]
async fn ours_redis(app: Router, url: &str) -> Router {
    let store = tower_ratelimit::store::RedisStore::connect(url)
        .await
        .unwrap_or_else(|error| fail("--redis", error));
    app.layer(RateLimitLayer::new(key::PeerIp, store, quota()))
}

#[cfg(not(feature = "redis"))]
async fn ours_redis(_: Router, _: &str) -> Router {
    fail(
        "--mode ours-redis",
        "run the example with `--features redis`",
    )
}

/// The answer of `ours` to every request here, headers included.
async fn hello_with_headers() -> impl IntoResponse {
    let header = |name, value| {
        (
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )
    };
    let headers = [
        header("ratelimit-policy", "\"default\";q=1000000000;w=1"),
        header("ratelimit", "\"default\";r=999999999;t=1"),
        header("x-ratelimit-limit", "1000000000"),
        header("x-ratelimit-remaining", "999999999"),
        header("x-ratelimit-reset", "1"),
    ];
    (headers, "hello")
}

async fn run(args: Args) -> std::io::Result<()> {
    let app = Router::new().route("/", get(|| async { "hello" }));
    let app = match args.mode {
        Mode::None => app,
        Mode::StaticHeaders => Router::new().route("/", get(hello_with_headers)),
        Mode::Ours => app.layer(RateLimitLayer::new(
            key::PeerIp,
            MemoryStore::new(),
            quota(),
        )),
        Mode::OursNoHeaders => app.layer(
            RateLimitLayer::new(key::PeerIp, MemoryStore::new(), quota())
                .headers(RateLimitHeaders::None),
        ),
        Mode::OursRedis => ours_redis(app, &args.redis).await,
        Mode::Governor => {
            let config = GovernorConfigBuilder::default()
                .per_nanosecond(1)
                .burst_size(1_000_000_000)
                .key_extractor(PeerIpKeyExtractor)
                .finish()
                .expect("a valid governor config");
            app.layer(GovernorLayer::new(config))
        }
    };

    support::serve::<Args>(args.addr, app).await
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    if args.threads == 0 {
        fail("--threads", "must be at least 1");
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?
        .block_on(run(args))
}
