//! A store on a Redis Cluster (feature `redis-cluster`): the connection, made at once or
//! in the background, calls routed by key and redirected where that is safe.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult};
use redis::{ServerErrorKind, Value};

use super::clients::Clients;
use super::connection::{response_timeout, Target, CONNECTION_TIMEOUT};
use super::{RedisStore, RedisStoreBuilder};
use crate::store::StoreError;

/// How often a call refused with `TRYAGAIN` is sent again, and the pause before each.
const TRY_AGAIN: (u32, Duration) = (3, Duration::from_millis(10));
/// The pause between attempts to connect in the background.
const RETRY: Duration = Duration::from_millis(200);

/// A cluster connection (one multiplexed connection per node), and a client per node
/// given, to subscribe with.
#[derive(Clone)]
pub(super) struct Cluster {
    /// Empty until the slot map was read, for a store connected lazily.
    connection: Arc<OnceLock<ClusterConnection>>,
    nodes: Arc<[Client]>,
}

impl Cluster {
    /// Connects to the cluster `nodes` belong to.
    pub(super) async fn connect(
        nodes: &[String],
        clients: &Clients,
        deadline: Duration,
    ) -> RedisResult<Self> {
        let client = cluster_client(nodes, clients, deadline)?;
        let connection = client.get_async_connection().await?;
        Self::new(nodes, clients, OnceLock::from(connection))
    }

    /// Returns at once and connects in the background, trying again every 200 ms until a
    /// node answers (needs a Tokio runtime); calls fail until then.
    pub(super) fn connect_lazily(
        nodes: &[String],
        clients: &Clients,
        deadline: Duration,
    ) -> RedisResult<Self> {
        let client = cluster_client(nodes, clients, deadline)?;
        let cluster = Self::new(nodes, clients, OnceLock::new())?;
        let cell = Arc::downgrade(&cluster.connection);
        tokio::spawn(async move {
            // Until connected, or the store is gone.
            while cell.strong_count() > 0 {
                if let Ok(connection) = client.get_async_connection().await {
                    if let Some(cell) = cell.upgrade() {
                        let _ = cell.set(connection);
                    }
                    return;
                }
                tokio::time::sleep(RETRY).await;
            }
        });
        Ok(cluster)
    }

    fn new(
        nodes: &[String],
        clients: &Clients,
        connection: OnceLock<ClusterConnection>,
    ) -> RedisResult<Self> {
        let nodes = nodes.iter().map(|node| clients.open(node.as_str()));
        Ok(Self {
            connection: Arc::new(connection),
            nodes: nodes.collect::<RedisResult<_>>()?,
        })
    }

    /// A client for node `attempt` (modulo the nodes given).
    pub(super) fn node(&self, attempt: usize) -> Client {
        self.nodes[attempt % self.nodes.len()].clone()
    }

    /// The connection, once made.
    pub(super) fn connection(&self) -> RedisResult<ClusterConnection> {
        self.connection.get().cloned().ok_or_else(|| {
            RedisError::from((ErrorKind::Io, "not connected to the Redis Cluster yet"))
        })
    }

    pub(super) fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move { call(&mut self.connection()?, cmd).await })
    }

    pub(super) fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        use redis::aio::ConnectionLike;
        Box::pin(async move {
            let mut connection = self.connection()?;
            connection
                .req_packed_commands(pipeline, offset, count)
                .await
        })
    }
}

/// The client of the cluster `nodes` belong to, which never sends a call twice itself: it
/// would after a connection failed, when Redis may have run the call already; see `call`.
fn cluster_client(
    nodes: &[String],
    clients: &Clients,
    deadline: Duration,
) -> RedisResult<ClusterClient> {
    clients
        .cluster(ClusterClient::builder(nodes.iter().map(String::as_str)))
        .connection_timeout(CONNECTION_TIMEOUT)
        .response_timeout(response_timeout(deadline))
        .retries(0)
        .build()
}

/// Sends `cmd` to the node serving its key. Only refusals are answered by sending it
/// again, since a refused call did not run: `MOVED` and `ASK` are followed once, and
/// `TRYAGAIN` (a multi-key call during a resharding) is sent again up to 3 times, 10 ms
/// apart. `CLUSTERDOWN` fails at once: the cluster needs seconds, not milliseconds. A call
/// that failed any other way may have counted, and is never sent again.
async fn call(connection: &mut ClusterConnection, cmd: &Cmd) -> RedisResult<Value> {
    let (retries, pause) = TRY_AGAIN;
    let mut tries = 0;
    loop {
        match redirected(connection, cmd).await {
            Err(e)
                if e.kind() == ErrorKind::Server(ServerErrorKind::TryAgain) && tries < retries =>
            {
                tries += 1;
                tokio::time::sleep(pause).await;
            }
            reply => return reply,
        }
    }
}

/// Sends `cmd`, following one `MOVED` or `ASK` redirection: the node refused the call
/// without running it, so sending it where the cluster says cannot count it twice (after
/// `ASKING`, for a slot being migrated).
async fn redirected(connection: &mut ClusterConnection, cmd: &Cmd) -> RedisResult<Value> {
    use redis::aio::ConnectionLike;
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
    /// connection failed, so a promoted replica is used without a restart. The script is
    /// loaded on every node at connect; a node that does not know it (a replica promoted
    /// since, a `SCRIPT FLUSH`) gets it once with `EVAL`.
    ///
    /// # Refusals and failures
    ///
    /// A call the cluster refused without running it is sent again, since it cannot have
    /// counted: a `MOVED` or `ASK` redirection is followed once, and a `TRYAGAIN` (a
    /// multi-policy key whose Redis keys are split by a resharding under way) is sent again
    /// up to 3 times, 10 ms apart, then fails as
    /// [`Resharding`](crate::store::StoreErrorKind::Resharding). `CLUSTERDOWN` (the slot
    /// is not served) fails at once as
    /// [`ClusterDown`](crate::store::StoreErrorKind::ClusterDown). Any other failure
    /// fails the decision, as on one server, and is never sent again: deadline, circuit
    /// breaker and the layer's failure policy. Each kind is counted in
    /// `ratelimit_store_errors_total{kind}` (feature `metrics`).
    ///
    /// # One circuit breaker per master
    ///
    /// The store reads the slot map (`CLUSTER SLOTS`) when it starts and every second, and
    /// each call goes through the breaker of the master serving its key: a dead master
    /// opens the breaker of its own keys only, and keys on the other masters keep their
    /// Redis decisions.
    ///
    /// # Failover
    ///
    /// When a master dies, decisions on its slots fail until the cluster has promoted its
    /// replica, about `cluster-node-timeout` plus one to two seconds; with
    /// `cluster-require-full-coverage yes` (Redis's default) the other masters refuse
    /// calls too (`CLUSTERDOWN`), from when the dead one is marked failed until the
    /// promotion. Meanwhile the layer's [`FailurePolicy`](crate::FailurePolicy) applies.
    /// Redis replicates asynchronously, so the writes the dead master acknowledged but had
    /// not yet sent to its replica are lost with it. Across a failover a key may therefore
    /// be admitted up to its burst, plus what it was charged during the master's last
    /// replication lag (on a healthy link, well under a millisecond of traffic), plus what
    /// `FallbackLocal` admits during the outage (the fallback quota, per app server).
    pub fn cluster_builder<I, S>(nodes: I) -> RedisStoreBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes = nodes.into_iter().map(|node| node.as_ref().to_owned());
        RedisStoreBuilder::new(Target::Cluster(nodes.collect()))
    }
}
