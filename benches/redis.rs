//! Decisions per second through `RedisStore` (batching its calls), beside `redis-benchmark`
//! running the crate's script and the simplest GCRA script (one key per call, and the
//! same script deciding 16 or 64 keys per call) on the same server, with what each costs
//! Redis per decision (its own CPU time, from `INFO commandstats`) and, for the store, what
//! it costs the app (this process's CPU time); one hot key from 4 stores; and the cost of a denial answered by the deny cache beside the in-process
//! store's. With `--cluster`, the same store on a Redis Cluster (no `redis-benchmark` run:
//! it would call one node).
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
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
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

/// The simplest GCRA script, as small rate limiters write it: Redis time, one `GET`, one
/// `SET ... PX` per key; every key of the call is decided (so with one key, one decision
/// per call). ARGV: the emission interval and the burst, in microseconds and units.
const SIMPLEST: &str = r#"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local admitted = 0
for _, key in ipairs(KEYS) do
  local tat = math.max(tonumber(redis.call('GET', key) or now), now)
  if tat + interval - now <= burst * interval then
    redis.call('SET', key, tat + interval, 'PX', math.ceil((tat + interval - now) / 1000))
    admitted = admitted + 1
  end
end
return admitted
"#;

/// What a load achieved: decisions per second, the latency of one, and this process's CPU
/// time per decision (the app's side: the store, its batching and the Redis client).
struct Load {
    rate: f64,
    p50: Duration,
    p99: Duration,
    app_cpu: Duration,
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        write!(
            f,
            "{:>9.0} decisions/s, p50 {:>6.0} us, p99 {:>6.0} us; per decision: app CPU {:.2} us",
            self.rate,
            micros(self.p50),
            micros(self.p99),
            micros(self.app_cpu)
        )
    }
}

/// The CPU time this process has used (user and system), from `/proc/self/stat`.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    // After the command name in parentheses: state is field 3, utime and stime 14 and 15.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on every Linux build that matters here.
    Duration::from_millis(ticks * 10)
}

/// `concurrency` tasks charging through `stores` (task `i` through store `i % stores`),
/// each on its own key, or all on one hot key.
async fn through_stores(
    stores: &[RedisStore],
    concurrency: usize,
    hot: bool,
    run: Duration,
) -> Load {
    let policy = open_policy();
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..concurrency as u64)
        .map(|task| {
            let store = stores[task as usize % stores.len()].clone();
            let policy = policy.clone();
            let (stop, measuring) = (Arc::clone(&stop), Arc::clone(&measuring));
            let latencies = Arc::clone(&latencies);
            let key = if hot { u64::MAX } else { task };
            tokio::spawn(async move {
                let mut own = Vec::new();
                while !stop.load(Relaxed) {
                    let started = Instant::now();
                    store
                        .apply(&key, Change::Charge(1), &policy)
                        .await
                        .expect("decision");
                    if measuring.load(Relaxed) {
                        own.push(started.elapsed());
                    }
                }
                latencies.lock().unwrap().extend(own);
            })
        })
        .collect();
    tokio::time::sleep(run / 5).await; // warm up
    measuring.store(true, Relaxed);
    let start = Instant::now();
    let cpu_start = process_cpu();
    tokio::time::sleep(run).await;
    measuring.store(false, Relaxed);
    let elapsed = start.elapsed();
    let cpu = process_cpu() - cpu_start;
    stop.store(true, Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    Load {
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
        app_cpu: cpu / latencies.len() as u32,
    }
}

/// A connection to the server at `url`, for setting up and reading its statistics.
async fn admin(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// Redis's own CPU time in script calls (`FCALL`, `EVALSHA`, `EVAL`) since the last
/// reset, in microseconds.
async fn script_micros(connection: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(connection)
        .await
        .unwrap();
    ["cmdstat_fcall:", "cmdstat_evalsha:", "cmdstat_eval:"]
        .iter()
        .filter_map(|command| {
            let stats = info.lines().find_map(|line| line.strip_prefix(command))?;
            let usec = stats
                .split(',')
                .find_map(|field| field.strip_prefix("usec="))?;
            usec.parse::<f64>().ok()
        })
        .sum()
}

async fn reset_stats(connection: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(connection)
        .await
        .unwrap();
}

/// `redis-benchmark -P 16 -c 50 -r 1000000` calling `script_call` (`FCALL` or `EVALSHA`
/// and its arguments): calls per second, and the command as run.
fn redis_benchmark(url: &str, script_call: &[String], requests: u64) -> (String, f64) {
    let address = url.trim_start_matches("redis://");
    let (host, port) = address.split_once(':').unwrap_or((address, "6379"));
    let port = port.trim_end_matches('/');
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
        "-r",
        "1000000",
        "-q",
    ];
    let requests = requests.to_string();
    let output = Command::new(command[0])
        .args(&command[1..])
        .args(["-n", &requests])
        .args(script_call)
        .output()
        .expect("redis-benchmark is installed");
    let text = String::from_utf8_lossy(&output.stdout);
    // "FCALL ...: 171232.88 requests per second, p50=..." (after carriage-return updates)
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
        script_call.join(" ")
    );
    (shown, rate)
}

/// A `redis-benchmark` run of one script: decisions per second, and Redis's CPU time per
/// decision in microseconds.
struct Reference {
    command: String,
    decisions: f64,
    cpu_per_decision: f64,
}

async fn reference(
    url: &str,
    connection: &mut redis::aio::MultiplexedConnection,
    script_args: Vec<String>,
    per_call: u64,
    requests: u64,
) -> Reference {
    reset_stats(connection).await;
    let (command, calls) = redis_benchmark(url, &script_args, requests);
    let micros = script_micros(connection).await;
    Reference {
        command,
        decisions: calls * per_call as f64,
        cpu_per_decision: micros / (requests * per_call) as f64,
    }
}

/// A call of the crate's function (`FCALL`, its name, one key, the channel, one policy
/// set, one change) turned into one of `n` such changes on `n` random keys.
fn batch_of(one: &[String], n: usize) -> Vec<String> {
    let (call, key, channel_and_set, change) = (&one[..2], &one[3], &one[4..11], &one[11..]);
    let keys = (0..n).map(|i| format!("{key}:{i}:__rand_int__"));
    call.iter()
        .cloned()
        .chain([n.to_string()])
        .chain(keys)
        .chain(channel_and_set.iter().cloned())
        .chain((0..n).flat_map(|_| change.iter().cloned()))
        .collect()
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
        let connect = || async {
            let builder = if args.cluster.is_empty() {
                RedisStore::builder(&args.redis)
            } else {
                cluster_builder(&args.cluster)
            };
            builder
                .prefix(&prefix)
                .deadline(Duration::from_secs(1))
                .connect()
                .await
                .expect("connect")
        };
        let store = connect().await;
        let target = if args.cluster.is_empty() {
            "one server".to_owned()
        } else {
            format!("a cluster of {} nodes", args.cluster.len())
        };
        println!(
            "RedisStore on {target}, admitted decisions (each writes its key), {run:?} per run, {} worker thread(s):",
            args.threads
        );
        // On a cluster, one node's statistics (only the single server's are reported).
        let mut connection = admin(args.cluster.first().unwrap_or(&args.redis)).await;
        let mut best = 0f64;
        let mut cpu = 0f64;
        let single = std::slice::from_ref(&store);
        for concurrency in [1, 16, 64, 256, 1024] {
            reset_stats(&mut connection).await;
            let load = through_stores(single, concurrency, false, run).await;
            let micros = script_micros(&mut connection).await;
            // Warm-up and measured decisions together: about 1.2 runs.
            let redis_cpu = micros / (load.rate * 1.2 * run.as_secs_f64());
            if load.rate > best {
                best = load.rate;
                cpu = redis_cpu;
            }
            println!("  concurrency {concurrency:>4}: {load}, Redis CPU {redis_cpu:.2} us");
        }
        let stores = [store.clone(), connect().await, connect().await, connect().await];
        let hot = through_stores(&stores, 256, true, run).await;
        println!("  one hot key, 4 stores x 64 tasks: {hot}");

        if args.cluster.is_empty() {
            let key = String::from_utf8(store.storage_key(&"redis-benchmark", &open_policy(), 0)).unwrap();
            let burst = open_policy()[0].quota().burst_size();
            let requests = (best * run.as_secs_f64()).max(100_000.0) as u64;
            // The crate's script as the store calls it, one decision per call: the
            // invalidation channel, one policy set of one policy (algorithm 0, the token
            // bucket; interval 1 us; the burst; max_delay 0), then a charge (0) of cost 1
            // under set 0.
            let ours: Vec<String> = ["FCALL".into(), store.function_name().to_owned(), "1".into(), key, "ratelimit-bench:invalidate".into()]
                .into_iter()
                .chain(["1", "1", "0", "1"].map(String::from))
                .chain([burst.to_string(), "0".into(), "0".into(), "1".into()])
                .collect();
            let ours_16 = batch_of(&ours, 16);
            let ours = reference(&args.redis, &mut connection, ours, 1, requests).await;
            let ours_16 = reference(&args.redis, &mut connection, ours_16, 16, requests).await;
            let sha: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(SIMPLEST)
                .query_async(&mut connection)
                .await
                .unwrap();
            let simplest = |keys: usize, hot: bool| {
                let key = |i: usize| match hot {
                    true => "bench:hot".to_owned(),
                    false => format!("bench:{i}:__rand_int__"),
                };
                ["EVALSHA".into(), sha.clone(), keys.to_string()]
                    .into_iter()
                    .chain((0..keys).map(key))
                    .chain(["1".into(), burst.to_string()])
                    .collect::<Vec<_>>()
            };
            println!("redis-benchmark on the same server (Redis CPU per decision from INFO commandstats):");
            let mut rows = vec![
                ("crate's script, 1 decision per call".to_owned(), ours),
                ("crate's script, 16 decisions per call".to_owned(), ours_16),
            ];
            for (label, keys, hot) in [
                ("simplest script, random keys", 1, false),
                ("simplest script, one hot key", 1, true),
                ("simplest script, 16 keys per call", 16, false),
                ("simplest script, 64 keys per call", 64, false),
            ] {
                let reference = reference(&args.redis, &mut connection, simplest(keys, hot), keys as u64, requests).await;
                rows.push((label.to_owned(), reference));
            }
            for (label, row) in &rows {
                println!("  {label}: {:>9.0} decisions/s, {:.2} us of Redis CPU each\n    {}", row.decisions, row.cpu_per_decision, row.command);
            }
            println!("RedisStore's best: {:.0} decisions/s, {cpu:.2} us of Redis CPU each", best);
            let simplest = &rows[2].1;
            println!(
                "RedisStore's best / simplest script unbatched (-P 16): {:.2}x; Redis CPU per decision: {:.2}x the simplest's",
                best / simplest.decisions,
                cpu / simplest.cpu_per_decision
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
