//! One W3C trace per order: the API's `traceparent` header, the trace in
//! every log line about an order in every process, and the spans exported
//! over OTLP to a receiver the test runs.

use super::helpers::{order, Env, Mode, Server, SETTLE};
use axum::body::Bytes;
use axum::extract::State;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn client_traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_ID}-01")
}

/// A `traceparent` as the specification writes it: (trace id, parent id).
fn parse(value: &str) -> (String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!((parts[0], parts[3]), ("00", "01"), "{value}");
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    assert!(hex(parts[1], 32) && parts[1] != "0".repeat(32), "{value}");
    assert!(hex(parts[2], 16) && parts[2] != "0".repeat(16), "{value}");
    (parts[1].to_owned(), parts[2].to_owned())
}

async fn answer_trace(app: &Server, method: reqwest::Method, path: &str, sent: Option<&str>) -> (String, String) {
    let mut req = app.client.http.request(method.clone(), app.client.url(path));
    if method == reqwest::Method::POST {
        req = req.json(&order("tracer", &[("tea", 1)]));
    }
    if let Some(value) = sent {
        req = req.header("traceparent", value);
    }
    let resp = req.send().await.expect("request");
    let value = resp.headers().get("traceparent").unwrap_or_else(|| panic!("{method} {path}: no traceparent"));
    parse(value.to_str().unwrap())
}

#[tokio::test]
async fn every_response_carries_the_requests_trace() {
    let env = Env::embedded();
    let app = Server::start(&env, "run", &[]).await;
    let sent = client_traceparent();

    let (trace, parent) = answer_trace(&app, reqwest::Method::POST, "/orders", Some(&sent)).await;
    assert_eq!(trace, TRACE_ID, "the client's trace is joined");
    assert_ne!(parent, PARENT_ID, "the response names the server's own span");
    let (trace, _) = answer_trace(&app, reqwest::Method::GET, "/no/such/route", Some(&sent)).await;
    assert_eq!(trace, TRACE_ID, "an error answer is in the trace too");

    let (fresh, _) = answer_trace(&app, reqwest::Method::GET, "/health", None).await;
    let (other, _) = answer_trace(&app, reqwest::Method::GET, "/health", None).await;
    assert_ne!(fresh, other, "each request without a traceparent starts its own trace");

    for invalid in [
        "garbage",
        &format!("00-{}-{PARENT_ID}-01", "0".repeat(32)),
        &format!("00-{}-{PARENT_ID}-01", TRACE_ID.to_uppercase()),
        &format!("ff-{TRACE_ID}-{PARENT_ID}-01"),
    ] {
        let (trace, _) = answer_trace(&app, reqwest::Method::GET, "/health", Some(invalid)).await;
        assert_ne!(trace, TRACE_ID, "{invalid} is ignored: a new trace is started");
    }

    // The order keeps the trace it was placed in.
    let resp = app
        .client
        .http
        .post(app.client.url("/orders"))
        .header("traceparent", &sent)
        .json(&order("tracer", &[("tea", 1)]))
        .send()
        .await
        .unwrap();
    let id = resp.json::<Value>().await.unwrap()["order_id"].as_str().unwrap().to_owned();
    let (status, body) = app.client.get(&format!("/orders/{id}")).await;
    assert_eq!((status, body["trace_id"].as_str()), (200, Some(TRACE_ID)), "{body}");
}

/// Every `trace_id` a JSON log line carries, in its fields or its spans.
fn trace_ids(line: &Value, found: &mut Vec<String>) {
    match line {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("trace_id", Value::String(s)) => found.push(s.clone()),
                    _ => trace_ids(v, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| trace_ids(v, found)),
        _ => {}
    }
}

/// The lines of `log` that name `order_id`; each must carry `trace` and no other.
fn lines_about(log: &str, order_id: &str, trace: &str, process: &str) -> usize {
    let mut about = 0;
    for line in log.lines().filter(|l| l.contains(order_id)) {
        let json: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("{process}: not JSON: {line}"));
        let mut found = Vec::new();
        trace_ids(&json, &mut found);
        assert!(!found.is_empty(), "{process}: a line about the order without its trace: {line}");
        assert!(found.iter().all(|t| t == trace), "{process}: a line in another trace: {line}");
        about += 1;
    }
    about
}

/// Waits until the order is completed, asking in the order's trace.
async fn wait_completed(api: &Server, id: &str, traceparent: &str) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let resp = api.client.http.get(api.client.url(&format!("/orders/{id}"))).header("traceparent", traceparent);
        let body: Value = resp.send().await.unwrap().json().await.unwrap();
        if body["status"] == "completed" {
            return;
        }
        assert!(Instant::now() < deadline, "order {id} not completed: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn one_trace_in_every_log(mode: Mode) {
    let Some(env) = mode.env() else { return };
    env.set_stock("tea", 10);
    let vars = [("ORDERFLOW_LOG_FORMAT", "json"), ("RUST_LOG", "info,orderflow=debug,tower_http=debug")];
    let args = ["--max-attempts", "3"];
    let api = Server::start_with(&env, "api", &args, &vars).await;
    let inventory = Server::start_with(&env, "inventory", &args, &vars).await;
    let notifier = Server::start_with(&env, "notifier", &args, &vars).await;

    let sent = client_traceparent();
    let resp =
        api.client.post_traced("/orders", &order("tracer", &[("tea", 2)]), &sent).await.json::<Value>().await.unwrap();
    let id = resp["order_id"].as_str().unwrap().to_owned();
    wait_completed(&api, &id, &sent).await;
    // Another order, in a trace of its own, goes through at the same time.
    let other = api.client.place(&order("someone", &[("tea", 1)])).await;
    wait_completed(&api, &other, &client_traceparent().replace(TRACE_ID, &"ab".repeat(16))).await;

    // The notification line is written after the commit: wait for it.
    super::helpers::eventually(SETTLE, "the notification is logged", || {
        let log = notifier.log();
        let id = id.clone();
        async move { log.lines().any(|l| l.contains(&id) && l.contains("notification")) }
    })
    .await;
    for (name, process) in [("api", &api), ("inventory", &inventory), ("notifier", &notifier)] {
        let n = lines_about(&process.log(), &id, TRACE_ID, name);
        assert!(n > 0, "{name} logged nothing about the order:\n{}", process.log());
    }
}

#[tokio::test]
async fn one_trace_in_every_log_postgres_rabbitmq() {
    one_trace_in_every_log(Mode::PostgresRabbitmq).await;
}

#[tokio::test]
async fn one_trace_in_every_log_postgres_redis() {
    one_trace_in_every_log(Mode::PostgresRedis).await;
}

/// A span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_id: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OTLP/HTTP receiver: decodes each protobuf export and keeps its spans.
async fn receive(State(spans): State<Arc<Mutex<Vec<Received>>>>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut kept = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            kept.push(Received {
                service: service.clone(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_id: hex(&span.parent_span_id),
            });
        }
    }
    ""
}

#[tokio::test]
async fn spans_of_every_process_reach_an_otlp_receiver() {
    let Some(env) = Mode::PostgresRedis.env() else { return };
    env.set_stock("tea", 10);
    let spans = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let receiver = axum::Router::new().route("/v1/traces", axum::routing::post(receive)).with_state(spans.clone());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let vars = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let args = ["--max-attempts", "3"];
    let api = Server::start_with(&env, "api", &args, &vars).await;
    let _inventory = Server::start_with(&env, "inventory", &args, &vars).await;
    let notifier_vars = [vars[0], vars[1], ("OTEL_SERVICE_NAME", "tells-customers")];
    let _notifier = Server::start_with(&env, "notifier", &args, &notifier_vars).await;

    let sent = client_traceparent();
    let resp = api.client.post_traced("/orders", &order("tracer", &[("tea", 2)]), &sent).await;
    let (_, server_span) = parse(resp.headers()["traceparent"].to_str().unwrap());
    let id = resp.json::<Value>().await.unwrap()["order_id"].as_str().unwrap().to_owned();
    wait_completed(&api, &id, &sent).await;

    let find = |service: &str, name: &str, parent: &str| {
        spans
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.service == service && s.name == name && s.trace_id == TRACE_ID && s.parent_id == parent)
            .cloned()
    };
    let deadline = Instant::now() + SETTLE;
    let (request, inventory, notifier) = loop {
        let request = find("orderflow-api", "request", PARENT_ID).filter(|s| s.span_id == server_span);
        let inventory = find("orderflow-inventory", "event", &server_span);
        let notifier = inventory.as_ref().and_then(|i| find("tells-customers", "event", &i.span_id));
        // The API's process relays the outbox: the order's event, then the
        // inventory service's, each in a span whose parent sent the event.
        let relayed = find("orderflow-api", "relay", &server_span);
        let relayed_on = inventory.as_ref().and_then(|i| find("orderflow-api", "relay", &i.span_id));
        if let (Some(r), Some(i), Some(n), Some(_), Some(_)) = (request, inventory, notifier, relayed, relayed_on) {
            break (r, i, n);
        }
        assert!(Instant::now() < deadline, "spans missing; received: {:#?}", spans.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // api -> inventory -> notifier, each in the client's trace.
    assert_eq!(inventory.parent_id, request.span_id);
    assert_eq!(notifier.parent_id, inventory.span_id);
}
