//! `platform::realtime` across instances: two hubs sharing one real Redis behave like two
//! server processes, each with its own subscribers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use companion::platform::realtime::Realtime;
use companion::platform::redis;
use uuid::Uuid;

fn hub(url: &str) -> Realtime {
    Realtime::with_redis(url, redis::pool(url).unwrap()).unwrap()
}

#[tokio::test]
async fn an_event_published_on_one_instance_reaches_the_users_connections_on_all() {
    let url = support::redis_url();
    let (a, b) = (hub(&url), hub(&url));
    a.listening().await;
    b.listening().await;
    let (ann, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let mut on_a = a.subscribe(ann);
    let mut on_b = b.subscribe(ann);
    let mut bob_on_a = a.subscribe(bob);

    b.publish(ann, r#"{"type":"token","delta":"Hi"}"#).await;
    for subscription in [&mut on_a, &mut on_b] {
        let event = tokio::time::timeout(Duration::from_secs(5), subscription.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&*event, r#"{"type":"token","delta":"Hi"}"#);
    }
    // Events keep their order, and other users hear nothing.
    for i in 0..50 {
        a.publish(ann, i.to_string()).await;
    }
    for i in 0..50 {
        assert_eq!(&*on_b.recv().await.unwrap(), i.to_string());
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(100), bob_on_a.recv())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn when_redis_is_unreachable_events_still_reach_this_instance() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", closed.local_addr().unwrap());
    drop(closed);
    let hub = hub(&url);
    let ann = Uuid::now_v7();
    let mut tab = hub.subscribe(ann);
    hub.publish(ann, "local").await;
    let event = tokio::time::timeout(Duration::from_secs(5), tab.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&*event, "local");
}
