//! The connection a [`RedisStore`](super::RedisStore) calls its scripts through: one Redis
//! server, (feature `redis-cluster`) a Redis Cluster, or (feature `redis-sentinel`) the
//! master that Redis Sentinel names.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, RedisResult, Value};

use super::clients::Clients;
#[cfg(feature = "redis-cluster")]
use super::cluster::Cluster;
#[cfg(feature = "redis-sentinel")]
use super::sentinel::Master;

/// Where a store's Redis is.
#[derive(Clone, Debug)]
pub(super) enum Target {
    /// One server, at this URL.
    Single(String),
    /// A cluster, found through these nodes.
    #[cfg(feature = "redis-cluster")]
    Cluster(Vec<String>),
    /// The master named `master`, found through these sentinels.
    #[cfg(feature = "redis-sentinel")]
    Sentinel {
        sentinels: Vec<String>,
        master: String,
    },
}

/// Multiplexed (one connection per server, pipelining concurrent calls) and reconnecting
/// on its own. Commands are routed by their key on a cluster, and follow the master
/// through Sentinel.
#[derive(Clone)]
pub(super) enum Connection {
    Single {
        manager: ConnectionManager,
        /// For subscriptions (shared: the connection is cloned for every call).
        client: Arc<Client>,
    },
    #[cfg(feature = "redis-cluster")]
    Cluster(Cluster),
    #[cfg(feature = "redis-sentinel")]
    Sentinel(Master),
}

impl Target {
    /// Whether this is a Redis Cluster, whose script calls must keep to one slot.
    pub(super) fn is_cluster(&self) -> bool {
        match self {
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(_) => true,
            _ => false,
        }
    }

    /// Connects, for a store whose decisions last at most `deadline`.
    pub(super) async fn connect(
        &self,
        clients: &Clients,
        deadline: Duration,
    ) -> RedisResult<Connection> {
        match self {
            Self::Single(url) => {
                let client = clients.open(url.as_str())?;
                let manager = manager(client.clone(), deadline).await?;
                let client = Arc::new(client);
                Ok(Connection::Single { manager, client })
            }
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(nodes) => Cluster::connect(nodes, clients, deadline)
                .await
                .map(Connection::Cluster),
            #[cfg(feature = "redis-sentinel")]
            Self::Sentinel { sentinels, master } => {
                Master::connect(sentinels, master, clients, deadline)
                    .await
                    .map(Connection::Sentinel)
            }
        }
    }

    /// A connection made on its first call (or, for a cluster, as soon as a node answers),
    /// for a store that must not wait for Redis.
    pub(super) fn connect_lazily(
        &self,
        clients: &Clients,
        deadline: Duration,
    ) -> RedisResult<Connection> {
        match self {
            Self::Single(url) => {
                let client = clients.open(url.as_str())?;
                let config = manager_config(deadline);
                let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
                let client = Arc::new(client);
                Ok(Connection::Single { manager, client })
            }
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(nodes) => {
                Cluster::connect_lazily(nodes, clients, deadline).map(Connection::Cluster)
            }
            #[cfg(feature = "redis-sentinel")]
            Self::Sentinel { .. } => Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a Sentinel store must ask the sentinels for the master: connect, not lazily",
            ))),
        }
    }

    /// Whether the connections use TLS (`rediss://`).
    pub(super) fn tls(&self) -> bool {
        let urls = match self {
            Self::Single(url) => std::slice::from_ref(url),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(nodes) => nodes,
            #[cfg(feature = "redis-sentinel")]
            Self::Sentinel { sentinels, .. } => sentinels,
        };
        urls.iter().any(|url| url.starts_with("rediss:"))
    }
}

/// A connection manager on `client`, connected. Its own first connection is tried again
/// and again until the connect timeout, hiding why it failed; so one plain connection is
/// made first, whose failure says why (refused, TLS, password).
pub(super) async fn manager(client: Client, deadline: Duration) -> RedisResult<ConnectionManager> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(response_timeout(deadline)));
    drop(
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await?,
    );
    ConnectionManager::new_with_config(client, manager_config(deadline)).await
}

/// One server's connection: reconnection attempts at most 200 ms apart, so a restarted
/// Redis is used again within a few hundred milliseconds.
fn manager_config(deadline: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(response_timeout(deadline)))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(200))
}

/// How long to wait for a connection to a node.
pub(super) const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// The client's own response timeout: a backstop behind the store's deadline.
pub(super) fn response_timeout(deadline: Duration) -> Duration {
    deadline.max(Duration::from_millis(500))
}

impl Connection {
    /// A client to subscribe with, on attempt `attempt` (counting from 0): the server, each
    /// node of a cluster in turn, or the current master.
    #[cfg_attr(not(feature = "redis-cluster"), allow(unused_variables))]
    pub(super) fn subscriber(&self, attempt: usize) -> Client {
        match self {
            Self::Single { client, .. } => Client::clone(client),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(cluster) => cluster.node(attempt),
            #[cfg(feature = "redis-sentinel")]
            Self::Sentinel(master) => master.client(),
        }
    }

    /// Tells the connection that a call failed or timed out: through Sentinel, it asks the
    /// sentinels at once whether the master has changed.
    pub(super) fn failed(&self) {
        #[cfg(feature = "redis-sentinel")]
        if let Self::Sentinel(master) = self {
            master.check();
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single { manager, .. } => manager.req_packed_command(cmd),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(cluster) => cluster.req_packed_command(cmd),
            #[cfg(feature = "redis-sentinel")]
            Self::Sentinel(master) => master.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single { manager, .. } => manager.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(cluster) => cluster.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "redis-sentinel")]
            Self::Sentinel(master) => master.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single { manager, .. } => manager.get_db(),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(_) => 0,
            #[cfg(feature = "redis-sentinel")]
            Self::Sentinel(master) => master.get_db(),
        }
    }
}
