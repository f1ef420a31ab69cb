//! Bad input gets a 4xx with a JSON error naming the problem, and stores nothing.

use crate::helpers::{Env, Server};
use serde_json::{json, Value};

async fn send(server: &Server, content_type: Option<&str>, body: Vec<u8>, key: Option<&str>) -> (u16, Value) {
    let mut req = server.client.http.post(server.client.url("/orders")).body(body);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn items(n: usize) -> Value {
    json!({ "customer_id": "v", "items": vec![json!({"sku": "a", "quantity": 1}); n] })
}

#[tokio::test]
async fn bad_orders_are_refused_and_store_nothing() {
    let env = Env::embedded();
    let server = Server::start(&env, "run", &[]).await;
    let sku = |s: String| json!({ "customer_id": "v", "items": [{"sku": s, "quantity": 1}] });
    let qty = |q: Value| json!({ "customer_id": "v", "items": [{"sku": "a", "quantity": q}] });
    // (what, content type, body, expected status, expected error code)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("malformed json", Some("application/json"), b"{\"customer_id\": ".to_vec(), 400, "malformed_json"),
        ("not an object", Some("application/json"), b"[1, 2]".to_vec(), 422, "invalid_field"),
        ("text content type", Some("text/plain"), items(1).to_string().into_bytes(), 415, "unsupported_media_type"),
        ("no content type", None, items(1).to_string().into_bytes(), 415, "unsupported_media_type"),
        (
            "no customer",
            Some("application/json"),
            br#"{"items":[{"sku":"a","quantity":1}]}"#.to_vec(),
            422,
            "missing_field",
        ),
        (
            "empty customer",
            Some("application/json"),
            br#"{"customer_id":" ","items":[{"sku":"a","quantity":1}]}"#.to_vec(),
            422,
            "invalid_customer_id",
        ),
        ("no items", Some("application/json"), br#"{"customer_id":"v"}"#.to_vec(), 422, "missing_field"),
        ("empty items", Some("application/json"), br#"{"customer_id":"v","items":[]}"#.to_vec(), 422, "empty_items"),
        (
            "item without sku",
            Some("application/json"),
            br#"{"customer_id":"v","items":[{"quantity":1}]}"#.to_vec(),
            422,
            "missing_field",
        ),
        (
            "item without quantity",
            Some("application/json"),
            br#"{"customer_id":"v","items":[{"sku":"a"}]}"#.to_vec(),
            422,
            "missing_field",
        ),
        ("quantity 0", Some("application/json"), qty(json!(0)).to_string().into_bytes(), 422, "invalid_quantity"),
        ("quantity -1", Some("application/json"), qty(json!(-1)).to_string().into_bytes(), 422, "invalid_quantity"),
        (
            "quantity 10001",
            Some("application/json"),
            qty(json!(10001)).to_string().into_bytes(),
            422,
            "invalid_quantity",
        ),
        ("quantity as text", Some("application/json"), qty(json!("2")).to_string().into_bytes(), 422, "invalid_field"),
        ("quantity fraction", Some("application/json"), qty(json!(1.5)).to_string().into_bytes(), 422, "invalid_field"),
        ("101 items", Some("application/json"), items(101).to_string().into_bytes(), 422, "too_many_items"),
        ("empty sku", Some("application/json"), sku(String::new()).to_string().into_bytes(), 422, "invalid_sku"),
        ("blank sku", Some("application/json"), sku("   ".into()).to_string().into_bytes(), 422, "invalid_sku"),
        (
            "65-character sku",
            Some("application/json"),
            sku("s".repeat(65)).to_string().into_bytes(),
            422,
            "invalid_sku",
        ),
        (
            "short form without quantity",
            Some("application/json"),
            br#"{"user_id":"v","item":"a"}"#.to_vec(),
            422,
            "missing_field",
        ),
        // Every field given is checked, and each form's fields stand alone, as
        // the description (docs/openapi.json) says.
        (
            "null field",
            Some("application/json"),
            br#"{"customer_id":"v","items":null,"item":"a","quantity":1}"#.to_vec(),
            422,
            "invalid_field",
        ),
        (
            "quantity beside items",
            Some("application/json"),
            br#"{"customer_id":"v","items":[{"sku":"a","quantity":1}],"quantity":1}"#.to_vec(),
            422,
            "ambiguous_items",
        ),
        (
            "bad user_id beside customer_id",
            Some("application/json"),
            br#"{"customer_id":"v","user_id":" ","items":[{"sku":"a","quantity":1}]}"#.to_vec(),
            422,
            "invalid_customer_id",
        ),
        (
            "body over 64 KiB",
            Some("application/json"),
            format!("{{\"customer_id\":\"{}\"}}", "x".repeat(70_000)).into_bytes(),
            413,
            "body_too_large",
        ),
    ];
    for (what, content_type, body, want_status, want_code) in cases {
        let (status, err) = send(&server, content_type, body, None).await;
        assert_eq!(status, want_status, "{what}: {err}");
        assert_eq!(err["error"]["code"], want_code, "{what}: {err}");
        assert!(!err["error"]["message"].as_str().unwrap_or("").is_empty(), "{what}: a message for people");
    }
    let (status, err) =
        send(&server, Some("application/json"), items(1).to_string().into_bytes(), Some(&"k".repeat(300))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (400, Some("invalid_idempotency_key")));
    assert!(server.client.orders_of("v").await.is_empty(), "nothing was stored");

    // The limits themselves are allowed, and a whole number written `2.0`
    // is one, as JSON Schema counts it.
    for ok in [items(100), qty(json!(10000)), sku("s".repeat(64)), qty(json!(2.0))] {
        let (status, body) =
            send(&server, Some("application/json; charset=utf-8"), ok.to_string().into_bytes(), None).await;
        assert_eq!(status, 202, "{body}");
    }
    assert_eq!(server.client.orders_of("v").await.len(), 4);
}

#[tokio::test]
async fn bad_reads_are_4xx() {
    let env = Env::embedded();
    let server = Server::start(&env, "run", &[]).await;
    let c = &server.client;
    let cases = [
        ("/orders/not-a-uuid", 400, "invalid_order_id"),
        ("/orders/01a20dcc-ed95-73de-9ffd-b371688b9090", 404, "not_found"),
        ("/order/get/xyz", 400, "invalid_order_id"),
        ("/orders?limit=0", 400, "invalid_limit"),
        ("/orders?limit=1001", 400, "invalid_limit"),
        ("/orders?limit=ten", 400, "invalid_limit"),
        ("/orders?status=delivered", 400, "invalid_status"),
        ("/orders?status=", 400, "invalid_status"),
        ("/orders?limit=", 400, "invalid_limit"),
        ("/orders?cursor=garbage", 400, "invalid_cursor"),
        ("/nowhere", 404, "not_found"),
    ];
    for (path, want_status, want_code) in cases {
        let (status, body) = c.get(path).await;
        assert_eq!((status, body["error"]["code"].as_str()), (want_status, Some(want_code)), "{path}: {body}");
    }
    let (status, _) = c.get("/orders?limit=1000").await;
    assert_eq!(status, 200);
}
