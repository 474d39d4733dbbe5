//! An axum server behind the rate limiter: `GET /api/ping` costs 1, `POST /api/upload`
//! costs 3.
//!
//! ```text
//! cargo run --example ping_upload -- [--addr 127.0.0.1:3000]
//!     [--limit N --period-secs S --burst B]
//!     [--algorithm token-bucket|leaky-bucket|fixed-window|sliding-window]
//!     [--key ip|global|header:NAME] [--max-delay-ms MS]
//!     [--redis URL] [--redis-cluster URL,URL]
//!     [--redis-sentinel URL,URL --redis-master NAME]
//!     [--redis-ca FILE] [--redis-cert FILE --redis-key FILE]
//!     [--on-redis-error open|closed|local] [--stats] [--max-keys N]
//!     [--metrics-addr ADDR] [--admin-addr ADDR --admin-token TOKEN]
//! ```
//!
//! By default each client IP may send 1 request per second, in bursts of up to 5. Try it:
//!
//! ```text
//! for i in 1 2 3 4 5 6; do curl -si http://127.0.0.1:3000/api/ping | head -1; done
//! curl -si -X POST http://127.0.0.1:3000/api/upload
//! ```
//!
//! `--algorithm leaky-bucket --max-delay-ms MS` shapes instead of rejecting: requests wait
//! up to MS for their slot. `--redis URL` (with `--features redis`) shares the limit with
//! every instance on that Redis, `--redis-cluster URL,URL` (with `--features
//! redis-cluster`) with every instance on that Redis Cluster, `--redis-sentinel URL,URL
//! --redis-master NAME` (with `--features redis-sentinel`) on the master those sentinels
//! name; `--on-redis-error` says what happens while it is down. With `--features
//! redis-tls`, `rediss://` URLs use TLS: `--redis-ca FILE` trusts that CA, `--redis-cert
//! FILE --redis-key FILE` presents a client certificate.
//!
//! `--metrics-addr ADDR` (with `--features metrics`) serves the decision counters for
//! Prometheus at `http://ADDR/metrics`; `--admin-addr ADDR --admin-token TOKEN` (with
//! `--features admin`) serves the admin API and the dashboard at `http://ADDR/admin`, for
//! whoever presents the token (`Authorization: Bearer TOKEN`, or as the password a browser
//! asks for).

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use clap::{Parser, ValueEnum};
use http::header::CONTENT_TYPE;
use support::{quota_flag, QuotaArgs};
use tower_ratelimit::key::{self, KeyError, KeyExtractor};
use tower_ratelimit::store::{MemoryStore, Store};
use tower_ratelimit::{
    weight, Algorithm, DecisionEvent, FailurePolicy, Policy, PolicyError, RateLimitLayer,
    RequestHead,
};

#[derive(Parser)]
#[command(name = "ping_upload", about = "A rate-limited axum demo server")]
pub struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    #[command(flatten)]
    quota: QuotaArgs,
    /// How quota is spent and refilled.
    #[arg(long, value_enum, default_value_t = AlgorithmArg::TokenBucket)]
    algorithm: AlgorithmArg,
    /// Who requests are charged to: `ip`, `global` or `header:NAME`.
    #[arg(long, default_value = "ip")]
    key: KeyArg,
    /// Queue requests for up to this long instead of rejecting them (leaky bucket).
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    max_delay_ms: Option<u64>,
    #[command(flatten)]
    redis: RedisArgs,
    /// What to do when Redis fails: allow, reject with 503, or decide in-process.
    #[arg(long, value_enum, default_value_t = OnRedisError::Local)]
    on_redis_error: OnRedisError,
    /// Print a summary line of the decisions every second.
    #[arg(long)]
    stats: bool,
    /// The most states the in-process store keeps (default 1 048 576).
    #[arg(long, value_name = "N")]
    max_keys: Option<usize>,
    /// Serve the decision counters for Prometheus at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Serve the admin API and the dashboard at http://ADDR/admin.
    #[arg(long, value_name = "ADDR", requires = "admin_token")]
    admin_addr: Option<SocketAddr>,
    /// The token the admin API asks for (at least 16 bytes).
    #[arg(long, value_name = "TOKEN", requires = "admin_addr")]
    admin_token: Option<String>,
}

/// Where the state is kept in Redis, and how to reach it.
#[derive(clap::Args)]
struct RedisArgs {
    /// Keep the state in the Redis server at this URL (`rediss://` for TLS).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Keep the state in the Redis Cluster with these nodes.
    #[arg(
        long,
        value_name = "URL,URL",
        value_delimiter = ',',
        conflicts_with = "redis"
    )]
    redis_cluster: Vec<String>,
    /// Keep the state on the master these sentinels name (with `--redis-master`).
    #[arg(
        long,
        value_name = "URL,URL",
        value_delimiter = ',',
        conflicts_with_all = ["redis", "redis_cluster"],
        requires = "redis_master"
    )]
    redis_sentinel: Vec<String>,
    /// The master's name at the sentinels.
    #[arg(long, value_name = "NAME", requires = "redis_sentinel")]
    redis_master: Option<String>,
    /// Trust Redis certificates signed by this CA (PEM) on `rediss://` URLs.
    #[arg(long, value_name = "FILE")]
    redis_ca: Option<std::path::PathBuf>,
    /// Present this certificate (PEM) to Redis (mutual TLS), with `--redis-key`.
    #[arg(long, value_name = "FILE", requires = "redis_key")]
    redis_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of `--redis-cert`.
    #[arg(long, value_name = "FILE", requires = "redis_cert")]
    redis_key: Option<std::path::PathBuf>,
}

impl RedisArgs {
    /// Whether any Redis was asked for.
    fn any(&self) -> bool {
        self.redis.is_some() || !self.redis_cluster.is_empty() || !self.redis_sentinel.is_empty()
    }
}

/// Decisions counted by outcome, for `--stats`.
#[derive(Default)]
struct Stats {
    allowed: AtomicU64,
    denied: AtomicU64,
    unavailable: AtomicU64,
}

impl Stats {
    fn count(&self, event: &DecisionEvent<'_, Vec<u8>>) {
        let counter = match event.decision {
            Some(decision) if decision.is_allowed() => &self.allowed,
            Some(_) => &self.denied,
            None => &self.unavailable,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Prints and resets the counts once a second, forever.
    async fn report(self: Arc<Self>) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let take = |counter: &AtomicU64| counter.swap(0, Ordering::Relaxed);
            println!(
                "stats: allowed={} denied={} unavailable={}",
                take(&self.allowed),
                take(&self.denied),
                take(&self.unavailable)
            );
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum AlgorithmArg {
    TokenBucket,
    LeakyBucket,
    FixedWindow,
    SlidingWindow,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnRedisError {
    Open,
    Closed,
    Local,
}

/// The key chosen with `--key`.
#[derive(Clone)]
enum KeyArg {
    Ip,
    Global,
    Header(key::Header),
}

impl std::str::FromStr for KeyArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ip" => Ok(Self::Ip),
            "global" => Ok(Self::Global),
            _ => match s.strip_prefix("header:") {
                Some(name) => http::HeaderName::from_bytes(name.as_bytes())
                    .map(|_| Self::Header(key::Header::new(name)))
                    .map_err(|_| format!("invalid header name {name:?}")),
                None => Err("expected ip, global or header:NAME".into()),
            },
        }
    }
}

/// Each extractor has its own key type; as bytes, one layer type serves all three.
impl KeyExtractor for KeyArg {
    type Key = Vec<u8>;

    fn extract(&self, request: &RequestHead<'_>) -> Result<Vec<u8>, KeyError> {
        Ok(match self {
            Self::Ip => key::PeerIp.extract(request)?.to_string().into_bytes(),
            Self::Global => Vec::new(),
            Self::Header(header) => header.extract(request)?.as_bytes().to_vec(),
        })
    }

    /// Each kind keeps its own namespace: a header value never meets an address.
    fn namespace(&self) -> String {
        match self {
            Self::Ip => key::PeerIp.namespace(),
            Self::Global => key::Global.namespace(),
            Self::Header(header) => header.namespace(),
        }
    }
}

/// Exits with a usage error naming `flag`.
fn fail(flag: &str, message: impl std::fmt::Display) -> ! {
    support::fail::<Args>(flag, message)
}

async fn ping() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "application/json")],
        r#"{"message":"pong"}"#,
    )
}

async fn upload() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "application/json")],
        r#"{"message":"stored"}"#,
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    // Store trouble, configuration errors and admin actions are logged to stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    run(args).await
}

/// The demo, as `args` say.
pub async fn run(args: Args) -> std::io::Result<()> {
    let algorithm = match (args.algorithm, args.max_delay_ms) {
        (AlgorithmArg::LeakyBucket, Some(ms)) => Algorithm::LeakyBucketShaper {
            max_delay: std::time::Duration::from_millis(ms),
        },
        (_, Some(_)) => fail("--max-delay-ms", "only applies to --algorithm leaky-bucket"),
        (AlgorithmArg::TokenBucket, None) => Algorithm::TokenBucket,
        (AlgorithmArg::LeakyBucket, None) => Algorithm::LeakyBucket,
        (AlgorithmArg::FixedWindow, None) => Algorithm::FixedWindow,
        (AlgorithmArg::SlidingWindow, None) => Algorithm::SlidingWindow,
    };
    let policy = args
        .quota
        .quota()
        .map_err(PolicyError::Quota)
        .and_then(|quota| Policy::new("default", quota, algorithm))
        .unwrap_or_else(|error| match error {
            PolicyError::Quota(error) => fail(quota_flag(error), error),
            other => fail("--algorithm", other),
        });
    if args.redis.any() {
        let store = redis_store(&args.redis).await;
        return serve(args, policy, store).await;
    }
    let store = MemoryStore::new().max_keys(args.max_keys.unwrap_or(1 << 20));
    serve(args, policy, store).await
}

/// The store the Redis flags describe, connected; exits naming the flag if it cannot be.
#[cfg(feature = "redis")]
async fn redis_store(redis: &RedisArgs) -> tower_ratelimit::store::RedisStore {
    let (flag, builder) = redis_builder(redis);
    with_tls(builder, redis)
        .connect()
        .await
        .unwrap_or_else(|error| fail(flag, error))
}

#[cfg(not(feature = "redis"))]
async fn redis_store(_: &RedisArgs) -> MemoryStore<Vec<u8>> {
    fail("--redis", "run the example with `--features redis`")
}

/// The settings for the Redis the flags name, and the flag that named it.
#[cfg(feature = "redis")]
fn redis_builder(redis: &RedisArgs) -> (&'static str, tower_ratelimit::store::RedisStoreBuilder) {
    use tower_ratelimit::store::RedisStore;
    if !redis.redis_sentinel.is_empty() {
        #[cfg(feature = "redis-sentinel")]
        return (
            "--redis-sentinel",
            RedisStore::sentinel_builder(
                &redis.redis_sentinel,
                redis.redis_master.as_deref().unwrap_or_default(),
            ),
        );
        #[cfg(not(feature = "redis-sentinel"))]
        fail(
            "--redis-sentinel",
            "run the example with `--features redis-sentinel`",
        );
    }
    if !redis.redis_cluster.is_empty() {
        #[cfg(feature = "redis-cluster")]
        return (
            "--redis-cluster",
            RedisStore::cluster_builder(&redis.redis_cluster),
        );
        #[cfg(not(feature = "redis-cluster"))]
        fail(
            "--redis-cluster",
            "run the example with `--features redis-cluster`",
        );
    }
    let url = redis.redis.as_deref().unwrap_or_default();
    ("--redis", RedisStore::builder(url))
}

#[cfg(feature = "redis-tls")]
fn with_tls(
    mut builder: tower_ratelimit::store::RedisStoreBuilder,
    redis: &RedisArgs,
) -> tower_ratelimit::store::RedisStoreBuilder {
    if let Some(ca) = &redis.redis_ca {
        builder = builder.tls_ca(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&redis.redis_cert, &redis.redis_key) {
        builder = builder.tls_client_cert(cert.clone(), key.clone());
    }
    builder
}

#[cfg(all(feature = "redis", not(feature = "redis-tls")))]
fn with_tls(
    builder: tower_ratelimit::store::RedisStoreBuilder,
    redis: &RedisArgs,
) -> tower_ratelimit::store::RedisStoreBuilder {
    if redis.redis_ca.is_some() || redis.redis_cert.is_some() {
        fail("--redis-ca", "run the example with `--features redis-tls`");
    }
    builder
}

/// Serves the demo routes behind the limiter, with state in `store`.
async fn serve<S: Store<Vec<u8>>>(args: Args, policy: Policy, store: S) -> std::io::Result<()> {
    if let Some(addr) = args.metrics_addr {
        // Before the first decision, which registers the counters.
        metrics::serve(addr).await;
    }
    let on_redis_error = match args.on_redis_error {
        OnRedisError::Open => FailurePolicy::Open,
        OnRedisError::Closed => FailurePolicy::Closed,
        OnRedisError::Local => FailurePolicy::FallbackLocal,
    };
    let limiter = RateLimitLayer::with_policy(args.key, store, policy)
        .weight(weight::by_path([("/api/upload", 3)]).default(1))
        .on_store_error(on_redis_error);
    let stats = args.stats.then(|| {
        let stats = Arc::new(Stats::default());
        tokio::spawn(Arc::clone(&stats).report());
        stats
    });
    let admin = args.admin_addr.map(|addr| (addr, admin::Admin::new()));
    let limiter = if stats.is_some() || admin.is_some() {
        let recorder = admin.as_ref().map(|(_, admin)| admin.recorder());
        limiter.on_decision(move |event| {
            if let Some(stats) = &stats {
                stats.count(event);
            }
            if let Some(recorder) = &recorder {
                recorder(event);
            }
        })
    } else {
        limiter
    };
    if let (Some((addr, admin)), Some(token)) = (admin, &args.admin_token) {
        admin.serve(addr, limiter.limiter().clone(), token).await;
    }

    let app = Router::new()
        .route("/api/ping", get(ping))
        .route("/api/upload", post(upload))
        .layer(limiter);

    support::serve::<Args>(args.addr, app).await
}

/// `--metrics-addr`: the `metrics` facade's Prometheus exporter, served at `/metrics`.
#[cfg(feature = "metrics")]
mod metrics {
    use std::net::SocketAddr;
    use std::time::Duration;

    use axum::routing::get;
    use axum::Router;
    use metrics_exporter_prometheus::PrometheusBuilder;

    pub async fn serve(addr: SocketAddr) {
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .unwrap_or_else(|error| super::fail("--metrics-addr", error));
        let upkeep = handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                upkeep.run_upkeep();
            }
        });
        let render = move || {
            let text = handle.render();
            async move {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    text,
                )
            }
        };
        let bound = super::support::serve_beside::<super::Args>(
            "--metrics-addr",
            addr,
            Router::new().route("/metrics", get(render)),
        )
        .await;
        eprintln!("metrics on http://{bound}/metrics");
    }
}

#[cfg(not(feature = "metrics"))]
mod metrics {
    pub async fn serve(_: std::net::SocketAddr) {
        super::fail(
            "--metrics-addr",
            "run the example with `--features metrics`",
        )
    }
}

/// `--admin-addr`: the admin API and the dashboard.
#[cfg(feature = "admin")]
mod admin {
    use std::net::SocketAddr;

    use tower_ratelimit::admin::Stats;
    use tower_ratelimit::store::Store;
    use tower_ratelimit::{DecisionEvent, Limiter};

    pub struct Admin(Stats<Vec<u8>>);

    impl Admin {
        pub fn new() -> Self {
            Self(Stats::new())
        }

        /// What feeds the dashboard's statistics.
        pub fn recorder(&self) -> impl Fn(&DecisionEvent<'_, Vec<u8>>) + Send + Sync + 'static {
            self.0.observer()
        }

        pub async fn serve<S: Store<Vec<u8>>>(
            self,
            addr: SocketAddr,
            limiter: Limiter<Vec<u8>, S>,
            token: &str,
        ) {
            let admin = tower_ratelimit::admin::Admin::new(limiter, self.0)
                .token("admin", token)
                .build()
                .unwrap_or_else(|error| super::fail("--admin-token", error));
            let app = axum::Router::new().nest("/admin", admin);
            let bound =
                super::support::serve_beside::<super::Args>("--admin-addr", addr, app).await;
            eprintln!("admin API and dashboard on http://{bound}/admin");
        }
    }
}

#[cfg(not(feature = "admin"))]
mod admin {
    use std::net::SocketAddr;

    use tower_ratelimit::store::Store;
    use tower_ratelimit::{DecisionEvent, Limiter};

    pub struct Admin;

    impl Admin {
        pub fn new() -> Self {
            super::fail("--admin-addr", "run the example with `--features admin`")
        }

        pub fn recorder(&self) -> impl Fn(&DecisionEvent<'_, Vec<u8>>) + Send + Sync + 'static {
            |_| {}
        }

        pub async fn serve<S: Store<Vec<u8>>>(
            self,
            _: SocketAddr,
            _: Limiter<Vec<u8>, S>,
            _: &str,
        ) {
        }
    }
}
