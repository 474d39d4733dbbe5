//! A `redis-server` of the test's own, on a free loopback port in a temporary directory,
//! killed on drop. `REDIS_URL` points the tests at an existing server instead.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct RedisServer {
    url: String,
    port: u16,
    dir: Option<PathBuf>,
    /// Settings beyond the defaults of `spawn`.
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// The server at `REDIS_URL`, or a new one.
    pub fn start() -> Self {
        if let Ok(url) = std::env::var("REDIS_URL") {
            return Self {
                url,
                port: 0,
                dir: None,
                extra: Vec::new(),
                child: None,
            };
        }
        Self::start_with(&[])
    }

    /// A new server of this test's own (whatever `REDIS_URL` says) with `extra` settings.
    pub fn start_with(extra: &[String]) -> Self {
        let dir = temp_dir();
        for _ in 0..5 {
            let port = free_port();
            let mut server = Self {
                url: format!("redis://127.0.0.1:{port}"),
                port,
                dir: Some(dir.clone()),
                extra: extra.to_vec(),
                child: None,
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server");
    }

    /// Whether this test owns the server (and so may kill it).
    pub fn owned(&self) -> bool {
        self.dir.is_some()
    }

    /// Prints why a test that must kill or slow its own server is skipped.
    pub fn skip_unless_owned(&self, test: &str) -> bool {
        if !self.owned() {
            eprintln!("{test}: skipped, REDIS_URL is set and this test must kill its server");
        }
        !self.owned()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: no goodbye to the clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts redis-server; false if it exited (its port was taken).
    fn spawn(&mut self) -> bool {
        let dir = self.dir.as_ref().expect("an owned server");
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.child = spawn(self.port, dir, &extra);
        self.child.is_some()
    }
}

/// A new temporary directory for servers' files.
pub fn temp_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tower-ratelimit-redis-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub use super::free_port;

/// Starts redis-server on `port` without persistence, with files in `dir` and `extra`
/// settings, and waits until it answers PING; `None` if it exited (a port was taken).
pub fn spawn(port: u16, dir: &Path, extra: &[&str]) -> Option<Child> {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(extra);
    spawn_command(command, port)
}

/// Runs `command` (a server that listens on `port`) and waits until it answers PING;
/// `None` if it exited (a port was taken).
pub fn spawn_command(mut command: Command, port: u16) -> Option<Child> {
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is installed (apt-get install {program}): {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait().expect("server status").is_some() {
            return None;
        }
        if ping(port) {
            return Some(child);
        }
        assert!(Instant::now() < deadline, "{program} did not answer PING");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A command's reply from the server at `url`; `None` if it cannot be had.
pub fn query<T: redis::FromRedisValue>(url: &str, command: &[&[u8]]) -> Option<T> {
    let client = redis::Client::open(url).ok()?;
    let mut connection = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .ok()?;
    redis::Cmd::new().arg(command).query(&mut connection).ok()
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A key prefix no other test (or run, on a shared server) uses.
pub fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "test:{test}:{}:{nanos}:{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A store on `server` under `prefix`, with a deadline generous enough for a loaded
/// machine: these tests are about counting, not latency.
pub async fn store(server: &RedisServer, prefix: &str) -> tower_ratelimit::store::RedisStore {
    tower_ratelimit::store::RedisStore::builder(server.url())
        .prefix(prefix)
        .deadline(std::time::Duration::from_secs(5))
        .connect()
        .await
        .expect("connect")
}
