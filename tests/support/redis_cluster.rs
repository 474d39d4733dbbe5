//! A Redis Cluster of the test's own: `redis-server` nodes on free loopback ports in a
//! temporary directory, joined with `redis-cli --cluster create`, all killed on drop.
//! `REDIS_CLUSTER_URLS` (node URLs separated by commas) points the tests at an existing
//! cluster instead.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::redis_server::{free_port, query, spawn, temp_dir};

/// A node's address as the cluster announces it.
const HOST: &str = "127.0.0.1";

/// How long a node may be unreachable before the others fail it over (milliseconds).
const NODE_TIMEOUT_MS: u64 = 1000;

pub struct RedisCluster {
    urls: Vec<String>,
    dir: Option<PathBuf>,
    /// The processes of an owned cluster, by port.
    nodes: Vec<(u16, Child)>,
}

impl RedisCluster {
    /// The cluster at `REDIS_CLUSTER_URLS`, or a new one of `masters` masters with
    /// `replicas` replicas each, once every node says `cluster_state:ok` and every replica
    /// is in sync with its master.
    pub fn start(masters: usize, replicas: usize) -> Self {
        if let Ok(urls) = std::env::var("REDIS_CLUSTER_URLS") {
            return Self {
                urls: urls.split(',').map(str::to_owned).collect(),
                dir: None,
                nodes: Vec::new(),
            };
        }
        Self::start_with(masters, replicas, &Vec::new, None)
    }

    /// A new cluster of the test's own (whatever `REDIS_CLUSTER_URLS` says), each node
    /// with the settings `extra` makes for it, the first on `first_port` if given.
    pub fn start_with(
        masters: usize,
        replicas: usize,
        extra: &dyn Fn() -> Vec<String>,
        first_port: Option<u16>,
    ) -> Self {
        let dir = temp_dir();
        let timeout = NODE_TIMEOUT_MS.to_string();
        let nodes: Vec<(u16, Child)> = (0..masters * (1 + replicas))
            .map(|node| {
                (0..5)
                    .find_map(|_| {
                        let port = first_port.filter(|_| node == 0).unwrap_or_else(free_port);
                        let bus = free_port();
                        let config = format!("nodes-{port}.conf");
                        let settings = [
                            "--cluster-enabled",
                            "yes",
                            "--cluster-port",
                            &bus.to_string(),
                            "--cluster-config-file",
                            &config,
                            "--cluster-node-timeout",
                            &timeout,
                        ];
                        let extra = extra();
                        let extra = extra.iter().map(String::as_str);
                        let settings: Vec<&str> = settings.into_iter().chain(extra).collect();
                        spawn(port, &dir, &settings).map(|child| (port, child))
                    })
                    .expect("could not start a cluster node")
            })
            .collect();
        let cluster = Self {
            urls: nodes
                .iter()
                .map(|(port, _)| format!("redis://{HOST}:{port}"))
                .collect(),
            dir: Some(dir),
            nodes,
        };
        let mut create = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(
                cluster
                    .nodes
                    .iter()
                    .map(|(port, _)| format!("{HOST}:{port}")),
            )
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli is installed (apt-get install redis-tools)");
        // It waits for the nodes to agree, forever if they never do.
        let deadline = Instant::now() + Duration::from_secs(30);
        let created = loop {
            if let Some(status) = create.try_wait().expect("redis-cli status") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = create.kill();
                panic!("redis-cli --cluster create did not finish within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(created.success(), "redis-cli --cluster create failed");
        cluster.wait_until_healthy();
        cluster
    }

    /// Waits until every node says `cluster_state:ok` and knows every other, and every
    /// replica's link to its master is up.
    fn wait_until_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let healthy = |url: &String| {
            let known = format!("cluster_known_nodes:{}", self.urls.len());
            query::<String>(url, &[b"CLUSTER", b"INFO"]).is_some_and(|info| {
                info.contains("cluster_state:ok") && info.contains(known.as_str())
            }) && query::<String>(url, &[b"INFO", b"replication"]).is_some_and(|info| {
                info.contains("role:master") || info.contains("master_link_status:up")
            })
        };
        while !self.urls.iter().all(healthy) {
            assert!(Instant::now() < deadline, "the cluster did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether this test owns the cluster (and so may kill nodes or move slots).
    pub fn owned(&self) -> bool {
        self.dir.is_some()
    }

    /// Prints why a test that must change its own cluster is skipped.
    pub fn skip_unless_owned(&self, test: &str) -> bool {
        if !self.owned() {
            eprintln!(
                "{test}: skipped, REDIS_CLUSTER_URLS is set and this test must change its cluster"
            );
        }
        !self.owned()
    }

    /// Every node's URL, as given to the stores.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The masters that serve slots, as the first node that answers sees them: each one's
    /// URL and slot ranges.
    fn shards(&self) -> Vec<(String, Vec<(u16, u16)>)> {
        let nodes: String = self
            .urls
            .iter()
            .find_map(|url| query(url, &[b"CLUSTER", b"NODES"]))
            .expect("a node answers CLUSTER NODES");
        nodes
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let flags = fields.get(2)?;
                if !flags.contains("master") || flags.contains("fail") {
                    return None;
                }
                let address = fields[1].split(['@', ',']).next()?;
                let slots = fields[8..]
                    .iter()
                    .filter_map(|range| {
                        let (first, last) = range.split_once('-').unwrap_or((range, range));
                        Some((first.parse().ok()?, last.parse().ok()?))
                    })
                    .collect::<Vec<_>>();
                (!slots.is_empty()).then(|| (format!("redis://{address}"), slots))
            })
            .collect()
    }

    /// The URLs of the masters that serve slots.
    pub fn masters(&self) -> Vec<String> {
        self.shards().into_iter().map(|(url, _)| url).collect()
    }

    /// The URL of the master serving `key`'s slot.
    pub fn master_of(&self, key: &[u8]) -> String {
        let slot: u16 = self
            .urls
            .iter()
            .find_map(|url| query(url, &[b"CLUSTER", b"KEYSLOT", key]))
            .expect("a node answers CLUSTER KEYSLOT");
        let serves = |ranges: &[(u16, u16)]| ranges.iter().any(|r| (r.0..=r.1).contains(&slot));
        self.shards()
            .into_iter()
            .find_map(|(url, ranges)| serves(&ranges).then_some(url))
            .expect("every slot is served")
    }

    /// Kills the node at `url` (SIGKILL: no goodbye to clients or to the cluster).
    pub fn kill(&mut self, url: &str) {
        let index = self
            .nodes
            .iter()
            .position(|(port, _)| url.ends_with(&format!(":{port}")))
            .expect("a node of this cluster");
        let (_, mut child) = self.nodes.remove(index);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
