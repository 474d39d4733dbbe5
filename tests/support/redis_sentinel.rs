//! Redis Sentinel of the test's own: a master, a replica and three sentinels
//! (`redis-sentinel`) on free loopback ports in a temporary directory, all killed on drop;
//! in plain TCP, or speaking TLS to clients and to each other (each server then also
//! listens in plain TCP, for the test's own setup).

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
    /// The TLS settings of every process (certificate files), if they speak TLS.
    tls: Option<Vec<String>>,
    /// The master and the replica.
    servers: Vec<Node>,
    sentinels: Vec<Node>,
}

/// A process, the port its clients use (TLS or not), and its plain-TCP port.
struct Node {
    port: u16,
    plain: u16,
    child: Child,
}

impl Sentinels {
    /// A master, its replica in sync, and three sentinels (quorum 2) that know both and
    /// each other.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// The same, every process speaking TLS with these settings (`--tls-cert-file`...
    /// pairs) if given.
    pub fn start_with(tls: Option<Vec<String>>) -> Self {
        let mut setup = Self {
            dir: temp_dir(),
            tls,
            servers: Vec::new(),
            sentinels: Vec::new(),
        };
        let server = |plain, settings: &[String]| {
            let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
            spawn(plain, &setup.dir, &settings)
        };
        let master = setup.start_node(|plain, tls| server(plain, &tls));
        let replica_of = [
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            master.port.to_string(),
        ];
        let replica =
            setup.start_node(|plain, tls| server(plain, &[&replica_of[..], &tls].concat()));
        setup.servers = vec![master, replica];
        for _ in 0..3 {
            let sentinel = setup.start_node(|plain, tls| setup.spawn_sentinel(plain, &tls));
            setup.sentinels.push(sentinel);
        }
        setup.wait_until_ready();
        setup
    }

    /// The first of 5 tries of `spawn` (given a free plain port and the TLS settings,
    /// with a free TLS port) that started.
    fn start_node(&self, spawn: impl Fn(u16, Vec<String>) -> Option<Child>) -> Node {
        (0..5)
            .find_map(|_| {
                let plain = free_port();
                let (port, tls) = match &self.tls {
                    None => (plain, Vec::new()),
                    Some(settings) => {
                        let port = free_port();
                        let mut tls = vec!["--tls-port".to_owned(), port.to_string()];
                        tls.extend(["--tls-replication".to_owned(), "yes".to_owned()]);
                        tls.extend(settings.iter().cloned());
                        (port, tls)
                    }
                };
                let child = spawn(plain, tls)?;
                Some(Node { port, plain, child })
            })
            .expect("could not start a server")
    }

    /// A sentinel on `plain` (plus `tls`) monitoring the master, with a config file of
    /// its own (it rewrites it).
    fn spawn_sentinel(&self, plain: u16, tls: &[String]) -> Option<Child> {
        let config = self.dir.join(format!("sentinel-{plain}.conf"));
        let master = self.servers[0].port;
        let mut settings = format!(
            "port {plain}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor {MASTER} 127.0.0.1 {master} 2\n\
             sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n\
             sentinel failover-timeout {MASTER} 10000\n",
            dir = self.dir.display(),
        );
        for pair in tls.chunks(2) {
            settings += &format!("{} {}\n", pair[0].trim_start_matches("--"), pair[1]);
        }
        std::fs::write(&config, settings).expect("write a sentinel config");
        let mut command = Command::new("redis-sentinel");
        command.arg(config);
        spawn_command(command, plain)
    }

    /// Waits until the replica is in sync and every sentinel knows it and the other two.
    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let synced = || {
            query::<String>(&url(self.servers[1].plain), &[b"INFO", b"replication"])
                .is_some_and(|info| info.contains("master_link_status:up"))
        };
        let knows_all = |sentinel: &Node| {
            let info: Option<Vec<String>> = query(
                &url(sentinel.plain),
                &[b"SENTINEL", b"MASTER", MASTER.as_bytes()],
            );
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

    /// The sentinels' URLs (`rediss://` for TLS).
    pub fn urls(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let url = |sentinel: &Node| format!("{scheme}://127.0.0.1:{}", sentinel.port);
        self.sentinels.iter().map(url).collect()
    }

    /// The URL of the master, as the first sentinel that answers names it.
    pub fn master(&self) -> String {
        self.sentinels
            .iter()
            .find_map(|sentinel| {
                let command: [&[u8]; 3] =
                    [b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", MASTER.as_bytes()];
                let (host, port): (String, u16) = query(&url(sentinel.plain), &command)?;
                Some(format!("redis://{host}:{port}"))
            })
            .expect("a sentinel names the master")
    }

    /// Kills the server at `url` (SIGKILL).
    pub fn kill(&mut self, url: &str) {
        let index = self
            .servers
            .iter()
            .position(|server| url.ends_with(&format!(":{}", server.port)))
            .expect("a server of this setup");
        let mut server = self.servers.remove(index);
        let _ = server.child.kill();
        let _ = server.child.wait();
    }
}

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}")
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for node in self.servers.iter_mut().chain(&mut self.sentinels) {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
