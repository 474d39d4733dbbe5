//! Invalidations across app servers: a reset or a refund publishes the names of the Redis
//! keys it changed (from the script, atomically with the change), and every store sharing
//! the prefix listens and drops what its deny cache knows of them; a quota change publishes
//! the name of the quotas' hash, and every store reads the hash again.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_core::Stream;
use tokio::task::JoinHandle;

use super::connection::Connection;
use super::deny_cache::{name_hash, DenyCaches};
use super::quotas;
use crate::store::QuotaBoard;

/// The pause before listening again after the connection was lost.
const RETRY: Duration = Duration::from_millis(200);
/// How long `connect` waits for the first subscription.
const FIRST_SUBSCRIPTION: Duration = Duration::from_secs(1);

/// The listening task; it stops when the store is dropped.
pub(super) struct Listener {
    task: JoinHandle<()>,
    first: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The channel of the stores under `prefix`.
pub(super) fn channel(prefix: &str) -> String {
    format!("{prefix}:invalidate")
}

/// What a store keeps up to date from the channel.
pub(super) struct Watched {
    /// The deny caches, when on.
    pub(super) caches: Option<Arc<DenyCaches>>,
    /// The board of quotas changed at run time, read again from the hash at `quotas_key`
    /// through `connection`.
    pub(super) quotas: QuotaBoard,
    pub(super) quotas_key: String,
    pub(super) connection: Connection,
}

impl Watched {
    /// Catches up after a time without listening: clears the caches (invalidations may
    /// have been missed) and reads the quotas again; false if they could not be read.
    async fn catch_up(&self) -> bool {
        if let Some(caches) = &self.caches {
            caches.clear();
        }
        self.read_quotas().await
    }

    /// Acts on one publication: a key name, or the quotas' hash; false if the quotas
    /// could not be read.
    async fn hear(&self, name: &[u8]) -> bool {
        if name == self.quotas_key.as_bytes() {
            return self.read_quotas().await;
        }
        if let Some(caches) = &self.caches {
            caches.forget_name(name_hash(name));
        }
        true
    }

    async fn read_quotas(&self) -> bool {
        match quotas::read(&self.connection, &self.quotas_key).await {
            Ok(changes) => {
                self.quotas.replace(changes);
                true
            }
            Err(error) => {
                tracing::warn!("cannot read the rate-limit quota changes: {error}");
                false
            }
        }
    }
}

/// Listens on `channel` through the watched connection's subscriber (any node of a
/// cluster hears every publication), moving on to the next when the connection drops.
/// Each new subscription catches up on what may have been missed meanwhile; a failed
/// reading of the quotas counts as a lost subscription, so it is tried again. Needs a
/// Tokio runtime.
pub(super) fn listen(channel: String, watched: Watched) -> Listener {
    let (subscribed, first) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut subscribed = Some(subscribed);
        for attempt in 0.. {
            let client = watched.connection.subscriber(attempt);
            if let Ok(mut pubsub) = subscribe(client, &channel).await {
                let mut listening = watched.catch_up().await;
                if let Some(subscribed) = subscribed.take() {
                    let _ = subscribed.send(());
                }
                let mut messages = pin!(pubsub.on_message());
                while listening {
                    let message = poll_fn(|cx| messages.as_mut().poll_next(cx)).await;
                    listening = match message {
                        Some(message) => watched.hear(message.get_payload_bytes()).await,
                        None => false,
                    };
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    });
    Listener {
        task,
        first: Mutex::new(Some(first)),
    }
}

impl Listener {
    /// Waits until the first subscription stands (at most about a second).
    pub(super) async fn subscribed(&self) {
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(first) = first {
            let _ = tokio::time::timeout(FIRST_SUBSCRIPTION, first).await;
        }
    }
}

async fn subscribe(client: redis::Client, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let connect = client.get_async_pubsub();
    let timeout = |e| redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, e));
    let mut pubsub = tokio::time::timeout(FIRST_SUBSCRIPTION, connect)
        .await
        .map_err(timeout)??;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}
