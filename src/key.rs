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

use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};

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

const NO_PEER: KeyError = KeyError::new(
    StatusCode::INTERNAL_SERVER_ERROR,
    "rate limiter misconfigured: the request carries no peer address (axum: serve with \
     `into_make_service_with_connect_info::<SocketAddr>()`; tonic: enable the `tonic` \
     feature; hyper: insert a `SocketAddr` extension per connection)",
);
const BAD_FORWARDING: KeyError = KeyError::new(
    StatusCode::BAD_REQUEST,
    "a forwarding header from a trusted proxy names no usable client address",
);

/// Everyone shares one key: a limit for the service as a whole.
#[derive(Clone, Copy, Debug, Default)]
pub struct Global;

impl KeyExtractor for Global {
    type Key = ();

    fn extract(&self, _: &RequestHead<'_>) -> Result<(), KeyError> {
        Ok(())
    }
}

/// The IP address of the TCP peer.
///
/// Read from the request extensions: axum's `ConnectInfo<SocketAddr>` (feature `axum`),
/// tonic's `TcpConnectInfo` (feature `tonic`), or a plain [`SocketAddr`] that a hyper
/// server inserts per connection. Without any of them, the request is answered `500` and
/// an error is logged: this is a server setup mistake, never a reason to share one bucket.
///
/// Behind a reverse proxy every request comes from the proxy; use [`ClientIp`] there.
#[derive(Clone, Copy, Debug, Default)]
pub struct PeerIp;

impl PeerIp {
    /// Keys IPv6 peers by their first `bits` bits (e.g. 64); IPv4 peers are unchanged.
    pub fn ipv6_prefix(self, bits: u8) -> Ipv6Prefix<Self> {
        Ipv6Prefix::new(self, bits)
    }
}

impl KeyExtractor for PeerIp {
    type Key = IpAddr;

    fn extract(&self, request: &RequestHead<'_>) -> Result<IpAddr, KeyError> {
        peer_ip(request).ok_or(NO_PEER)
    }
}

fn peer_ip(request: &RequestHead<'_>) -> Option<IpAddr> {
    let extensions = request.extensions;
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip().to_canonical());
    }
    #[cfg(feature = "tonic")]
    if let Some(addr) = extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|info| info.remote_addr())
    {
        return Some(addr.ip().to_canonical());
    }
    extensions
        .get::<SocketAddr>()
        .map(|addr| addr.ip().to_canonical())
}

/// Keys IPv6 addresses by prefix: wraps [`PeerIp`] or [`ClientIp`].
#[derive(Clone, Copy, Debug)]
pub struct Ipv6Prefix<E> {
    inner: E,
    mask: u128,
}

impl<E> Ipv6Prefix<E> {
    fn new(inner: E, bits: u8) -> Self {
        let mask = u128::MAX
            .checked_shl(128 - u32::from(bits.min(128)))
            .unwrap_or(0);
        Self { inner, mask }
    }
}

impl<E: KeyExtractor<Key = IpAddr>> KeyExtractor for Ipv6Prefix<E> {
    type Key = IpAddr;

    fn extract(&self, request: &RequestHead<'_>) -> Result<IpAddr, KeyError> {
        Ok(match self.inner.extract(request)? {
            IpAddr::V6(ip) => IpAddr::V6(Ipv6Addr::from(u128::from(ip) & self.mask)),
            v4 => v4,
        })
    }
}

/// The client's IP address as reported by your own reverse proxies.
///
/// Forwarding headers are believed only when the TCP peer is a trusted proxy. The walk
/// goes from the right (the entry your nearest proxy appended) to the left, skipping
/// trusted proxies, and keys the request by the first address that is not one. It never
/// takes the leftmost entry: the client writes that one, and believing it would let a
/// client rotate it to escape its limit, or set it to a victim's address to lock the
/// victim out. An entry that does not parse (or `Forwarded: for=unknown` / an obfuscated
/// identifier) stops the walk and the request is answered `400`. If every hop is trusted,
/// the leftmost hop is the key.
///
/// ```
/// use tower_ratelimit::key::{ClientIp, Forwarding};
///
/// let key = ClientIp::new(["10.0.0.0/8", "fd00::/8"])?.header(Forwarding::Forwarded);
/// # Ok::<(), tower_ratelimit::key::InvalidCidr>(())
/// ```
#[derive(Clone, Debug)]
pub struct ClientIp {
    trusted: Arc<[Cidr]>,
    header: Forwarding,
}

/// Which forwarding header [`ClientIp`] reads. Configure the one your proxy writes: a
/// header your proxy does not set is entirely under the client's control.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Forwarding {
    /// `X-Forwarded-For: client, proxy1, proxy2` (all lines, in order).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for="[2001:db8::1]:443"`.
    Forwarded,
}

impl ClientIp {
    /// Trusts the proxies in `cidrs` (`"10.0.0.0/8"`, `"::1"`, ...).
    pub fn new<I>(cidrs: I) -> Result<Self, InvalidCidr>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let trusted = cidrs
            .into_iter()
            .map(|cidr| cidr.as_ref().parse())
            .collect::<Result<_, _>>()?;
        Ok(Self {
            trusted,
            header: Forwarding::default(),
        })
    }

    /// Reads `header` (default: `X-Forwarded-For`).
    pub fn header(mut self, header: Forwarding) -> Self {
        self.header = header;
        self
    }

    /// Keys IPv6 clients by their first `bits` bits (e.g. 64).
    pub fn ipv6_prefix(self, bits: u8) -> Ipv6Prefix<Self> {
        Ipv6Prefix::new(self, bits)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|cidr| cidr.contains(ip))
    }

    /// Walks the hops (rightmost first) past trusted proxies.
    fn first_untrusted(
        &self,
        peer: IpAddr,
        hops: impl Iterator<Item = Option<IpAddr>>,
    ) -> Result<IpAddr, KeyError> {
        let mut client = peer;
        for hop in hops {
            if !self.is_trusted(client) {
                break;
            }
            client = hop.ok_or(BAD_FORWARDING)?.to_canonical();
        }
        Ok(client)
    }
}

impl KeyExtractor for ClientIp {
    type Key = IpAddr;

    fn extract(&self, request: &RequestHead<'_>) -> Result<IpAddr, KeyError> {
        let peer = peer_ip(request).ok_or(NO_PEER)?;
        if !self.is_trusted(peer) {
            return Ok(peer);
        }
        let lines = request.headers.get_all(match self.header {
            Forwarding::XForwardedFor => "x-forwarded-for",
            Forwarding::Forwarded => "forwarded",
        });
        let lines = lines.iter().rev().map(|line| line.to_str().ok());
        match self.header {
            Forwarding::XForwardedFor => self.first_untrusted(
                peer,
                lines.flat_map(|line| match line {
                    Some(line) => Hops::Parsed(line.rsplit(',').map(parse_node)),
                    None => Hops::Unparsable,
                }),
            ),
            Forwarding::Forwarded => self.first_untrusted(
                peer,
                lines.flat_map(|line| match line.filter(|l| !l.contains('\\')) {
                    Some(line) => Hops::Parsed(split_unquoted(line, ',').map(forwarded_for)),
                    None => Hops::Unparsable,
                }),
            ),
        }
    }
}

/// The hops of one header line, or a single unparsable hop for a line that is not text.
enum Hops<I> {
    Parsed(I),
    Unparsable,
    Done,
}

impl<I: Iterator<Item = Option<IpAddr>>> Iterator for Hops<I> {
    type Item = Option<IpAddr>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Hops::Parsed(hops) => hops.next(),
            Hops::Unparsable => {
                *self = Hops::Done;
                Some(None)
            }
            Hops::Done => None,
        }
    }
}

/// Splits `s` on `separator` outside double quotes, from the right. Backslash escapes are
/// not expected (callers refuse lines containing them).
fn split_unquoted(s: &str, separator: char) -> impl Iterator<Item = &str> {
    let mut end = s.len();
    let mut in_quotes = false;
    let mut chars = s.char_indices().rev().peekable();
    std::iter::from_fn(move || {
        if end == usize::MAX {
            return None;
        }
        for (i, c) in chars.by_ref() {
            if c == '"' {
                in_quotes = !in_quotes;
            } else if c == separator && !in_quotes {
                let part = &s[i + 1..end];
                end = i;
                return Some(part);
            }
        }
        let part = &s[..end];
        end = usize::MAX;
        Some(part)
    })
}

/// The `for=` node of one `Forwarded` element.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = split_unquoted(element, ';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then_some(value.trim())
    })?;
    let value = match value.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => value,
    };
    // `unknown` and obfuscated `_identifiers` are not addresses: the walk stops there.
    match value.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, port) = bracketed.split_once(']')?;
            if !(port.is_empty() || port.starts_with(':')) {
                return None;
            }
            Ipv6Addr::from_str(ip).ok().map(IpAddr::V6)
        }
        None => parse_node(value),
    }
}

/// An address, optionally with a port (`192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]:80`).
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    IpAddr::from_str(node)
        .ok()
        .or_else(|| SocketAddr::from_str(node).ok().map(|addr| addr.ip()))
}

/// An IP network (`10.0.0.0/8`) or a single address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = InvalidCidr;

    fn from_str(s: &str) -> Result<Self, InvalidCidr> {
        let invalid = || InvalidCidr(s.to_owned());
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let network = IpAddr::from_str(addr.trim())
            .map_err(|_| invalid())?
            .to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix.trim() {
            "" => max,
            bits => bits
                .parse()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(invalid)?,
        };
        Ok(Self { network, prefix })
    }
}

/// A trusted-proxy entry that is neither an address nor a `address/prefix` network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidCidr(String);

impl fmt::Display for InvalidCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid trusted proxy network {:?}", self.0)
    }
}

impl std::error::Error for InvalidCidr {}

/// The value of a request header: API keys, user ids set by an authentication layer.
///
/// A request without the header is answered `400` (change with
/// [`missing_status`](Header::missing_status), e.g. to `401`). Values longer than
/// [`max_len`](Header::max_len) (default 256 bytes) are answered `431` so hostile
/// values cannot grow memory.
///
/// A header is only as trustworthy as whatever sets it: a client can send any value, so
/// key on headers that an authentication layer in front has verified.
#[derive(Clone, Debug)]
pub struct Header {
    name: HeaderName,
    missing: KeyError,
    max_len: usize,
}

impl Header {
    /// Keys requests by header `name`.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name; [`from_name`](Self::from_name) and
    /// [`from_static`](Self::from_static) cannot fail at run time.
    pub fn new(name: &str) -> Self {
        let header = HeaderName::from_bytes(name.as_bytes());
        Self::from_name(header.unwrap_or_else(|_| panic!("invalid header name {name:?}")))
    }

    /// Keys requests by header `name`, checked when the constant is built.
    ///
    /// ```
    /// use tower_ratelimit::key::Header;
    ///
    /// let api_key = Header::from_static("x-api-key");
    /// ```
    pub const fn from_static(name: &'static str) -> Self {
        Self::from_name(HeaderName::from_static(name))
    }

    /// Keys requests by header `name`.
    pub const fn from_name(name: HeaderName) -> Self {
        Self {
            name,
            missing: KeyError::new(
                StatusCode::BAD_REQUEST,
                "the rate-limit key header is missing",
            ),
            max_len: 256,
        }
    }

    /// Answers requests without the header with `status` instead of `400`.
    pub fn missing_status(mut self, status: StatusCode) -> Self {
        self.missing = KeyError::new(status, self.missing.message);
        self
    }

    /// Answers values longer than `max_len` bytes with `431`.
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }
}

impl KeyExtractor for Header {
    type Key = HeaderValue;

    fn extract(&self, request: &RequestHead<'_>) -> Result<HeaderValue, KeyError> {
        let value = request
            .headers
            .get(&self.name)
            .ok_or(self.missing.clone())?;
        if value.len() > self.max_len {
            return Err(KeyError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "the rate-limit key header is too long",
            ));
        }
        Ok(value.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use http::Request;

    use super::*;

    fn request(peer: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get("/");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(()).unwrap();
        if !peer.is_empty() {
            request
                .extensions_mut()
                .insert(SocketAddr::new(peer.parse().unwrap(), 4000));
        }
        request
    }

    fn key<E: KeyExtractor>(extractor: &E, request: &Request<()>) -> Result<E::Key, KeyError> {
        extractor.extract(&RequestHead::of(request))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies() -> ClientIp {
        ClientIp::new(["10.0.0.0/8", "fd00::/8"]).unwrap()
    }

    #[test]
    fn peer_ip_reads_the_socket_address() {
        assert_eq!(
            key(&PeerIp, &request("192.0.2.7", &[])),
            Ok(ip("192.0.2.7"))
        );
        let missing = key(&PeerIp, &request("", &[])).unwrap_err();
        assert_eq!(missing.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[cfg(feature = "axum")]
    #[test]
    fn peer_ip_reads_axum_connect_info() {
        let mut request = request("", &[]);
        let addr = SocketAddr::new(ip("198.51.100.1"), 1);
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
        assert_eq!(key(&PeerIp, &request), Ok(ip("198.51.100.1")));
    }

    #[cfg(feature = "tonic")]
    #[test]
    fn peer_ip_reads_tonic_connect_info() {
        let mut request = request("", &[]);
        request
            .extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(SocketAddr::new(ip("::ffff:198.51.100.2"), 1)),
            });
        assert_eq!(key(&PeerIp, &request), Ok(ip("198.51.100.2")));
    }

    #[test]
    fn ipv4_mapped_ipv6_is_keyed_as_ipv4() {
        let request = request("::ffff:192.0.2.7", &[]);
        assert_eq!(
            key(&PeerIp, &request),
            Ok(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)))
        );
    }

    #[test]
    fn ipv6_prefix_groups_a_whole_subnet() {
        let by_64 = PeerIp.ipv6_prefix(64);
        let a = key(&by_64, &request("2001:db8:1:2:aaaa::1", &[])).unwrap();
        let b = key(&by_64, &request("2001:db8:1:2:bbbb::9", &[])).unwrap();
        let other = key(&by_64, &request("2001:db8:1:3::1", &[])).unwrap();
        assert_eq!(a, ip("2001:db8:1:2::"));
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(key(&by_64, &request("192.0.2.7", &[])), Ok(ip("192.0.2.7")));
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_forwards() {
        let spoofed = request("203.0.113.9", &[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(key(&proxies(), &spoofed), Ok(ip("203.0.113.9")));
    }

    #[test]
    fn walks_right_to_left_past_trusted_proxies() {
        // The client wrote "6.6.6.6" itself; the first proxy appended the real client.
        let req = request(
            "10.0.0.2",
            &[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.1")],
        );
        assert_eq!(key(&proxies(), &req), Ok(ip("198.51.100.7")));
    }

    #[test]
    fn joins_all_forwarded_for_lines_in_order() {
        let req = request(
            "10.0.0.2",
            &[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-for", "198.51.100.7, 10.0.0.1"),
            ],
        );
        assert_eq!(key(&proxies(), &req), Ok(ip("198.51.100.7")));
        let across = request(
            "10.0.0.2",
            &[
                ("x-forwarded-for", "198.51.100.8"),
                ("x-forwarded-for", "10.0.0.1"),
            ],
        );
        assert_eq!(key(&proxies(), &across), Ok(ip("198.51.100.8")));
    }

    #[test]
    fn an_unparsable_hop_stops_the_walk() {
        let req = request(
            "10.0.0.2",
            &[("x-forwarded-for", "198.51.100.7, garbage, 10.0.0.1")],
        );
        assert_eq!(
            key(&proxies(), &req).unwrap_err().status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn all_hops_trusted_keys_the_leftmost() {
        let req = request("10.0.0.2", &[("x-forwarded-for", "10.1.1.1, 10.0.0.1")]);
        assert_eq!(key(&proxies(), &req), Ok(ip("10.1.1.1")));
        let none = request("10.0.0.2", &[]);
        assert_eq!(key(&proxies(), &none), Ok(ip("10.0.0.2")));
    }

    #[test]
    fn forwarded_header_quoted_and_bracketed() {
        let forwarded = proxies().header(Forwarding::Forwarded);
        let req = request(
            "10.0.0.2",
            &[(
                "forwarded",
                r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, For=10.0.0.1;by=10.0.0.2"#,
            )],
        );
        assert_eq!(key(&forwarded, &req), Ok(ip("2001:db8:cafe::17")));
        let v4_port = request("10.0.0.2", &[("forwarded", r#"for="192.0.2.43:47011""#)]);
        assert_eq!(key(&forwarded, &v4_port), Ok(ip("192.0.2.43")));
        // X-Forwarded-For is ignored when Forwarded is configured.
        let other = request("10.0.0.2", &[("x-forwarded-for", "1.2.3.4")]);
        assert_eq!(key(&forwarded, &other), Ok(ip("10.0.0.2")));
    }

    #[test]
    fn forwarded_unknown_or_obfuscated_is_an_error() {
        let forwarded = proxies().header(Forwarding::Forwarded);
        for value in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            r#"for="[::1"#,
            r#"for="a\"b""#,
        ] {
            let req = request("10.0.0.2", &[("forwarded", value)]);
            assert_eq!(
                key(&forwarded, &req).unwrap_err().status(),
                StatusCode::BAD_REQUEST,
                "{value}"
            );
        }
    }

    #[test]
    fn forwarded_semicolons_inside_quotes() {
        let forwarded = proxies().header(Forwarding::Forwarded);
        let req = request(
            "10.0.0.2",
            &[("forwarded", r#"proto="a;b,c";for=198.51.100.3"#)],
        );
        assert_eq!(key(&forwarded, &req), Ok(ip("198.51.100.3")));
    }

    #[test]
    fn cidrs_parse_and_match() {
        let cidr: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(cidr.contains(ip("10.255.0.1")));
        assert!(!cidr.contains(ip("11.0.0.1")));
        assert!(!cidr.contains(ip("::1")));
        let single: Cidr = "::1".parse().unwrap();
        assert!(single.contains(ip("::1")) && !single.contains(ip("::2")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert!(ClientIp::new(["10.0.0.0/8", "oops"]).is_err());
    }

    #[test]
    fn header_key_missing_too_long_and_present() {
        let api_key = Header::new("X-Api-Key").missing_status(StatusCode::UNAUTHORIZED);
        let present = request("", &[("x-api-key", "k1")]);
        assert_eq!(key(&api_key, &present), Ok(HeaderValue::from_static("k1")));
        let missing = key(&api_key, &request("", &[])).unwrap_err();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        let long = "k".repeat(257);
        let too_long = key(&api_key, &request("", &[("x-api-key", &long)])).unwrap_err();
        assert_eq!(
            too_long.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn global_is_one_key() {
        assert_eq!(key(&Global, &request("", &[])), Ok(()));
    }
}
