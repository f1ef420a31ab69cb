//! Power failures at random moments under load.

use crate::check::{check, Report};
use crate::disk::{self, Disk, Rng};
use crate::pipeline::{self, Answers, Load, Pipeline};
use crate::{first_seed, say};
use orderflow::store::SqliteOptions;

/// One power failure: the database is prepared on the simulated disk, orders
/// come in from 8 clients, and the power fails after a random while. Returns
/// what the clients were told and what the database left shows.
async fn crash_once(seed: u64, unsynced: bool) -> (Answers, Report, String) {
    let mut rng = Rng::new(seed);
    let (dir, image) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let disk = Disk::new(dir.path());
    let on_disk = SqliteOptions { vfs: Some(disk::NAME.into()), unsynced: false };
    pipeline::prepare(dir.path(), on_disk.clone()).await;
    let store = pipeline::open(dir.path(), SqliteOptions { unsynced, ..on_disk }).await;
    let running = Pipeline::start(store).await;
    let load = Load::start(&running.url, 8, seed);
    let what = crate::power_fails_soon(&disk, &mut rng, 3000, image.path()).await;
    let answers = load.stop().await;
    running.stop().await;
    let report = check(image.path(), &answers).await;
    (answers, report, what)
}

/// Runs `count` power failures from the seed `first + offset`, each checked.
async fn crash_points(part: u64, parts: u64) {
    let (first, replay) = first_seed();
    let count = match replay {
        true if part > 0 => return,
        true => 1,
        false => std::env::var("ORDERFLOW_CRASH_POINTS").map_or(200, |n| n.parse().expect("a number")) / parts,
    };
    for i in 0..count {
        let seed = first.wrapping_add(part * count + i);
        let (answers, report, what) = crash_once(seed, false).await;
        let line = format!("seed {seed}: {} orders accepted; at the power failure {what}", answers.accepted.len());
        assert!(
            report.is_sound(),
            "{line}\n{report:#?}\nreplay with ORDERFLOW_CRASH_SEED={seed} cargo test --test durability power_fails"
        );
        say(line);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_fails_at_random_moments_1() {
    crash_points(0, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_fails_at_random_moments_2() {
    crash_points(1, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_fails_at_random_moments_3() {
    crash_points(2, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_fails_at_random_moments_4() {
    crash_points(3, 4).await;
}

/// The same power failures, on a store that never syncs: the simulation
/// must find accepted orders lost, or it proves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_never_syncs_loses_accepted_orders() {
    let (first, _) = first_seed();
    let mut caught = 0;
    for seed in first..first + 5 {
        let (answers, report, what) = crash_once(seed, true).await;
        say(format!(
            "never syncing, seed {seed}: {} accepted, {} lost, integrity {:?}; {what}",
            answers.accepted.len(),
            report.lost.len(),
            report.integrity
        ));
        if !report.lost.is_empty() {
            caught += 1;
        }
    }
    assert!(caught >= 4, "a store that never syncs lost accepted orders in only {caught} of 5 power failures");
}
