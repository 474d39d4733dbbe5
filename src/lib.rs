//! Keyed rate limiting in two parts: the [`Limiter`], and [`RateLimitLayer`], its adapter
//! for [Tower](https://docs.rs/tower) services (axum, tonic, hyper).
//!
//! A [`Limiter`] is a [`store`] and its policies: [`check`](Limiter::check) a key
//! (a user, a connection, a job), [`peek`](Limiter::peek), [`reset`](Limiter::reset),
//! [`refund`](Limiter::refund), [`penalize`](Limiter::penalize), [`block`](Limiter::block)
//! or wait [`until_ready`](Limiter::until_ready), and change a policy's quota while the
//! program runs ([`set_quota`](Limiter::set_quota)), with no HTTP anywhere:
//!
//! ```
//! use tower_ratelimit::{store::MemoryStore, Limiter, Quota};
//!
//! // Three login attempts, then one more a minute; a successful login starts afresh.
//! let logins = Limiter::new(MemoryStore::new(), Quota::per_minute(1).burst(3));
//! for _ in 0..3 {
//!     assert!(logins.check_now(&"alice").is_allowed());
//! }
//! assert!(!logins.check_now(&"alice").is_allowed());
//! ```
//!
//! For every request, [`RateLimitLayer`] extracts a **key** ([`key`]: peer IP, client IP
//! behind trusted proxies, a header, one global key, or a closure), computes a **weight**
//! ([`weight`]), and asks its limiter whether the request passes its [`Quota`]. Passing
//! requests reach the service; the others are answered at once with `429 Too Many
//! Requests` (gRPC: `RESOURCE_EXHAUSTED`), `Retry-After` and the rate-limit [`headers`].
//! [`RateLimitLayer::limiter`] gives the limiter back, so handlers act on the very state
//! the layer charges.
//!
//! # Quick start
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use axum::{routing::{get, post}, Router};
//! use tower_ratelimit::{key, store::MemoryStore, weight, Quota, RateLimitLayer};
//!
//! # async fn run() -> std::io::Result<()> {
//! let app = Router::new()
//!     .route("/api/ping", get(|| async { "pong" }))
//!     .route("/api/upload", post(|| async { "stored" }))
//!     .layer(
//!         // 1 request per second per client IP, bursts of 5; an upload costs 3.
//!         RateLimitLayer::new(key::PeerIp, MemoryStore::new(), Quota::per_second(1).burst(5))
//!             .weight(weight::by_path([("/api/upload", 3)]).default(1)),
//!     );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! // `PeerIp` reads the connection's address: serve with connect info.
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
//! # }
//! ```
//!
//! # Semantics
//!
//! The token bucket is GCRA in integer nanoseconds: one timestamp per key, refilled one
//! unit every `period / limit`, holding at most `burst`. A request of cost `c` passes iff
//! the bucket holds `c` units; a denied request changes nothing. A cost above the burst can
//! never pass and is answered `413` without `Retry-After`. See [`Quota`] and
//! [`Decision`]. The leaky bucket (meter and delaying shaper), fixed window and sliding
//! window are the other [`Algorithm`]s; [`Policy`] names a quota with its algorithm, and
//! [`Policies`] hold several for one key (a burst limit and a daily allowance): a request
//! passes only if all pass, and only then is charged under each, atomically.
//!
//! # Stores
//!
//! [`store::MemoryStore`] decides in process with one compare-and-swap and bounded memory.
//! With feature `redis`, `store::RedisStore` shares one exact limit between app servers
//! (with `redis-cluster` on a Redis Cluster, with `redis-sentinel` through Sentinel,
//! with `redis-tls` over TLS); while it fails, the layer's
//! [`FailurePolicy`] applies.
//!
//! # Where it goes
//!
//! Outside concurrency limits, load shedding and timeouts (earlier in a `ServiceBuilder`,
//! later in axum's `.layer` chain), so a refused request costs no slot of theirs. Exempt
//! requests with [`RateLimitLayer::skip`], roll out with [`RateLimitLayer::shadow`], give
//! tiers their own quota with [`RateLimitLayer::policy_for`], and watch decisions with
//! [`RateLimitLayer::on_decision`].
//!
//! # Features
//!
//! * `axum` (default): [`key::PeerIp`] reads axum's `ConnectInfo`, and
//!   [`weight::by_route`] reads axum's matched route.
//! * `metrics`: every decision is recorded with the [`metrics`](https://docs.rs/metrics)
//!   facade: counters `ratelimit_decisions_total{policy, outcome}` (outcome `allowed`,
//!   `delayed`, `denied`, `too_costly`, `unavailable`), `ratelimit_fallback_total{policy}`,
//!   `ratelimit_store_errors_total{policy, kind}` ([`StoreErrorKind::as_str`](store::StoreErrorKind::as_str)), and the
//!   histogram `ratelimit_decision_seconds{policy, source}`. The handles are registered
//!   on a layer's first decision, so install the recorder before serving.
//! * `tonic`: [`key::PeerIp`] (and so [`key::ClientIp`]) reads tonic's `TcpConnectInfo`,
//!   which `tonic::transport::Server` puts in every request.
//! * `redis`: `store::RedisStore`, one limit shared by many app servers through Redis.
//! * `redis-cluster`: `RedisStore::cluster`, the same store on a Redis Cluster.
//! * `redis-sentinel`: `RedisStore::sentinel`, the same store on the master Redis Sentinel
//!   names.
//! * `redis-tls`: `rediss://` URLs (TLS through rustls and its `ring` provider) for every
//!   Redis store, with `RedisStoreBuilder::tls_ca` and `tls_client_cert`.
//! * `admin`: `admin::Admin`, an axum router for operators: inspect, reset, refund and
//!   block keys, change quotas at run time, live statistics and a dashboard.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

#[cfg(feature = "admin")]
#[cfg_attr(docsrs, doc(cfg(feature = "admin")))]
pub mod admin;
mod algorithm;
mod body;
pub mod clock;
mod decision;
mod failure;
mod future;
pub mod headers;
pub mod key;
mod layer;
mod limiter;
mod observe;
mod policy;
mod quota;
mod reject;
mod request;
mod service;
pub mod store;
mod throttle;
mod verdict;
pub mod weight;

pub use algorithm::Algorithm;
pub use body::ResponseBody;
pub use decision::{Decision, Decisions, Outcome};
pub use failure::FailurePolicy;
pub use future::ResponseFuture;
pub use headers::RateLimitHeaders;
pub use layer::RateLimitLayer;
pub use limiter::{Check, Limiter, LimiterBuilder, QuotaChangeError, WaitError};
pub use observe::{DecisionEvent, DecisionSource};
pub use policy::{Policies, Policy, PolicyError};
pub use quota::{Quota, QuotaError};
pub use reject::Rejection;
pub use request::RequestHead;
pub use service::RateLimit;
pub use verdict::RateLimitInfo;
