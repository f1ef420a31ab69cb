//! Live status over Server-Sent Events (`GET /orders/{id}/events`): a stream
//! follows an order moved by workers in other processes, resumes after a cut
//! without gaps or repeats, refuses streams past the process's limit, leaves
//! the pipeline unhurt by clients that never read, and holds a thousand
//! streams on one process. What every mode shows of a stream is in
//! `contract::live_status`.

use crate::helpers::{allow_descriptors, order, rss_anon_kib, Env, Server, SETTLE};
use std::io::Write;
use tokio::io::AsyncWriteExt;

fn statuses(events: &[crate::helpers::SseEvent]) -> Vec<String> {
    events.iter().map(|e| e.data["status"].as_str().unwrap().to_owned()).collect()
}

/// The API alone first, so the order waits: its stream shows `placed`, is
/// cut, resumes with `Last-Event-ID: 1`, and then sees the inventory service
/// and the notifier, started as processes of their own, move the order, until
/// a cancel ends it.
#[tokio::test]
async fn a_stream_follows_an_order_that_other_processes_move() {
    let Some(env) = Env::postgres(false) else { return };
    env.set_stock("lamp", 5);
    let api = Server::start(&env, "api", &[]).await;
    let id = api.client.place(&order("live", &[("lamp", 1)])).await;
    let mut stream = api.client.events(&id, None).await;
    let first = stream.next(SETTLE).await.expect("the current status");
    assert_eq!((first.id.as_str(), first.data["status"].as_str()), ("1", Some("placed")));
    assert_eq!(first.data["order_id"], id.as_str());
    drop(stream);

    let mut resumed = api.client.events(&id, Some("1")).await;
    let _workers = [Server::start(&env, "inventory", &[]).await, Server::start(&env, "notifier", &[]).await];
    let mut rest = Vec::new();
    for _ in 0..2 {
        rest.push(resumed.next(SETTLE).await.expect("a completed order's stream goes on"));
    }
    // A cancel, from the API's process, is the final status that ends it.
    assert_eq!(api.client.cancel(&id).await.0, 200);
    rest.extend(resumed.rest(SETTLE).await);
    assert_eq!(statuses(&rest), ["reserved", "completed", "cancelled"], "{rest:?}");
    assert_eq!(rest.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["2", "3", "4"]);
    assert!(rest.iter().all(|e| e.data["at"].as_str().is_some_and(|at| at.ends_with('Z'))), "{rest:?}");
}

/// Past `--max-streams` a stream is refused with 503 and Retry-After; when
/// one ends, its place is free again.
#[tokio::test]
async fn streams_past_the_limit_are_refused() {
    let env = Env::embedded();
    // The API alone: orders stay placed, so their streams stay open.
    let api = Server::start(&env, "api", &["--max-streams", "2"]).await;
    let id = api.client.place(&order("busy", &[("pen", 1)])).await;
    let a = api.client.events(&id, None).await;
    let _b = api.client.events(&id, None).await;
    let refused = api.client.http.get(api.client.url(&format!("/orders/{id}/events"))).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_streams");
    drop(a);
    crate::helpers::eventually(SETTLE, "the ended stream's place free", || async {
        let response = api.client.http.get(api.client.url(&format!("/orders/{id}/events"))).send().await.unwrap();
        response.status() == 200
    })
    .await;
}

/// Two hundred streams whose clients never read a byte, held while 300
/// orders go through: every order completes (the streams cannot hold the
/// pipeline up, whatever their clients do).
#[tokio::test]
async fn clients_that_never_read_do_not_hold_up_the_pipeline() {
    let env = Env::embedded();
    env.set_stock("gadget", 1000);
    let server = Server::start(&env, "run", &[]).await;
    let first = server.client.place(&order("slow", &[("gadget", 1)])).await;
    let addr = server.client.url("").trim_start_matches("http://").to_owned();
    let mut silent = Vec::new();
    for _ in 0..200 {
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let request = format!("GET /orders/{first}/events HTTP/1.1\r\nHost: orderflow\r\n\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        silent.push(socket);
    }
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let c = server.client.clone();
            tokio::spawn(async move { c.place(&order(&format!("busy{i}"), &[("gadget", 1)])).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let done = server.client.wait_terminal(&ids, SETTLE).await;
    assert!(done.iter().all(|o| o["status"] == "completed"));
    drop(silent);
}

/// A thousand streams on one API process, each on an order that waits, then
/// moved by workers in another process on the same SQLite file (no signal
/// crosses: the process reads the watched orders every second): every
/// stream sees its order complete. Prints the memory each stream
/// took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_streams_on_one_process() {
    const STREAMS: usize = 1000;
    allow_descriptors(2 * STREAMS as u64 + 1024);
    let env = Env::embedded();
    env.set_stock("pen", STREAMS as i64);
    let api = Server::start(&env, "api", &[]).await;
    let mut ids = Vec::new();
    for i in 0..STREAMS {
        ids.push(api.client.place(&order(&format!("watcher{i}"), &[("pen", 1)])).await);
    }
    let before = rss_anon_kib(api.pid());
    let mut streams = Vec::new();
    for id in &ids {
        // One connection per stream, as browsers would hold them.
        let client = crate::helpers::Client::new(api.client.url("").trim_start_matches("http://"));
        let mut stream = client.events(id, None).await;
        assert_eq!(stream.next(SETTLE).await.expect("placed").data["status"], "placed");
        streams.push(stream);
    }
    let after = rss_anon_kib(api.pid());
    let per_stream = (after.saturating_sub(before) as f64) * 1024.0 / STREAMS as f64;
    let _ = writeln!(
        std::io::stderr(),
        "{STREAMS} streams: RssAnon {before} KiB before, {after} KiB after, {per_stream:.0} bytes per stream"
    );

    let _workers = Server::start(&env, "run", &[]).await;
    let endings = streams.into_iter().map(|mut stream| {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..2 {
                seen.push(stream.next(SETTLE).await.expect("a status").data["status"].clone());
            }
            seen
        })
    });
    for ending in endings {
        let seen: Vec<serde_json::Value> = ending.await.unwrap();
        assert_eq!(seen, ["reserved", "completed"], "each stream saw its order complete");
    }
}
