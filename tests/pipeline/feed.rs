//! `GET /events`: every order's changes, live. In one process and with the
//! API, the inventory service and the notifier each a process of its own on
//! PostgreSQL (a second API replica sees the first's orders move); a status
//! filter; resuming after a change with `Last-Event-ID`, and `reset` when
//! the change resumed from is not kept.

use crate::helpers::{order, Client, Env, Server, SseEvent, SETTLE};

/// Events of the stream about `id`, until it reaches `completed`.
async fn until_completed(stream: &mut crate::helpers::EventStream, id: &str) -> Vec<SseEvent> {
    let mut seen = Vec::new();
    while let Some(event) = stream.next(SETTLE).await {
        if event.data["order_id"] == id {
            let done = event.data["status"] == "completed";
            seen.push(event);
            if done {
                break;
            }
        }
    }
    seen
}

fn statuses(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.data["status"].as_str().unwrap()).collect()
}

async fn place(client: &Client) -> String {
    client.place(&order("feed", &[("kite", 1)])).await
}

#[tokio::test]
async fn the_feed_shows_every_change_and_resumes() {
    let env = Env::embedded();
    env.set_stock("kite", 10);
    let server = Server::start(&env, "run", &[]).await;
    let c = &server.client;
    let mut all = c.feed("", None).await;
    let mut done = c.feed("status=completed,rejected", None).await;
    let id = place(c).await;
    let seen = until_completed(&mut all, &id).await;
    assert_eq!(statuses(&seen), ["placed", "reserved", "completed"], "{seen:?}");
    assert!(seen.iter().all(|e| e.kind == "status" && e.id.ends_with(&id)), "{seen:?}");
    assert!(seen[1].id.contains("-reserved-"), "{:?}", seen[1]);
    let only = until_completed(&mut done, &id).await;
    assert_eq!(statuses(&only), ["completed"]);

    // Resumed after `placed`: the rest, once each.
    let mut resumed = c.feed("", Some(&seen[0].id)).await;
    let rest = until_completed(&mut resumed, &id).await;
    assert_eq!(statuses(&rest), ["reserved", "completed"]);
    assert_eq!(rest[0].id, seen[1].id, "ids are the same on every read");

    // A change no longer kept: `reset` first.
    let mut lost = c.feed("", Some("1-placed-0190f1de-0000-7000-8000-000000000000")).await;
    let first = lost.next(SETTLE).await.unwrap();
    assert_eq!(first.kind, "reset", "{first:?}");

    let (status, body) = c.get("/events?status=lost").await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_status")));
}

#[tokio::test]
async fn the_feed_learns_of_other_processes_commits() {
    let Some(env) = Env::postgres(false) else { return };
    env.set_stock("kite", 10);
    let (a, b) = (Server::start(&env, "api", &[]).await, Server::start(&env, "api", &[]).await);
    let mut on_a = a.client.feed("", None).await;
    let mut on_b = b.client.feed("", None).await;
    let _workers = [Server::start(&env, "inventory", &[]).await, Server::start(&env, "notifier", &[]).await];
    let id = place(&a.client).await;
    let seen_a = until_completed(&mut on_a, &id).await;
    let seen_b = until_completed(&mut on_b, &id).await;
    assert_eq!(statuses(&seen_a), ["placed", "reserved", "completed"], "{seen_a:?}");
    assert_eq!(statuses(&seen_b), ["placed", "reserved", "completed"], "the other replica: {seen_b:?}");
    let ids = |events: &[SseEvent]| events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&seen_a), ids(&seen_b), "the same ids on every replica");
}
