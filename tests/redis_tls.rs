//! `RedisStore` over TLS (`rediss://`) to a `redis-server` of the test's own, on
//! certificates the test makes: decisions and deny-cache invalidations over TLS, a server
//! certificate from an unknown CA refused with an error naming TLS, mutual TLS with and
//! without a client certificate, an ACL user, a Cluster and Sentinel over TLS.

mod support;

use std::time::{Duration, Instant};

use support::redis_sentinel::{Sentinels, MASTER};
use support::redis_server::unique_prefix;
use support::tls::{read, Certificates, ClientAuth, TlsServer};
use tower_ratelimit::store::{
    Change, Pem, RedisStore, RedisStoreBuilder, Store, StoreError, StoreErrorKind,
};
use tower_ratelimit::{Algorithm, Policies, Policy, Quota};

/// Generous: these tests are about TLS, not latency, and share a loaded machine.
const DEADLINE: Duration = Duration::from_secs(5);

fn policy() -> Policies {
    Policy::new(
        "default",
        Quota::per_hour(1).burst(3),
        Algorithm::TokenBucket,
    )
    .unwrap()
    .into()
}

fn builder(url: &str, prefix: &str) -> RedisStoreBuilder {
    RedisStore::builder(url).prefix(prefix).deadline(DEADLINE)
}

/// Charges `key` 4 times: 3 admitted, then refused.
async fn admits_the_burst(store: &RedisStore, key: &'static str) {
    let mut admitted = Vec::new();
    for _ in 0..4 {
        let decision = store.apply(&key, Change::Charge(1), &policy()).await;
        admitted.push(decision.expect("a decision over TLS").is_allowed());
    }
    assert_eq!(admitted, [true, true, true, false]);
}

/// The error's message with its sources.
fn message(error: &StoreError) -> String {
    eprintln!("{error}");
    error.to_string().to_lowercase()
}

/// A decision over TLS with the CA given as a file; a reset on a second store reaches the
/// first one's deny cache over its TLS subscription.
#[tokio::test]
async fn decisions_over_tls() {
    let certificates = Certificates::generate();
    let server = TlsServer::start(&certificates, ClientAuth::No);
    let prefix = unique_prefix("tls");
    let connect = || {
        builder(&server.url(None), &prefix)
            .tls_ca(certificates.path("ca.crt"))
            .connect()
    };
    let (first, second) = (connect().await.unwrap(), connect().await.unwrap());
    admits_the_burst(&first, "user").await;

    // The refusal is in `first`'s deny cache; the reset from `second` is heard over TLS.
    second
        .apply(&"user", Change::Reset, &policy())
        .await
        .unwrap();
    let reset = Instant::now();
    loop {
        let decision = first.apply(&"user", Change::Charge(1), &policy()).await;
        if decision.unwrap().is_allowed() {
            break;
        }
        assert!(
            reset.elapsed() < Duration::from_secs(5),
            "the invalidation never arrived over TLS"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A server certificate signed by a CA the store does not trust (another CA, or the
/// system's roots) is refused at connect, with an error that says TLS and certificate.
#[tokio::test]
async fn an_unknown_ca_is_refused_clearly() {
    let certificates = Certificates::generate();
    let server = TlsServer::start(&certificates, ClientAuth::No);
    let prefix = unique_prefix("tls-unknown");
    let others = builder(&server.url(None), &prefix).tls_ca(certificates.path("other-ca.crt"));
    for store in [others, builder(&server.url(None), &prefix)] {
        let error = store.connect().await.expect_err("an unknown CA");
        assert_eq!(error.kind(), StoreErrorKind::Unavailable);
        let message = message(&error);
        assert!(message.contains("tls"), "{message}");
        assert!(message.contains("certificate"), "{message}");
    }
}

/// With `tls-auth-clients yes`, a store with a client certificate (given as PEM bytes)
/// decides; one without is refused at once with an error that says TLS and certificate.
#[tokio::test]
async fn mutual_tls() {
    let certificates = Certificates::generate();
    let server = TlsServer::start(&certificates, ClientAuth::Required);
    let prefix = unique_prefix("mtls");
    let ca = Pem::from(read(&certificates.path("ca.crt")));
    let with_certificate = builder(&server.url(None), &prefix)
        .tls_ca(ca.clone())
        .tls_client_cert(
            read(&certificates.path("client.crt")),
            read(&certificates.path("client.key")),
        )
        .connect()
        .await
        .expect("mutual TLS");
    admits_the_burst(&with_certificate, "user").await;

    let started = Instant::now();
    let error = builder(&server.url(None), &prefix)
        .tls_ca(ca)
        .connect()
        .await
        .expect_err("no client certificate");
    assert!(started.elapsed() < Duration::from_secs(2), "{error}");
    let message = message(&error);
    assert!(message.contains("tls"), "{message}");
    assert!(message.contains("certificate"), "{message}");
}

/// An ACL user allowed the store's keys and channels only, in the URL
/// (`rediss://user:password@host`); a wrong password is refused.
#[tokio::test]
async fn an_acl_user_over_tls() {
    let certificates = Certificates::generate();
    let server = TlsServer::start(&certificates, ClientAuth::No);
    let prefix = unique_prefix("acl");
    let client = redis::Client::open(server.plain_url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "limiter", "on", ">s3cret", "resetkeys"])
        .arg(format!("~{prefix}:*"))
        .arg(&[
            "resetchannels",
            &format!("&{prefix}:*"),
            "+@all",
            "-@dangerous",
        ])
        .query_async(&mut admin)
        .await
        .unwrap();
    let store = builder(&server.url(Some(("limiter", "s3cret"))), &prefix)
        .tls_ca(certificates.path("ca.crt"))
        .connect()
        .await
        .expect("the ACL user");
    admits_the_burst(&store, "user").await;
    assert_eq!(store.maxmemory_policy(), None, "CONFIG is not allowed");

    let error = builder(&server.url(Some(("limiter", "wrong"))), &prefix)
        .tls_ca(certificates.path("ca.crt"))
        .connect()
        .await
        .expect_err("a wrong password");
    assert!(message(&error).contains("authentication failed"), "{error}");
}

/// A CA file that cannot be read fails at connect, naming the file.
#[tokio::test]
async fn a_missing_ca_file_is_misconfigured() {
    let error = RedisStore::builder("rediss://127.0.0.1:1")
        .tls_ca(std::path::Path::new("/nonexistent/ca.crt"))
        .connect()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), StoreErrorKind::Misconfigured);
    assert!(error.to_string().contains("/nonexistent/ca.crt"), "{error}");
}

/// A Redis Cluster over TLS (clients and the cluster bus): 3 stores on 3 masters admit
/// exactly the burst of every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tls() {
    let certificates = Certificates::generate();
    let (cluster, urls) = support::tls::tls_cluster(&certificates);
    let prefix = unique_prefix("tls-cluster");
    let mut stores = Vec::new();
    for _ in 0..3 {
        let store = RedisStore::cluster_builder(&urls)
            .prefix(&prefix)
            .deadline(DEADLINE)
            .tls_ca(certificates.path("ca.crt"))
            .connect()
            .await
            .expect("a cluster over TLS");
        stores.push(store);
    }
    let mut masters = std::collections::HashSet::new();
    for key in 0..12 {
        let mut admitted = 0;
        for round in 0..6 {
            let store = &stores[round % 3];
            let name = format!("key{key}");
            let decision = store.apply(&name, Change::Charge(1), &policy()).await;
            admitted += usize::from(decision.expect("a decision over TLS").is_allowed());
            masters.insert(cluster.master_of(&store.storage_key(&name, &policy(), 0)));
        }
        assert_eq!(admitted, 3, "key{key}");
    }
    assert_eq!(masters.len(), 3, "keys on every master");
}

/// Sentinel over TLS: sentinels, master and replica speak TLS to clients and to each
/// other; the store asks the sentinels (`rediss://` URLs) and decides on the master over
/// TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_over_tls() {
    let certificates = Certificates::generate();
    let settings = certificates.server_settings(ClientAuth::No);
    let sentinels = Sentinels::start_with(Some(settings));
    let store = RedisStore::sentinel_builder(sentinels.urls(), MASTER)
        .prefix(&unique_prefix("tls-sentinel"))
        .deadline(DEADLINE)
        .tls_ca(certificates.path("ca.crt"))
        .connect()
        .await
        .expect("Sentinel over TLS");
    admits_the_burst(&store, "user").await;
}
