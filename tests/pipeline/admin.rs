//! The operator routes over HTTP (`/admin/…`): off without
//! `ORDERFLOW_OPERATOR_TOKEN`, refused without the token (changing nothing),
//! and with it the same stock and dead-letter tools the CLI has, including
//! a bulk replay by filter with a dry run.

use crate::helpers::{eventually, Env, Server, SETTLE};
use serde_json::{json, Value};

const TOKEN: &str = "test-operator-token";

async fn call(server: &Server, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let c = &server.client;
    let mut request = c.http.request(method.parse().unwrap(), c.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("admin request");
    let status = response.status().as_u16();
    if status == 401 {
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    (status, response.json().await.unwrap_or(Value::Null))
}

const ROUTES: [(&str, &str); 4] = [
    ("GET", "/admin/stock"),
    ("PUT", "/admin/stock/tea"),
    ("GET", "/admin/dead-letters"),
    ("POST", "/admin/dead-letters/replay"),
];

#[tokio::test]
async fn admin_routes_are_off_without_the_variable() {
    let env = Env::embedded();
    let server = Server::start(&env, "run", &[]).await;
    for (method, path) in ROUTES {
        let (status, body) = call(&server, method, path, Some(TOKEN), Some(json!({"available": 1}))).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("admin_disabled")), "{method} {path}");
        assert!(body["error"]["message"].as_str().unwrap().contains("ORDERFLOW_OPERATOR_TOKEN"), "{body}");
    }
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_and_changes_nothing() {
    let env = Env::embedded();
    env.set_stock("tea", 7);
    let server = Server::start_with(&env, "run", &[], &[("ORDERFLOW_OPERATOR_TOKEN", TOKEN)]).await;
    for token in [None, Some("wrong"), Some("")] {
        for (method, path) in ROUTES {
            let (status, body) = call(&server, method, path, token, Some(json!({"available": 1}))).await;
            assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "{method} {path}");
        }
    }
    assert_eq!(env.stock("tea"), (7, 0), "a refused request changed the stock");
}

#[tokio::test]
async fn stock_is_read_and_set_with_the_token() {
    let env = Env::embedded();
    env.set_stock("tea", 7);
    let server = Server::start_with(&env, "run", &[], &[("ORDERFLOW_OPERATOR_TOKEN", TOKEN)]).await;
    // A whole number written 12.0 is the integer 12, as JSON Schema says.
    let (status, body) =
        call(&server, "PUT", "/admin/stock/coffee", Some(TOKEN), Some(json!({"available": 12.0}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"sku": "coffee", "available": 12, "reserved": 0, "shipped": 0}));
    let (status, body) = call(&server, "GET", "/admin/stock", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    let skus: Vec<&str> = body["stock"].as_array().unwrap().iter().map(|l| l["sku"].as_str().unwrap()).collect();
    assert_eq!(skus, ["coffee", "tea"]);
    assert_eq!(env.stock("coffee"), (12, 0), "the CLI sees what the route set");

    for (body, status, code) in [
        (json!({"available": -1}), 422, "invalid_field"),
        (json!({"available": 1.5}), 422, "invalid_field"),
        (json!({"available": "many"}), 422, "invalid_field"),
        (json!({"available": 1, "extra": 1}), 422, "invalid_field"),
        (json!({}), 422, "invalid_field"),
    ] {
        let (got, answer) = call(&server, "PUT", "/admin/stock/tea", Some(TOKEN), Some(body.clone())).await;
        assert_eq!((got, answer["error"]["code"].as_str()), (status, Some(code)), "{body}");
    }
    let (got, answer) = call(&server, "PUT", "/admin/stock/%20", Some(TOKEN), Some(json!({"available": 1}))).await;
    assert_eq!((got, answer["error"]["code"].as_str()), (422, Some("invalid_sku")));
    assert_eq!(env.stock("tea"), (7, 0), "a refused body changed the stock");
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_by_filter_or_id() {
    let env = Env::embedded();
    let server = Server::start_with(&env, "run", &[], &[("ORDERFLOW_OPERATOR_TOKEN", TOKEN)]).await;
    env.sql("INSERT INTO messages (queue, routing_key, body) VALUES ('order-events', 'order.placed', 'not json')");
    eventually(SETTLE, "the poison message dead-lettered", || async {
        let (_, body) = call(&server, "GET", "/admin/dead-letters", Some(TOKEN), None).await;
        body["dead_letters"].as_array().is_some_and(|l| l.len() == 1)
    })
    .await;
    let (_, body) = call(&server, "GET", "/admin/dead-letters?limit=5", Some(TOKEN), None).await;
    let letter = &body["dead_letters"][0];
    assert_eq!((letter["queue"].as_str(), letter["body"].as_str()), (Some("order-events"), Some("not json")));
    let id = letter["id"].as_str().unwrap().to_owned();
    // Matched case-insensitively: a piece of the error, shouted.
    let error_piece = letter["error"].as_str().unwrap().chars().take(8).collect::<String>().to_uppercase();

    // A filter that matches nothing, then a dry run that matches it: nothing moves.
    let replay = |body: Value| call(&server, "POST", "/admin/dead-letters/replay", Some(TOKEN), Some(body));
    let (status, none) = replay(json!({"queue": "inventory-events", "dry_run": true})).await;
    assert_eq!((status, none["matched"].as_u64()), (200, Some(0)), "{none}");
    let (_, dry) = replay(json!({"queue": "order-events", "error_contains": error_piece, "dry_run": true})).await;
    assert_eq!((dry["matched"].as_u64(), dry["replayed"].as_u64()), (Some(1), Some(0)), "{dry}");
    assert_eq!(dry["ids"], json!([id]));
    assert_eq!(env.dead_letters().len(), 1, "a dry run replayed");
    let (_, young) = replay(json!({"older_than_secs": 3600, "dry_run": true})).await;
    assert_eq!(young["matched"], 0, "a letter a second old is not an hour old: {young}");

    // Ids and a filter: the listed letters that match it.
    let (_, neither) = replay(json!({"ids": [id], "queue": "inventory-events", "dry_run": true})).await;
    assert_eq!(neither["matched"], 0, "{neither}");
    let (_, both) = replay(json!({"ids": [id], "queue": "order-events", "dry_run": true})).await;
    assert_eq!(both["matched"], 1, "{both}");
    let (_, by_id) = replay(json!({"ids": [id, "999999"]})).await;
    assert_eq!((by_id["replayed"].as_u64(), by_id["unknown_ids"].clone()), (Some(1), json!(["999999"])), "{by_id}");
    // Replayed, the poison is dead-lettered again, with a new id.
    eventually(SETTLE, "the replayed poison dead-lettered again", || async {
        env.dead_letters().iter().any(|l| l["id"] != id.as_str())
    })
    .await;
}
