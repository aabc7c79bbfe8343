//! Timeouts around any adapter: until the first text, between two pieces, and overall.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, stream};
use tokio::time::Instant;

use super::{Event, EventStream, LanguageModel, LlmError, Request};

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub first_token: Duration,
    pub idle: Duration,
    pub total: Duration,
}

/// A model whose every stream is [`timed`].
pub struct Timed {
    pub inner: Arc<dyn LanguageModel>,
    pub timeouts: Timeouts,
}

impl LanguageModel for Timed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn stream(&self, request: Request) -> EventStream {
        timed(self.inner.stream(request), self.timeouts)
    }
}

struct State {
    inner: EventStream,
    started: bool,
}

/// `inner` with deadlines: the first text within `first_token` of the start, each next event
/// within `idle` of the previous text, everything within `total`. A stream that ends without
/// `Finished` is [`LlmError::Cut`]. Nothing is yielded after `Finished` or an error.
pub fn timed(inner: EventStream, timeouts: Timeouts) -> EventStream {
    let start = Instant::now();
    let total = start + timeouts.total;
    stream::unfold(
        Some(State {
            inner,
            started: false,
        }),
        move |state| async move {
            let mut state = state?;
            let step = if state.started {
                Instant::now() + timeouts.idle
            } else {
                start + timeouts.first_token
            };
            let deadline = step.min(total);
            let outcome = match tokio::time::timeout_at(deadline, state.inner.next()).await {
                Ok(Some(Ok(event))) => Ok(event),
                Ok(Some(Err(error))) => Err(error),
                Ok(None) => Err(LlmError::Cut),
                Err(_) if deadline == total => Err(LlmError::TotalTimeout),
                Err(_) if state.started => Err(LlmError::IdleTimeout),
                Err(_) => Err(LlmError::FirstTokenTimeout),
            };
            match outcome {
                Ok(Event::Text(text)) => {
                    state.started = true;
                    Some((Ok(Event::Text(text)), Some(state)))
                }
                Ok(finished) => Some((Ok(finished), None)),
                Err(error) => Some((Err(error), None)),
            }
        },
    )
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeouts(ms: u64) -> Timeouts {
        Timeouts {
            first_token: Duration::from_millis(ms),
            idle: Duration::from_millis(ms),
            total: Duration::from_millis(ms * 10),
        }
    }

    async fn collect(stream: EventStream) -> Vec<Result<Event, LlmError>> {
        stream.collect().await
    }

    #[tokio::test(start_paused = true)]
    async fn silence_before_the_first_token_is_a_first_token_timeout() {
        let silent = stream::pending().boxed();
        let events = collect(timed(silent, timeouts(100))).await;
        assert_eq!(events, vec![Err(LlmError::FirstTokenTimeout)]);
    }

    #[tokio::test(start_paused = true)]
    async fn silence_after_text_is_an_idle_timeout() {
        let stalls = stream::iter([Ok(Event::Text("Hi".into()))])
            .chain(stream::pending())
            .boxed();
        let events = collect(timed(stalls, timeouts(100))).await;
        assert_eq!(
            events,
            vec![Ok(Event::Text("Hi".into())), Err(LlmError::IdleTimeout)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_trickle_still_meets_the_total_timeout() {
        let trickle = stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Some((Ok(Event::Text(".".into())), ()))
        })
        .boxed();
        let events = collect(timed(trickle, timeouts(100))).await;
        assert_eq!(events.last(), Some(&Err(LlmError::TotalTimeout)));
        assert!(events.len() > 10);
    }

    #[tokio::test]
    async fn an_end_without_finished_is_cut_and_nothing_follows_finished() {
        let cut = stream::iter([Ok(Event::Text("a".into()))]).boxed();
        assert_eq!(
            collect(timed(cut, timeouts(1000))).await.last(),
            Some(&Err(LlmError::Cut))
        );
        let finished = Event::Finished {
            reason: "stop".into(),
            usage: None,
        };
        let extra = stream::iter([Ok(finished.clone()), Ok(Event::Text("late".into()))]).boxed();
        assert_eq!(
            collect(timed(extra, timeouts(1000))).await,
            vec![Ok(finished)]
        );
    }
}
