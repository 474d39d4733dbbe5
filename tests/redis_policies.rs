//! Per-key policies and key hygiene on a real Redis: tiers keep their own state, secrets
//! never become key names, IPv4-mapped addresses share the IPv4 bucket.
#![cfg(feature = "redis")]

mod support;

use std::net::IpAddr;

use http::{Request, StatusCode};
use redis::AsyncCommands;
use support::redis_server::{store, unique_prefix, RedisServer};
use tower::{Layer, ServiceExt};
use tower_ratelimit::key::KeyError;
use tower_ratelimit::store::{Change, RedisStore, Store};
use tower_ratelimit::{key, Algorithm, Policies, Policy, Quota, RateLimitLayer, RequestHead};

async fn key_names(server: &RedisServer, prefix: &str) -> Vec<String> {
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let mut names: Vec<String> = connection.keys(format!("{prefix}:*")).await.unwrap();
    // The state keys, not the stores' heartbeats.
    names.retain(|name| *name != format!("{prefix}:{{instances}}"));
    names.sort();
    names
}

#[tokio::test]
async fn tiers_keep_their_own_state_and_secrets_stay_hashed() {
    let server = RedisServer::start();
    let prefix = unique_prefix("tiers");
    let pro = Policy::new("pro", Quota::per_hour(20), Algorithm::TokenBucket).unwrap();
    let layer = RateLimitLayer::new(
        key::Header::new("x-api-key"),
        store(&server, &prefix).await,
        Quota::per_hour(2),
    )
    .policy_for(move |api_key, _| api_key.as_bytes().starts_with(b"pro_").then(|| pro.clone()));
    let service = layer.layer(tower::service_fn(|_: Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(()))
    }));
    let call = |api_key: &'static str| {
        let request = Request::get("/")
            .header("x-api-key", api_key)
            .body(())
            .unwrap();
        service.clone().oneshot(request)
    };
    let mut free = Vec::new();
    for _ in 0..3 {
        free.push(call("free_secret_1").await.unwrap().status());
    }
    assert_eq!(
        free,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let paid = call("pro_secret_2").await.unwrap();
    assert_eq!(paid.headers()["ratelimit"], r#""pro";r=19;t=180"#);
    // Two keys, one per tier, and neither API key appears in a key name.
    let names = key_names(&server, &prefix).await;
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.iter().all(|name| !name.contains("secret")),
        "{names:?}"
    );
}

#[tokio::test]
async fn ipv4_mapped_addresses_share_the_ipv4_bucket() {
    let server = RedisServer::start();
    let prefix = unique_prefix("mapped");
    let store = store(&server, &prefix).await;
    let policy =
        Policies::from(Policy::new("default", Quota::per_hour(2), Algorithm::TokenBucket).unwrap());
    let v4: IpAddr = "192.0.2.7".parse().unwrap();
    let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
    assert!(store
        .apply(&v4, Change::Charge(1), &policy)
        .await
        .unwrap()
        .is_allowed());
    assert!(store
        .apply(&mapped, Change::Charge(1), &policy)
        .await
        .unwrap()
        .is_allowed());
    assert!(!store
        .apply(&v4, Change::Charge(1), &policy)
        .await
        .unwrap()
        .is_allowed());
    let names = key_names(&server, &prefix).await;
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].contains("{192.0.2.7}"), "{names:?}");
}

#[tokio::test]
async fn a_key_found_without_a_ttl_gets_one() {
    let server = RedisServer::start();
    let prefix = unique_prefix("heal");
    let store = store(&server, &prefix).await;
    let policy =
        Policies::from(Policy::new("default", Quota::per_hour(1), Algorithm::TokenBucket).unwrap());
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    // A spent bucket, its TTL lost (say, a `PERSIST` by hand).
    assert!(store
        .apply(&"k", Change::Charge(1), &policy)
        .await
        .unwrap()
        .is_allowed());
    let name = store.storage_key(&"k", &policy, 0);
    let _: bool = connection.persist(&name).await.unwrap();
    assert_eq!(connection.pttl::<_, i64>(&name).await.unwrap(), -1);
    // A denied request writes nothing, but restores the TTL: about an hour.
    let denied = RedisStore::builder(server.url())
        .prefix(&prefix)
        .deny_cache(false)
        .connect()
        .await
        .unwrap();
    assert!(!denied
        .apply(&"k", Change::Charge(1), &policy)
        .await
        .unwrap()
        .is_allowed());
    let ttl: i64 = connection.pttl(&name).await.unwrap();
    assert!((3_500_000..=3_600_000).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn window_keys_found_without_a_ttl_get_one() {
    let server = RedisServer::start();
    let prefix = unique_prefix("heal_windows");
    let store = RedisStore::builder(server.url())
        .prefix(&prefix)
        .connect()
        .await
        .unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    for (algorithm, most) in [
        (Algorithm::FixedWindow, 3_600_000),
        (Algorithm::SlidingWindow, 7_200_000),
    ] {
        let policy = Policies::from(Policy::new("default", Quota::per_hour(1), algorithm).unwrap());
        assert!(store
            .apply(&"k", Change::Charge(1), &policy)
            .await
            .unwrap()
            .is_allowed());
        let name = store.storage_key(&"k", &policy, 0);
        let _: bool = connection.persist(&name).await.unwrap();
        // A denial writes nothing, but gives the key back a TTL within its windows.
        assert!(!store
            .apply(&"k", Change::Charge(1), &policy)
            .await
            .unwrap()
            .is_allowed());
        let ttl: i64 = connection.pttl(&name).await.unwrap();
        assert!((1..=most).contains(&ttl), "{algorithm:?}: {ttl}");
    }
}

/// A service behind `layer`, called with a peer address and headers.
async fn status_of<K>(
    layer: &RateLimitLayer<K, RedisStore>,
    peer: &str,
    headers: &[(&str, &str)],
) -> StatusCode
where
    K: key::KeyExtractor + Clone,
    K::Key: tower_ratelimit::store::RedisKey,
{
    let service = layer.layer(tower::service_fn(|_: Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(()))
    }));
    let mut request = Request::get("/");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut request = request.body(()).unwrap();
    let peer: std::net::SocketAddr = peer.parse().unwrap();
    request.extensions_mut().insert(peer);
    service.oneshot(request).await.unwrap().status()
}

#[tokio::test]
async fn a_header_value_that_reads_like_an_ip_never_charges_that_ip() {
    let server = RedisServer::start();
    let prefix = unique_prefix("kinds");
    let quota = Quota::per_hour(1).burst(2);
    let by_ip = RateLimitLayer::new(key::PeerIp, store(&server, &prefix).await, quota);
    // User ids as strings, set by an authentication layer in front.
    let user_id = |request: &RequestHead<'_>| {
        let value = request
            .headers
            .get("x-user-id")
            .ok_or(KeyError::skip("anonymous"))?;
        Ok::<_, KeyError>(value.to_str().unwrap_or_default().to_owned())
    };
    let by_user = RateLimitLayer::new(user_id, store(&server, &prefix).await, quota);
    // Someone sends the victim's address as their user id, over and over.
    for _ in 0..3 {
        status_of(&by_user, "198.51.100.1:1", &[("x-user-id", "127.0.0.1")]).await;
    }
    // The victim's own bucket is untouched.
    assert_eq!(status_of(&by_ip, "127.0.0.1:1", &[]).await, StatusCode::OK);
    assert_eq!(status_of(&by_ip, "127.0.0.1:1", &[]).await, StatusCode::OK);
    assert_eq!(
        status_of(&by_ip, "127.0.0.1:1", &[]).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn a_header_copied_into_bytes_is_stored_hashed() {
    let server = RedisServer::start();
    let prefix = unique_prefix("bytes");
    // As a closure copying the header into a `Vec<u8>` would (the demo's `header:NAME`).
    let api_key = |request: &RequestHead<'_>| {
        let value = request
            .headers
            .get("x-api-key")
            .ok_or(KeyError::skip("no key"))?;
        Ok::<_, KeyError>(value.as_bytes().to_vec())
    };
    let layer = RateLimitLayer::new(api_key, store(&server, &prefix).await, Quota::per_hour(5));
    let status = status_of(&layer, "127.0.0.1:1", &[("x-api-key", "sk_live_secret")]).await;
    assert_eq!(status, StatusCode::OK);
    let names = key_names(&server, &prefix).await;
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(!names[0].contains("sk_live"), "{names:?}");
}
