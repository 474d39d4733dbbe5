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
