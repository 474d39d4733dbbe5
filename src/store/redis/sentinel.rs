//! A store on the master that Redis Sentinel names (feature `redis-sentinel`): it asks
//! the sentinels for the master, follows a failover, and loads its script on the new
//! master.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::{Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo};
use redis::{Pipeline, RedisError, RedisFuture, RedisResult, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::clients::Clients;
use super::connection::{manager, Target, CONNECTION_TIMEOUT};
use super::script;
use super::{RedisStore, RedisStoreBuilder};
use crate::store::StoreError;

/// How often the sentinels are asked for the master while calls succeed.
const POLL: Duration = Duration::from_secs(1);
/// The shortest pause between two questions, however many calls fail.
const GAP: Duration = Duration::from_millis(100);

/// The current master's connection, kept current by a task that asks the sentinels every
/// second, and at once (at most every 100 ms) after a call failed.
#[derive(Clone)]
pub(super) struct Master {
    current: Arc<RwLock<Current>>,
    wake: Arc<Notify>,
    db: i64,
    _watcher: Arc<Watcher>,
}

struct Current {
    address: (String, u16),
    manager: ConnectionManager,
    client: Client,
}

/// Stops the watching task when the last clone of the master is dropped.
struct Watcher(JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Master {
    /// Asks `sentinels` for the master `name` and connects to it (needs a Tokio runtime).
    pub(super) async fn connect(
        sentinels: &[String],
        name: &str,
        clients: &Clients,
        deadline: Duration,
    ) -> RedisResult<Self> {
        let mut finder = Finder::new(sentinels, name, clients, deadline)?;
        let address = finder.ask().await?;
        let current = Arc::new(RwLock::new(finder.connect(address).await?));
        let wake = Arc::new(Notify::new());
        let db = finder.template.redis_settings().db();
        let task = tokio::spawn(watch(finder, Arc::clone(&current), Arc::clone(&wake)));
        Ok(Self {
            current,
            wake,
            db,
            _watcher: Arc::new(Watcher(task)),
        })
    }

    /// A client for the current master.
    pub(super) fn client(&self) -> Client {
        self.read(|current| current.client.clone())
    }

    /// Asks the sentinels soon whether the master has changed.
    pub(super) fn check(&self) {
        self.wake.notify_one();
    }

    fn read<T>(&self, f: impl FnOnce(&Current) -> T) -> T {
        f(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub(super) fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let mut manager = self.read(|current| current.manager.clone());
        Box::pin(async move { manager.req_packed_command(cmd).await })
    }

    pub(super) fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let mut manager = self.read(|current| current.manager.clone());
        Box::pin(async move { manager.req_packed_commands(pipeline, offset, count).await })
    }

    pub(super) fn get_db(&self) -> i64 {
        self.db
    }
}

/// Follows the master until aborted.
async fn watch(mut finder: Finder, current: Arc<RwLock<Current>>, wake: Arc<Notify>) {
    loop {
        let _ = tokio::time::timeout(POLL, wake.notified()).await;
        let known = current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .address
            .clone();
        let asked = finder.ask().await.ok();
        if let Some(address) = asked.filter(|address| *address != known) {
            // A master that is not one yet is asked about again next time.
            if let Ok(master) = finder.connect(address.clone()).await {
                tracing::warn!(
                    master = finder.name,
                    from = %format_args!("{}:{}", known.0, known.1),
                    to = %format_args!("{}:{}", address.0, address.1),
                    "Sentinel names a new Redis master; the rate limiter uses it"
                );
                *current.write().unwrap_or_else(|e| e.into_inner()) = master;
            }
        }
        tokio::time::sleep(GAP).await;
    }
}

/// Asks the sentinels, as Redis's guidelines for Sentinel clients say: each in turn until
/// one names the master, that one first next time; then checks the master's `ROLE`.
struct Finder {
    sentinels: Vec<(Client, Option<MultiplexedConnection>)>,
    name: String,
    /// How to reach the master: the first sentinel URL's scheme, credentials and database.
    template: ConnectionInfo,
    clients: Clients,
    deadline: Duration,
}

impl Finder {
    fn new(
        sentinels: &[String],
        name: &str,
        clients: &Clients,
        deadline: Duration,
    ) -> RedisResult<Self> {
        let Some(first) = sentinels.first() else {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "no sentinel given",
            )));
        };
        let sentinels = sentinels
            .iter()
            .map(|url| clients.open(url.as_str()).map(|c| (c, None)));
        Ok(Self {
            sentinels: sentinels.collect::<RedisResult<_>>()?,
            name: name.to_owned(),
            template: first.as_str().into_connection_info()?,
            clients: clients.clone(),
            deadline,
        })
    }

    /// The master's address, from the first sentinel that knows it.
    async fn ask(&mut self) -> RedisResult<(String, u16)> {
        let mut unknown = false;
        for index in 0..self.sentinels.len() {
            match self.ask_one(index).await {
                Ok(Some(address)) => {
                    self.sentinels[..=index].rotate_right(1);
                    return Ok(address);
                }
                Ok(None) => unknown = true,
                Err(_) => self.sentinels[index].1 = None,
            }
        }
        let message = match unknown {
            true => "no sentinel knows this master name",
            false => "no sentinel answered",
        };
        Err(RedisError::from((
            ErrorKind::MasterNameNotFoundBySentinel,
            message,
            self.name.clone(),
        )))
    }

    /// What sentinel `index` says of the master, within the connection timeout.
    async fn ask_one(&mut self, index: usize) -> RedisResult<Option<(String, u16)>> {
        let (client, connection) = &mut self.sentinels[index];
        let asking = async {
            if connection.is_none() {
                *connection = Some(client.get_multiplexed_async_connection().await?);
            }
            let connection = connection.as_mut().expect("connected just now");
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&self.name)
                .query_async::<Option<(String, u16)>>(connection)
                .await
        };
        tokio::time::timeout(CONNECTION_TIMEOUT, asking)
            .await
            .map_err(|_| RedisError::from((ErrorKind::Io, "the sentinel did not answer")))?
    }

    /// A connection to the master at `address`, once it says it is one, with the script
    /// loaded.
    async fn connect(&self, (host, port): (String, u16)) -> RedisResult<Current> {
        let addr = match self.template.addr() {
            ConnectionAddr::TcpTls { .. } => ConnectionAddr::TcpTls {
                host: host.clone(),
                port,
                insecure: false,
                tls_params: None,
            },
            _ => ConnectionAddr::Tcp(host.clone(), port),
        };
        let client = self.clients.open(self.template.clone().set_addr(addr))?;
        let connecting = async {
            let mut manager = manager(client.clone(), self.deadline).await?;
            let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut manager).await?;
            if !matches!(role.first(), Some(Value::BulkString(role)) if role == b"master") {
                return Err(RedisError::from((
                    ErrorKind::Client,
                    "the server Sentinel names as the master is not one (yet)",
                )));
            }
            script::load(&mut manager).await?;
            Ok(manager)
        };
        let manager = tokio::time::timeout(2 * CONNECTION_TIMEOUT, connecting)
            .await
            .map_err(|_| RedisError::from((ErrorKind::Io, "the master did not answer")))??;
        Ok(Current {
            address: (host, port),
            manager,
            client,
        })
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "redis-sentinel")))]
impl RedisStore {
    /// Connects through Redis Sentinel with the default settings; see
    /// [`RedisStore::sentinel_builder`].
    pub async fn sentinel<I, S>(sentinels: I, master: &str) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::sentinel_builder(sentinels, master).connect().await
    }

    /// Settings for a store on the master named `master` that `sentinels` (their URLs,
    /// `redis://host:26379`) watch.
    ///
    /// The store asks the sentinels in turn for the master's address (`SENTINEL
    /// GET-MASTER-ADDR-BY-NAME`), checks with `ROLE` that it is a master, loads its script
    /// there, and keeps one multiplexed connection to it. The master is reached with the
    /// first sentinel URL's scheme (`rediss://` for TLS, with the builder's TLS
    /// settings), user, password and database. It asks again every second, and at once
    /// after a call failed or timed out (at most every 100 ms), and moves its calls to the
    /// new master as soon as the sentinels name it, loading its script there.
    ///
    /// # Failover
    ///
    /// When the master dies, decisions fail (the layer's
    /// [`FailurePolicy`](crate::FailurePolicy) applies) until the sentinels have promoted
    /// a replica: `down-after-milliseconds`, plus the election and promotion (about a
    /// second), plus at most 100 ms for the store. Redis replicates asynchronously, so the
    /// writes the dead master acknowledged but had not yet sent to its replica are lost
    /// with it. Across a failover a key may therefore be admitted up to its burst, plus
    /// what it was charged during the master's last replication lag (on a healthy link,
    /// well under a millisecond of traffic), plus what `FallbackLocal` admits during the
    /// outage (the fallback quota, per app server).
    ///
    /// ```no_run
    /// use tower_ratelimit::store::RedisStore;
    ///
    /// # async fn run() -> Result<(), tower_ratelimit::store::StoreError> {
    /// let sentinels = ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"];
    /// let store = RedisStore::sentinel(sentinels, "mymaster").await?;
    /// # Ok(()) }
    /// ```
    pub fn sentinel_builder<I, S>(sentinels: I, master: &str) -> RedisStoreBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let sentinels = sentinels.into_iter().map(|url| url.as_ref().to_owned());
        RedisStoreBuilder::new(Target::Sentinel {
            sentinels: sentinels.collect(),
            master: master.to_owned(),
        })
    }
}
