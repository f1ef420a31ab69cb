//! The API describes itself: `GET /openapi.json` is the checked-in
//! `docs/openapi.json`, it names every route with every answer, and
//! `GET /docs` loads from this server alone.
//!
//! `ORDERFLOW_WRITE_OPENAPI=1 cargo test --test pipeline openapi` writes the
//! served description to `docs/openapi.json` after a change to the API.

use crate::helpers::{Env, Server};
use serde_json::Value;

const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

async fn text(server: &Server, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = server.client.http.get(server.client.url(path)).send().await.expect("GET");
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.text().await.expect("body"))
}

#[tokio::test]
async fn the_served_description_is_the_checked_in_one() {
    let env = Env::embedded();
    let server = Server::start(&env, "run", &[]).await;
    let (status, headers, served) = text(&server, "/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let spec: Value = serde_json::from_str(&served).expect("the description is JSON");
    assert_eq!(spec["openapi"], "3.1.0");
    if std::env::var("ORDERFLOW_WRITE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(CHECKED_IN, &served).expect("writing docs/openapi.json");
        return;
    }
    let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_default();
    assert!(
        served == checked_in,
        "docs/openapi.json is not the description the server serves: the API changed. Review the change, then \
         write it with `ORDERFLOW_WRITE_OPENAPI=1 cargo test --test pipeline openapi` and commit it"
    );
}

#[tokio::test]
async fn every_route_is_described_with_its_answers() {
    let env = Env::embedded();
    let server = Server::start(&env, "run", &[]).await;
    let (_, spec) = server.client.get("/openapi.json").await;
    let statuses = |path: &str, method: &str| -> Vec<String> {
        let op = &spec["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not described");
        op["responses"].as_object().expect("responses").keys().cloned().collect()
    };
    let placing = ["202", "400", "401", "403", "408", "409", "413", "415", "422", "500", "503"];
    assert_eq!(statuses("/orders", "post"), placing);
    assert_eq!(statuses("/order", "post"), placing);
    assert_eq!(statuses("/order/place", "post"), ["202", "400", "401", "409", "500", "503"]);
    assert_eq!(statuses("/orders/{id}", "get"), ["200", "400", "401", "404", "500", "503"]);
    assert_eq!(statuses("/order/get/{id}", "get"), ["200", "400", "401", "404", "500", "503"]);
    assert_eq!(statuses("/orders/{id}/events", "get"), ["200", "400", "401", "404", "500", "503"]);
    assert_eq!(statuses("/orders/{id}/trail", "get"), ["200", "400", "401", "404", "500", "503"]);
    assert_eq!(statuses("/orders/{id}/cancel", "post"), ["200", "400", "401", "404", "409", "500", "503"]);
    let stream = &spec["paths"]["/orders/{id}/events"]["get"]["responses"]["200"]["content"];
    assert!(stream["text/event-stream"].is_object(), "the stream's type: {stream}");
    assert_eq!(statuses("/orders", "get"), ["200", "400", "401", "500", "503"]);
    assert_eq!(statuses("/events", "get"), ["200", "400", "401", "500", "503"]);
    // The customer routes: a customer's token, the operator's, or none
    // (when the server checks no tokens).
    let customer = serde_json::json!([{}, {"customer": []}, {"operator": []}]);
    for (path, method) in [
        ("/orders", "post"),
        ("/orders", "get"),
        ("/orders/{id}", "get"),
        ("/orders/{id}/trail", "get"),
        ("/orders/{id}/events", "get"),
        ("/events", "get"),
        ("/order", "post"),
        ("/order/place", "post"),
        ("/order/get/{id}", "get"),
    ] {
        assert_eq!(spec["paths"][path][method]["security"], customer, "{method} {path}");
    }
    assert_eq!(spec["components"]["securitySchemes"]["customer"]["bearerFormat"], "JWT");
    assert!(spec["paths"]["/events"]["get"]["responses"]["200"]["content"]["text/event-stream"].is_object());
    let admin_read = ["200", "400", "401", "403", "500", "503"];
    let admin_write = ["200", "400", "401", "403", "408", "413", "415", "422", "500", "503"];
    for (path, method, answers) in [
        ("/admin/stock", "get", &admin_read[..]),
        ("/admin/dead-letters", "get", &admin_read[..]),
        ("/admin/stock/{sku}", "put", &admin_write[..]),
        ("/admin/dead-letters/replay", "post", &admin_write[..]),
        ("/admin/orders/{id}/ship", "post", &["200", "400", "401", "403", "404", "409", "500", "503"][..]),
    ] {
        assert_eq!(statuses(path, method), answers, "{method} {path}");
        let op = &spec["paths"][path][method];
        assert_eq!(op["security"], serde_json::json!([{"operator": []}]), "{method} {path} needs the token");
    }
    assert_eq!(spec["components"]["securitySchemes"]["operator"]["scheme"], "bearer");
    assert_eq!(statuses("/health", "get"), ["200"]);
    for path in ["/ready", "/metrics", "/openapi.json", "/docs", "/"] {
        assert_eq!(statuses(path, "get"), ["200", "503"], "{path}");
    }
    let paths: Vec<&String> = spec["paths"].as_object().expect("paths").keys().collect();
    assert_eq!(paths.len(), 20, "a route was added: describe it here too ({paths:?})");

    let post = &spec["paths"]["/orders"]["post"];
    let accepted = &post["responses"]["202"]["headers"];
    assert!(accepted["Location"].is_object() && accepted["idempotent-replayed"].is_object(), "{accepted}");
    assert!(post["responses"]["503"]["headers"]["Retry-After"].is_object());
    assert_eq!(post["parameters"][0]["name"], "Idempotency-Key");
    let codes = spec["components"]["schemas"]["ErrorCode"]["enum"].as_array().expect("codes as an enum");
    let some = ["malformed_json", "invalid_sku", "idempotency_key_reused", "invalid_transition", "overloaded"];
    for code in some.into_iter().chain(["method_not_allowed"]) {
        assert!(codes.iter().any(|c| c == code), "{code} is not among the error codes");
    }
}

/// The values of every `src="…"` and `href="…"` in a page.
fn links(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(at) = rest.find(attr) {
            rest = &rest[at + attr.len()..];
            let end = rest.find('"').expect("a closing quote");
            found.push(rest[..end].to_owned());
        }
    }
    found
}

#[tokio::test]
async fn the_docs_page_loads_from_this_server_alone() {
    let env = Env::embedded();
    let server = Server::start(&env, "run", &[]).await;
    let (status, headers, page) = text(&server, "/docs").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.starts_with("default-src 'self';"), "{policy}");
    assert!(!policy.contains("http") && !policy.contains('*'), "the policy names no other host: {policy}");

    let links = links(&page);
    assert_eq!(links.len(), 3, "{links:?}");
    for link in &links {
        // Same origin: a path, not `//host/…` or `scheme:…`.
        assert!(link.starts_with('/') && !link.starts_with("//"), "{link} is not on this server");
        let (status, headers, body) = text(&server, link).await;
        assert_eq!(status, 200, "{link}");
        assert!(!body.is_empty());
        let kind = headers["content-type"].to_str().unwrap();
        if link.ends_with(".css") {
            assert!(kind.starts_with("text/css"), "{link}: {kind}");
            // Fonts and images come inline (`data:`) or not at all.
            for url in body.split("url(").skip(1) {
                let url = url.trim_start_matches(['"', '\'']);
                assert!(url.starts_with("data:") || url.starts_with('#'), "{link} loads {}", &url[..40.min(url.len())]);
            }
            assert!(!body.contains("@import"), "{link} imports another stylesheet");
        } else {
            assert!(kind.starts_with("text/javascript"), "{link}: {kind}");
        }
    }
    let (_, _, init) = text(&server, "/docs/init.js").await;
    assert!(init.contains("url: \"/openapi.json\"") && init.contains("validatorUrl: null"), "{init}");
    assert!(!init.contains("http"), "the initializer names no host: {init}");
}

#[tokio::test]
async fn the_dashboard_loads_from_this_server_alone() {
    let env = Env::embedded();
    let server = Server::start(&env, "run", &[]).await;
    let (status, headers, page) = text(&server, "/").await;
    assert_eq!(status, 200);
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.starts_with("default-src 'self';") && !policy.contains("unsafe"), "{policy}");
    // In-page links (`#/…`) aside, the two scripts and the stylesheet.
    let links: Vec<String> = links(&page).into_iter().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(links.len(), 3, "{links:?}");
    for link in &links {
        assert!(link.starts_with("/dashboard/"), "{link} is not on this server");
        let (status, _, body) = text(&server, link).await;
        assert_eq!(status, 200, "{link}");
        assert!(!body.contains("http://") && !body.contains("https://") && !body.contains("@import"), "{link}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_json_error() {
    let env = Env::embedded();
    let server = Server::start(&env, "run", &[]).await;
    let c = &server.client;
    let (status, body) = c.get("/nowhere").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    for (method, path, allow) in [("PUT", "/orders", "GET,HEAD,POST"), ("DELETE", "/health", "GET,HEAD")] {
        let resp = c.http.request(method.parse().unwrap(), c.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        let got = resp.headers()["allow"].to_str().unwrap().replace(' ', "");
        let mut got: Vec<&str> = got.split(',').collect();
        got.sort_unstable();
        assert_eq!(got.join(","), allow, "{method} {path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed", "{method} {path}");
    }
}
