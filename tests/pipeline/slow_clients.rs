//! Clients that are slow, idle or too many, against the embedded mode (which
//! faces clients with no proxy in front): they must neither shut others out
//! nor hold their connections for ever, and a clean shutdown still answers
//! what it has begun.

use crate::helpers::{allow_descriptors, order, Env, Server};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a request that stopped halfway through its header looks like.
const HALF_HEADER: &[u8] = b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-";

/// An upper bound for things that should take moments, so a broken server
/// fails the test instead of hanging it; it does not measure speed.
const PATIENCE: Duration = Duration::from_secs(15);

fn addr(server: &Server) -> String {
    server.client.url("").trim_start_matches("http://").to_owned()
}

fn open_descriptors(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid())).expect("the server's /proc entry").count()
}

/// Whether the server has closed `stream`: a read sees the end or a reset
/// before `deadline`. Whatever the server wrote before closing is skipped.
async fn closed_by(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Reads one HTTP/1.1 answer with a Content-Length: (status line, body).
async fn read_answer(stream: &mut TcpStream) -> (String, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.expect("reading the answer");
            assert!(n > 0, "the connection closed before a whole answer: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .and_then(|v| v.parse::<usize>().ok())
                    .expect("a content-length");
                if body.len() >= length {
                    return (head.lines().next().unwrap_or_default().to_owned(), body.to_owned());
                }
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.expect("an answer in time")
}

/// At the connection cap, clients that stopped halfway through a header give
/// way to new ones, so the service still answers and holds no more
/// descriptors than the cap allows; the header timeout then cuts the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_hold_neither_the_server_nor_their_connections() {
    const CAP: usize = 500;
    let env = Env::embedded();
    let server = Server::start(&env, "run", &["--max-connections", "500", "--header-timeout-secs", "3"]).await;
    let at_rest = open_descriptors(&server);
    let addr = addr(&server);

    allow_descriptors(3000 + 1024);
    let mut slow = Vec::with_capacity(3000);
    for _ in 0..3000 {
        let mut stream = TcpStream::connect(&addr).await.expect("connecting");
        // A connection the server already dropped to make room may refuse the write.
        let _ = stream.write_all(HALF_HEADER).await;
        slow.push(stream);
    }
    let answers = async {
        let (status, body) = server.client.get("/health").await;
        assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
        server.client.place(&order("patient", &[("pen", 1)])).await
    };
    tokio::time::timeout(PATIENCE, answers).await.expect("answers while 3,000 half-sent requests are open");
    let held = open_descriptors(&server);
    assert!(held <= CAP + at_rest + 16, "{held} descriptors open with a cap of {CAP} connections ({at_rest} at rest)");

    // Past the header timeout every half-sent request has been cut.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let deadline = Instant::now() + PATIENCE;
    for (i, stream) in slow.iter_mut().enumerate() {
        assert!(closed_by(stream, deadline).await, "half-sent request {i} still open after the header timeout");
    }
    assert_eq!(server.client.get("/health").await.0, 200);
}

/// A body that stops arriving is answered 408 with the usual error body once
/// the body timeout has passed.
#[tokio::test]
async fn a_stalled_body_is_answered_408() {
    let env = Env::embedded();
    let server = Server::start(&env, "run", &["--body-timeout-secs", "1"]).await;
    let body = order("stalled", &[("pen", 1)]).to_string();
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = TcpStream::connect(addr(&server)).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    let (status, answer) = read_answer(&mut stream).await;
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    let answer: Value = serde_json::from_str(&answer).expect("a JSON body");
    assert_eq!(answer["error"]["code"], "request_timeout", "{answer}");
    assert!(answer["error"]["message"].is_string(), "{answer}");
    assert!(closed_by(&mut stream, Instant::now() + PATIENCE).await, "the connection is closed after the 408");
}

/// A kept-alive connection serves request after request, and is closed once
/// it has waited the idle timeout for the next one (well before the header
/// timeout, which also bounds that wait).
#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let env = Env::embedded();
    let server = Server::start(&env, "run", &["--idle-timeout-secs", "1", "--header-timeout-secs", "60"]).await;
    let mut stream = TcpStream::connect(addr(&server)).await.unwrap();
    for _ in 0..2 {
        stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let (status, _) = read_answer(&mut stream).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    }
    assert!(closed_by(&mut stream, Instant::now() + PATIENCE).await, "the idle connection is still open");
}

/// On SIGTERM the server stops taking connections, closes the idle ones and
/// those still sending a header, answers the request it is reading, and
/// exits 0 without waiting out its shutdown timeout.
#[tokio::test]
async fn shutdown_answers_the_request_in_flight_and_closes_the_rest() {
    let env = Env::embedded();
    let mut server = Server::start(&env, "run", &[]).await;
    let addr = addr(&server);
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    read_answer(&mut idle).await;
    let mut half = TcpStream::connect(&addr).await.unwrap();
    half.write_all(HALF_HEADER).await.unwrap();
    let body = order("in-flight", &[("pen", 1)]).to_string();
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut in_flight = TcpStream::connect(&addr).await.unwrap();
    in_flight.write_all(head.as_bytes()).await.unwrap();
    in_flight.write_all(&body.as_bytes()[..10]).await.unwrap();
    // Let the server take the request into the router before the signal.
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.sigterm();
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(&addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting connections after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed_by(&mut idle, deadline).await, "the idle connection is closed at shutdown");
    assert!(closed_by(&mut half, deadline).await, "the half-sent request is cut at shutdown");
    in_flight.write_all(&body.as_bytes()[10..]).await.unwrap();
    let (status, answer) = read_answer(&mut in_flight).await;
    assert!(status.starts_with("HTTP/1.1 202"), "{status} {answer}");
    assert!(closed_by(&mut in_flight, deadline).await, "the connection closes once answered");

    let exit = server.wait_exit();
    assert!(exit.success(), "exit status {exit:?}; its log:\n{}", server.log());
    assert!(!server.log().contains("shutdown timed out"), "{}", server.log());
}
