//! [`ClientIp`]: the client's address as your own proxies report it.

use std::net::IpAddr;
use std::sync::Arc;

use http::StatusCode;

use super::cidr::Cidr;
use super::forwarded::{forwarded_for_hops, forwarded_hops};
use super::peer::{peer_ip, NO_PEER};
use super::{InvalidCidr, Ipv6Prefix, KeyError, KeyExtractor};
use crate::RequestHead;

const BAD_FORWARDING: KeyError = KeyError::new(
    StatusCode::BAD_REQUEST,
    "a forwarding header from a trusted proxy names no usable client address",
);

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

    fn namespace(&self) -> String {
        "ip".to_owned()
    }

    fn extract(&self, request: &RequestHead<'_>) -> Result<IpAddr, KeyError> {
        let peer = peer_ip(request).ok_or(NO_PEER)?;
        if !self.is_trusted(peer) {
            return Ok(peer);
        }
        let lines = request.headers.get_all(match self.header {
            Forwarding::XForwardedFor => "x-forwarded-for",
            Forwarding::Forwarded => "forwarded",
        });
        let lines = lines.iter().rev().map(|line| line.as_bytes());
        match self.header {
            Forwarding::XForwardedFor => {
                self.first_untrusted(peer, lines.flat_map(forwarded_for_hops))
            }
            Forwarding::Forwarded => self.first_untrusted(peer, lines.flat_map(forwarded_hops)),
        }
    }
}
