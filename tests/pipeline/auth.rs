//! Customers' tokens (`--auth jwt`): every customer route needs one, a bad
//! one is `401` and changes nothing, and a customer reads, lists, streams
//! and sees in the feed only their own orders (another's is `404`); the
//! body may not name another customer (`403`); idempotency keys are each
//! customer's own; RS256 and ES256 public keys work like an HS256 secret;
//! the operator token sees everything; a key that cannot verify stops the
//! process at start; and with authentication off nothing changed.

use crate::helpers::{order, Env, EventStream, Server, BIN, SETTLE};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

const SECRET: &str = "a test secret of at least 32 bytes, for HS256";
const OPERATOR: &str = "auth-test-operator-token";

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A token for `sub`, valid for five minutes, signed with HS256 and `SECRET`.
fn token(sub: &str) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        json!({"sub": sub, "exp": now() + 300}),
    )
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    encode(&Header::new(alg), &claims, key).expect("signing a token")
}

fn b64(v: Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// `orderflow run --auth jwt` with `key`, and the operator token.
async fn start(env: &Env, key: &str) -> Server {
    let vars = [("ORDERFLOW_JWT_KEY", key), ("ORDERFLOW_OPERATOR_TOKEN", OPERATOR)];
    Server::start_with(env, "run", &["--auth", "jwt"], &vars).await
}

/// A request as `bearer` (none when `None`): the status and the JSON body.
async fn call(server: &Server, method: &str, path: &str, bearer: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let c = &server.client;
    let mut request = c.http.request(method.parse().unwrap(), c.url(path));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    if status == 401 {
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{method} {path}");
    }
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Places an order as `bearer` (the body names no customer); its id.
async fn place(server: &Server, bearer: &str) -> String {
    let (status, body) =
        call(server, "POST", "/orders", Some(bearer), Some(json!({"item": "tea", "quantity": 1}))).await;
    assert_eq!(status, 202, "{body}");
    body["order_id"].as_str().unwrap().to_owned()
}

/// Waits until the order `id` is completed, read as `bearer`.
async fn wait_completed(server: &Server, id: &str, bearer: &str) {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let (_, order) = call(server, "GET", &format!("/orders/{id}"), Some(bearer), None).await;
        if order["status"] == "completed" {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "order {id} is not completed: {order}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /events` as `bearer`.
async fn feed(server: &Server, bearer: &str) -> EventStream {
    let c = &server.client;
    c.stream(c.http.get(c.url("/events")).bearer_auth(bearer), "the feed").await
}

/// Every customer route, for an order `id`.
fn routes(id: &str) -> Vec<(&'static str, String, Option<Value>)> {
    vec![
        ("POST", "/orders".into(), Some(order("alice", &[("tea", 1)]))),
        ("GET", "/orders".into(), None),
        ("GET", format!("/orders/{id}"), None),
        ("GET", format!("/orders/{id}/trail"), None),
        ("GET", format!("/orders/{id}/events"), None),
        ("GET", "/events".into(), None),
        ("POST", "/order".into(), Some(order("alice", &[("tea", 1)]))),
        ("POST", "/order/place".into(), None),
        ("GET", format!("/order/get/{id}"), None),
    ]
}

#[tokio::test]
async fn bad_tokens_are_refused_and_change_nothing() {
    let env = Env::embedded();
    env.set_stock("tea", 100);
    let server = start(&env, SECRET).await;
    let id = place(&server, &token("alice")).await;
    let hs = |claims: Value| sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(), claims);
    let other = EncodingKey::from_secret(b"another secret of at least 32 bytes!!").unwrap();
    let bad = [
        (None, "missing_token"),
        (Some("not-a-token".to_owned()), "invalid_token"),
        (Some(hs(json!({"sub": "alice", "exp": now() - 600}))), "token_expired"),
        (Some(hs(json!({"sub": "alice"}))), "invalid_token"),
        (Some(hs(json!({"exp": now() + 300}))), "invalid_token"),
        (Some(sign(Algorithm::HS256, &other, json!({"sub": "alice", "exp": now() + 300}))), "invalid_token"),
        (
            Some(sign(
                Algorithm::HS384,
                &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
                json!({"sub": "alice", "exp": now() + 300}),
            )),
            "invalid_token",
        ),
        (
            Some(format!(
                "{}.{}.",
                b64(json!({"alg": "none", "typ": "JWT"})),
                b64(json!({"sub": "alice", "exp": now() + 300}))
            )),
            "invalid_token",
        ),
    ];
    for (bearer, code) in &bad {
        for (method, path, body) in routes(&id) {
            let (status, answer) = call(&server, method, &path, bearer.as_deref(), body).await;
            assert_eq!(
                (status, answer["error"]["code"].as_str()),
                (401, Some(*code)),
                "{method} {path} with {bearer:?}"
            );
        }
    }
    // Another scheme is no bearer token at all.
    let response =
        server.client.http.get(server.client.url("/orders")).basic_auth("alice", Some("pw")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let (status, page) = call(&server, "GET", "/orders", Some(OPERATOR), None).await;
    assert_eq!(status, 200);
    assert_eq!(page["orders"].as_array().unwrap().len(), 1, "a refused request placed an order: {page}");
}

#[tokio::test]
async fn a_customer_sees_only_their_own_orders() {
    let env = Env::embedded();
    env.set_stock("tea", 100);
    let server = start(&env, SECRET).await;
    let (alice, bob) = (token("alice"), token("bob"));
    let mut alices_feed = feed(&server, &alice).await;
    let mine = place(&server, &alice).await;
    let theirs = place(&server, &bob).await;
    let (status, body) = call(&server, "GET", &format!("/orders/{mine}"), Some(&alice), None).await;
    assert_eq!((status, body["customer_id"].as_str()), (200, Some("alice")), "{body}");

    // Another's order is answered as one that does not exist.
    let (_, missing) = call(&server, "GET", "/orders/0190f1de-0000-7000-8000-000000000000", Some(&alice), None).await;
    for path in [format!("/orders/{theirs}"), format!("/orders/{theirs}/trail"), format!("/orders/{theirs}/events")] {
        let (status, body) = call(&server, "GET", &path, Some(&alice), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{path}");
        assert_eq!(
            body["error"]["message"].as_str().unwrap().replace(&theirs, "ID"),
            missing["error"]["message"].as_str().unwrap().replace("0190f1de-0000-7000-8000-000000000000", "ID")
        );
    }
    let ids = |page: &Value| -> Vec<String> {
        page["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap().to_owned()).collect()
    };
    let (_, page) = call(&server, "GET", "/orders", Some(&alice), None).await;
    assert_eq!(ids(&page), std::slice::from_ref(&mine));
    let (_, page) = call(&server, "GET", "/orders?customer_id=bob", Some(&alice), None).await;
    assert!(ids(&page).is_empty(), "{page}");
    let (_, page) = call(&server, "GET", "/orders?customer_id=alice&status=placed,reserved", Some(&alice), None).await;
    assert_eq!(page["error"]["code"], "invalid_status", "bad filters are still refused");

    // Her feed carries her order's changes, and none of bob's.
    let mut seen = Vec::new();
    while seen.last().map(|e: &Value| e["status"] != "completed").unwrap_or(true) {
        let event = alices_feed.next(SETTLE).await.expect("the feed ended");
        seen.push(event.data);
    }
    assert!(seen.iter().all(|e| e["order_id"] == mine.as_str()), "{seen:?}");
    // Bob's order completes too; her feed stays quiet.
    wait_completed(&server, &theirs, &bob).await;
    let quiet = tokio::time::timeout(Duration::from_millis(500), alices_feed.next(SETTLE)).await;
    assert!(quiet.is_err(), "alice's feed showed {:?}", quiet.ok().flatten());

    // Her own stream, and bob's is out of reach.
    let c = &server.client;
    let mut stream =
        c.stream(c.http.get(c.url(&format!("/orders/{mine}/events"))).bearer_auth(&alice), "her order").await;
    assert_eq!(stream.next(SETTLE).await.unwrap().data["status"], "placed");

    // The operator token sees every order, on every route.
    let (_, page) = call(&server, "GET", "/orders", Some(OPERATOR), None).await;
    assert_eq!(ids(&page).len(), 2);
    for path in [format!("/orders/{theirs}"), format!("/orders/{theirs}/trail"), format!("/order/get/{theirs}")] {
        let (status, _) = call(&server, "GET", &path, Some(OPERATOR), None).await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, body) = call(&server, "POST", "/orders", Some(OPERATOR), Some(order("carol", &[("tea", 1)]))).await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn the_body_may_not_name_another_customer() {
    let env = Env::embedded();
    env.set_stock("tea", 100);
    let server = start(&env, SECRET).await;
    let alice = token("alice");
    for body in [order("bob", &[("tea", 1)]), json!({"user_id": "bob", "item": "tea", "quantity": 1})] {
        let (status, answer) = call(&server, "POST", "/orders", Some(&alice), Some(body.clone())).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("customer_mismatch")), "{body}");
        let (status, _) = call(&server, "POST", "/order", Some(&alice), Some(body)).await;
        assert_eq!(status, 403);
    }
    let (_, page) = call(&server, "GET", "/orders", Some(OPERATOR), None).await;
    assert!(page["orders"].as_array().unwrap().is_empty(), "a refused order was stored: {page}");
    // Naming herself is fine; so is an operator's order for anyone.
    let (status, answer) = call(&server, "POST", "/orders", Some(&alice), Some(order("alice", &[("tea", 1)]))).await;
    assert_eq!(status, 202, "{answer}");
}

#[tokio::test]
async fn idempotency_keys_are_each_customers_own() {
    idempotency_keys_are_each_customers_own_in(Env::embedded()).await;
}

#[tokio::test]
async fn idempotency_keys_are_each_customers_own_on_postgres() {
    let Some(env) = Env::postgres(false) else { return };
    idempotency_keys_are_each_customers_own_in(env).await;
}

async fn idempotency_keys_are_each_customers_own_in(env: Env) {
    env.set_stock("tea", 100);
    let server = start(&env, SECRET).await;
    let c = &server.client;
    let post = |bearer: String, quantity: i64| {
        let request = c.http.post(c.url("/orders")).bearer_auth(bearer).header("Idempotency-Key", "same-key");
        request.json(&json!({"item": "tea", "quantity": quantity})).send()
    };
    let first = post(token("alice"), 1).await.unwrap();
    assert_eq!(first.status(), 202);
    let alices: Value = first.json().await.unwrap();
    // Bob's first use of the key is his own order, not a conflict with hers.
    let second = post(token("bob"), 2).await.unwrap();
    assert_eq!(second.status(), 202);
    let bobs: Value = second.json().await.unwrap();
    assert_ne!(alices["order_id"], bobs["order_id"]);
    // Each one's retry answers their own order.
    for (who, quantity, theirs) in [("alice", 1, &alices), ("bob", 2, &bobs)] {
        let again = post(token(who), quantity).await.unwrap();
        assert_eq!(again.status(), 202);
        assert_eq!(again.headers()["idempotent-replayed"], "true");
        assert_eq!(again.json::<Value>().await.unwrap()["order_id"], theirs["order_id"], "{who}");
    }
    // A different order under a key already used is still a conflict, within a customer.
    assert_eq!(post(token("alice"), 3).await.unwrap().status(), 409);
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A fresh key pair: `(private, public)` in PEM.
fn key_pair(dir: &std::path::Path, name: &str, genpkey: &[&str]) -> (String, String) {
    let (private, public) = (format!("{name}.pem"), format!("{name}.pub.pem"));
    let mut args = vec!["genpkey", "-out", &private];
    args.extend_from_slice(genpkey);
    openssl(dir, &args);
    openssl(dir, &["pkey", "-in", &private, "-pubout", "-out", &public]);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    (read(&private), read(&public))
}

#[tokio::test]
async fn rs256_and_es256_public_keys_work() {
    let kinds: [(&str, &[&str], Algorithm); 2] = [
        ("rsa", &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], Algorithm::RS256),
        ("ec", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], Algorithm::ES256),
    ];
    for (name, genpkey, alg) in kinds {
        let env = Env::embedded();
        env.set_stock("tea", 100);
        let (private, public) = key_pair(env.dir.path(), name, genpkey);
        let signing = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
        };
        let server = start(&env, &public).await;
        let good = sign(alg, &signing, json!({"sub": "alice", "exp": now() + 300}));
        let id = place(&server, &good).await;
        let (status, _) = call(&server, "GET", &format!("/orders/{id}"), Some(&good), None).await;
        assert_eq!(status, 200, "{name}");
        // The public key used as an HMAC secret: the old confusion attack.
        let confused = EncodingKey::from_secret(public.as_bytes()).unwrap();
        let forged = sign(Algorithm::HS256, &confused, json!({"sub": "alice", "exp": now() + 300}));
        let (status, body) = call(&server, "GET", "/orders", Some(&forged), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_token")), "{name}");
        // Signed by another key of the same kind.
        let (other_private, _) = key_pair(env.dir.path(), "other", genpkey);
        let other = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(other_private.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(other_private.as_bytes()).unwrap(),
        };
        let foreign = sign(alg, &other, json!({"sub": "alice", "exp": now() + 300}));
        let (status, body) = call(&server, "GET", "/orders", Some(&foreign), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_token")), "{name}");
    }
}

#[tokio::test]
async fn a_key_that_cannot_verify_stops_the_process_at_start() {
    let env = Env::embedded();
    let (private, _) = key_pair(env.dir.path(), "ec", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    let (_, p384) = key_pair(env.dir.path(), "p384", &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"]);
    for (key, says) in [
        (None, "ORDERFLOW_JWT_KEY"),
        (Some("short secret"), "at least 32 bytes"),
        (Some(private.as_str()), "private key"),
        (Some(p384.as_str()), "P-256"),
        (Some("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), "neither"),
    ] {
        let mut command = Command::new(BIN);
        command.args(["--database-url", &env.database_url, "run", "--listen", "127.0.0.1:0", "--auth", "jwt"]);
        command.env_remove("ORDERFLOW_JWT_KEY");
        if let Some(key) = key {
            command.env("ORDERFLOW_JWT_KEY", key);
        }
        let out = command.output().expect("running orderflow");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {key:?}");
        assert!(stderr.contains(says), "{key:?}: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"), "{key:?}");
    }
}

#[tokio::test]
async fn compatible_routes_follow_the_same_rules() {
    let env = Env::embedded();
    env.set_stock("tea", 100);
    let server = start(&env, SECRET).await;
    let (alice, bob) = (token("alice"), token("bob"));
    // The body-less route places for the token's customer, not `anonymous`.
    let (status, placed) = call(&server, "POST", "/order/place", Some(&alice), None).await;
    assert_eq!(status, 202, "{placed}");
    let id = placed["order_id"].as_str().unwrap();
    let (_, order) = call(&server, "GET", &format!("/orders/{id}"), Some(&alice), None).await;
    assert_eq!(order["customer_id"], "alice");
    let (status, body) = call(&server, "GET", &format!("/order/get/{id}"), Some(&alice), None).await;
    assert_eq!((status, body["order_id"].as_str()), (200, Some(id)));
    let (status, _) = call(&server, "GET", &format!("/order/get/{id}"), Some(&bob), None).await;
    assert_eq!(status, 404);
    let (status, body) = call(&server, "POST", "/order", Some(&bob), Some(json!({"item": "tea", "quantity": 1}))).await;
    assert_eq!(status, 202, "{body}");
    let (_, order) =
        call(&server, "GET", &format!("/orders/{}", body["order_id"].as_str().unwrap()), Some(&bob), None).await;
    assert_eq!(order["customer_id"], "bob");
}

#[tokio::test]
async fn with_authentication_off_nothing_changed() {
    let env = Env::embedded();
    env.set_stock("tea", 100);
    let server = Server::start(&env, "run", &[]).await;
    // Any Authorization header is ignored, as before.
    let (status, body) =
        call(&server, "POST", "/orders", Some(&token("alice")), Some(order("bob", &[("tea", 1)]))).await;
    assert_eq!(status, 202, "{body}");
    let bobs = body["order_id"].as_str().unwrap().to_owned();
    for bearer in [None, Some("junk"), Some(token("alice").as_str())] {
        let (status, _) = call(&server, "GET", &format!("/orders/{bobs}"), bearer, None).await;
        assert_eq!(status, 200, "{bearer:?}");
    }
    let (status, body) = call(&server, "POST", "/orders", None, Some(json!({"item": "tea", "quantity": 1}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("missing_field")));
    // One space of idempotency keys: another customer's reuse is a conflict.
    let c = &server.client;
    assert_eq!(c.post("/orders", &order("alice", &[("tea", 1)]), Some("shared")).await.status(), 202);
    assert_eq!(c.post("/orders", &order("bob", &[("tea", 1)]), Some("shared")).await.status(), 409);
    assert_eq!(c.orders_of("bob").await.len(), 1);
}

#[tokio::test]
async fn another_customers_order_stays_hidden_when_read_through_the_cache() {
    let env = Env::embedded();
    env.set_stock("tea", 100);
    let Some(cache) = crate::cache::cache_server(&env) else { return };
    let vars = [("ORDERFLOW_JWT_KEY", SECRET), ("ORDERFLOW_OPERATOR_TOKEN", OPERATOR)];
    let url = format!("redis://127.0.0.1:{}/0", cache.port);
    let server = Server::start_with(&env, "run", &["--auth", "jwt", "--cache-url", &url], &vars).await;
    let (alice, bob) = (token("alice"), token("bob"));
    let id = place(&server, &alice).await;
    wait_completed(&server, &id, &alice).await;
    // Read until the copy is cached: then bob's read is answered from it.
    let hits = || async {
        let text = server.client.http.get(server.client.url("/metrics")).send().await.unwrap().text().await.unwrap();
        text.lines().any(|l| l.starts_with("orderflow_cache_requests_total{result=\"hit\"}"))
    };
    let deadline = std::time::Instant::now() + SETTLE;
    while !hits().await {
        assert!(std::time::Instant::now() < deadline, "the order was never read from the cache");
        call(&server, "GET", &format!("/orders/{id}"), Some(&alice), None).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for path in [format!("/orders/{id}"), format!("/order/get/{id}")] {
        let (status, body) = call(&server, "GET", &path, Some(&bob), None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{path}");
        let (status, _) = call(&server, "GET", &path, Some(&alice), None).await;
        assert_eq!(status, 200, "{path}");
    }
}
