//! [`Cidr`]: trusted-proxy networks, and [`InvalidCidr`].

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network (`10.0.0.0/8`) or a single address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub(super) fn contains(&self, ip: IpAddr) -> bool {
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
        let network = IpAddr::from_str(addr.trim()).map_err(|_| invalid())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix.trim() {
            "" => max,
            bits => bits
                .parse()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(invalid)?,
        };
        // An IPv4-mapped network (`::ffff:127.0.0.0/104`) is the IPv4 network it maps,
        // since addresses are keyed and matched as IPv4.
        match network.to_canonical() {
            IpAddr::V4(v4) if network.is_ipv6() && prefix >= 96 => Ok(Self {
                network: IpAddr::V4(v4),
                prefix: prefix - 96,
            }),
            _ => Ok(Self { network, prefix }),
        }
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
