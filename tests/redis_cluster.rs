//! `RedisStore` on a Redis Cluster of the test's own: exact admissions across stores,
//! keys and masters.

mod support;

use std::time::Duration;

use support::redis_cluster::RedisCluster;
use support::redis_server::{unique_prefix, RedisServer};
use tower_ratelimit::store::{RedisStore, Store};
use tower_ratelimit::{Algorithm, Policies, Policy, Quota};

/// Generous: these tests are about counting, not latency, and share a loaded machine.
const DEADLINE: Duration = Duration::from_secs(5);

async fn store(cluster: &RedisCluster, prefix: &str) -> RedisStore {
    RedisStore::cluster_builder(cluster.urls())
        .prefix(prefix)
        .deadline(DEADLINE)
        .connect()
        .await
        .expect("connect")
}

async fn stores(cluster: &RedisCluster, prefix: &str, n: usize) -> Vec<RedisStore> {
    let mut stores = Vec::new();
    for _ in 0..n {
        stores.push(store(cluster, prefix).await);
    }
    stores
}

/// A connection to one node.
async fn node(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

fn policy(quota: Quota) -> Policies {
    Policy::new("default", quota, Algorithm::TokenBucket)
        .unwrap()
        .into()
}

/// `stores × tasks` concurrent tasks, each deciding `rounds` requests of cost 1 for key
/// `key{task % keys}`: the admissions per key.
async fn admit(
    stores: &[RedisStore],
    tasks: usize,
    keys: usize,
    rounds: usize,
    policy: &Policies,
) -> Vec<usize> {
    let mut handles = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for t in 0..tasks {
            let (store, policy) = (store.clone(), policy.clone());
            let key = (s * tasks + t) % keys;
            handles.push(tokio::spawn(async move {
                let mut admitted = 0;
                for _ in 0..rounds {
                    let decision = store.decide(&format!("key{key}"), 1, &policy).await;
                    admitted += usize::from(decision.expect("no error").is_allowed());
                }
                (key, admitted)
            }));
        }
    }
    let mut admitted = vec![0; keys];
    for handle in handles {
        let (key, count) = handle.await.unwrap();
        admitted[key] += count;
    }
    admitted
}

/// The storage-key names of this prefix that the node at `url` holds.
async fn keys_on(url: &str, prefix: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut node(url).await)
        .await
        .unwrap()
}

/// 4 stores (4 app servers) × 64 tasks on 24 keys admit exactly `burst` per key, and the
/// keys are spread over every master, each in the slot its hash tag names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_share_limits_exactly_across_masters() {
    let cluster = RedisCluster::start(3, 0);
    let prefix = unique_prefix("exact");
    let stores = stores(&cluster, &prefix, 4).await;
    let policy = policy(Quota::per_hour(1).burst(20));
    // 4 × 64 × 3 = 768 requests, 32 per key.
    let admitted = admit(&stores, 64, 24, 3, &policy).await;
    assert_eq!(admitted, vec![20; 24]);

    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    let mut total = 0;
    for master in &masters {
        let keys = keys_on(master, &prefix).await;
        assert!(!keys.is_empty(), "{master} holds none of the keys");
        for key in &keys {
            assert_eq!(&cluster.master_of(key.as_bytes()), master, "{key}");
        }
        total += keys.len();
    }
    assert_eq!(total, 24);
}

/// No cluster to connect to: an error, not a store that never decides.
#[tokio::test]
async fn connecting_needs_a_cluster() {
    assert!(RedisStore::cluster(Vec::<String>::new()).await.is_err());
    let server = RedisServer::start();
    let error = RedisStore::cluster([server.url()]).await.unwrap_err();
    assert!(error.to_string().contains("cluster"), "{error}");
}
