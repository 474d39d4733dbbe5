//! Parsing `X-Forwarded-For` and RFC 7239 `Forwarded` lines into hops.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// The hops of one header line, or a single unparsable hop for a line that is not text.
pub(super) enum Hops<I> {
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
pub(super) fn split_unquoted(s: &str, separator: char) -> impl Iterator<Item = &str> {
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
pub(super) fn forwarded_for(element: &str) -> Option<IpAddr> {
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
pub(super) fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    IpAddr::from_str(node)
        .ok()
        .or_else(|| SocketAddr::from_str(node).ok().map(|addr| addr.ip()))
}
