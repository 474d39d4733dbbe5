//! `RedisStore` through Redis Sentinel (tests to come).
