//! One circuit breaker per master of a Redis Cluster (feature `redis-cluster`): the store
//! reads the slot map (`CLUSTER SLOTS`) at start and every second, and a key's calls go
//! through the breaker of the master serving its slot, so a dead master opens the breaker
//! of its own keys only.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::Value;
use tokio::task::JoinHandle;

use super::breaker::Breaker;
use super::cluster::Cluster;

/// How often the slot map is read.
const REFRESH: Duration = Duration::from_secs(1);
/// The cluster's slots.
const SLOTS: u16 = 16_384;

/// The breakers by slot, kept up to date by a task that stops when they are dropped.
#[derive(Debug)]
pub(super) struct MasterBreakers {
    map: Arc<RwLock<SlotMap>>,
    task: JoinHandle<()>,
}

/// Each master's breaker by slot range, and one for slots no master serves (yet).
#[derive(Debug)]
struct SlotMap {
    /// `(first slot, last slot, breaker)`, sorted.
    ranges: Vec<(u16, u16, Arc<Breaker>)>,
    unknown: Arc<Breaker>,
}

impl Drop for MasterBreakers {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MasterBreakers {
    /// Breakers of `threshold` failures and `cool_down` for the masters of `cluster`
    /// (needs a Tokio runtime).
    pub(super) fn start(cluster: Cluster, threshold: u32, cool_down: Duration) -> Self {
        let breaker = move |what: String| Arc::new(Breaker::new(threshold, cool_down, what));
        let map = Arc::new(RwLock::new(SlotMap {
            ranges: Vec::new(),
            unknown: breaker("Redis Cluster (slots of no known master)".to_owned()),
        }));
        let shared = Arc::clone(&map);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            loop {
                tick.tick().await;
                let Some(masters) = read_slots(&cluster).await else {
                    continue;
                };
                let mut map = shared.write().unwrap_or_else(|e| e.into_inner());
                // Each master keeps its breaker across reads.
                let mut known: HashMap<String, Arc<Breaker>> = map
                    .ranges
                    .drain(..)
                    .map(|(_, _, breaker)| (breaker.what().to_owned(), breaker))
                    .collect();
                for (first, last, address) in masters {
                    let what = format!("Redis master {address}");
                    let breaker = known
                        .entry(what.clone())
                        .or_insert_with(|| breaker(what))
                        .clone();
                    map.ranges.push((first, last, breaker));
                }
                map.ranges.sort_unstable_by_key(|&(first, ..)| first);
            }
        });
        Self { map, task }
    }

    /// The breaker of the master serving the slot of the Redis key `key`.
    pub(super) fn for_key(&self, key: &[u8]) -> Arc<Breaker> {
        let slot = slot(key);
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let index = map.ranges.partition_point(|&(first, ..)| first <= slot);
        match index.checked_sub(1).map(|i| &map.ranges[i]) {
            Some((_, last, breaker)) if slot <= *last => Arc::clone(breaker),
            _ => Arc::clone(&map.unknown),
        }
    }
}

/// The cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the first non-empty `{...}`),
/// or of the whole key.
fn slot(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            Some(&rest[..close]).filter(|tag| !tag.is_empty())
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tag) % SLOTS
}

/// `(first slot, last slot, "host:port" of the master)` from any node, or `None`.
async fn read_slots(cluster: &Cluster) -> Option<Vec<(u16, u16, String)>> {
    let mut connection = cluster.connection().ok()?;
    let ask = connection.route_command(
        redis::cmd("CLUSTER").arg("SLOTS").clone(),
        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
    );
    let Ok(Ok(Value::Array(ranges))) = tokio::time::timeout(REFRESH, ask).await else {
        return None;
    };
    let range = |range: Value| {
        let Value::Array(fields) = range else {
            return None;
        };
        let [Value::Int(first), Value::Int(last), Value::Array(master), ..] = &fields[..] else {
            return None;
        };
        let [Value::BulkString(host), Value::Int(port), ..] = &master[..] else {
            return None;
        };
        let host = String::from_utf8_lossy(host);
        Some((
            u16::try_from(*first).ok()?,
            u16::try_from(*last).ok()?,
            format!("{host}:{port}"),
        ))
    };
    ranges.into_iter().map(range).collect()
}

#[cfg(test)]
mod tests {
    use super::slot;

    /// Redis's own answers to `CLUSTER KEYSLOT`.
    #[test]
    fn slots_are_redis_slots() {
        assert_eq!(slot(b"123456789"), 12_739);
        assert_eq!(slot(b"foo"), 12_182);
        assert_eq!(slot(b"ratelimit:{user1000}:abc"), 3_443);
        assert_eq!(slot(b"a{}b"), 13_694);
        assert_eq!(slot(b"{}{user1000}"), 11_203);
        assert_eq!(slot(b"foo{bar}{zap}"), 5_061);
    }
}
