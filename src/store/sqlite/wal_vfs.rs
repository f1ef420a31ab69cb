//! One system call per WAL frame instead of two.
//!
//! SQLite appends a frame to the WAL as two writes: its 24-byte header, then
//! the page right after it. The writer commits a few dozen frames per round,
//! and each write is a system call on the commit's path. This VFS wraps the
//! default one and changes a single thing, for WAL files only: a frame header
//! is held back until the next call, and when that call writes the page right
//! after it, the two go to the file as one write. Any other call writes the
//! header first, so the file never looks different to anyone who reads it.
//!
//! Nothing else changes. A process that dies with a header held back dies
//! before its page was written, the same as dying between the two writes;
//! SQLite's recovery ignores a frame that is not whole either way. Readers
//! only look at frames a commit has published in the WAL index, after the last
//! frame's page (and so its header) was written.

use rusqlite::ffi;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

/// The name to open a connection with.
pub(super) const NAME: &CStr = c"orderflow-wal";

/// Length of a WAL frame header.
const FRAME_HEADER: usize = 24;

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
    /// A frame header written but not yet passed on, and where it goes.
    header: [u8; FRAME_HEADER],
    header_at: Option<i64>,
    /// Header and page, put together.
    joined: Vec<u8>,
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
            header: [0; FRAME_HEADER],
            header_at: None,
            joined: Vec::new(),
        },
    );
    rc
}

/// The WAL's methods: the base's, each passing a held header on first.
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

/// Writes a held header, if any; every method but `write` calls this first.
unsafe fn pass_on(wal: *mut ffi::sqlite3_file) -> c_int {
    let w = wal as *mut WalFile;
    let Some(at) = (*w).header_at.take() else { return ffi::SQLITE_OK };
    let (inner, m) = base(wal);
    m.xWrite.expect("files can be written")(inner, (*w).header.as_ptr().cast(), FRAME_HEADER as c_int, at)
}

unsafe extern "C" fn write(wal: *mut ffi::sqlite3_file, data: *const c_void, amount: c_int, offset: i64) -> c_int {
    let w = wal as *mut WalFile;
    let (inner, m) = base(wal);
    let write = m.xWrite.expect("files can be written");
    let data = std::slice::from_raw_parts(data as *const u8, amount as usize);
    match (*w).header_at {
        None if data.len() == FRAME_HEADER => {
            (*w).header.copy_from_slice(data);
            (*w).header_at = Some(offset);
            ffi::SQLITE_OK
        }
        Some(at) if at + FRAME_HEADER as i64 == offset => {
            (*w).header_at = None;
            let joined = &mut (*w).joined;
            joined.clear();
            joined.extend_from_slice(&(*w).header);
            joined.extend_from_slice(data);
            write(inner, joined.as_ptr().cast(), joined.len() as c_int, at)
        }
        _ => match pass_on(wal) {
            ffi::SQLITE_OK => write(inner, data.as_ptr().cast(), amount, offset),
            rc => rc,
        },
    }
}

unsafe extern "C" fn close(wal: *mut ffi::sqlite3_file) -> c_int {
    let held = pass_on(wal);
    let (inner, m) = base(wal);
    let rc = m.xClose.map_or(ffi::SQLITE_OK, |f| f(inner));
    std::ptr::drop_in_place(&mut (*(wal as *mut WalFile)).joined);
    if held != ffi::SQLITE_OK {
        held
    } else {
        rc
    }
}

/// Methods that pass a held header on, then call the base's.
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

forward!(read, xRead, (buf: *mut c_void, amount: c_int, offset: i64), c_int, ffi::SQLITE_IOERR);
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

    /// The WAL it writes is one SQLite can recover: a copy of the database
    /// and its WAL, taken while the writer is still open and nothing has been
    /// checkpointed (what a crash leaves), holds every commit.
    #[test]
    fn a_wal_written_through_it_recovers_every_commit() {
        assert!(register());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = Connection::open_with_flags_and_vfs(&path, OpenFlags::default(), NAME).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)").unwrap();
        // Rows of every size, some spilling onto overflow pages: commits of
        // one frame and of many.
        let mut expected = 0;
        for i in 0..300 {
            let v = "x".repeat(i * 37);
            expected += v.len();
            conn.execute("INSERT INTO t (v) VALUES (?1)", [v]).unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("w.db-wal")).unwrap().len();
        assert!(wal > 300 * 4096, "every commit is still in the WAL ({wal} bytes)");
        for file in ["w.db", "w.db-wal"] {
            std::fs::copy(dir.path().join(file), dir.path().join(format!("copy-{file}"))).unwrap();
        }

        let copy = Connection::open(dir.path().join("copy-w.db")).unwrap();
        let (rows, bytes): (usize, usize) =
            copy.query_row("SELECT count(*), sum(length(v)) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((rows, bytes), (300, expected));
        let check: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
        drop(conn);
    }
}
