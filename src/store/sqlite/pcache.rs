//! SQLite's own page cache, without a walk of all of it at every commit.
//!
//! At the end of every write transaction SQLite asks the page cache to drop
//! the pages past the end of the database (`xTruncate`). The default cache
//! remembers the highest page number it has held, and walks its whole hash
//! table (2,048 slots and every page in them, with the writer's 8 MiB cache)
//! when that number is far past the limit. It almost always is: when a B-tree
//! split has to put its new pages in order, SQLite swaps two pages' numbers
//! through a spare one, the lock-byte page's (262,145 with 4 KiB pages), and
//! the cache keeps that as its highest. So nearly every commit walked the
//! cache: 8 % of the writer's time under `bench/run`.
//!
//! This wraps the default cache and changes one thing: it keeps its own
//! highest page number, leaving out the lock-byte page while a swap holds it,
//! and passes `xTruncate` on only when a page at or past the limit may be
//! there. When none can be, there is nothing to drop and the call is skipped.
//! Every other call goes straight to the default cache.

use rusqlite::ffi;
use std::ffi::{c_int, c_uint};
use std::sync::OnceLock;

/// The byte the lock-byte page holds (SQLite's `PENDING_BYTE`).
const PENDING_BYTE: u32 = 0x4000_0000;

/// The default cache's methods, which every call of ours ends in.
struct Base(ffi::sqlite3_pcache_methods2);
// The methods are functions of SQLite's and a pointer it passes back to them.
unsafe impl Send for Base {}
unsafe impl Sync for Base {}
static BASE: OnceLock<Base> = OnceLock::new();

fn base() -> &'static ffi::sqlite3_pcache_methods2 {
    &BASE.get().expect("the page cache is installed before it is used").0
}

/// Installs the wrapper as SQLite's page cache, once. It has to come before
/// SQLite initializes: if anything in the process opened a database first,
/// the default cache stays, and this returns false.
pub(super) fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| unsafe {
        let mut default: ffi::sqlite3_pcache_methods2 = std::mem::zeroed();
        if ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, &mut default as *mut ffi::sqlite3_pcache_methods2)
            != ffi::SQLITE_OK
            || default.xCreate.is_none()
        {
            return false;
        }
        let mut ours = default;
        ours.xCreate = Some(create);
        ours.xCachesize = Some(cachesize);
        ours.xPagecount = Some(pagecount);
        ours.xFetch = Some(fetch);
        ours.xUnpin = Some(unpin);
        ours.xRekey = Some(rekey);
        ours.xTruncate = Some(truncate);
        ours.xDestroy = Some(destroy);
        ours.xShrink = Some(shrink);
        BASE.set(Base(default)).ok();
        ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &ours as *const ffi::sqlite3_pcache_methods2) == ffi::SQLITE_OK
    })
}

/// One connection's cache: the default one, and what it may hold.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// No page numbered higher than this is in the cache, except the
    /// lock-byte page while `swap_held`.
    max_key: c_uint,
    /// The lock-byte page's number for this page size.
    lock_byte_page: c_uint,
    /// A page was renumbered to the lock-byte page and not yet away from it.
    swap_held: bool,
}

impl Cache {
    /// Whether a page numbered `limit` or higher may be in the cache.
    fn holds_from(&self, limit: c_uint) -> bool {
        self.max_key >= limit || (self.swap_held && self.lock_byte_page >= limit)
    }
}

/// # Safety
/// `p` is a cache `create` made and `destroy` has not freed; SQLite uses a
/// cache from one thread at a time.
unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    &mut *(p as *mut Cache)
}

unsafe extern "C" fn create(page_size: c_int, extra: c_int, purgeable: c_int) -> *mut ffi::sqlite3_pcache {
    let inner = base().xCreate.expect("checked at install")(page_size, extra, purgeable);
    if inner.is_null() {
        return inner;
    }
    let lock_byte_page = PENDING_BYTE / page_size.max(1) as u32 + 1;
    Box::into_raw(Box::new(Cache { inner, max_key: 0, lock_byte_page, swap_held: false })) as *mut ffi::sqlite3_pcache
}

unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, pages: c_int) {
    base().xCachesize.expect("pcache1 has it")(cache(p).inner, pages)
}

unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    base().xPagecount.expect("pcache1 has it")(cache(p).inner)
}

unsafe extern "C" fn fetch(p: *mut ffi::sqlite3_pcache, key: c_uint, create: c_int) -> *mut ffi::sqlite3_pcache_page {
    let c = cache(p);
    let page = base().xFetch.expect("pcache1 has it")(c.inner, key, create);
    if !page.is_null() && key > c.max_key {
        c.max_key = key;
    }
    page
}

unsafe extern "C" fn unpin(p: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, discard: c_int) {
    base().xUnpin.expect("pcache1 has it")(cache(p).inner, page, discard)
}

unsafe extern "C" fn rekey(p: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, old: c_uint, new: c_uint) {
    let c = cache(p);
    base().xRekey.expect("pcache1 has it")(c.inner, page, old, new);
    if old == c.lock_byte_page {
        c.swap_held = false;
    }
    if new == c.lock_byte_page {
        c.swap_held = true;
    } else if new > c.max_key {
        c.max_key = new;
    }
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    let c = cache(p);
    if !c.holds_from(limit) {
        return;
    }
    base().xTruncate.expect("pcache1 has it")(c.inner, limit);
    c.max_key = c.max_key.min(limit.saturating_sub(1));
    if c.lock_byte_page >= limit {
        c.swap_held = false;
    }
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    let c = Box::from_raw(p as *mut Cache);
    base().xDestroy.expect("pcache1 has it")(c.inner);
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    if let Some(shrink) = base().xShrink {
        shrink(cache(p).inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// Bytes of page cache the connection holds.
    fn cache_used(conn: &Connection) -> i32 {
        let (mut current, mut high) = (0, 0);
        let rc = unsafe {
            ffi::sqlite3_db_status(conn.handle(), ffi::SQLITE_DBSTATUS_CACHE_USED, &mut current, &mut high, 0)
        };
        assert_eq!(rc, ffi::SQLITE_OK);
        current
    }

    #[test]
    fn a_rolled_back_growth_leaves_no_pages_behind() {
        // Every connection is opened through `connect`, which installs it first.
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::connect(dir.path().join("t.db"), rusqlite::OpenFlags::default()).unwrap();
        assert!(install(), "the wrapper is SQLite's page cache");
        // With a rollback journal, the rollback leaves the new pages to
        // `xTruncate` (in WAL mode it drops them one by one).
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID").unwrap();
        let pages = |conn: &Connection| conn.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0)).unwrap();
        let before = (pages(&conn), cache_used(&conn));

        // A transaction grows the database by hundreds of pages, split all
        // over the table by scattered keys, then rolls back.
        conn.execute_batch("BEGIN").unwrap();
        for i in 0..20_000 {
            conn.execute(
                "INSERT INTO t VALUES (?1, ?2)",
                (format!("{:x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)), "x".repeat(50)),
            )
            .unwrap();
        }
        assert!(pages(&conn) > before.0 + 100, "the transaction grew the database");
        assert!(cache_used(&conn) > before.1 + 100 * 4096);
        conn.execute_batch("ROLLBACK").unwrap();

        // The pages past the end of the database are dropped from the cache.
        assert_eq!(pages(&conn), before.0);
        assert!(
            cache_used(&conn) <= before.1 + 4096,
            "{} bytes cached after the rollback, {} before",
            cache_used(&conn),
            before.1
        );

        // And committed growth reads back whole.
        conn.execute_batch("BEGIN").unwrap();
        for i in 0..5_000 {
            conn.execute(
                "INSERT INTO t VALUES (?1, ?2)",
                (format!("{:x}", (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)), "y"),
            )
            .unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
        assert_eq!(conn.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)).unwrap(), 5_000);
    }

    /// A page left at the lock-byte page's number is past any limit, and
    /// `xTruncate` drops it, though no other page is.
    #[test]
    fn a_page_held_at_the_lock_byte_number_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        drop(super::super::connect(dir.path().join("t.db"), rusqlite::OpenFlags::default()).unwrap());
        assert!(install());
        unsafe {
            let c = create(4096, 64, 1);
            cachesize(c, 100);
            let lock_byte_page = PENDING_BYTE / 4096 + 1;
            for key in 1..=5 {
                let page = fetch(c, key, 2);
                assert!(!page.is_null());
                if key == 5 {
                    rekey(c, page, 5, lock_byte_page);
                }
                unpin(c, page, 0);
            }
            // Nothing else is numbered 5 or higher.
            truncate(c, 6);
            assert!(fetch(c, lock_byte_page, 0).is_null(), "the page at the lock-byte number is dropped");
            let kept = fetch(c, 4, 0);
            assert!(!kept.is_null(), "pages below the limit stay");
            unpin(c, kept, 0);
            destroy(c);
        }
    }
}
