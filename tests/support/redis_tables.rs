//! The reference-case tables on a real Redis, through `RedisStore` and its scripts: the
//! runners shared by the single-server and the cluster tests.

use std::time::Duration;

use redis::aio::ConnectionLike;
use tower_ratelimit::store::{RedisStore, Store};
use tower_ratelimit::{Algorithm, Policies, Policy};

use super::cases::{parse, Case, Expected};

/// Redis's clock, in microseconds since the Unix epoch.
pub async fn redis_time(connection: &mut impl ConnectionLike) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(connection).await.unwrap();
    secs * 1_000_000 + micros
}

/// Moves a key's state `by` into the past, as if that much time had gone by: GCRA depends
/// only on `TAT − now`, so lowering the TAT (and the end of a block, `b<until>;<TAT>`) is
/// the same as advancing Redis's clock. Keeps the TTL exact, and deletes a key whose TAT
/// and block have passed, as the store's script does.
async fn age(connection: &mut impl ConnectionLike, key: &[u8], by: Duration) {
    const AGE: &str = r"
        local by = tonumber(ARGV[1])
        local value = redis.call('GET', KEYS[1]) or '0'
        local blocked, state = string.match(value, '^b(%d+);(.*)$')
        blocked, state = tonumber(blocked or '0') - by, state or value
        local tat = tonumber(state ~= '' and state or '0') - by
        local time = redis.call('TIME')
        local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
        local lives = math.max(tat, blocked)
        if lives <= now then
          redis.call('DEL', KEYS[1])
          return 0
        end
        value = ''
        if tat > now then
          value = string.format('%.0f', tat)
        end
        if blocked > now then
          value = string.format('b%.0f;', blocked) .. value
        end
        redis.call('SET', KEYS[1], value, 'PX', math.ceil((lives - now) / 1000))
        return 0";
    eval(connection, AGE, key, &[by.as_micros() as u64]).await;
}

/// Runs `script` on `key` with `args`.
async fn eval(connection: &mut impl ConnectionLike, script: &str, key: &[u8], args: &[u64]) {
    let _: i64 = redis::cmd("EVAL")
        .arg(script)
        .arg(1)
        .arg(key)
        .arg(args)
        .query_async(connection)
        .await
        .unwrap();
}

/// Every duration of the reference cases times this: the smallest gap between a step and
/// a boundary in the table (1 µs) becomes 100 ms, far more than a step can be late.
const SCALE: u32 = 100_000;

/// Runs one case, scaled, on Redis's clock. Time between steps is made by aging the key's
/// state (see [`age`]); the real time that passes as well is measured with Redis `TIME`
/// around the calls. A step may therefore run up to `late` after its planned time, `late`
/// being the time since the first call that charged the key (the state's time base):
/// outcome and remaining quota must be exact, and `reset`/`retry` at most `late` short of
/// the table's. The store runs without its deny cache, since aging moves a TAT back, which
/// real traffic never does. For the GCRA algorithms: the buckets and the shaper.
async fn run(
    store: &RedisStore,
    connection: &mut impl ConnectionLike,
    case: &Case,
    algorithm: Algorithm,
    key: String,
) -> Result<(), String> {
    let policy: Policies = Policy::new("default", case.quota, algorithm)
        .map_err(|e| e.to_string())?
        .into();
    let storage_key = store.storage_key(&key, &policy, 0);
    let refills = case.quota.period().is_some();
    let mut planned = Duration::ZERO;
    let mut charged_at = None;
    for (i, step) in case.steps.iter().enumerate() {
        if refills && step.at > planned {
            age(connection, &storage_key, step.at - planned).await;
        }
        planned = step.at;
        let before = redis_time(connection).await;
        let decision = store
            .apply(&key, step.change, &policy)
            .await
            .map_err(|e| e.to_string())?;
        let after = redis_time(connection).await;
        let late = charged_at.map_or(Duration::ZERO, |at| Duration::from_micros(after - at));
        step.expected
            .check_late(&decision[0], late)
            .map_err(|e| format!("step {} (at {:?}, {:?}): {e}", i + 1, step.at, step.change))?;
        if step.writes(&decision[0]) {
            charged_at.get_or_insert(before);
        }
    }
    Ok(())
}

/// The algorithm a table's case runs with.
fn algorithm_for(table: &str) -> impl Fn(&Case) -> Algorithm + '_ {
    move |case| match table {
        "token_bucket" => Algorithm::TokenBucket,
        "leaky_bucket" => Algorithm::LeakyBucket,
        "shaper" => Algorithm::LeakyBucketShaper {
            max_delay: case.max_delay.expect("shaper cases set max-delay"),
        },
        "fixed_window" => Algorithm::FixedWindow,
        "sliding_window" => Algorithm::SlidingWindow,
        other => panic!("no table {other}"),
    }
}

fn table(name: &str) -> Vec<Case> {
    let path = format!("{}/tests/cases/{name}.txt", env!("CARGO_MANIFEST_DIR"));
    parse(&std::fs::read_to_string(path).unwrap())
}

/// Runs a GCRA table (see [`run`]) through `store` (without its deny cache) and its script,
/// one case after another; `connection` reaches the same Redis. Returns the number of cases.
pub async fn gcra_table(
    store: &RedisStore,
    connection: &mut (impl ConnectionLike + Send),
    name: &str,
) -> usize {
    let cases = table(name);
    let algorithm = algorithm_for(name);
    let mut failures = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let scaled = case.scaled(SCALE);
        if let Err(e) = run(
            store,
            connection,
            &scaled,
            algorithm(&scaled),
            format!("case{n}"),
        )
        .await
        {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    cases.len()
}

/// How early a window step's wait begins polling Redis `TIME`.
const LEAD: u64 = 5_000;

/// Moves a window state `windows` periods into the past, as if that much time had gone by:
/// the window scripts depend only on how many windows lie between the stored one and the
/// current one, and on the time within the current one. Shortens the TTL to match.
async fn age_window(connection: &mut impl ConnectionLike, key: &[u8], windows: u64, period: u64) {
    const AGE: &str = r"
        local state = redis.call('GET', KEYS[1])
        if not state then return 0 end
        local window, rest = string.match(state, '^(%d+)(.*)$')
        local ttl = redis.call('PTTL', KEYS[1]) - tonumber(ARGV[2])
        if ttl <= 0 then
          redis.call('DEL', KEYS[1])
        else
          local aged = string.format('%.0f', tonumber(window) - tonumber(ARGV[1]))
          redis.call('SET', KEYS[1], aged .. rest, 'PX', ttl)
        end
        return 0";
    eval(connection, AGE, key, &[windows, windows * period / 1000]).await;
}

/// The shortest positive time a step expects: being later than that could change its
/// answer.
fn shortest_time(expected: &Expected) -> Option<Duration> {
    let times = match *expected {
        Expected::Allow { reset, .. } => [reset, None],
        Expected::Deny { retry, .. } => [retry, None],
        Expected::Delay { wait, .. } => [Some(wait), None],
        Expected::TooCostly { .. } => [None, None],
    };
    times.into_iter().flatten().filter(|t| !t.is_zero()).min()
}

/// Runs one window case on Redis's real clock. Window edges are multiples of the period in
/// Redis time, so the case's origin is put on an edge, and each step is made when Redis
/// `TIME` reaches its planned offset within its window (polled from just before). Whole
/// idle windows are skipped by aging the state ([`age_window`]), which is exact. A step
/// made `late` must get exactly the expected outcome and remaining quota, with times at
/// most `late` short. `Ok(Some(reason))`: the attempt proves nothing, because a step ran
/// so late that the table's answer could have changed (past its shortest expected time or
/// past its window's end).
async fn run_windows(
    store: &RedisStore,
    connection: &mut impl ConnectionLike,
    case: &Case,
    algorithm: Algorithm,
    key: String,
) -> Result<Option<String>, String> {
    let policy: Policies = Policy::new("default", case.quota, algorithm)
        .map_err(|e| e.to_string())?
        .into();
    let storage_key = store.storage_key(&key, &policy, 0);
    let period = case.quota.period().unwrap().as_micros() as u64;
    let mut base = redis_time(connection).await / period * period;
    let mut charged = false;
    for (i, step) in case.steps.iter().enumerate() {
        let at = step.at.as_micros() as u64;
        let mut now = redis_time(connection).await;
        let mut target = base + at;
        if !charged && target < now + LEAD {
            // No state yet: the origin may move to a later edge.
            base += (now + LEAD - target).div_ceil(period) * period;
            target = base + at;
        }
        if target > now + LEAD + period {
            let windows = (target - now - LEAD) / period;
            age_window(connection, &storage_key, windows, period).await;
            base -= windows * period;
            target -= windows * period;
        }
        if target > now + LEAD {
            tokio::time::sleep(Duration::from_micros(target - now - LEAD)).await;
        }
        while now < target {
            now = redis_time(connection).await;
        }
        let decision = store
            .apply(&key, step.change, &policy)
            .await
            .map_err(|e| e.to_string())?;
        let late = Duration::from_micros(redis_time(connection).await - target);
        let window_left = Duration::from_micros(period - at % period);
        if late >= window_left || shortest_time(&step.expected).is_some_and(|t| late >= t) {
            return Ok(Some(format!("step {} ran {late:?} late", i + 1)));
        }
        step.expected
            .check_late(&decision[0], late)
            .map_err(|e| format!("step {} (at {:?}, {:?}): {e}", i + 1, step.at, step.change))?;
        charged |= step.writes(&decision[0]);
    }
    Ok(None)
}

/// Runs a window table on Redis's real clock, a table second being `scale` seconds, all
/// cases at once on their own keys, each up to 10 times if an attempt proves nothing (see
/// [`run_windows`]: a step 1 ms before a window's end, 2 ms at scale 2, is often late on a
/// loaded machine); `store` and `connection` as for [`gcra_table`].
pub async fn window_table<C>(store: &RedisStore, connection: &C, name: &str, scale: u32)
where
    C: ConnectionLike + Clone + Send + 'static,
{
    let algorithm = algorithm_for(name);
    let mut handles = Vec::new();
    for (n, case) in table(name).iter().enumerate() {
        let (store, mut connection) = (store.clone(), connection.clone());
        let case = case.scaled(scale);
        let algorithm = algorithm(&case);
        handles.push(tokio::spawn(async move {
            let mut voided = Vec::new();
            for attempt in 0..10 {
                let key = format!("case{n}-{attempt}");
                match run_windows(&store, &mut connection, &case, algorithm, key).await {
                    Ok(None) => return Ok(()),
                    Ok(Some(reason)) => voided.push(reason),
                    Err(e) => return Err(format!("{}: {e}", case.name)),
                }
            }
            Err(format!("{}: no conclusive attempt: {voided:?}", case.name))
        }));
    }
    let mut failures = Vec::new();
    for handle in handles {
        if let Err(e) = handle.await.unwrap() {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
