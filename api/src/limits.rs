//! The API's limits ([`ApiLimits`]) and the per-client rate limiter ([`RateLimiter`]): a token bucket per
//! token (or per client address for requests without a valid token), answering 429 with `Retry-After`
//! when a bucket is empty.

use crate::error::ApiError;
use chrono::TimeDelta;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Limits of the API, with defaults suited to a dashboard and a few scripts per token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApiLimits {
    /// Largest request body accepted (413 beyond).
    pub body_bytes: usize,
    /// Sustained requests per second per token (or client address).
    pub requests_per_second: f64,
    /// Requests a client may send at once after being idle.
    pub burst: u32,
    /// Longest time window an analysis may cover (400 beyond): a longer one reads more Parquet files than a
    /// request should.
    pub max_window: TimeDelta,
    /// Page size when a request names none.
    pub default_limit: u32,
    /// Largest page size (400 beyond).
    pub max_limit: u32,
    /// How long an analysis result is served to further requests for the same window, scope and
    /// configuration without running again (`crate::analysis::cache`). Zero: every request runs them.
    pub analysis_fresh_for: std::time::Duration,
    /// How long an older result is still served at once while a background run replaces it; past that, a
    /// request waits for a new run.
    pub analysis_stale_for: std::time::Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            body_bytes: 1024 * 1024,
            requests_per_second: 50.0,
            burst: 200,
            max_window: TimeDelta::days(31),
            default_limit: 100,
            max_limit: 1000,
            analysis_fresh_for: std::time::Duration::from_secs(10),
            analysis_stale_for: std::time::Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets by client key.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Buckets kept before idle (full) ones are dropped; bounds the memory a flood of addresses can take.
const MAX_BUCKETS: usize = 10_000;

impl RateLimiter {
    pub fn new(requests_per_second: f64, burst: u32) -> Self {
        RateLimiter { rate: requests_per_second.max(0.001), burst: f64::from(burst.max(1)), buckets: Mutex::default() }
    }

    /// Takes one request from `key`'s bucket, or answers 429 with the seconds until one is available.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        let now = Instant::now();
        // A poisoned lock only means a panic between two plain-data updates; the map is still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket { tokens: self.burst, updated: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * self.rate).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - bucket.tokens) / self.rate).ceil().max(1.0) as u64;
            Err(ApiError::RateLimited { retry_after_seconds: wait })
        }
    }
}
