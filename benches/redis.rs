//! Decisions per second through `RedisStore`, beside `redis-benchmark` running the same
//! script on the same server, and the cost of a denial answered by the deny cache beside
//! the in-process store's. With `--cluster`, the same store on a Redis Cluster (no
//! `redis-benchmark` run: it would call one node).
//!
//! ```sh
//! benches/redis_compare.sh [--cluster]          # starts its own redis-server (and cluster)
//! cargo bench --bench redis --features redis -- --redis redis://127.0.0.1:6379 [--seconds 3] [--threads 1]
//! cargo bench --bench redis --features redis-cluster -- --cluster redis://127.0.0.1:7000,redis://127.0.0.1:7001
//! ```
//!
//! `--threads` is the number of Tokio worker threads (default 1, which leaves the other
//! core of a 2-core machine to a Redis on the same host).

use std::future::Future;
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tower_ratelimit::store::{Change, MemoryStore, RedisStore, RedisStoreBuilder, Store};
use tower_ratelimit::{Algorithm, Policies, Policy, Quota};

struct Args {
    redis: String,
    /// The nodes of a cluster to use instead of `redis`.
    cluster: Vec<String>,
    seconds: u64,
    threads: usize,
}

fn args() -> Args {
    let mut args = Args {
        redis: "redis://127.0.0.1:6379".to_owned(),
        cluster: Vec::new(),
        seconds: 3,
        threads: 1,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        match word.as_str() {
            "--redis" => args.redis = words.next().expect("--redis URL"),
            "--cluster" => {
                let nodes = words.next().expect("--cluster URL,URL");
                args.cluster = nodes.split(',').map(str::to_owned).collect();
            }
            "--seconds" => {
                args.seconds = words
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--seconds N")
            }
            "--threads" => {
                args.threads = words
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--threads N")
            }
            "--bench" => {} // passed by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// Every call admitted (and so written): the script's most expensive path.
fn open_policy() -> Policies {
    Policy::new(
        "bench",
        Quota::per_second(1_000_000).burst(1_000_000_000),
        Algorithm::TokenBucket,
    )
    .unwrap()
    .into()
}

/// Decisions per second through `store` with `concurrency` tasks, one key each.
async fn through_store(store: &RedisStore, concurrency: usize, run: Duration) -> f64 {
    let policy = open_policy();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..concurrency as u64)
        .map(|key| {
            let (store, policy) = (store.clone(), policy.clone());
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    store
                        .apply(&key, Change::Charge(1), &policy)
                        .await
                        .expect("decision");
                    done.fetch_add(1, Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(run / 5).await; // warm up
    let (start, before) = (Instant::now(), done.load(Relaxed));
    tokio::time::sleep(run).await;
    let rate = (done.load(Relaxed) - before) as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    rate
}

/// `redis-benchmark -P 16 -c 50` calling the same script (EVALSHA) on the same server.
fn redis_benchmark(url: &str, sha: &str, key: &[u8], requests: u64) -> (String, f64) {
    let address = url.trim_start_matches("redis://");
    let (host, port) = address.split_once(':').unwrap_or((address, "6379"));
    let port = port.trim_end_matches('/');
    let policy = open_policy();
    let interval = 1u64; // µs: 1 000 000 per second
    let burst = policy[0].quota().burst_size();
    let command = [
        "redis-benchmark",
        "-h",
        host,
        "-p",
        port,
        "-P",
        "16",
        "-c",
        "50",
        "-q",
    ];
    let requests = requests.to_string();
    let script_args = [
        "EVALSHA".to_owned(),
        sha.to_owned(),
        "1".to_owned(),
        String::from_utf8(key.to_vec()).unwrap(),
        // the invalidation channel, then one change: a charge (0) of cost 1 under one
        // policy: algorithm 0 (token bucket), interval, burst, max_delay
        "ratelimit-bench:invalidate".to_owned(),
        "0".to_owned(),
        "1".to_owned(),
        "1".to_owned(),
        "0".to_owned(),
        interval.to_string(),
        burst.to_string(),
        "0".to_owned(),
    ];
    let output = Command::new(command[0])
        .args(&command[1..])
        .args(["-n", &requests])
        .args(&script_args)
        .output()
        .expect("redis-benchmark is installed");
    let text = String::from_utf8_lossy(&output.stdout);
    // "EVALSHA ...: 171232.88 requests per second, p50=..." (after carriage-return updates)
    let rate = text
        .rsplit('\r')
        .chain(text.lines())
        .find_map(|part| {
            let (_, rest) = part.split_once(": ")?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .unwrap_or_else(|| panic!("unexpected redis-benchmark output: {text}"));
    let shown = format!(
        "{} -n {requests} {}",
        command.join(" "),
        script_args.join(" ")
    );
    (shown, rate)
}

/// Nanoseconds per decision of `decide` (which must answer at once), on one thread.
fn per_decision<F: Future + Unpin>(mut decide: impl FnMut() -> F) -> f64 {
    let context = &mut Context::from_waker(Waker::noop());
    let rounds = 2_000_000;
    let start = Instant::now();
    for _ in 0..rounds {
        let mut decision = decide();
        assert!(
            Pin::new(&mut decision).poll(context).is_ready(),
            "answered locally"
        );
    }
    start.elapsed().as_nanos() as f64 / rounds as f64
}

#[cfg(feature = "redis-cluster")]
fn cluster_builder(nodes: &[String]) -> RedisStoreBuilder {
    RedisStore::cluster_builder(nodes)
}

#[cfg(not(feature = "redis-cluster"))]
fn cluster_builder(_: &[String]) -> RedisStoreBuilder {
    panic!("--cluster needs `--features redis-cluster`")
}

fn main() {
    let args = args();
    let run = Duration::from_secs(args.seconds);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let unique = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let prefix = format!("bench:{unique}");
        let builder = if args.cluster.is_empty() {
            RedisStore::builder(&args.redis)
        } else {
            cluster_builder(&args.cluster)
        };
        let store = builder
            .prefix(&prefix)
            .deadline(Duration::from_secs(1))
            .connect()
            .await
            .expect("connect");

        let target = if args.cluster.is_empty() {
            "one server".to_owned()
        } else {
            format!("a cluster of {} nodes", args.cluster.len())
        };
        println!(
            "RedisStore on {target}, admitted decisions (each writes its key), {run:?} per run, {} worker thread(s):",
            args.threads
        );
        let mut best = 0f64;
        for concurrency in [1, 16, 64, 256] {
            let rate = through_store(&store, concurrency, run).await;
            best = best.max(rate);
            println!("  concurrency {concurrency:>3}: {rate:>9.0} decisions/s");
        }

        if args.cluster.is_empty() {
            let key = store.storage_key(&"redis-benchmark", &open_policy(), 0);
            // About as long a run as one of ours.
            let requests = (best * run.as_secs_f64()).max(100_000.0) as u64;
            let (command, reference) =
                redis_benchmark(&args.redis, store.script_sha(), &key, requests);
            println!(
                "redis-benchmark, same script, same server:\n  {command}\n  {reference:>9.0} calls/s"
            );
            println!(
                "RedisStore's best / redis-benchmark -P 16: {:.0}%",
                100.0 * best / reference
            );
        }

        // Denied traffic: a key Redis has denied once, then the deny cache answers.
        let denying: Policies =
            Policy::new("bench", Quota::per_hour(1).burst(1), Algorithm::TokenBucket)
                .unwrap()
                .into();
        store.apply(&"denied", Change::Charge(1), &denying).await.unwrap();
        assert!(!store
            .apply(&"denied", Change::Charge(1), &denying)
            .await
            .unwrap()
            .is_allowed());
        let cached = per_decision(|| store.apply(&"denied", Change::Charge(1), &denying));
        let memory = MemoryStore::new();
        memory.apply(&"denied", Change::Charge(1), &denying).into_inner().unwrap();
        let in_process = per_decision(|| memory.apply(&"denied", Change::Charge(1), &denying));
        println!(
            "denied decision: RedisStore deny cache {cached:.0} ns, MemoryStore {in_process:.0} ns"
        );
    });
}
