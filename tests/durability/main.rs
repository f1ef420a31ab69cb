//! The durability suite: the embedded store on a simulated disk (`disk`).
//!
//! - Power loss: under concurrent orders through the HTTP API, the power
//!   fails at a random moment; unsynced writes are kept, dropped or torn at
//!   random. The database left must be sound and hold every order answered
//!   202 (`check`). A store that never syncs must fail this: the suite shows
//!   it does, every run.
//! - I/O faults: `EIO` and `ENOSPC` on the Nth write, sync or read of the
//!   database and its WAL. No 202 for an order that is not durable, no order
//!   without its event, and the store either recovers or gives up with an
//!   error, never hangs.
//!
//! Every case runs from a seed, printed with it; `ORDERFLOW_CRASH_SEED=S`
//! replays one case, and `ORDERFLOW_CRASH_POINTS=N` sets how many power
//! failures the suite tries (200 by default).

mod check;
mod disk;
mod io_faults;
mod pipeline;
mod power_loss;

use std::io::Write;

/// Writes a line the test harness shows even for a passing test.
fn say(line: String) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The first seed of a run: the one asked for, or a new one each run.
fn first_seed() -> (u64, bool) {
    match std::env::var("ORDERFLOW_CRASH_SEED") {
        Ok(seed) => (seed.parse().expect("ORDERFLOW_CRASH_SEED is a number"), true),
        Err(_) => {
            (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64, false)
        }
    }
}

/// Fails the power at a random write or sync among the next `within`, or
/// after two seconds if the load has not made that many; writes the disk's
/// content after the failure into `to`, and says what it did.
async fn power_fails_soon(disk: &disk::Disk, rng: &mut disk::Rng, within: u64, to: &std::path::Path) -> String {
    disk.arm_power_cut(rng.below(within), rng.clone(), to);
    for _ in 0..100 {
        if disk.power_lost() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    disk.cut_power(rng, to)
}
