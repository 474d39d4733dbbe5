//! [`PeerIp`]: the TCP peer's address, and [`Ipv6Prefix`]: IPv6 clients by network.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::StatusCode;

use super::{KeyError, KeyExtractor};
use crate::RequestHead;

pub(super) const NO_PEER: KeyError = KeyError::new(
    StatusCode::INTERNAL_SERVER_ERROR,
    "rate limiter misconfigured: the request carries no peer address (axum: serve with \
     `into_make_service_with_connect_info::<SocketAddr>()`; tonic: enable the `tonic` \
     feature; hyper: insert a `SocketAddr` extension per connection)",
);

/// The IP address of the TCP peer.
///
/// Read from the request extensions: axum's `ConnectInfo<SocketAddr>` (feature `axum`),
/// tonic's `TcpConnectInfo` (feature `tonic`), or a plain [`SocketAddr`] that a hyper
/// server inserts per connection. Without any of them, the request is answered `500` and
/// an error is logged: this is a server setup mistake, never a reason to share one bucket.
///
/// Behind a reverse proxy every request comes from the proxy; use [`ClientIp`](super::ClientIp) there.
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

    fn namespace(&self) -> String {
        "ip".to_owned()
    }

    #[inline(always)]
    fn extract(&self, request: &RequestHead<'_>) -> Result<IpAddr, KeyError> {
        peer_ip(request).ok_or(NO_PEER)
    }
}

#[inline(always)]
pub(super) fn peer_ip(request: &RequestHead<'_>) -> Option<IpAddr> {
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

/// Keys IPv6 addresses by prefix: wraps [`PeerIp`] or [`ClientIp`](super::ClientIp).
#[derive(Clone, Copy, Debug)]
pub struct Ipv6Prefix<E> {
    inner: E,
    mask: u128,
}

impl<E> Ipv6Prefix<E> {
    pub(super) fn new(inner: E, bits: u8) -> Self {
        let mask = u128::MAX
            .checked_shl(128 - u32::from(bits.min(128)))
            .unwrap_or(0);
        Self { inner, mask }
    }
}

impl<E: KeyExtractor<Key = IpAddr>> KeyExtractor for Ipv6Prefix<E> {
    type Key = IpAddr;

    fn namespace(&self) -> String {
        self.inner.namespace()
    }

    fn extract(&self, request: &RequestHead<'_>) -> Result<IpAddr, KeyError> {
        Ok(match self.inner.extract(request)? {
            IpAddr::V6(ip) => IpAddr::V6(Ipv6Addr::from(u128::from(ip) & self.mask)),
            v4 => v4,
        })
    }
}
