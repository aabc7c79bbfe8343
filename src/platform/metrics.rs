//! Prometheus metrics. One registry per application instance (not the global default), so
//! several servers in one test process do not share counters.

use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

use crate::platform::db::PoolStats;
use crate::platform::jobs::Depth;

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    db_pool: IntGaugeVec,
    rate_limit: IntCounterVec,
    jobs: IntGaugeVec,
}

/// What `rate_limit_events_total` counts: refusals, and what happened when Redis failed.
const RATE_LIMIT_EVENTS: [&str; 3] = ["rejected", "fail_open", "fallback_local"];

/// Label for requests no route matched, so unknown paths cannot blow up cardinality.
const UNMATCHED_ROUTE: &str = "unmatched";

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered"),
            &["method", "route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from request to response head",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["method", "route"],
        )?;
        let db_pool = IntGaugeVec::new(
            Opts::new("db_pool_connections", "Database pool connections by state"),
            &["state"],
        )?;
        let rate_limit = IntCounterVec::new(
            Opts::new(
                "rate_limit_events_total",
                "Rate-limit refusals and limiter failures (fail_open, fallback_local, rejected)",
            ),
            &["event"],
        )?;
        for event in RATE_LIMIT_EVENTS {
            rate_limit.with_label_values(&[event]);
        }
        let jobs = IntGaugeVec::new(
            Opts::new(
                "job_queue_jobs",
                "Background jobs by state: queued (due now), running, dead (out of attempts); \
                 the whole queue, shared by every instance",
            ),
            &["state"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(db_pool.clone()))?;
        registry.register(Box::new(rate_limit.clone()))?;
        registry.register(Box::new(jobs.clone()))?;
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            db_pool,
            rate_limit,
            jobs,
        })
    }

    pub fn observe_request(
        &self,
        method: &Method,
        route: Option<&str>,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let method = standard_method(method);
        let route = route.unwrap_or(UNMATCHED_ROUTE);
        self.http_requests
            .with_label_values(&[method, route, status.as_str()])
            .inc();
        self.http_duration
            .with_label_values(&[method, route])
            .observe(elapsed.as_secs_f64());
    }

    /// Adds a module's own metrics to this instance's registry.
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    pub fn rate_limit_event(&self, event: &str) {
        self.rate_limit.with_label_values(&[event]).inc();
    }

    /// The text exposition, with pool gauges read at scrape time, and the job queue's depth
    /// when it could be read (else the gauges keep their last values).
    pub fn render(
        &self,
        pool: PoolStats,
        jobs: Option<Depth>,
    ) -> Result<String, prometheus::Error> {
        if let Some(depth) = jobs {
            for (state, count) in [
                ("queued", depth.queued),
                ("running", depth.running),
                ("dead", depth.dead),
            ] {
                self.jobs.with_label_values(&[state]).set(count);
            }
        }
        self.db_pool
            .with_label_values(&["in_use"])
            .set(pool.in_use.into());
        self.db_pool
            .with_label_values(&["idle"])
            .set(pool.idle.into());
        self.db_pool
            .with_label_values(&["max"])
            .set(pool.max.into());
        let mut buffer = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

fn standard_method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
