//! Parsing `X-Forwarded-For` and RFC 7239 `Forwarded` lines into hops.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// Splits `s` on `separator` outside double quotes, from the right. The right end is
/// written by your own proxies and is read first; whatever the client wrote to its left
/// (quotes, backslashes, bytes that are not text) is only reached if every hop to its
/// right is trusted.
pub(super) fn split_unquoted(s: &[u8], separator: u8) -> impl Iterator<Item = &[u8]> {
    let mut end = Some(s.len());
    std::iter::from_fn(move || {
        let stop = end?;
        let mut in_quotes = false;
        for i in (0..stop).rev() {
            if s[i] == b'"' {
                in_quotes = !in_quotes;
            } else if s[i] == separator && !in_quotes {
                end = Some(i);
                return Some(&s[i + 1..stop]);
            }
        }
        end = None;
        Some(&s[..stop])
    })
}

/// The hops of one `X-Forwarded-For` line, rightmost first.
pub(super) fn forwarded_for_hops(line: &[u8]) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    line.rsplit(|b| *b == b',')
        .map(|node| std::str::from_utf8(node).ok().and_then(parse_node))
}

/// The hops of one `Forwarded` line, rightmost first.
pub(super) fn forwarded_hops(line: &[u8]) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    split_unquoted(line, b',').map(forwarded_for)
}

/// The `for=` node of one `Forwarded` element.
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    let value = split_unquoted(element, b';').find_map(|pair| {
        let (name, value) = std::str::from_utf8(pair).ok()?.trim().split_once('=')?;
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
