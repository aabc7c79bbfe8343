//! Rate limiting with GCRA (the generic cell rate algorithm): a quota of `limit` requests per
//! `period` lets a burst of `limit` through, then one request every `period / limit`. Each key
//! keeps a single number, its *theoretical arrival time* (TAT), so a check is one atomic
//! read-modify-write:
//!
//! - [`RedisLimiter`] runs it as a Lua script on Redis (one round trip, Redis's own clock), so
//!   every instance shares the same budget;
//! - [`LocalLimiter`] runs it in process, for a single instance without Redis and as the
//!   fallback when Redis fails.
//!
//! Callers decide what a failure of the limiter means (fail open for general traffic, fall
//! back to [`LocalLimiter`] for login): [`RateLimiter::check`] reports errors, it does not guess.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::metrics::Metrics;
use super::redis::{Outage, RedisError, RedisPool};

/// `limit` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub period: Duration,
}

impl Quota {
    pub fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            period: Duration::from_secs(60),
        }
    }

    pub fn per_hour(limit: u32) -> Self {
        Self {
            limit,
            period: Duration::from_secs(3600),
        }
    }

    /// From a configured count where 0 means unlimited.
    pub fn configured(limit: u32, period: Duration) -> Option<Self> {
        (limit > 0).then_some(Self { limit, period })
    }

    /// Time between two requests at the sustained rate.
    fn interval(self) -> Duration {
        self.period / self.limit.max(1)
    }
}

/// The answer to one check, with what the `X-RateLimit-*` and `Retry-After` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests still allowed right now.
    pub remaining: u32,
    /// Until the budget is whole again.
    pub reset_after: Duration,
    /// When denied: until the next request would be allowed.
    pub retry_after: Duration,
}

impl Decision {
    /// From the GCRA state: `ahead` is how far the key's TAT is ahead of now after this check.
    fn from_gcra(quota: Quota, allowed: bool, ahead: Duration, retry_after: Duration) -> Self {
        let interval = quota.interval().as_micros().max(1);
        let room = quota.period.saturating_sub(ahead).as_micros();
        Self {
            allowed,
            limit: quota.limit,
            remaining: if allowed {
                u32::try_from(room / interval).unwrap_or(u32::MAX)
            } else {
                0
            },
            reset_after: ahead,
            retry_after,
        }
    }
}

pub trait RateLimiter: Send + Sync {
    /// Counts one request against `key` and says whether it may proceed.
    fn check<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
    ) -> BoxFuture<'a, Result<Decision, RedisError>>;
}

/// In-process GCRA. Memory stays bounded: keys whose budget is whole again are forgotten.
#[derive(Default)]
pub struct LocalLimiter {
    state: Mutex<LocalState>,
}

#[derive(Default)]
struct LocalState {
    tat: HashMap<String, Instant>,
    checks_since_prune: u32,
}

const PRUNE_EVERY: u32 = 1024;

impl LocalLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops every key that starts with `start`.
    fn forget(&self, start: &str) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.tat.retain(|key, _| !key.starts_with(start));
    }

    fn decide(&self, key: &str, quota: Quota, now: Instant) -> Decision {
        let interval = quota.interval();
        // A poisoned lock only means another check panicked mid-update; the map is still a map.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.checks_since_prune += 1;
        if state.checks_since_prune >= PRUNE_EVERY {
            state.checks_since_prune = 0;
            state.tat.retain(|_, tat| *tat > now);
        }
        let tat = state.tat.get(key).copied().unwrap_or(now).max(now);
        let new_tat = tat + interval;
        let ahead = new_tat - now;
        if ahead > quota.period {
            let retry_after = ahead - quota.period;
            return Decision::from_gcra(quota, false, tat - now, retry_after);
        }
        state.tat.insert(key.to_owned(), new_tat);
        Decision::from_gcra(quota, true, ahead, Duration::ZERO)
    }
}

impl RateLimiter for LocalLimiter {
    fn check<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
    ) -> BoxFuture<'a, Result<Decision, RedisError>> {
        Box::pin(async move { Ok(self.decide(key, quota, Instant::now())) })
    }
}

/// GCRA on Redis. KEYS[1] = key; ARGV = interval and period in microseconds. Returns
/// `{allowed, ahead_us, retry_after_us}`. Uses Redis's clock so instances agree.
const GCRA_SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local ahead = new_tat - now
if ahead > period then
  return {0, string.format('%.0f', tat - now), string.format('%.0f', ahead - period)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(ahead / 1000))
return {1, string.format('%.0f', ahead), '0'}
";

pub struct RedisLimiter {
    pool: RedisPool,
    script: redis::Script,
    prefix: String,
}

impl RedisLimiter {
    /// Keys are stored as `<prefix><key>`.
    pub fn new(pool: RedisPool, prefix: impl Into<String>) -> Self {
        Self {
            pool,
            script: redis::Script::new(GCRA_SCRIPT),
            prefix: prefix.into(),
        }
    }
}

impl RateLimiter for RedisLimiter {
    fn check<'a>(
        &'a self,
        key: &'a str,
        quota: Quota,
    ) -> BoxFuture<'a, Result<Decision, RedisError>> {
        Box::pin(async move {
            let call = async {
                let mut conn = self.pool.get().await?;
                let (allowed, ahead, retry_after): (i64, u64, u64) = self
                    .script
                    .key(format!("{}{key}", self.prefix))
                    .arg(quota.interval().as_micros() as u64)
                    .arg(quota.period.as_micros() as u64)
                    .invoke_async(&mut conn)
                    .await?;
                Ok::<_, RedisError>(Decision::from_gcra(
                    quota,
                    allowed == 1,
                    Duration::from_micros(ahead),
                    Duration::from_micros(retry_after),
                ))
            };
            tokio::time::timeout(Duration::from_secs(1), call)
                .await
                .map_err(|_| RedisError::Timeout)?
        })
    }
}

/// The limiter the application uses, with the failure policy written once:
/// [`Limits::lenient`] for general traffic fails open when the shared limiter fails (counted
/// and logged), [`Limits::strict`] for login and password reset falls back to the in-process
/// limiter — never unlimited.
#[derive(Clone)]
pub struct Limits {
    shared: Arc<dyn RateLimiter>,
    local: Arc<LocalLimiter>,
    metrics: Arc<Metrics>,
    /// Redis and the key prefix, to forget keys (an erased person's).
    redis: Option<(RedisPool, String)>,
    outage: Arc<Outage>,
}

impl Limits {
    /// Redis-backed when a pool is given, in-process otherwise.
    pub fn new(redis: Option<RedisPool>, prefix: &str, metrics: Arc<Metrics>) -> Self {
        let local = Arc::new(LocalLimiter::new());
        let shared: Arc<dyn RateLimiter> = match &redis {
            Some(pool) => Arc::new(RedisLimiter::new(pool.clone(), prefix)),
            None => local.clone(),
        };
        Self {
            shared,
            local,
            metrics,
            redis: redis.map(|pool| (pool, prefix.to_owned())),
            outage: Arc::new(Outage::new("the shared rate limiter")),
        }
    }

    /// Forgets the budgets of every key that starts with `start` (taken literally), here
    /// and in Redis: an erased person's counters go with them.
    pub async fn forget(&self, start: &str) -> Result<(), RedisError> {
        self.local.forget(start);
        if let Some((pool, prefix)) = &self.redis {
            let pattern = format!(
                "{}{}*",
                super::redis::glob_escape(prefix),
                super::redis::glob_escape(start)
            );
            super::redis::delete_matching(pool, &pattern).await?;
        }
        Ok(())
    }

    /// `None` when the limiter could not answer: the request goes through.
    pub async fn lenient(&self, key: &str, quota: Quota) -> Option<Decision> {
        match self.shared.check(key, quota).await {
            Ok(decision) => {
                self.outage.succeeded();
                Some(decision)
            }
            Err(error) => {
                self.metrics.rate_limit_event("fail_open");
                self.outage.failed(
                    &error,
                    "general traffic goes unlimited, login and password reset are limited here",
                );
                None
            }
        }
    }

    /// Always a verdict: the in-process limiter decides when the shared one fails.
    pub async fn strict(&self, key: &str, quota: Quota) -> Decision {
        match self.shared.check(key, quota).await {
            Ok(decision) => {
                self.outage.succeeded();
                decision
            }
            Err(error) => {
                self.metrics.rate_limit_event("fallback_local");
                self.outage.failed(
                    &error,
                    "general traffic goes unlimited, login and password reset are limited here",
                );
                self.local.decide(key, quota, Instant::now())
            }
        }
    }
}
