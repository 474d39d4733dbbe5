//! What a request costs: the [`Weigher`] trait, [`constant`], [`by_path`], [`by_route`]
//! (feature `axum`) and closures.
//!
//! A cost of 0 passes without being counted (the response still reports the quota). A cost
//! above the quota's burst can never pass; such requests get their own answer (`413`, no
//! `Retry-After`), and tables whose weights exceed the burst are reported with a warning
//! when the layer is built.

use crate::RequestHead;

/// Computes the cost of a request in quota units.
///
/// Implemented by the weighers of this module and by closures
/// `Fn(&RequestHead) -> u64`:
///
/// ```
/// use tower_ratelimit::{weight::Weigher, RequestHead};
///
/// let by_method = |req: &RequestHead| if req.method == http::Method::GET { 1 } else { 5 };
/// let req = http::Request::post("/").body(()).unwrap();
/// assert_eq!(by_method.weigh(&RequestHead::of(&req)), 5);
/// ```
pub trait Weigher: Send + Sync + 'static {
    /// The cost of `request`.
    fn weigh(&self, request: &RequestHead<'_>) -> u64;

    /// The largest cost this weigher can return, when it is known up front (for a warning
    /// at build time when it exceeds the burst).
    fn max_weight(&self) -> Option<u64> {
        None
    }
}

impl<F> Weigher for F
where
    F: Fn(&RequestHead<'_>) -> u64 + Send + Sync + 'static,
{
    fn weigh(&self, request: &RequestHead<'_>) -> u64 {
        self(request)
    }
}

/// Every request costs `cost`.
pub fn constant(cost: u64) -> Constant {
    Constant(cost)
}

/// Every request costs the same. See [`constant`].
#[derive(Clone, Copy, Debug)]
pub struct Constant(u64);

impl Weigher for Constant {
    fn weigh(&self, _: &RequestHead<'_>) -> u64 {
        self.0
    }

    fn max_weight(&self) -> Option<u64> {
        Some(self.0)
    }
}

/// Costs by exact request path; other paths cost the [`default`](Table::default) (1).
///
/// ```
/// use tower_ratelimit::{weight::{self, Weigher}, RequestHead};
///
/// let weights = weight::by_path([("/api/upload", 3), ("/api/ping", 1)]).default(2);
/// let cost = |path| weights.weigh(&RequestHead::of(&http::Request::get(path).body(()).unwrap()));
/// assert_eq!(cost("/api/upload"), 3);
/// assert_eq!(cost("/elsewhere"), 2);
/// ```
pub fn by_path<I, P>(table: I) -> Table
where
    I: IntoIterator<Item = (P, u64)>,
    P: Into<String>,
{
    Table::new(table, Match::Path)
}

/// Costs by axum route pattern (`/users/{id}`), read from axum's `MatchedPath`; other
/// requests cost the [`default`](Table::default) (1).
///
/// axum records the matched route before a router's layers run, so this weigher works in
/// a layer added with `Router::layer` as well as `Router::route_layer` (both tested). With
/// `Router::layer`, a request that matches no route (a `404`) costs the default; with
/// `route_layer` it is not limited at all.
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub fn by_route<I, P>(table: I) -> Table
where
    I: IntoIterator<Item = (P, u64)>,
    P: Into<String>,
{
    Table::new(table, Match::Route)
}

/// A cost table: see [`by_path`] and [`by_route`].
#[derive(Clone, Debug)]
pub struct Table {
    /// Sorted by path for binary search.
    entries: Box<[(Box<str>, u64)]>,
    default: u64,
    by: Match,
}

#[derive(Clone, Copy, Debug)]
enum Match {
    Path,
    #[cfg(feature = "axum")]
    Route,
}

impl Table {
    fn new<I, P>(table: I, by: Match) -> Self
    where
        I: IntoIterator<Item = (P, u64)>,
        P: Into<String>,
    {
        let mut entries: Vec<_> = table
            .into_iter()
            .map(|(path, cost)| (path.into().into_boxed_str(), cost))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|later, earlier| later.0 == earlier.0);
        Self {
            entries: entries.into(),
            default: 1,
            by,
        }
    }

    /// The cost of requests the table does not name.
    pub fn default(mut self, cost: u64) -> Self {
        self.default = cost;
        self
    }

    fn cost_of(&self, path: &str) -> u64 {
        self.entries
            .binary_search_by(|(entry, _)| (**entry).cmp(path))
            .map_or(self.default, |i| self.entries[i].1)
    }
}

impl Weigher for Table {
    fn weigh(&self, request: &RequestHead<'_>) -> u64 {
        match self.by {
            Match::Path => self.cost_of(request.uri.path()),
            #[cfg(feature = "axum")]
            Match::Route => request
                .extensions
                .get::<axum::extract::MatchedPath>()
                .map_or(self.default, |route| self.cost_of(route.as_str())),
        }
    }

    fn max_weight(&self) -> Option<u64> {
        self.entries
            .iter()
            .map(|(_, cost)| *cost)
            .chain([self.default])
            .max()
    }
}
