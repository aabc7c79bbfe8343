//! Live events to a user's open connections, on every instance.
//!
//! - Each instance keeps, per user with at least one open connection, the queues of that
//!   user's subscriptions; every connection holds a [`Subscription`]. A subscription's queue
//!   is a `VecDeque` behind a mutex with a [`Notify`] to wake its reader: it takes memory
//!   only for the events waiting in it and gives that back once they are read, so an idle
//!   connection costs about a hundred bytes here. (A Tokio `mpsc` channel allocates its
//!   first block of slots and its cache-padded state up front: about 1 KiB per connection,
//!   which is what the 10,000-idle-connections benchmark showed.)
//! - Without Redis the server is one instance: [`Realtime::publish`] delivers straight to
//!   that channel.
//! - With Redis, a publish goes to one Redis pub/sub channel, `companion:realtime`, as
//!   `<user id>\n<event>`; every instance listens on it (one connection each, reconnecting
//!   with backoff) and hands the event to its local subscribers of that user. An instance
//!   hears its own publishes the same way, so every instance sees one order. If Redis
//!   refuses a publish, or this instance is not (yet, again) subscribed, the event is
//!   delivered on this instance directly.
//! - Publishes share round trips. Each instance has one publishing task: every event waiting
//!   when it is free goes to Redis in one pipeline (at most [`BATCH`]). A caller still
//!   waits until its event has been handed to Redis (or delivered here), so the order of one
//!   caller's events and their place among its database writes are as if each were sent on
//!   its own. Many replies streaming at once then cost a few round trips per batch of
//!   pieces instead of one per piece: under the load test's sends the server spent most of
//!   its time waking up for one `PUBLISH` after another.
//! - Events are not stored here. A connection that misses some (Redis blipped, the client
//!   was offline) catches up from the database, which holds everything that was sent.
//! - Each subscription buffers at most [`BUFFER`] events; events that find it full are
//!   dropped for it, and its next `recv` says how many ([`Missed::Lagged`]) before handing
//!   out what it still holds. Its owner then catches up from the database, or drops the
//!   slow client, rather than grow memory.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use uuid::Uuid;

use super::redis::{Outage, RedisPool};

pub const CHANNEL: &str = "companion:realtime";
/// Events a subscription may have waiting before it counts as lagging.
pub const BUFFER: usize = 1024;
/// At most this many events in one pipeline to Redis.
pub const BATCH: usize = 256;
/// How long a publish may take before the events are delivered on this instance only.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);

type Event = Arc<str>;

#[derive(Debug, PartialEq, Eq)]
pub enum Missed {
    /// The subscription fell this many events behind; they are gone.
    Lagged(u64),
    /// The hub is gone (shutdown).
    Closed,
}

/// What a subscription's reader and the hub share.
#[derive(Default)]
struct Queue {
    /// Events waiting to be read, at most [`BUFFER`].
    events: Mutex<VecDeque<Event>>,
    /// Events dropped because the queue was full, not yet reported.
    dropped: AtomicU64,
    /// Set when the hub is gone: nothing more will come.
    closed: AtomicBool,
    /// Wakes the reader. `notify_one` keeps its wake-up when nobody waits yet, so an event
    /// pushed between the reader's look at the queue and its wait is not slept through.
    ready: Notify,
}

impl Queue {
    fn push(&self, event: Event) {
        {
            let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
            if events.len() >= BUFFER {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            events.push_back(event);
        }
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<Event> {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let event = events.pop_front();
        give_back_burst(&mut events);
        event
    }
}

/// A drained queue keeps up to this many slots; more are given back.
const IDLE_CAPACITY: usize = 16;

/// Frees a connection's queue once it is empty, if a burst grew it past [`IDLE_CAPACITY`]
/// slots: an idle connection should not keep what a burst took. (The WebSocket's queue of
/// frames for its client does the same.)
pub fn give_back_burst<T>(queue: &mut VecDeque<T>) {
    if queue.is_empty() && queue.capacity() > IDLE_CAPACITY {
        *queue = VecDeque::new();
    }
}

/// The hub's side of one subscription.
struct Subscriber {
    id: u64,
    queue: Arc<Queue>,
}

impl Drop for Subscriber {
    /// The hub dropped it (the hub itself is going): its reader learns there is no more.
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
        self.queue.ready.notify_one();
    }
}

/// An event on its way to Redis, with whoever waits for it to be sent.
struct Outgoing {
    user: Uuid,
    event: Event,
    /// Whether this instance was subscribed when the event was published (read before
    /// sending: if it subscribes in between, its sockets may see the event twice, and they
    /// drop pieces they have; never not at all).
    heard_here: bool,
    sent: oneshot::Sender<()>,
}

struct Inner {
    local: Mutex<HashMap<Uuid, Vec<Subscriber>>>,
    next_id: AtomicU64,
    redis: Option<RedisPool>,
    /// The publishing task's queue, when it runs (with Redis, on a runtime).
    publisher: Option<mpsc::UnboundedSender<Outgoing>>,
    /// True while this instance is subscribed to the Redis channel.
    listening: watch::Sender<bool>,
    publishing: Outage,
}

/// The hub. Cheap to clone.
#[derive(Clone)]
pub struct Realtime {
    inner: Arc<Inner>,
}

impl Realtime {
    /// One instance, no Redis.
    pub fn in_process() -> Self {
        Self::build(None, None)
    }

    /// Shared through Redis at `url` (pub/sub needs a connection of its own, outside `pool`,
    /// which is used to publish). The listener runs on the current Tokio runtime; outside
    /// one (a CLI command) the hub publishes but does not listen.
    pub fn with_redis(url: &str, pool: RedisPool) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!("no runtime: the realtime hub will not listen");
            return Ok(Self::build(Some(pool), None));
        };
        let (queue, queued) = mpsc::unbounded_channel();
        let hub = Self::build(Some(pool.clone()), Some(queue));
        runtime.spawn(listen(client, Arc::downgrade(&hub.inner)));
        runtime.spawn(publish_queued(queued, Arc::downgrade(&hub.inner), pool));
        Ok(hub)
    }

    fn build(redis: Option<RedisPool>, publisher: Option<mpsc::UnboundedSender<Outgoing>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                local: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                redis,
                publisher,
                listening: watch::channel(false).0,
                publishing: Outage::new("publishing through Redis"),
            }),
        }
    }

    /// Waits until this instance hears the Redis channel (at once without Redis).
    pub async fn listening(&self) {
        if self.inner.redis.is_none() {
            return;
        }
        let mut listening = self.inner.listening.subscribe();
        let _ = listening.wait_for(|on| *on).await;
    }

    /// Events for `user` from now on, until the subscription is dropped.
    pub fn subscribe(&self, user: Uuid) -> Subscription {
        let queue = Arc::new(Queue::default());
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut local = self.inner.local.lock().unwrap_or_else(|e| e.into_inner());
        let subscribers = local.entry(user).or_default();
        // Most users have one connection: room for exactly one more, not the four a `Vec`
        // would make.
        subscribers.reserve_exact(1);
        subscribers.push(Subscriber {
            id,
            queue: queue.clone(),
        });
        Subscription {
            queue,
            id,
            user,
            hub: Arc::downgrade(&self.inner),
        }
    }

    /// Sends `event` to every connection of `user`, on every instance; returns once it is
    /// handed to Redis (or delivered here).
    pub async fn publish(&self, user: Uuid, event: impl Into<Event>) {
        let event = event.into();
        let Some(pool) = &self.inner.redis else {
            deliver(&self.inner, user, event);
            return;
        };
        let (sent, was_sent) = oneshot::channel();
        let outgoing = Outgoing {
            user,
            event,
            heard_here: *self.inner.listening.borrow(),
            sent,
        };
        match &self.inner.publisher {
            Some(queue) => match queue.send(outgoing) {
                // Without an answer the task ended with the runtime (shutting down).
                Ok(()) => {
                    let _ = was_sent.await;
                }
                // The task is gone: this caller sends its event itself.
                Err(mpsc::error::SendError(outgoing)) => {
                    publish_batch(&self.inner, pool, vec![outgoing]).await;
                }
            },
            None => publish_batch(&self.inner, pool, vec![outgoing]).await,
        }
    }

    /// How many users have a connection on this instance.
    pub fn local_users(&self) -> usize {
        self.inner
            .local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

fn deliver(inner: &Inner, user: Uuid, event: Event) {
    let local = inner.local.lock().unwrap_or_else(|e| e.into_inner());
    for subscriber in local.get(&user).into_iter().flatten() {
        subscriber.queue.push(event.clone());
    }
}

/// Sends every queued event, a pipeline at a time, for as long as the hub lives.
async fn publish_queued(
    mut queued: mpsc::UnboundedReceiver<Outgoing>,
    hub: Weak<Inner>,
    pool: RedisPool,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while queued.recv_many(&mut batch, BATCH).await > 0 {
        let Some(inner) = hub.upgrade() else { return };
        publish_batch(&inner, &pool, std::mem::take(&mut batch)).await;
    }
}

/// Publishes `batch` in one round trip, then delivers here what this instance will not hear
/// from Redis (all of it if Redis failed), then lets the callers go on.
async fn publish_batch(inner: &Inner, pool: &RedisPool, batch: Vec<Outgoing>) {
    let mut pipeline = redis::pipe();
    for outgoing in &batch {
        pipeline
            .cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(format!("{}\n{}", outgoing.user, outgoing.event))
            .ignore();
    }
    let sent = async {
        let mut conn = pool.get().await.map_err(|e| e.to_string())?;
        pipeline
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };
    let sent = tokio::time::timeout(PUBLISH_TIMEOUT, sent)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {} ms",
                PUBLISH_TIMEOUT.as_millis()
            ))
        });
    let reached_redis = match sent {
        Ok(()) => {
            inner.publishing.succeeded();
            true
        }
        Err(error) => {
            inner
                .publishing
                .failed(&error, "live events reach this instance's connections only");
            false
        }
    };
    for outgoing in batch {
        // Redis is back but this instance's subscription is not yet: other instances hear
        // it from Redis, this one's sockets from here.
        if !(reached_redis && outgoing.heard_here) {
            deliver(inner, outgoing.user, outgoing.event);
        }
        let _ = outgoing.sent.send(());
    }
}

/// Listens on the Redis channel for as long as the hub lives, reconnecting with backoff.
async fn listen(client: redis::Client, hub: Weak<Inner>) {
    let mut pause = Duration::from_millis(100);
    loop {
        let Some(inner) = hub.upgrade() else { return };
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match subscribed.await {
            Ok(pubsub) => {
                pause = Duration::from_millis(100);
                inner.listening.send_replace(true);
                drop(inner);
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let Some(inner) = hub.upgrade() else { return };
                    let payload = message.get_payload_bytes();
                    let Some((user, event)) = std::str::from_utf8(payload)
                        .ok()
                        .and_then(|text| text.split_once('\n'))
                    else {
                        continue;
                    };
                    if let Ok(user) = user.parse::<Uuid>() {
                        deliver(&inner, user, Arc::from(event));
                    }
                }
                if let Some(inner) = hub.upgrade() {
                    inner.listening.send_replace(false);
                }
                tracing::warn!("lost the Redis realtime channel; reconnecting");
            }
            Err(error) => {
                drop(inner);
                tracing::warn!(%error, "cannot listen on the Redis realtime channel yet");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// One connection's view of a user's events.
pub struct Subscription {
    queue: Arc<Queue>,
    id: u64,
    user: Uuid,
    hub: Weak<Inner>,
}

impl Subscription {
    /// The next event; first, if events were dropped because this subscription fell behind,
    /// how many.
    /// Cancel-safe: an event is taken from the queue only when it is returned.
    pub async fn recv(&mut self) -> Result<Event, Missed> {
        // Like a Tokio channel, a busy subscription yields now and then, so one flooded
        // connection does not hold its worker thread.
        tokio::task::consume_budget().await;
        loop {
            let dropped = self.queue.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                return Err(Missed::Lagged(dropped));
            }
            if let Some(event) = self.queue.pop() {
                return Ok(event);
            }
            if self.queue.closed.load(Ordering::Acquire) {
                return Err(Missed::Closed);
            }
            self.queue.ready.notified().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(inner) = self.hub.upgrade() else {
            return;
        };
        let mut local = inner.local.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(subscribers) = local.get_mut(&self.user) {
            subscribers.retain(|s| s.id != self.id);
            if subscribers.is_empty() {
                local.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_reach_every_connection_of_their_user_only() {
        let hub = Realtime::in_process();
        let (ann, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let mut tab_one = hub.subscribe(ann);
        let mut tab_two = hub.subscribe(ann);
        let mut other = hub.subscribe(bob);
        hub.publish(ann, "hello").await;
        assert_eq!(&*tab_one.recv().await.unwrap(), "hello");
        assert_eq!(&*tab_two.recv().await.unwrap(), "hello");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), other.recv())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn the_last_closed_connection_frees_its_user() {
        let hub = Realtime::in_process();
        let ann = Uuid::now_v7();
        let one = hub.subscribe(ann);
        let two = hub.subscribe(ann);
        assert_eq!(hub.local_users(), 1);
        drop(one);
        assert_eq!(hub.local_users(), 1);
        drop(two);
        assert_eq!(hub.local_users(), 0);
        // Publishing to nobody is fine.
        hub.publish(ann, "into the void").await;
    }

    #[tokio::test]
    async fn a_slow_connection_learns_it_lagged() {
        let hub = Realtime::in_process();
        let ann = Uuid::now_v7();
        let mut slow = hub.subscribe(ann);
        for i in 0..BUFFER + 10 {
            hub.publish(ann, i.to_string()).await;
        }
        assert_eq!(slow.recv().await, Err(Missed::Lagged(10)));
    }

    #[tokio::test]
    async fn a_waiting_subscription_wakes_for_the_next_event() {
        let hub = Realtime::in_process();
        let ann = Uuid::now_v7();
        let mut tab = hub.subscribe(ann);
        let waiting = tokio::spawn(async move { tab.recv().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        hub.publish(ann, "later").await;
        let woken = tokio::time::timeout(Duration::from_secs(2), waiting).await;
        assert_eq!(&*woken.unwrap().unwrap().unwrap(), "later");
    }

    #[tokio::test]
    async fn a_drained_subscription_gives_back_what_a_burst_took() {
        let hub = Realtime::in_process();
        let ann = Uuid::now_v7();
        let mut tab = hub.subscribe(ann);
        for i in 0..500 {
            hub.publish(ann, i.to_string()).await;
        }
        for i in 0..500 {
            assert_eq!(*tab.recv().await.unwrap(), *i.to_string());
        }
        let capacity = tab.queue.events.lock().unwrap().capacity();
        assert!(
            capacity <= IDLE_CAPACITY,
            "an idle queue keeps {capacity} slots"
        );
    }

    #[tokio::test]
    async fn a_subscription_whose_hub_is_gone_learns_it_is_closed() {
        let hub = Realtime::in_process();
        let mut tab = hub.subscribe(Uuid::now_v7());
        let waiting = tokio::spawn(async move { tab.recv().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(hub);
        let ended = tokio::time::timeout(Duration::from_secs(2), waiting).await;
        assert_eq!(ended.unwrap().unwrap(), Err(Missed::Closed));
    }

    /// Real Redis (`REDIS_URL`, else the local default), as the integration tests use.
    fn redis_url() -> String {
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
    }

    #[tokio::test]
    async fn an_instance_not_yet_subscribed_delivers_its_own_events_and_still_publishes() {
        let url = redis_url();
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut others = client.get_async_pubsub().await.unwrap();
        others.subscribe(CHANNEL).await.unwrap();
        let mut others = others.into_on_message();

        // No listener runs for this hub: it is never subscribed, as after Redis came back
        // and before its listener reconnected.
        let hub = Realtime::build(Some(super::super::redis::pool(&url).unwrap()), None);
        let ann = Uuid::now_v7();
        let mut tab = hub.subscribe(ann);
        hub.publish(ann, "while reconnecting").await;
        let here = tokio::time::timeout(Duration::from_secs(2), tab.recv()).await;
        assert_eq!(&*here.unwrap().unwrap(), "while reconnecting");
        let expected = format!("{ann}\nwhile reconnecting");
        let heard = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(message) = others.next().await {
                if message.get_payload_bytes() == expected.as_bytes() {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(heard, Ok(true), "other instances heard it through Redis");

        // Once subscribed, an event arrives once: through Redis only.
        let hub = Realtime::with_redis(&url, super::super::redis::pool(&url).unwrap()).unwrap();
        hub.listening().await;
        let mut tab = hub.subscribe(ann);
        hub.publish(ann, "subscribed").await;
        let first = tokio::time::timeout(Duration::from_secs(2), tab.recv()).await;
        assert_eq!(&*first.unwrap().unwrap(), "subscribed");
        let again = tokio::time::timeout(Duration::from_millis(200), tab.recv()).await;
        assert!(again.is_err(), "delivered twice: {again:?}");
    }

    /// Publishes from many callers at once share pipelines; each caller's events still
    /// arrive, once each and in the order it sent them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_publishes_through_redis_arrive_once_and_in_order() {
        const CALLERS: usize = 20;
        const EACH: usize = 50;
        let url = redis_url();
        let hub = Realtime::with_redis(&url, super::super::redis::pool(&url).unwrap()).unwrap();
        hub.listening().await;
        let ann = Uuid::now_v7();
        let mut tab = hub.subscribe(ann);
        let callers: Vec<_> = (0..CALLERS)
            .map(|caller| {
                let hub = hub.clone();
                tokio::spawn(async move {
                    for i in 0..EACH {
                        hub.publish(ann, format!("{caller}:{i}")).await;
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
        let mut next = vec![0usize; CALLERS];
        for _ in 0..CALLERS * EACH {
            let event = tokio::time::timeout(Duration::from_secs(5), tab.recv())
                .await
                .unwrap()
                .unwrap();
            let (caller, i) = event.split_once(':').unwrap();
            let (caller, i): (usize, usize) = (caller.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[caller], "caller {caller} out of order");
            next[caller] += 1;
        }
        assert!(next.iter().all(|&n| n == EACH), "{next:?}");
        let extra = tokio::time::timeout(Duration::from_millis(200), tab.recv()).await;
        assert!(extra.is_err(), "delivered twice: {extra:?}");
    }
}
