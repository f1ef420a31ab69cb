//! One system call per commit's WAL frames instead of two per frame.
//!
//! SQLite appends a frame to the WAL as two writes: its 24-byte header, then
//! the page right after it. The writer commits a few dozen frames per round,
//! each write is a system call on the commit's path, and as a frame is 24
//! bytes longer than a page, most frames straddle two pages of the file: the
//! kernel dirties each page twice. This VFS wraps the default one and changes
//! a single thing, for WAL files only: writes that continue one another are
//! gathered, and go to the file as one write when the commit's last frame
//! (the one whose header carries the database size) is complete. Any other
//! call, and any write elsewhere in the file, passes the gathered bytes on
//! first, so the file never looks different to anyone who reads it.
//!
//! Nothing else changes. SQLite publishes a commit's frames in the WAL index
//! only after its last frame is written, so readers never look for frames
//! still gathered here. A process that dies with frames gathered dies before
//! its commit was written, the same as dying halfway through writing it;
//! SQLite's recovery ignores a commit that is not whole either way.

use rusqlite::ffi;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

/// The name to open a connection with.
pub(super) const NAME: &CStr = c"orderflow-wal";

/// Length of a WAL frame header.
const FRAME_HEADER: usize = 24;

/// Most bytes gathered before they are passed on, for transactions that
/// spill many pages before they commit.
const MAX_GATHERED: usize = 1 << 20;

/// Most bytes passed on in one write: the unix VFS writes at most 128 KiB
/// less one byte per call.
const MAX_WRITE: usize = 64 << 10;

/// Registers the VFS (once); false if SQLite has no default VFS to wrap.
pub(super) fn register() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| unsafe {
        let base = ffi::sqlite3_vfs_find(std::ptr::null());
        if base.is_null() {
            return false;
        }
        let mut vfs = *base;
        vfs.pNext = std::ptr::null_mut();
        vfs.zName = NAME.as_ptr();
        vfs.szOsFile = (std::mem::size_of::<WalFile>() + (*base).szOsFile as usize) as c_int;
        vfs.xOpen = Some(open);
        // The base's other methods get this struct as their first argument;
        // it carries the base's `pAppData`, which is all they read of it.
        vfs.pAppData = (*base).pAppData;
        BASE.set(Base(base)).ok();
        let vfs = Box::leak(Box::new(vfs));
        ffi::sqlite3_vfs_register(vfs, 0) == ffi::SQLITE_OK
    })
}

struct Base(*mut ffi::sqlite3_vfs);
// The default VFS is a static inside SQLite, safe to use from any thread.
unsafe impl Send for Base {}
unsafe impl Sync for Base {}
static BASE: OnceLock<Base> = OnceLock::new();

/// A WAL file: the base VFS's file follows this struct in the same block.
#[repr(C)]
struct WalFile {
    file: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// Bytes written but not yet passed on: one run, starting at `gathered_at`.
    gathered: Vec<u8>,
    gathered_at: i64,
    /// The last write was the header of a commit's last frame: the next one,
    /// its page, completes the commit.
    commit_page_next: bool,
    /// Where the last read since the last write read from.
    read_at: Option<i64>,
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(Base(base)) = BASE.get() else { return ffi::SQLITE_ERROR };
    let base_open = (**base).xOpen.expect("a VFS can open files");
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // Any other file is the base's own, in the block SQLite gave us.
        return base_open(*base, name, file, flags, out_flags);
    }
    let wal = file as *mut WalFile;
    let inner = (file as *mut u8).add(std::mem::size_of::<WalFile>()) as *mut ffi::sqlite3_file;
    let rc = base_open(*base, name, inner, flags, out_flags);
    if rc != ffi::SQLITE_OK {
        (*wal).file.pMethods = std::ptr::null();
        return rc;
    }
    std::ptr::write(
        wal,
        WalFile {
            file: ffi::sqlite3_file { pMethods: methods((*inner).pMethods) },
            inner,
            gathered: Vec::new(),
            gathered_at: 0,
            commit_page_next: false,
            read_at: None,
        },
    );
    rc
}

/// The WAL's methods: the base's, each passing gathered bytes on first.
fn methods(base: *const ffi::sqlite3_io_methods) -> *const ffi::sqlite3_io_methods {
    static METHODS: OnceLock<Methods> = OnceLock::new();
    struct Methods(ffi::sqlite3_io_methods);
    unsafe impl Send for Methods {}
    unsafe impl Sync for Methods {}
    &METHODS
        .get_or_init(|| {
            let version = unsafe { (*base).iVersion };
            Methods(ffi::sqlite3_io_methods {
                iVersion: version,
                xClose: Some(close),
                xRead: Some(read),
                xWrite: Some(write),
                xTruncate: Some(truncate),
                xSync: Some(sync),
                xFileSize: Some(file_size),
                xLock: Some(lock),
                xUnlock: Some(unlock),
                xCheckReservedLock: Some(check_reserved_lock),
                xFileControl: Some(file_control),
                xSectorSize: Some(sector_size),
                xDeviceCharacteristics: Some(device_characteristics),
                xShmMap: Some(shm_map),
                xShmLock: Some(shm_lock),
                xShmBarrier: Some(shm_barrier),
                xShmUnmap: Some(shm_unmap),
                xFetch: Some(fetch),
                xUnfetch: Some(unfetch),
            })
        })
        .0
}

/// The base file's methods.
unsafe fn base(wal: *mut ffi::sqlite3_file) -> (*mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods) {
    let inner = (*(wal as *mut WalFile)).inner;
    (inner, &*(*inner).pMethods)
}

/// Writes the gathered bytes, if any; every method but `write` calls this first.
unsafe fn pass_on(wal: *mut ffi::sqlite3_file) -> c_int {
    let w = &mut *(wal as *mut WalFile);
    if w.gathered.is_empty() {
        return ffi::SQLITE_OK;
    }
    let (inner, m) = base(wal);
    let write = m.xWrite.expect("files can be written");
    let mut at = w.gathered_at;
    let mut rc = ffi::SQLITE_OK;
    for chunk in w.gathered.chunks(MAX_WRITE) {
        rc = write(inner, chunk.as_ptr().cast(), chunk.len() as c_int, at);
        if rc != ffi::SQLITE_OK {
            break;
        }
        at += chunk.len() as i64;
    }
    w.gathered.clear();
    rc
}

unsafe extern "C" fn write(wal: *mut ffi::sqlite3_file, data: *const c_void, amount: c_int, offset: i64) -> c_int {
    let data = std::slice::from_raw_parts(data as *const u8, amount as usize);
    let w = &mut *(wal as *mut WalFile);
    if !w.gathered.is_empty() && offset != w.gathered_at + w.gathered.len() as i64 {
        let rc = pass_on(wal);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if w.gathered.is_empty() {
        w.gathered_at = offset;
    }
    w.gathered.extend_from_slice(data);
    // A frame header's second word is the database size in pages after the
    // commit it ends, and zero in every other frame.
    let header = data.len() == FRAME_HEADER;
    let commit_header = header && data[4..8] != [0; 4];
    let commit_complete = std::mem::replace(&mut w.commit_page_next, commit_header);
    // When a transaction wrote a page twice, SQLite recomputes the checksums
    // after its last frame: it reads each frame back and writes its header
    // again, the commit frame's last. No page follows those headers.
    let rewritten = header && w.read_at.take() == Some(offset);
    if commit_complete || rewritten || w.gathered.len() >= MAX_GATHERED {
        pass_on(wal)
    } else {
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn read(wal: *mut ffi::sqlite3_file, buf: *mut c_void, amount: c_int, offset: i64) -> c_int {
    let rc = pass_on(wal);
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    (*(wal as *mut WalFile)).read_at = Some(offset);
    let (inner, m) = base(wal);
    m.xRead.expect("files can be read")(inner, buf, amount, offset)
}

unsafe extern "C" fn close(wal: *mut ffi::sqlite3_file) -> c_int {
    let passed = pass_on(wal);
    let (inner, m) = base(wal);
    let rc = m.xClose.map_or(ffi::SQLITE_OK, |f| f(inner));
    std::ptr::drop_in_place(&mut (*(wal as *mut WalFile)).gathered);
    if passed != ffi::SQLITE_OK {
        passed
    } else {
        rc
    }
}

/// Methods that pass gathered bytes on, then call the base's.
macro_rules! forward {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*), $ret:ty, $missing:expr) => {
        unsafe extern "C" fn $name(wal: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
            let rc = pass_on(wal);
            if rc != ffi::SQLITE_OK {
                return rc as $ret;
            }
            let (inner, m) = base(wal);
            match m.$field {
                Some(f) => f(inner $(, $arg)*),
                None => $missing,
            }
        }
    };
}

forward!(truncate, xTruncate, (size: i64), c_int, ffi::SQLITE_IOERR);
forward!(sync, xSync, (flags: c_int), c_int, ffi::SQLITE_IOERR);
forward!(file_size, xFileSize, (size: *mut i64), c_int, ffi::SQLITE_IOERR);
forward!(lock, xLock, (level: c_int), c_int, ffi::SQLITE_OK);
forward!(unlock, xUnlock, (level: c_int), c_int, ffi::SQLITE_OK);
forward!(check_reserved_lock, xCheckReservedLock, (out: *mut c_int), c_int, ffi::SQLITE_OK);
forward!(file_control, xFileControl, (op: c_int, arg: *mut c_void), c_int, ffi::SQLITE_NOTFOUND);
forward!(sector_size, xSectorSize, (), c_int, 4096);
forward!(device_characteristics, xDeviceCharacteristics, (), c_int, 0);
forward!(shm_map, xShmMap, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void), c_int, ffi::SQLITE_IOERR);
forward!(shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int), c_int, ffi::SQLITE_IOERR);
forward!(shm_unmap, xShmUnmap, (delete: c_int), c_int, ffi::SQLITE_OK);
forward!(fetch, xFetch, (offset: i64, amount: c_int, out: *mut *mut c_void), c_int, ffi::SQLITE_IOERR);
forward!(unfetch, xUnfetch, (offset: i64, page: *mut c_void), c_int, ffi::SQLITE_OK);

unsafe extern "C" fn shm_barrier(wal: *mut ffi::sqlite3_file) {
    pass_on(wal);
    let (inner, m) = base(wal);
    if let Some(f) = m.xShmBarrier {
        f(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::{register, NAME};
    use rusqlite::{Connection, OpenFlags};

    /// The WAL it writes is one SQLite can read and recover. Every commit is
    /// seen at once by another connection, and a copy of the database and its
    /// WAL, taken while the writer is still open and nothing has been
    /// checkpointed (what a crash leaves), holds every commit.
    #[test]
    fn a_wal_written_through_it_recovers_every_commit() {
        super::super::pcache::install();
        assert!(register());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = Connection::open_with_flags_and_vfs(&path, OpenFlags::default(), NAME).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        // As the store's writer: commits do not sync the WAL themselves.
        conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)").unwrap();
        let reader = super::super::connect(&path, OpenFlags::default()).unwrap();
        let seen = |reader: &Connection| -> (usize, usize) {
            reader
                .query_row("SELECT count(*), coalesce(sum(length(v)), 0) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
        };
        // Rows of every size, some spilling onto overflow pages: commits of
        // one frame and of many.
        let (mut rows, mut bytes) = (0, 0);
        for i in 0..300 {
            let v = "x".repeat(i * 37);
            conn.execute("INSERT INTO t (v) VALUES (?1)", [&v]).unwrap();
            (rows, bytes) = (rows + 1, bytes + v.len());
            assert_eq!(seen(&reader), (rows, bytes), "commit {i} is visible to another connection");
        }
        // A commit of far more than one write's worth of frames.
        let tx = conn.unchecked_transaction().unwrap();
        for i in 0..200 {
            let v = format!("{i:0>2000}");
            tx.execute("INSERT INTO t (v) VALUES (?1)", [&v]).unwrap();
            (rows, bytes) = (rows + 1, bytes + v.len());
        }
        tx.commit().unwrap();
        assert_eq!(seen(&reader), (rows, bytes), "the 200 rows are visible to another connection");
        // A small page cache: the next transaction spills pages to the WAL
        // before it commits, and writes some of them again.
        conn.pragma_update(None, "cache_size", 16).unwrap();
        // One transaction far larger than what is gathered before passing on.
        let tx = conn.unchecked_transaction().unwrap();
        for i in 0..3000 {
            let v = format!("{i:0>1000}");
            tx.execute("INSERT INTO t (v) VALUES (?1)", [&v]).unwrap();
            tx.execute("UPDATE t SET v = v || 'y' WHERE id = 1 + ?1 % 50", [i]).unwrap();
            (rows, bytes) = (rows + 1, bytes + v.len() + 1);
        }
        tx.commit().unwrap();
        assert_eq!(seen(&reader), (rows, bytes), "the big transaction is visible to another connection");
        let wal = std::fs::metadata(dir.path().join("w.db-wal")).unwrap().len();
        assert!(wal > 300 * 4096, "every commit is still in the WAL ({wal} bytes)");
        for file in ["w.db", "w.db-wal"] {
            std::fs::copy(dir.path().join(file), dir.path().join(format!("copy-{file}"))).unwrap();
        }

        let copy = super::super::connect(dir.path().join("copy-w.db"), OpenFlags::default()).unwrap();
        assert_eq!(seen(&copy), (rows, bytes));
        let check: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
        drop(conn);
    }
}
