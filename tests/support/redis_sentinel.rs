//! Redis Sentinel of the test's own: a master, a replica and three sentinels
//! (`redis-sentinel`) on free loopback ports in a temporary directory, all killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::redis_server::{free_port, query, spawn, spawn_command, temp_dir};

/// The name the sentinels know the master by.
pub const MASTER: &str = "mymaster";
/// How long the master may be unreachable before a sentinel thinks it down (milliseconds).
pub const DOWN_AFTER_MS: u64 = 1000;

pub struct Sentinels {
    dir: PathBuf,
    /// The master's and the replica's processes, by port.
    servers: Vec<(u16, Child)>,
    sentinels: Vec<(u16, Child)>,
}

impl Sentinels {
    /// A master, its replica in sync, and three sentinels (quorum 2) that know both and
    /// each other.
    pub fn start() -> Self {
        let dir = temp_dir();
        let master = start(|port| spawn(port, &dir, &[]));
        let replica_of = ["--replicaof", "127.0.0.1", &master.0.to_string()];
        let replica = start(|port| spawn(port, &dir, &replica_of));
        let mut setup = Self {
            servers: vec![master, replica],
            sentinels: Vec::new(),
            dir,
        };
        for _ in 0..3 {
            let sentinel = start(|port| setup.spawn_sentinel(port));
            setup.sentinels.push(sentinel);
        }
        setup.wait_until_ready();
        setup
    }

    /// A sentinel on `port` monitoring the master, with a config file of its own (it
    /// rewrites it).
    fn spawn_sentinel(&self, port: u16) -> Option<Child> {
        let config = self.dir.join(format!("sentinel-{port}.conf"));
        let master = self.servers[0].0;
        let settings = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor {MASTER} 127.0.0.1 {master} 2\n\
             sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n\
             sentinel failover-timeout {MASTER} 10000\n",
            dir = self.dir.display(),
        );
        std::fs::write(&config, settings).expect("write a sentinel config");
        let mut command = Command::new("redis-sentinel");
        command.arg(config);
        spawn_command(command, port)
    }

    /// Waits until the replica is in sync and every sentinel knows it and the other two.
    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let synced = || {
            query::<String>(&url(self.servers[1].0), &[b"INFO", b"replication"])
                .is_some_and(|info| info.contains("master_link_status:up"))
        };
        let knows_all = |&(port, _): &(u16, Child)| {
            let info: Option<Vec<String>> =
                query(&url(port), &[b"SENTINEL", b"MASTER", MASTER.as_bytes()]);
            info.is_some_and(|fields| {
                let field = |name: &str| {
                    let at = fields.iter().position(|field| field == name)?;
                    fields.get(at + 1).cloned()
                };
                field("num-slaves").as_deref() == Some("1")
                    && field("num-other-sentinels").as_deref() == Some("2")
            })
        };
        while !(synced() && self.sentinels.iter().all(knows_all)) {
            assert!(Instant::now() < deadline, "Sentinel did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The sentinels' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.sentinels.iter().map(|(port, _)| url(*port)).collect()
    }

    /// The URL of the master, as the first sentinel that answers names it.
    pub fn master(&self) -> String {
        self.sentinels
            .iter()
            .find_map(|(port, _)| {
                let command: [&[u8]; 3] =
                    [b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", MASTER.as_bytes()];
                let (host, port): (String, u16) = query(&url(*port), &command)?;
                Some(format!("redis://{host}:{port}"))
            })
            .expect("a sentinel names the master")
    }

    /// Kills the server at `url` (SIGKILL).
    pub fn kill(&mut self, url: &str) {
        let index = self
            .servers
            .iter()
            .position(|(port, _)| url.ends_with(&format!(":{port}")))
            .expect("a server of this setup");
        let (_, mut child) = self.servers.remove(index);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The first of 5 tries of `spawn` on a free port that started.
fn start(spawn: impl Fn(u16) -> Option<Child>) -> (u16, Child) {
    (0..5)
        .find_map(|_| {
            let port = free_port();
            spawn(port).map(|child| (port, child))
        })
        .expect("could not start a server")
}

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for (_, child) in self.servers.iter_mut().chain(&mut self.sentinels) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
