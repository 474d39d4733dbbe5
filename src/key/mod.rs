//! Who a request is charged to: the [`KeyExtractor`] trait and the usual keys.
//!
//! | extractor | key | when |
//! |---|---|---|
//! | [`PeerIp`] | the TCP peer's IP | clients connect directly |
//! | [`ClientIp`] | the first untrusted hop of `X-Forwarded-For` / `Forwarded` | behind your own proxies |
//! | [`Header`] | a header's value | API keys, user ids set by an auth layer |
//! | [`Global`] | one key for everyone | protecting a backend as a whole |
//! | a closure `Fn(&RequestHead) -> Result<T, KeyError>` | anything | everything else |
//!
//! # Behind a proxy
//!
//! Behind a load balancer or reverse proxy every TCP peer is the proxy, so [`PeerIp`] would
//! put all clients in one bucket. Pick the key by who writes what:
//!
//! 1. List the proxies you run (their addresses or networks) in [`ClientIp::new`].
//! 2. Read the header **your** outermost proxy sets: `X-Forwarded-For` (the default) or
//!    RFC 7239 `Forwarded` ([`Forwarding::Forwarded`]). A header your proxy does not
//!    overwrite or append to is written by the client alone.
//! 3. Nothing else: [`ClientIp`] walks from the right, past your proxies, to the first
//!    address they did not add themselves. Taking the leftmost entry instead (as many
//!    snippets do) lets any client rotate it to escape its limit, or write a victim's
//!    address to get the victim limited.
//!
//! If the proxy authenticates users, a verified user id or API key ([`Header`]) is a better
//! key than any address: NAT puts many users behind one IPv4 address, and one IPv6 host
//! owns a whole /64 (key by prefix with [`PeerIp::ipv6_prefix`]).
//!
//! A request without a key is never counted in some shared bucket by accident: the
//! extractor returns a [`KeyError`] and the layer answers with its status (500 for a
//! missing peer address, which is a server configuration error; 400 for a missing header,
//! configurable). IPv4-mapped IPv6 addresses are keyed as IPv4, and IPv6 clients can be
//! keyed by prefix ([`PeerIp::ipv6_prefix`]) since one host usually owns a whole /64.

mod cidr;
mod client_ip;
mod forwarded;
mod header;
mod peer;
#[cfg(test)]
mod tests;

use std::fmt;
use std::hash::Hash;

use http::StatusCode;

pub use self::cidr::InvalidCidr;
pub use self::client_ip::{ClientIp, Forwarding};
pub use self::header::Header;
pub use self::peer::{Ipv6Prefix, PeerIp};
use crate::RequestHead;

/// Extracts the key a request is charged to.
///
/// Implemented by the extractors of this module and by closures
/// `Fn(&RequestHead) -> Result<T, KeyError>`:
///
/// ```
/// use tower_ratelimit::{key::{KeyError, KeyExtractor}, RequestHead};
///
/// let tenant = |req: &RequestHead| {
///     req.uri.path().split('/').nth(1).map(str::to_owned).ok_or_else(|| {
///         KeyError::new(http::StatusCode::NOT_FOUND, "no tenant in path")
///     })
/// };
/// let req = http::Request::get("/acme/orders").body(()).unwrap();
/// assert_eq!(tenant.extract(&RequestHead::of(&req)).unwrap(), "acme");
/// ```
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key: any hashable value. Stores keep one state per distinct key.
    type Key: Hash + Eq + Clone + Send + Sync + 'static;

    /// The key for `request`, or why it has none.
    fn extract(&self, request: &RequestHead<'_>) -> Result<Self::Key, KeyError>;

    /// What kind of key this is (`ip`, `header:x-api-key`, ...), written into every
    /// storage key, so that keys of different kinds never share state: a header value that
    /// reads like an IP address never charges that IP's bucket. Empty (the default, and a
    /// closure's) for none: name a closure's keys with [`named`].
    fn namespace(&self) -> String {
        String::new()
    }
}

/// `extractor`, its keys named `namespace` (see [`KeyExtractor::namespace`]).
///
/// ```
/// use tower_ratelimit::{key::{self, KeyError, KeyExtractor}, RequestHead};
///
/// let tenant = key::named("tenant", |req: &RequestHead| {
///     req.uri.path().split('/').nth(1).map(str::to_owned).ok_or(KeyError::skip("no tenant"))
/// });
/// assert_eq!(tenant.namespace(), "tenant");
/// ```
pub fn named<E: KeyExtractor>(namespace: &str, extractor: E) -> Named<E> {
    Named {
        namespace: namespace.to_owned(),
        extractor,
    }
}

/// A key extractor with a namespace of its choosing; see [`named`].
#[derive(Clone, Debug)]
pub struct Named<E> {
    namespace: String,
    extractor: E,
}

impl<E: KeyExtractor> KeyExtractor for Named<E> {
    type Key = E::Key;

    fn extract(&self, request: &RequestHead<'_>) -> Result<E::Key, KeyError> {
        self.extractor.extract(request)
    }

    fn namespace(&self) -> String {
        self.namespace.clone()
    }
}

impl<F, T> KeyExtractor for F
where
    F: Fn(&RequestHead<'_>) -> Result<T, KeyError> + Send + Sync + 'static,
    T: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Key = T;

    fn extract(&self, request: &RequestHead<'_>) -> Result<T, KeyError> {
        self(request)
    }
}

/// Why a request has no key, and what happens to it: answered with a status, or (by
/// explicit choice, [`KeyError::skip`]) passed through unlimited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyError {
    status: StatusCode,
    message: &'static str,
    skip: bool,
}

impl KeyError {
    /// A request answered with `status` and `message` (sent as the problem `detail`).
    pub const fn new(status: StatusCode, message: &'static str) -> Self {
        Self {
            status,
            message,
            skip: false,
        }
    }

    /// A request that is deliberately not limited: it reaches the service untouched and
    /// carries no rate-limit headers. For example, requests of internal callers:
    ///
    /// ```
    /// use tower_ratelimit::{key::KeyError, RequestHead};
    ///
    /// let tenant = |req: &RequestHead| match req.headers.get("x-tenant") {
    ///     Some(tenant) => Ok(tenant.clone()),
    ///     None if req.uri.path().starts_with("/internal/") => Err(KeyError::skip("internal")),
    ///     None => Err(KeyError::new(http::StatusCode::UNAUTHORIZED, "no tenant")),
    /// };
    /// ```
    pub const fn skip(reason: &'static str) -> Self {
        Self {
            status: StatusCode::OK,
            message: reason,
            skip: true,
        }
    }

    /// Whether the request passes unlimited ([`KeyError::skip`]).
    pub fn skips(&self) -> bool {
        self.skip
    }

    /// The status the request is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Why the request has no key.
    pub fn message(&self) -> &'static str {
        self.message
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}

impl std::error::Error for KeyError {}

/// Everyone shares one key: a limit for the service as a whole.
#[derive(Clone, Copy, Debug, Default)]
pub struct Global;

impl KeyExtractor for Global {
    type Key = ();

    fn namespace(&self) -> String {
        "global".to_owned()
    }

    fn extract(&self, _: &RequestHead<'_>) -> Result<(), KeyError> {
        Ok(())
    }
}
