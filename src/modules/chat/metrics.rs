//! Chat's metrics, registered in the instance's registry (`GET /metrics`).

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

use crate::config::Plans;
use crate::platform::llm::LlmError;
use crate::platform::metrics::Metrics;

#[derive(Clone)]
pub struct ChatMetrics {
    messages_sent: IntCounterVec,
    generation: Histogram,
    first_token: Histogram,
    tokens: IntCounter,
    upstream_errors: IntCounterVec,
    sockets: IntGauge,
    streaming: IntGauge,
    warm_sends: IntCounterVec,
}

/// How a message was sent with respect to the warm state (`warm`): from it (`hit`), from
/// it but the conversation had changed elsewhere, so again from the database (`stale`), or
/// from the database because nothing was kept (`miss`).
pub const WARM_OUTCOMES: [&str; 3] = ["hit", "stale", "miss"];

impl ChatMetrics {
    pub fn new() -> prometheus::Result<Self> {
        Ok(Self {
            messages_sent: IntCounterVec::new(
                Opts::new(
                    "virtual_companion_messages_sent_total",
                    "Messages users sent (new and edited), by tier",
                ),
                &["user_tier"],
            )?,
            generation: Histogram::with_opts(
                HistogramOpts::new(
                    "virtual_companion_ai_generation_duration_seconds",
                    "From starting a reply to its end, whatever the ending",
                )
                .buckets(vec![0.1, 0.5, 1.0, 2.0, 5.0, 10.0]),
            )?,
            first_token: Histogram::with_opts(
                HistogramOpts::new(
                    "virtual_companion_ai_time_to_first_token_seconds",
                    "From starting a reply to its first piece of text",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
                ]),
            )?,
            tokens: IntCounter::new(
                "virtual_companion_ai_tokens_generated_total",
                "Completion tokens of replies (the model's count, else pieces received)",
            )?,
            upstream_errors: IntCounterVec::new(
                Opts::new(
                    "virtual_companion_ai_upstream_errors_total",
                    "Replies that failed because of the language model, by error code",
                ),
                &["code"],
            )?,
            sockets: IntGauge::new(
                "virtual_companion_websocket_connections",
                "Open WebSocket connections on this instance",
            )?,
            streaming: IntGauge::new(
                "virtual_companion_ai_streaming_generations",
                "Replies being generated on this instance",
            )?,
            warm_sends: IntCounterVec::new(
                Opts::new(
                    "virtual_companion_chat_warm_sends_total",
                    "Messages sent in a conversation kept warm on this instance (hit), kept but \
                     changed elsewhere (stale), or not kept (miss)",
                ),
                &["outcome"],
            )?,
        })
    }

    /// Adds these metrics to the instance's registry, every known label at zero so that rates
    /// and alerts see a series before the first event.
    pub fn register(&self, metrics: &Metrics) -> prometheus::Result<()> {
        for tier in Plans::TIERS {
            self.messages_sent.with_label_values(&[tier]);
        }
        for code in LlmError::CODES {
            self.upstream_errors.with_label_values(&[code]);
        }
        for outcome in WARM_OUTCOMES {
            self.warm_sends.with_label_values(&[outcome]);
        }
        metrics.register(Box::new(self.messages_sent.clone()))?;
        metrics.register(Box::new(self.generation.clone()))?;
        metrics.register(Box::new(self.first_token.clone()))?;
        metrics.register(Box::new(self.tokens.clone()))?;
        metrics.register(Box::new(self.upstream_errors.clone()))?;
        metrics.register(Box::new(self.sockets.clone()))?;
        metrics.register(Box::new(self.streaming.clone()))?;
        metrics.register(Box::new(self.warm_sends.clone()))?;
        Ok(())
    }

    pub fn message_sent(&self, tier: &str) {
        // The label's values are the known tiers; anything else counts as free.
        let tier = Plans::TIERS
            .into_iter()
            .find(|known| *known == tier)
            .unwrap_or("free");
        self.messages_sent.with_label_values(&[tier]).inc();
    }

    pub fn first_token(&self, after: Duration) {
        self.first_token.observe(after.as_secs_f64());
    }

    pub fn generation_ended(&self, took: Duration, tokens: u64) {
        self.generation.observe(took.as_secs_f64());
        self.tokens.inc_by(tokens);
    }

    /// One of [`WARM_OUTCOMES`].
    pub fn warm_send(&self, outcome: &'static str) {
        self.warm_sends.with_label_values(&[outcome]).inc();
    }

    pub fn upstream_error(&self, code: &str) {
        self.upstream_errors.with_label_values(&[code]).inc();
    }

    /// Counts a generation until the guard is dropped.
    pub fn streaming(&self) -> GaugeGuard {
        GaugeGuard::new(self.streaming.clone())
    }

    /// Counts an open socket until the guard is dropped.
    pub fn socket(&self) -> GaugeGuard {
        GaugeGuard::new(self.sockets.clone())
    }
}

pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
