//! I/O errors from the disk under load.

use crate::check::check;
use crate::disk::{self, Disk, Errno, Fault, Kind, Op, Rng};
use crate::pipeline::{self, place_one, Load, Pipeline};
use crate::{first_seed, say};
use orderflow::store::{PlaceOrder, SqliteOptions, StoreError};
use std::time::{Duration, Instant};

/// Every fault the suite tries, once each at several N, and a few that last.
fn faults() -> Vec<Fault> {
    let mut all = Vec::new();
    for kind in [Kind::Db, Kind::Wal] {
        for (op, errno) in [
            (Op::Write, Errno::Eio),
            (Op::Write, Errno::Enospc),
            (Op::Sync, Errno::Eio),
            (Op::Sync, Errno::Enospc),
            (Op::Read, Errno::Eio),
        ] {
            for nth in [1, 3, 10, 40] {
                all.push(Fault { kind, op, nth, errno, sticky: false });
            }
        }
    }
    for (kind, op, errno) in
        [(Kind::Wal, Op::Write, Errno::Enospc), (Kind::Db, Op::Write, Errno::Enospc), (Kind::Wal, Op::Sync, Errno::Eio)]
    {
        all.push(Fault { kind, op, nth: 5, errno, sticky: true });
    }
    all
}

/// One fault under load: the store recovers (or gives up with an error)
/// and the database, after a power failure, holds every order answered 202.
async fn fault_once(fault: Fault, seed: u64) -> bool {
    let mut rng = Rng::new(seed);
    let (dir, image) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let disk = Disk::new(dir.path());
    let options = SqliteOptions { vfs: Some(disk::NAME.into()), unsynced: false };
    pipeline::prepare(dir.path(), options.clone()).await;
    let mut running = Pipeline::start(pipeline::open(dir.path(), options).await).await;
    let load = Load::start(&running.url, 4, seed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    disk.set_fault(Some(fault));
    tokio::time::sleep(Duration::from_millis(300)).await;
    if fault.sticky {
        disk.set_fault(None);
    }
    let reached = disk.injected() > 0;
    // Recovered: orders are accepted again. Or given up, with an error.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ended = loop {
        if let Some(error) = running.gave_up() {
            break format!("gave up: {error}");
        }
        match place_one(&running.url).await {
            Ok(202) => break "recovered".to_owned(),
            Ok(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("seed {seed}, {fault:?}: neither recovered nor gave up within 10 s: {other:?}"),
        }
    };
    let what = crate::power_fails_soon(&disk, &mut rng, 300, image.path()).await;
    let answers = load.stop().await;
    running.stop().await;
    let report = check(image.path(), &answers).await;
    let line = format!(
        "seed {seed}, {fault:?}: {}; {ended}; {} accepted, refused {:?}; at the power failure {what}",
        if reached { "injected" } else { "not reached" },
        answers.accepted.len(),
        answers.refused
    );
    assert!(report.is_sound(), "{line}\n{report:#?}");
    say(line);
    reached
}

async fn fault_cases(part: usize, parts: usize) {
    let (first, _) = first_seed();
    let all = faults();
    let mut reached = 0;
    let mine: Vec<_> = all.iter().enumerate().filter(|(i, _)| i % parts == part).collect();
    for (i, fault) in &mine {
        reached += fault_once(**fault, first.wrapping_add(*i as u64)).await as usize;
    }
    assert!(reached * 2 >= mine.len(), "only {reached} of {} faults were reached by the load", mine.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_errors_under_load_1() {
    fault_cases(0, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_errors_under_load_2() {
    fault_cases(1, 2).await;
}

/// A commit whose WAL sync fails: its caller hears `OutcomeUnknown` (the
/// order may or may not be on disk), nothing is acknowledged on the strength
/// of that sync, and the writer goes on with a new connection: the next
/// order is accepted, and survives a power failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_is_an_unknown_outcome_and_the_store_goes_on() {
    let (dir, image) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let disk = Disk::new(dir.path());
    let options = SqliteOptions { vfs: Some(disk::NAME.into()), unsynced: false };
    pipeline::prepare(dir.path(), options.clone()).await;
    let store = pipeline::open(dir.path(), options).await;
    let order = || {
        let items = vec![orderflow::domain::LineItem {
            sku: orderflow::domain::Sku::parse("tea").unwrap(),
            quantity: orderflow::domain::Quantity::parse(1).unwrap(),
        }];
        let customer = orderflow::domain::CustomerId::parse("c1").unwrap();
        let order = orderflow::domain::NewOrder::new(customer, items).unwrap();
        PlaceOrder { id: orderflow::domain::OrderId::new(), order, idempotency: None, trace: None }
    };
    let first = store.place_order(order()).await.unwrap().id;
    disk.set_fault(Some(Fault { kind: Kind::Wal, op: Op::Sync, nth: 1, errno: Errno::Eio, sticky: false }));
    let doubtful = order();
    let doubtful_id = doubtful.id;
    match store.place_order(doubtful).await {
        Err(StoreError::OutcomeUnknown(_)) => {}
        other => panic!("a commit whose sync failed was answered {other:?}"),
    }
    assert_eq!(disk.injected(), 1);
    let after = store.place_order(order()).await.expect("the store goes on after a failed sync").id;
    let mut rng = Rng::new(first_seed().0);
    disk.cut_power(&mut rng, image.path());
    drop(store);
    let conn = rusqlite::Connection::open(image.path().join("orders.db")).unwrap();
    let stored = |id: orderflow::domain::OrderId| -> bool {
        conn.query_row("SELECT count(*) FROM orders WHERE id = ?1", [id.to_string()], |r| r.get::<_, i64>(0)).unwrap()
            == 1
    };
    assert!(stored(first) && stored(after), "orders acknowledged before and after the failed sync survive");
    say(format!("the order whose sync failed is {}", if stored(doubtful_id) { "there" } else { "gone" }));
}
