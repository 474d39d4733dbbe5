//! Natural batching (group commit): while a script call is under way, the changes that
//! arrive meanwhile wait, and leave together in the next call, decided in arrival order
//! inside one script run, each with its own answer. There is no timer: a lone change never
//! waits, and batches form only under load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::AcqRel};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::script::{script_change, Limits};
use super::{key, Shared};
use crate::clock::Clock;
use crate::store::{Change, StoreError, StoreErrorKind};

/// Script calls under way at once per lane: one being answered while the next is built
/// keeps Redis busy without splitting the load into small batches.
const CALLS_PER_LANE: usize = 2;

/// One change waiting for its batch.
pub(super) struct Entry {
    pub(super) keys: Vec<Vec<u8>>,
    pub(super) limits: Vec<Limits>,
    pub(super) change: [u64; 2],
    /// When the change fails if it has no answer.
    pub(super) deadline: Instant,
    reply: oneshot::Sender<Result<Vec<u64>, StoreError>>,
    /// Set by the call that takes the change, or by its caller giving up: whoever is first.
    claimed: Arc<AtomicBool>,
}

/// Where a change's answer comes.
pub(super) struct Ticket {
    reply: oneshot::Receiver<Result<Vec<u64>, StoreError>>,
    claimed: Arc<AtomicBool>,
}

impl Ticket {
    /// The change's answer, or `None` if its deadline passed before a call took it: it is
    /// then never sent. A change a call took is answered by that call, which gives up at
    /// the deadline of its oldest change, so that a failure is counted (by the breaker)
    /// before it is reported.
    pub(super) async fn answer(
        mut self,
        deadline: Instant,
    ) -> Option<Result<Vec<u64>, StoreError>> {
        let abandoned = |_| {
            // The call was dropped with the runtime.
            Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "Redis call abandoned",
            ))
        };
        match tokio::time::timeout_at(deadline, &mut self.reply).await {
            Ok(answer) => Some(answer.unwrap_or_else(abandoned)),
            Err(_) if !self.claimed.swap(true, AcqRel) => None,
            Err(_) => Some((&mut self.reply).await.unwrap_or_else(abandoned)),
        }
    }
}

impl Entry {
    /// A change of the keys `keys` under `limits`, and where its reply will come.
    pub(super) fn new(
        keys: Vec<Vec<u8>>,
        limits: Vec<Limits>,
        change: Change,
        deadline: Instant,
    ) -> (Self, Ticket) {
        let (reply, receiver) = oneshot::channel();
        let claimed = Arc::new(AtomicBool::new(false));
        let entry = Self {
            keys,
            limits,
            change: script_change(change),
            deadline,
            reply,
            claimed: Arc::clone(&claimed),
        };
        let ticket = Ticket {
            reply: receiver,
            claimed,
        };
        (entry, ticket)
    }
}

/// The batches of one store: one lane per server, or on a Cluster one per hash tag (every
/// key of one script call must be in one slot).
pub(super) struct Batcher {
    lanes: Mutex<HashMap<Vec<u8>, Lane>>,
    max_batch: usize,
    per_tag: bool,
}

#[derive(Default)]
struct Lane {
    waiting: Vec<Entry>,
    calls: usize,
}

impl Batcher {
    /// Batches of at most `max_batch` changes; one lane per hash tag if `per_tag`.
    pub(super) fn new(max_batch: usize, per_tag: bool) -> Self {
        Self {
            lanes: Mutex::new(HashMap::new()),
            max_batch: max_batch.max(1),
            per_tag,
        }
    }

    /// Queues `entry`; sends a call at once if its lane has room for one more.
    pub(super) fn submit(&self, shared: &Arc<Shared>, entry: Entry) {
        let lane_name = match self.per_tag {
            true => key::hash_tag(&entry.keys[0]).to_vec(),
            false => Vec::new(),
        };
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let lane = lanes.entry(lane_name.clone()).or_default();
        lane.waiting.push(entry);
        if lane.calls == CALLS_PER_LANE {
            return;
        }
        lane.calls += 1;
        let batch = self.take(lane);
        drop(lanes);
        tokio::spawn(drive(Arc::clone(shared), lane_name, batch));
    }

    /// The next batch of `lane`, in arrival order.
    fn take(&self, lane: &mut Lane) -> Vec<Entry> {
        let rest = lane
            .waiting
            .split_off(lane.waiting.len().min(self.max_batch));
        std::mem::replace(&mut lane.waiting, rest)
    }

    /// The next batch of the lane named `name` for a call that has finished, or `None`
    /// (and one call fewer) if nothing waits.
    fn next(&self, name: &[u8]) -> Option<Vec<Entry>> {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        let lane = lanes.get_mut(name)?;
        if lane.waiting.is_empty() {
            lane.calls -= 1;
            if lane.calls == 0 {
                lanes.remove(name);
            }
            return None;
        }
        Some(self.take(lane))
    }
}

/// Sends batches for one lane until nothing waits there.
async fn drive(shared: Arc<Shared>, lane: Vec<u8>, mut batch: Vec<Entry>) {
    loop {
        // A change whose caller gave up (its deadline passed while it waited) is not sent.
        batch.retain(|entry| !entry.claimed.swap(true, AcqRel));
        if let Some(oldest) = batch.iter().map(|entry| entry.deadline).min() {
            let replies = call(&shared, &batch, oldest).await;
            answer(batch, replies);
        }
        match shared.batcher.next(&lane) {
            Some(next) => batch = next,
            None => return,
        }
    }
}

/// One script call for `batch`, within the deadline of its oldest change and past the
/// breaker, counted by it as one call.
async fn call(shared: &Shared, batch: &[Entry], deadline: Instant) -> Result<Vec<u64>, StoreError> {
    let sent = shared.clock.now_nanos();
    // A lane's keys share one hash tag, so one master.
    let Some(pass) = shared.breakers.for_key(&batch[0].keys[0]).pass(sent) else {
        return Err(circuit_open());
    };
    let reply = tokio::time::timeout_at(deadline, shared.call(batch)).await;
    let done = shared.clock.now_nanos();
    match reply {
        Ok(Ok(reply)) => {
            pass.record(true, done);
            Ok(reply)
        }
        Ok(Err(error)) => {
            pass.record(false, done);
            shared.connection.failed();
            Err(failure(error))
        }
        Err(_) => {
            pass.record(false, done);
            shared.connection.failed();
            Err(StoreError::new(
                StoreErrorKind::Timeout,
                format!("Redis did not answer within {:?}", shared.deadline),
            ))
        }
    }
}

/// A script call's failure, by kind.
fn failure(error: redis::RedisError) -> StoreError {
    use redis::{ErrorKind::Server, ServerErrorKind};
    let (kind, message) = match error.kind() {
        _ if error.code() == Some("OOM") => (StoreErrorKind::OutOfMemory, "Redis is out of memory"),
        Server(ServerErrorKind::ClusterDown) => (
            StoreErrorKind::ClusterDown,
            "the Redis Cluster does not serve this key's slot (CLUSTERDOWN)",
        ),
        Server(ServerErrorKind::TryAgain) => (
            StoreErrorKind::Resharding,
            "the Redis Cluster is moving this key's slot (TRYAGAIN)",
        ),
        _ => (StoreErrorKind::Unavailable, "Redis failed"),
    };
    StoreError::new(kind, message).with_source(error)
}

/// The error of a change refused while the breaker is open.
pub(super) fn circuit_open() -> StoreError {
    StoreError::new(
        StoreErrorKind::CircuitOpen,
        "circuit open: Redis failed repeatedly, retrying shortly",
    )
}

/// Hands each entry its part of the reply (four integers per policy), or the batch's error.
fn answer(batch: Vec<Entry>, replies: Result<Vec<u64>, StoreError>) {
    let expected: usize = batch.iter().map(|entry| 4 * entry.limits.len()).sum();
    let replies = replies.and_then(|replies| match replies.len() == expected {
        true => Ok(replies),
        false => Err(super::script::unexpected("four integers per policy")),
    });
    // A change whose caller has gone (its deadline passed) needs no answer.
    match replies {
        Ok(replies) => {
            let mut rest = &replies[..];
            for entry in batch {
                let (own, after) = rest.split_at(4 * entry.limits.len());
                rest = after;
                let _ = entry.reply.send(Ok(own.to_vec()));
            }
        }
        Err(error) => {
            for entry in batch {
                let _ = entry.reply.send(Err(error.clone()));
            }
        }
    }
}
