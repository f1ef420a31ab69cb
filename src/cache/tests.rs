//! The cache against a real `redis-server`, one of its own per test (a free
//! port, a temporary directory, no persistence), killed when the test ends:
//! that process only. Skipped with a message when `redis-server` is not
//! installed, unless `ORDERFLOW_REQUIRE_SERVICES=1`.

use super::*;
use crate::domain::{CustomerId, Event, EventType, NewOrder};
use crate::store::{PlaceOrder, SqliteStore, Store};
use std::process::{Child, Command, Stdio};

/// A `redis-server` this test started.
struct Redis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Option<Redis> {
        if let Err(e) = Command::new("redis-server").arg("--version").output() {
            assert!(
                std::env::var("ORDERFLOW_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "redis-server is required (ORDERFLOW_REQUIRE_SERVICES=1) but missing: {e}"
            );
            eprintln!("SKIPPED: redis-server is not installed ({e}); set ORDERFLOW_REQUIRE_SERVICES=1 to fail instead");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &dir.path().display().to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        let redis = Redis { port, child, _dir: dir };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not listen on {port}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Sends a signal to this server (`STOP`, `CONT`).
    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status();
        assert!(status.expect("kill").success());
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// A breaker pause short enough for a test to wait out.
const SETTINGS: CacheSettings = CacheSettings { timeout: Duration::from_millis(50), pause: Duration::from_millis(200) };

fn json(id: OrderId, status: Status) -> String {
    format!(r#"{{"order_id":"{id}","status":"{status}"}}"#)
}

fn status_of(json: &str) -> Status {
    let value: serde_json::Value = serde_json::from_str(json).expect("cached JSON");
    value["status"].as_str().expect("status").parse().expect("a status")
}

/// The classic race, step by step, on a real store: a reader misses and
/// reads the placed row; the inventory service commits the reservation and
/// announces it; the reader's fill with the placed row comes last and is
/// refused. The next reader caches the reserved order, and the same happens
/// again around the completion.
#[tokio::test]
async fn a_reader_that_read_the_row_before_a_commit_cannot_put_it_back() {
    let Some(redis) = Redis::start() else { return };
    let cache = OrderCache::new(&redis.url(), SETTINGS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("orders.db").display().to_string()).await.unwrap();
    let order = NewOrder::new(CustomerId::anonymous(), Vec::new()).unwrap();
    let placed =
        store.place_order(PlaceOrder { id: OrderId::new(), order, idempotency: None, trace: None }).await.unwrap();
    let id = placed.id;
    let event = |kind| Event::new(kind, id, CustomerId::anonymous(), Vec::new(), None);
    let read = || async { store.get_order(id).await.unwrap().expect("the order") };

    // The reader misses and reads the row while the order is placed.
    assert_eq!(cache.get(id).await, None);
    let (old, read_at) = (read().await, Instant::now());
    assert_eq!(old.status, Status::Placed);
    // The inventory service commits, then announces it.
    store.reserve("inventory", vec![event(EventType::OrderPlaced)]).await.unwrap();
    assert_eq!(cache.moved_past([(id, Status::Placed)]).await, 1);
    // The reader's fill with what it read comes last: refused.
    let old_json = serde_json::to_string(&old).unwrap();
    assert!(!cache.fill(id, old.status, &old_json, read_at).await, "a placed copy written over the tombstone");
    assert_eq!(cache.get(id).await, None, "the tombstone is a miss");
    // The next reader reads the reserved row and caches it.
    let (now, read_at) = (read().await, Instant::now());
    assert_eq!(now.status, Status::Reserved);
    assert!(cache.fill(id, now.status, &serde_json::to_string(&now).unwrap(), read_at).await);
    assert_eq!(status_of(&cache.get(id).await.expect("cached")), Status::Reserved);

    // Around the completion: a reader holding the reserved row loses too.
    let (reserved, read_at) = (read().await, Instant::now());
    store.notify("notifier", vec![event(EventType::InventoryReserved)]).await.unwrap();
    assert_eq!(cache.moved_past([(id, Status::Reserved)]).await, 1);
    let reserved_json = serde_json::to_string(&reserved).unwrap();
    assert!(!cache.fill(id, reserved.status, &reserved_json, read_at).await);
    let (done, read_at) = (read().await, Instant::now());
    assert_eq!(done.status, Status::Completed);
    assert!(cache.fill(id, done.status, &serde_json::to_string(&done).unwrap(), read_at).await);
    // Late writes of anything older change nothing now.
    assert_eq!(cache.moved_past([(id, Status::Placed), (id, Status::Reserved)]).await, 0);
    assert!(!cache.fill(id, Status::Placed, &old_json, Instant::now()).await);
    assert_eq!(status_of(&cache.get(id).await.expect("cached")), Status::Completed);
}

/// One write of the lifecycle: a reader's fill of a copy, or a writer's
/// tombstone after its commit.
#[derive(Debug, Clone, Copy)]
enum Write {
    Fill(Status),
    MovedPast(Status),
}

fn permutations<T: Copy>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first);
            all.push(tail);
        }
    }
    all
}

/// Every order of the writes one order's life can cause (fills of placed,
/// reserved and completed copies; the two tombstones), on both paths of the
/// lifecycle: after each write the cache shows nothing older than what it
/// showed before, nothing at or before a status a tombstone said the order
/// left, and at the end the newest copy written after the last tombstone.
#[tokio::test]
async fn no_order_of_writes_moves_an_entry_backwards() {
    let Some(redis) = Redis::start() else { return };
    let cache = OrderCache::new(&redis.url(), SETTINGS).unwrap();
    use Status::*;
    let paths = [
        vec![
            Write::Fill(Placed),
            Write::MovedPast(Placed),
            Write::Fill(Reserved),
            Write::MovedPast(Reserved),
            Write::Fill(Completed),
        ],
        vec![Write::Fill(Placed), Write::MovedPast(Placed), Write::Fill(Rejected)],
        vec![Write::Fill(Placed), Write::Fill(Reserved), Write::Fill(Completed)],
    ];
    let mut tried = 0;
    for path in &paths {
        for writes in permutations(path) {
            let id = OrderId::new();
            // The least step a copy may show: past every status left so far,
            // and never below what was shown before.
            let mut floor = 0;
            let mut newest: Option<Status> = None;
            for write in &writes {
                match *write {
                    Write::Fill(status) => {
                        let stored = cache.fill(id, status, &json(id, status), Instant::now()).await;
                        let expected = status.step() >= floor && newest.is_none_or(|n| status.step() > n.step());
                        assert_eq!(stored, expected, "{writes:?}: {write:?}");
                        if stored {
                            newest = Some(status);
                        }
                    }
                    Write::MovedPast(left) => {
                        cache.moved_past([(id, left)]).await;
                        floor = floor.max(left.step() + 1);
                        if newest.is_some_and(|n| n.step() <= left.step()) {
                            newest = None;
                        }
                    }
                }
                let shown = cache.get(id).await.map(|j| status_of(&j));
                assert_eq!(shown, newest, "{writes:?} after {write:?}");
                if let Some(shown) = shown {
                    assert!(shown.step() >= floor, "{writes:?}: {shown} shown after the order left it");
                    floor = shown.step();
                }
            }
            tried += 1;
        }
    }
    assert_eq!(tried, 120 + 6 + 6);
}

/// A Redis that hangs (SIGSTOP) costs a read the timeout once, then nothing
/// while the breaker is open; after the pause the cache is tried again, and
/// once Redis answers, it hits again. A Redis that is gone fails at once.
#[tokio::test]
async fn a_hung_or_missing_redis_costs_a_read_the_timeout_at_most() {
    let Some(redis) = Redis::start() else { return };
    let cache = OrderCache::new(&redis.url(), SETTINGS).unwrap();
    let id = OrderId::new();
    assert!(cache.fill(id, Status::Completed, &json(id, Status::Completed), Instant::now()).await);
    assert!(cache.get(id).await.is_some());

    redis.signal("STOP");
    let started = Instant::now();
    assert_eq!(cache.get(id).await, None, "a hung Redis is a miss");
    let first = started.elapsed();
    assert!(first >= SETTINGS.timeout && first < SETTINGS.timeout * 4, "the first read waited {first:?}");
    let started = Instant::now();
    for _ in 0..100 {
        assert_eq!(cache.get(id).await, None);
    }
    assert!(started.elapsed() < Duration::from_millis(20), "the breaker skips Redis: {:?}", started.elapsed());
    redis.signal("CONT");
    tokio::time::sleep(SETTINGS.pause).await;
    let mut hit = false;
    for _ in 0..50 {
        hit = cache.get(id).await.is_some();
        if hit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(hit, "the cache hits again once Redis answers");

    // Nothing listens: every call fails or is skipped, none waits long.
    let nowhere = OrderCache::new(&format!("redis://127.0.0.1:{}/0", free_port()), SETTINGS).unwrap();
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(nowhere.get(id).await, None);
        assert!(!nowhere.fill(id, Status::Placed, &json(id, Status::Placed), Instant::now()).await);
        assert_eq!(nowhere.moved_past([(id, Status::Placed)]).await, 0);
    }
    assert!(started.elapsed() < SETTINGS.timeout * 3, "{:?}", started.elapsed());
}
