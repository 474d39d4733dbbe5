//! The connection a [`RedisStore`](super::RedisStore) calls its scripts through: one Redis
//! server, or (feature `redis-cluster`) a Redis Cluster.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
#[cfg(feature = "redis-cluster")]
use {
    super::{RedisStore, RedisStoreBuilder},
    crate::store::StoreError,
    redis::cluster::ClusterClient,
    redis::cluster_async::ClusterConnection,
    redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo},
    redis::{ErrorKind, ServerErrorKind},
};

/// Where a store's Redis is.
#[derive(Clone, Debug)]
pub(super) enum Target {
    /// One server, at this URL.
    Single(String),
    /// A cluster, found through these nodes.
    #[cfg(feature = "redis-cluster")]
    Cluster(Vec<String>),
}

/// Multiplexed (one connection per server, pipelining concurrent calls) and reconnecting
/// on its own. Commands are routed by their key on a cluster.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    #[cfg(feature = "redis-cluster")]
    Cluster(ClusterConnection),
}

impl Target {
    /// The servers' URLs: the one server, or the cluster nodes given.
    pub(super) fn urls(&self) -> Vec<String> {
        match self {
            Self::Single(url) => vec![url.clone()],
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(nodes) => nodes.clone(),
        }
    }

    /// Connects, for a store whose decisions last at most `deadline`.
    pub(super) async fn connect(&self, deadline: Duration) -> RedisResult<Connection> {
        match self {
            Self::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = manager_config(deadline);
                let manager = ConnectionManager::new_with_config(client, config).await?;
                Ok(Connection::Single(manager))
            }
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(CONNECTION_TIMEOUT)
                    .response_timeout(response_timeout(deadline))
                    // The client would send a call again after its connection failed,
                    // when Redis may have run it already; see `redirected`.
                    .retries(0)
                    .build()?;
                Ok(Connection::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// A connection made on its first call, for a store that must not wait for Redis.
    pub(super) fn connect_lazily(&self, deadline: Duration) -> RedisResult<Connection> {
        match self {
            Self::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = manager_config(deadline);
                let manager = ConnectionManager::new_lazy_with_config(client, config)?;
                Ok(Connection::Single(manager))
            }
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(_) => Err(redis::RedisError::from((
                ErrorKind::Client,
                "a cluster store needs the cluster's slot map: connect, not lazily",
            ))),
        }
    }
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
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// The client's own response timeout: a backstop behind the store's deadline.
fn response_timeout(deadline: Duration) -> Duration {
    deadline.max(Duration::from_millis(500))
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(connection) => Box::pin(redirected(connection, cmd)),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            #[cfg(feature = "redis-cluster")]
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

/// Sends `cmd` to the node serving its key, following one `MOVED` or `ASK` redirection:
/// the node refused the call without running it, so sending it where the cluster says
/// cannot count it twice (after `ASKING`, for a slot being migrated). Nothing else is sent
/// again.
#[cfg(feature = "redis-cluster")]
async fn redirected(connection: &mut ClusterConnection, cmd: &Cmd) -> RedisResult<Value> {
    let error = match connection.req_packed_command(cmd).await {
        Err(error) => error,
        reply => return reply,
    };
    let node = error.redirect_node().and_then(|(node, _slot)| {
        let (host, port) = node.rsplit_once(':')?;
        Some(SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port: port.parse().ok()?,
        })
    });
    match node {
        None => Err(error),
        Some(node) if error.kind() == ErrorKind::Server(ServerErrorKind::Ask) => {
            let mut asking = redis::pipe();
            asking.cmd("ASKING").add_command(cmd.clone());
            let mut replies = connection.route_pipeline(asking, 1, 1, node).await?;
            Ok(replies.pop().unwrap_or(Value::Nil))
        }
        Some(node) => {
            connection
                .route_command(cmd.clone(), RoutingInfo::SingleNode(node))
                .await
        }
    }
}

#[cfg(feature = "redis-cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-cluster")))]
impl RedisStore {
    /// Connects to a Redis Cluster with the default settings; see
    /// [`RedisStore::cluster_builder`].
    pub async fn cluster<I, S>(nodes: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::cluster_builder(nodes).connect().await
    }

    /// Settings for a store on the Redis Cluster that `nodes` belong to (URLs as for
    /// [`RedisStore::builder`], without a database number; one reachable node is enough
    /// to find the others).
    ///
    /// A decision is one script call on the Redis keys of one key, one per policy, all
    /// hash-tagged `{<key>}`: it runs on the master serving that slot, and keys spread
    /// over the masters. The store keeps one multiplexed connection per node, reads the
    /// slot map again when a node redirects a call and reconnects to nodes whose
    /// connection failed, so a promoted replica is used without a restart. A `MOVED` or
    /// `ASK` redirection is followed once (the node refused the call without running it);
    /// any other failure fails the decision, as on one server: deadline, circuit breaker
    /// (one for the whole cluster) and the layer's failure policy. The script is loaded on
    /// every node at connect; a node that does not know it (a replica promoted since, a
    /// `SCRIPT FLUSH`) gets it once with `EVAL`.
    ///
    /// # Failover
    ///
    /// When a master dies, decisions on its slots fail until the cluster has promoted its
    /// replica, about `cluster-node-timeout` plus one to two seconds; with
    /// `cluster-require-full-coverage yes` (Redis's default) the other masters refuse
    /// calls too, from when the dead one is marked failed until the promotion. Meanwhile
    /// the layer's [`FailurePolicy`](crate::FailurePolicy) applies. Redis replicates
    /// asynchronously, so the writes the dead master acknowledged but had not yet sent to
    /// its replica are lost with it. Across a failover a key may therefore be admitted up
    /// to its burst, plus what it was charged during the master's last replication lag
    /// (on a healthy link, well under a millisecond of traffic), plus what `FallbackLocal`
    /// admits during the outage (the fallback quota, per app server).
    pub fn cluster_builder<I, S>(nodes: I) -> RedisStoreBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes = nodes.into_iter().map(|node| node.as_ref().to_owned());
        RedisStoreBuilder::new(Target::Cluster(nodes.collect()))
    }
}
