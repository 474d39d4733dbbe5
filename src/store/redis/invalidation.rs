//! Deny-cache invalidations across app servers: a reset or a refund publishes the names of
//! the Redis keys it changed (from the script, atomically with the change), and every
//! store sharing the prefix listens and drops what its deny cache knows of them.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_core::Stream;
use tokio::task::JoinHandle;

use super::connection::Connection;
use super::deny_cache::{name_hash, DenyCaches};

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

/// Listens on `channel` through `connection`'s subscriber (any node of a cluster hears
/// every publication), moving on to the next when the connection drops. Each new
/// subscription clears the caches, since invalidations may have been missed meanwhile.
/// Needs a Tokio runtime.
pub(super) fn listen(connection: Connection, channel: String, caches: Arc<DenyCaches>) -> Listener {
    let (subscribed, first) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut subscribed = Some(subscribed);
        for attempt in 0.. {
            if let Ok(mut pubsub) = subscribe(connection.subscriber(attempt), &channel).await {
                caches.clear();
                if let Some(subscribed) = subscribed.take() {
                    let _ = subscribed.send(());
                }
                let mut messages = pin!(pubsub.on_message());
                while let Some(message) = poll_fn(|cx| messages.as_mut().poll_next(cx)).await {
                    caches.forget_name(name_hash(message.get_payload_bytes()));
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
