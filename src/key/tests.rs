//! The extractors: peer and client addresses, forwarding headers, networks, headers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http::{HeaderValue, Request};

use super::cidr::Cidr;
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
    // IPv4-mapped networks and addresses are the IPv4 ones.
    let mapped: Cidr = "::ffff:127.0.0.0/104".parse().unwrap();
    assert!(mapped.contains(ip("127.0.0.1")) && !mapped.contains(ip("128.0.0.1")));
    assert!(ClientIp::new(["::ffff:127.0.0.1"]).is_ok());
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

#[test]
fn a_client_written_backslash_left_of_a_trusted_entry_changes_nothing() {
    let forwarded = proxies().header(Forwarding::Forwarded);
    let req = request(
        "10.0.0.2",
        &[("forwarded", r#"for="\"oops\\", for=198.51.100.9"#)],
    );
    assert_eq!(key(&forwarded, &req), Ok(ip("198.51.100.9")));
}

/// A request from the trusted proxy 10.0.0.2 whose `name` line is the client's bytes
/// followed by what the proxy appended.
fn appended(name: &str, client: &[u8], proxy: &str) -> Request<()> {
    let mut line = client.to_vec();
    line.extend_from_slice(proxy.as_bytes());
    let mut request = request("10.0.0.2", &[]);
    let value = HeaderValue::from_bytes(&line).unwrap();
    request.headers_mut().insert(
        http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
        value,
    );
    request
}

proptest::proptest! {
    /// Whatever the client writes (any bytes a header may carry), the key comes from the
    /// entry the trusted proxy appended to its right.
    #[test]
    fn the_client_part_never_changes_the_key_from_the_proxies_part(
        client in proptest::collection::vec(
            proptest::prop_oneof![0x20u8..=0x7e, 0x80u8..=0xff, proptest::strategy::Just(b'\t')],
            0..40,
        ),
    ) {
        let forwarded = proxies().header(Forwarding::Forwarded);
        let req = appended("forwarded", &client, ", for=198.51.100.9");
        proptest::prop_assert_eq!(key(&forwarded, &req), Ok(ip("198.51.100.9")));
        let req = appended("x-forwarded-for", &client, ", 198.51.100.9");
        proptest::prop_assert_eq!(key(&proxies(), &req), Ok(ip("198.51.100.9")));
    }
}

#[test]
fn several_lines_of_a_key_header_are_refused_unless_the_last_is_asked_for() {
    let mut req = request("", &[("x-user-id", "client")]);
    req.headers_mut()
        .append("x-user-id", HeaderValue::from_static("proxy"));
    let refused = key(&Header::new("x-user-id"), &req).unwrap_err();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let last = Header::new("x-user-id").last_line();
    assert_eq!(key(&last, &req), Ok(HeaderValue::from_static("proxy")));
}
