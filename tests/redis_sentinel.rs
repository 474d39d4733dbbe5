//! `RedisStore` through Redis Sentinel of the test's own (a master, a replica, three
//! sentinels): stores share the master's limits exactly, bad names are clear errors, and
//! the master killed under load fails over to the replica, where decisions go on their
//! own within the stated time and bound.

mod support;

use std::time::Duration;

use support::failover;
use support::redis_sentinel::{Sentinels, DOWN_AFTER_MS, MASTER};
use support::redis_server::unique_prefix;
use tower_ratelimit::store::{Change, RedisStore, Store, StoreErrorKind};

/// Two stores found through the sentinels admit exactly the burst between them; a master
/// name the sentinels do not know, or no sentinel, is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_share_the_masters_limits() {
    let sentinels = Sentinels::start();
    let prefix = unique_prefix("sentinel");
    let limits = failover::Limits {
        burst: 20,
        share: 1,
        keys: 1,
        deadline: Duration::from_secs(5),
        slack: Duration::ZERO,
    };
    let connect = || {
        RedisStore::sentinel_builder(sentinels.urls(), MASTER)
            .prefix(&prefix)
            .deadline(limits.deadline)
            .connect()
    };
    let stores = [connect().await.unwrap(), connect().await.unwrap()];
    let mut tasks = Vec::new();
    for task in 0..16 {
        let (store, policy) = (stores[task % 2].clone(), limits.policy());
        tasks.push(tokio::spawn(async move {
            let mut admitted = 0;
            for _ in 0..4 {
                let decision = store.apply(&"shared", Change::Charge(1), &policy).await;
                admitted += usize::from(decision.expect("a decision").is_allowed());
            }
            admitted
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.unwrap();
    }
    assert_eq!(admitted, 20);

    let unknown = RedisStore::sentinel(sentinels.urls(), "nobody").await;
    let error = unknown.expect_err("an unknown master name");
    assert_eq!(error.kind(), StoreErrorKind::Unavailable);
    assert!(error.to_string().contains("no sentinel knows"), "{error}");
    let none = RedisStore::sentinel(Vec::<String>::new(), MASTER).await;
    assert_eq!(none.unwrap_err().kind(), StoreErrorKind::Misconfigured);
    let lazy = RedisStore::sentinel_builder(sentinels.urls(), MASTER).connect_lazy();
    assert_eq!(lazy.unwrap_err().kind(), StoreErrorKind::Misconfigured);
}

/// 2 app servers send 100 requests per second to each of 4 keys through Sentinel, and
/// the master is killed after a second. Every request is answered within the deadline,
/// by Redis or by the in-process fallback; the sentinels promote the replica (after
/// `down-after-milliseconds`, 1 s here, and an election) and the stores move to it on
/// their own: decisions are back on Redis within 10 s of the kill (about 2-3 s here).
/// Every key may lose, at most, what the master acknowledged in its last `WINDOW`
/// (writes not yet replicated die with it), so no key is admitted more than its burst,
/// plus those lost writes, plus the fallback's share per app server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_fails_over() {
    /// Far longer than replication takes on loopback.
    const WINDOW: Duration = Duration::from_millis(500);
    let limits = failover::Limits {
        burst: 200,
        share: 3,
        keys: 4,
        deadline: Duration::from_millis(100),
        slack: Duration::from_millis(200),
    };
    let mut sentinels = Sentinels::start();
    let prefix = unique_prefix("sentinel-failover");
    let urls = sentinels.urls();
    let builder = || {
        RedisStore::sentinel_builder(&urls, MASTER)
            .prefix(&prefix)
            .deadline(limits.deadline)
    };
    let stores = [
        builder().connect().await.unwrap(),
        builder().connect().await.unwrap(),
    ];
    let old = sentinels.master();
    let kill = || sentinels.kill(&old);
    let within = Duration::from_secs(10);
    assert!(within > 2 * Duration::from_millis(DOWN_AFTER_MS));
    let run = failover::run(&limits, stores, kill, within).await;
    let new = sentinels.master();
    assert_ne!(new, old, "the sentinels promoted the replica");

    let observer = builder().deadline(Duration::from_secs(5)).deny_cache(false);
    let observer = observer.connect().await.unwrap();
    run.check(&limits, &observer, &vec![true; limits.keys], WINDOW)
        .await;
}
