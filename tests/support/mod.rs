//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different part

pub mod cases;
pub mod client;
#[cfg(feature = "redis")]
pub mod failover;
pub mod multi;
#[cfg(feature = "redis-cluster")]
pub mod redis_cluster;
#[cfg(feature = "redis-sentinel")]
pub mod redis_sentinel;
#[cfg(feature = "redis")]
pub mod redis_server;
#[cfg(feature = "redis")]
pub mod redis_tables;
#[cfg(feature = "redis")]
pub mod slow_proxy;
#[cfg(feature = "redis-tls")]
pub mod tls;
#[cfg(feature = "admin")]
pub mod webdriver;

/// A loopback port nobody listens on (right now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}
