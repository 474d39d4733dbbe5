//! The admin API and live dashboard (feature `admin`): an axum [`Router`] over a
//! [`Limiter`], to mount wherever the operators reach it.
//!
//! ```
//! use tower_ratelimit::admin::{Admin, Stats};
//! use tower_ratelimit::{key, store::MemoryStore, Quota, RateLimitLayer};
//!
//! let stats = Stats::new();
//! let layer = RateLimitLayer::new(key::PeerIp, MemoryStore::new(), Quota::per_second(5))
//!     .on_decision(stats.observer());
//! let admin = Admin::new(layer.limiter().clone(), stats)
//!     .token("ops", "a-long-random-secret")
//!     .build()?;
//! let app: axum::Router = axum::Router::new()
//!     .route("/api/ping", axum::routing::get(|| async { "pong" }))
//!     .layer(layer)
//!     .nest("/admin", admin);
//! # Ok::<(), tower_ratelimit::admin::AdminError>(())
//! ```
//!
//! # Routes
//!
//! | route | what it does |
//! |---|---|
//! | `GET /` | the dashboard |
//! | `GET /api/policies` | the policies, the quota in force and the one built with |
//! | `PUT /api/policies/{name}/quota` | changes the quota, `{"limit": 10, "period_secs": 1, "burst": 20}` (no `period_secs`: a fixed quota); see [`Limiter::set_quota`] |
//! | `DELETE /api/policies/{name}/quota` | back to the quota the limiters were built with |
//! | `GET /api/keys?key=K` (or `?hash=H`) | a key's state under each policy |
//! | `POST /api/keys/reset` | `{"key": K}` (or `{"hash": H}`): as if never seen, block lifted |
//! | `POST /api/keys/refund` | `{"key": K, "units": 5}`: gives units back |
//! | `POST /api/keys/block` | `{"key": K, "seconds": 600}`: denies the key for that long |
//! | `GET /api/stats` | decisions per second over the last minute by policy and outcome, totals, the top denied keys of the last five minutes ([`Stats`]) |
//! | `GET /api/stats/stream` | the same, once a second, as server-sent events (`event: stats`) |
//!
//! Keys are written as an operator types them ([`AdminKey`]: an address, a header value, a
//! number...), and **shown hashed** in answers and logs: 16 hex digits, keyed by the
//! tokens, so that logs never carry an API key, and not even an IP address can be found
//! from its hash without a token. Add `raw=true` (to the query, or the JSON body) to see
//! and log the key itself. A key among the top denied can be named by its hash.
//!
//! # Security
//!
//! Every route, the dashboard included, needs a token: `Authorization: Bearer <token>`,
//! or HTTP Basic with the token as the password (what a browser asks for when it opens the
//! dashboard, and sends along with the page's requests). Tokens are compared in constant
//! time, as SHA-256 digests; [`Admin::build`] refuses to build a router without one, or with
//! one shorter than 16 bytes. Each token has a name, logged as `who` with every action
//! (`tracing`, at info: who, from where, which key, what change); requests without a valid
//! token are answered `401` and logged (at most once per 10 s). Bad input (an unknown
//! policy, a malformed key, a negative, zero or over-100-year block, an invalid quota) is a
//! `400` or `404` with an `application/problem+json` body that says why.

mod answers;
mod auth;
mod keys;
mod routes;
mod sketch;
mod stats;

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use axum::Router;

pub use self::auth::MIN_TOKEN_LEN;
pub use self::keys::{AdminKey, KeyParseError, MAX_KEY_LEN};
pub use self::stats::Stats;
use crate::store::Store;
use crate::Limiter;

/// Builds the admin [`Router`] over a limiter and its [`Stats`]; see the
/// [module docs](self).
#[must_use = "an admin router does nothing until built and mounted"]
pub struct Admin<K, S> {
    limiter: Limiter<K, S>,
    stats: Stats<K>,
    tokens: Vec<(Arc<str>, [u8; 32])>,
    weak: Option<String>,
}

impl<K, S> Admin<K, S>
where
    K: AdminKey + Hash + Eq + Clone + Send + Sync + 'static,
    S: Store<K>,
{
    /// The admin router of `limiter`, showing `stats` (fed by the limiter's decision hook:
    /// [`Stats::observer`]).
    pub fn new(limiter: Limiter<K, S>, stats: Stats<K>) -> Self {
        Self {
            limiter,
            stats,
            tokens: Vec::new(),
            weak: None,
        }
    }

    /// Accepts `token` (at least [`MIN_TOKEN_LEN`] bytes), naming its bearer `who` in the
    /// logs. Several tokens may be given, one per operator or tool.
    pub fn token(mut self, who: &str, token: &str) -> Self {
        if token.len() < MIN_TOKEN_LEN {
            self.weak.get_or_insert_with(|| who.to_owned());
        }
        self.tokens
            .push((who.into(), auth::digest(token.as_bytes())));
        self
    }

    /// The router, to mount (`Router::nest`) where the operators reach it; it refuses to
    /// be built without a token.
    pub fn build(self) -> Result<Router, AdminError> {
        if let Some(who) = self.weak {
            return Err(AdminError::WeakToken(who));
        }
        if self.tokens.is_empty() {
            return Err(AdminError::NoToken);
        }
        let auth = Arc::new(auth::Auth::new(self.tokens));
        let namespace = self.limiter.policies().namespace();
        let console = routes::Console {
            hasher: keys::KeyHasher::new(auth.digests(), namespace),
            limiter: self.limiter,
            stats: self.stats,
        };
        let routes = routes::router(Arc::new(console));
        Ok(routes.layer(axum::middleware::from_fn_with_state(auth, auth::require)))
    }
}

impl<K, S: fmt::Debug> fmt::Debug for Admin<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who: Vec<&str> = self.tokens.iter().map(|(who, _)| &**who).collect();
        f.debug_struct("Admin")
            .field("limiter", &self.limiter)
            .field("tokens", &who)
            .finish_non_exhaustive()
    }
}

/// Why [`Admin::build`] built no router.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminError {
    /// No token was given: the router would be open to anyone.
    NoToken,
    /// The token of this operator is shorter than [`MIN_TOKEN_LEN`] bytes.
    WeakToken(String),
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoToken => f.write_str("the admin router needs at least one token"),
            Self::WeakToken(who) => write!(
                f,
                "the admin token of {who:?} is shorter than {MIN_TOKEN_LEN} bytes"
            ),
        }
    }
}

impl std::error::Error for AdminError {}
