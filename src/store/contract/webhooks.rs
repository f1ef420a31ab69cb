//! What every store promises about the webhook delivery queue (part of the
//! contract suite, `../contract.rs`): a delivery is queued with its
//! notification and only then, a claimed delivery is nobody else's until
//! its lease ends, and settling deletes, postpones or dead-letters it.

use super::{drain, order, Fixture};
use crate::domain::now_millis;
use crate::messaging::{QUEUE_INVENTORY_EVENTS, QUEUE_ORDER_EVENTS};
use crate::store::{Effect, WebhookOutcome};
use std::collections::HashSet;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);
const WITH_WEBHOOKS: Effect = Effect::Notify { webhooks: true };

pub async fn webhook_deliveries_are_queued_with_notifications_and_settled(db: &impl Fixture) {
    let store = db.store();
    store.set_stock("tea", 5).await.unwrap();
    let confirmed = store.place_order(order("c1", &[("tea", 1)], None)).await.unwrap().id;
    let rejected = store.place_order(order("c2", &[("cake", 1)], None)).await.unwrap().id;
    drain(&*store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10).await;
    drain(&*store, "notifier", QUEUE_INVENTORY_EVENTS, WITH_WEBHOOKS, 10).await;
    assert_eq!(store.webhooks_waiting().await.unwrap(), 2);

    let mut claimed = store.claim_webhooks(10, LONG).await.unwrap();
    claimed.sort_by_key(|d| d.body.contains("order.rejected"));
    assert_eq!(claimed.len(), 2);
    assert!(store.claim_webhooks(10, LONG).await.unwrap().is_empty(), "claimed deliveries are leased");
    assert!(db.another().await.claim_webhooks(10, LONG).await.unwrap().is_empty(), "in every process");

    // The id is the event the notification answered; the body is the order.
    let trail = store.order_trail(confirmed).await.unwrap();
    assert_eq!(claimed[0].id, trail.notifications[0].event_id);
    let body: serde_json::Value = serde_json::from_str(&claimed[0].body).unwrap();
    assert_eq!(body["type"], "order.confirmed");
    assert_eq!(body["data"]["order_id"], confirmed.to_string());
    assert_eq!(body["data"]["status"], "completed");
    let body: serde_json::Value = serde_json::from_str(&claimed[1].body).unwrap();
    assert_eq!(body["type"], "order.rejected");
    assert_eq!(body["data"]["order_id"], rejected.to_string());
    assert_eq!(body["data"]["status"], "rejected");
    assert_eq!(body["data"]["reason"], "unknown_sku:cake");

    store.settle_webhook(&claimed[0].id, WebhookOutcome::Delivered).await.unwrap();
    assert_eq!(store.webhooks_waiting().await.unwrap(), 1);
    let (id, first_body) = (claimed[1].id.clone(), claimed[1].body.clone());
    let retry = WebhookOutcome::Retry { at: now_millis() - 1, error: "HTTP 503".into() };
    store.settle_webhook(&id, retry).await.unwrap();
    let again = store.claim_webhooks(10, LONG).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id.as_str(), again[0].attempts, again[0].body.as_str()), (id.as_str(), 1, &*first_body));

    store.settle_webhook(&id, WebhookOutcome::Dead { error: "HTTP 400".into() }).await.unwrap();
    assert_eq!(store.webhooks_waiting().await.unwrap(), 0);
    let dead = store.webhook_dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].id.as_str(), dead[0].attempts, dead[0].error.as_str()), (id.as_str(), 2, "HTTP 400"));
    assert_eq!(dead[0].body["type"], "order.rejected");
    // Settling again (a process whose lease had ended) changes nothing.
    store.settle_webhook(&id, WebhookOutcome::Delivered).await.unwrap();
    assert_eq!(store.webhook_dead_letters(10).await.unwrap().len(), 1);

    assert_eq!(store.replay_webhooks(Some("no-such-id".into())).await.unwrap(), 0);
    assert_eq!(store.replay_webhooks(Some(id.clone())).await.unwrap(), 1);
    assert!(store.webhook_dead_letters(10).await.unwrap().is_empty());
    let replayed = store.claim_webhooks(10, LONG).await.unwrap();
    assert_eq!((replayed[0].id.as_str(), replayed[0].attempts), (id.as_str(), 0), "same id, attempts afresh");
    assert_eq!(replayed[0].body, first_body);

    // Without webhooks, a notification queues nothing.
    let quiet = store.place_order(order("c3", &[("tea", 1)], None)).await.unwrap().id;
    drain(&*store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 10).await;
    drain(&*store, "notifier", QUEUE_INVENTORY_EVENTS, Effect::Notify { webhooks: false }, 10).await;
    assert_eq!(store.order_trail(quiet).await.unwrap().notifications.len(), 1);
    assert_eq!(store.webhooks_waiting().await.unwrap(), 1, "only the replayed one");
}

pub async fn competing_claims_split_deliveries_and_an_ended_lease_frees_them(db: &impl Fixture) {
    let (store, other) = (db.store(), db.another().await);
    store.set_stock("tea", 100).await.unwrap();
    for _ in 0..20 {
        store.place_order(order("c", &[("tea", 1)], None)).await.unwrap();
    }
    drain(&*store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 50).await;
    drain(&*store, "notifier", QUEUE_INVENTORY_EVENTS, WITH_WEBHOOKS, 50).await;

    let mut seen = HashSet::new();
    let mut total = 0;
    loop {
        let (a, b) = tokio::join!(store.claim_webhooks(3, LONG), other.claim_webhooks(3, LONG));
        let (a, b) = (a.unwrap(), b.unwrap());
        if a.is_empty() && b.is_empty() {
            break;
        }
        total += a.len() + b.len();
        seen.extend(a.into_iter().chain(b).map(|d| d.id));
    }
    assert_eq!((total, seen.len()), (20, 20), "each delivery claimed once");

    // A process that claimed and died: once its lease ends, another takes them.
    let again = store.place_order(order("c", &[("tea", 1)], None)).await.unwrap().id;
    drain(&*store, "inventory", QUEUE_ORDER_EVENTS, Effect::Reserve, 50).await;
    drain(&*store, "notifier", QUEUE_INVENTORY_EVENTS, WITH_WEBHOOKS, 50).await;
    let short = store.claim_webhooks(10, Duration::from_millis(1)).await.unwrap();
    assert_eq!(short.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let retaken = other.claim_webhooks(10, LONG).await.unwrap();
    assert_eq!(retaken.len(), 1, "the lease ended");
    assert_eq!(retaken[0].id, short[0].id);
    assert!(retaken[0].body.contains(&again.to_string()));
}
