//! How many app servers share a prefix: each store keeps its instance in a sorted set
//! (`<prefix>:{instances}`, scored by when it expires), renewed every interval, and reads
//! how many are alive. While Redis is down, the last count sets each server's share of the
//! quota, so the fallbacks of N servers together admit about one quota, not N.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::connection::Connection;

/// Renews this instance's entry (an entry lives three intervals) and counts the live ones.
const BEAT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('ZCARD', KEYS[1])
";

/// The renewing task and the last count; the task stops when the store is dropped.
pub(super) struct Heartbeat {
    task: JoinHandle<()>,
    seen: Arc<AtomicU64>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Heartbeat {
    /// Starts beating every `interval` under `prefix` (needs a Tokio runtime).
    pub(super) fn start(connection: Connection, prefix: &str, interval: Duration) -> Self {
        let seen = Arc::new(AtomicU64::new(0));
        let key = format!("{prefix}:{{instances}}");
        let id = instance_id();
        let ttl = (3 * interval).as_millis().max(1) as u64;
        let counted = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let script = redis::Script::new(BEAT);
            let mut connection = connection;
            loop {
                let mut beat = script.key(&key);
                beat.arg(&id).arg(ttl);
                let call = beat.invoke_async::<u64>(&mut connection);
                if let Ok(Ok(alive)) = tokio::time::timeout(interval, call).await {
                    counted.store(alive, Relaxed);
                }
                tokio::time::sleep(interval).await;
            }
        });
        Self { task, seen }
    }

    /// The app servers alive at the last beat that reached Redis (`None` before one did).
    pub(super) fn instances(&self) -> Option<u64> {
        Some(self.seen.load(Relaxed)).filter(|&n| n > 0)
    }
}

/// A name for this store, unique across app servers: the process, a counter, the time.
fn instance_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Relaxed),
        since_epoch.as_nanos()
    )
}
