//! GCRA rate limiting, the same behaviour from real Redis and from the in-process limiter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use companion::platform::ratelimit::{LocalLimiter, Quota, RateLimiter, RedisLimiter};
use companion::platform::redis;

fn redis_limiter() -> RedisLimiter {
    let pool = redis::pool(&support::redis_url()).unwrap();
    // A prefix per limiter-test keeps runs and parallel tests apart on one Redis.
    RedisLimiter::new(pool, format!("test:rl:{}:", uuid::Uuid::new_v4().simple()))
}

fn limiters() -> Vec<(&'static str, Arc<dyn RateLimiter>)> {
    vec![
        ("redis", Arc::new(redis_limiter())),
        ("local", Arc::new(LocalLimiter::new())),
    ]
}

/// 5 per 500 ms: a burst of 5, then one every 100 ms.
const QUOTA: Quota = Quota {
    limit: 5,
    period: Duration::from_millis(500),
};

/// 5 per 5 s (one every second): the test below sleeps for the advertised wait and then
/// expects exactly one request to pass, which holds as long as the sleep overshoots by less
/// than a second, even on a loaded machine.
const STEADY: Quota = Quota {
    limit: 5,
    period: Duration::from_secs(5),
};

#[tokio::test]
async fn a_burst_up_to_the_limit_passes_then_requests_are_refused() {
    for (name, limiter) in limiters() {
        let mut remaining = Vec::new();
        for _ in 0..5 {
            let decision = limiter.check("ann", STEADY).await.unwrap();
            assert!(decision.allowed, "{name}");
            assert_eq!(decision.limit, 5);
            remaining.push(decision.remaining);
        }
        assert_eq!(remaining, [4, 3, 2, 1, 0], "{name}");

        let refused = limiter.check("ann", STEADY).await.unwrap();
        assert!(!refused.allowed, "{name}");
        assert_eq!(refused.remaining, 0);
        assert!(
            refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(1),
            "{name}: retry after {:?}",
            refused.retry_after
        );
        assert!(refused.reset_after <= STEADY.period, "{name}");

        // After the advertised wait, one more request passes.
        tokio::time::sleep(refused.retry_after + Duration::from_millis(5)).await;
        assert!(
            limiter.check("ann", STEADY).await.unwrap().allowed,
            "{name}"
        );
        assert!(
            !limiter.check("ann", STEADY).await.unwrap().allowed,
            "{name}"
        );
    }
}

#[tokio::test]
async fn keys_have_their_own_budgets() {
    for (name, limiter) in limiters() {
        for _ in 0..5 {
            assert!(limiter.check("ann", QUOTA).await.unwrap().allowed);
        }
        assert!(
            !limiter.check("ann", QUOTA).await.unwrap().allowed,
            "{name}"
        );
        assert!(
            limiter.check("bob", QUOTA).await.unwrap().allowed,
            "{name}: bob is not ann"
        );
    }
}

#[tokio::test]
async fn concurrent_checks_never_exceed_the_limit() {
    let quota = Quota::per_minute(20);
    for (name, limiter) in limiters() {
        let checks = (0..60).map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.check("busy", quota).await.unwrap().allowed })
        });
        let mut allowed = 0;
        for check in checks {
            allowed += usize::from(check.await.unwrap());
        }
        assert_eq!(allowed, 20, "{name}");
    }
}

#[tokio::test]
async fn instances_sharing_redis_share_one_budget() {
    let pool_a = redis::pool(&support::redis_url()).unwrap();
    let pool_b = redis::pool(&support::redis_url()).unwrap();
    let prefix = format!("test:rl:{}:", uuid::Uuid::new_v4().simple());
    let a = RedisLimiter::new(pool_a, prefix.clone());
    let b = RedisLimiter::new(pool_b, prefix);
    for _ in 0..3 {
        assert!(a.check("ann", QUOTA).await.unwrap().allowed);
    }
    for _ in 0..2 {
        assert!(b.check("ann", QUOTA).await.unwrap().allowed);
    }
    assert!(!a.check("ann", QUOTA).await.unwrap().allowed);
    assert!(!b.check("ann", QUOTA).await.unwrap().allowed);
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_a_verdict() {
    let limiter = RedisLimiter::new(redis::pool("redis://127.0.0.1:1").unwrap(), "rl:");
    assert!(limiter.check("ann", QUOTA).await.is_err());
}
