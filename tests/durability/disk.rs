//! A simulated disk under SQLite, in the spirit of SQLite's own crash tests.
//!
//! `simdisk` is a VFS that wraps the default one. Every file opened under a
//! directory that has a `Disk` is tracked: each write and truncate is passed
//! on to the real file (so SQLite reads back what it wrote, as from the OS's
//! cache) and also remembered as not yet durable. A sync makes everything
//! written to that file before it durable. `Disk::cut_power` is the power
//! failure: from then on every write and sync fails, and it writes out the
//! files as a disk could hold them after the failure: what was synced, plus
//! each write made since either kept, dropped, or torn (some of its 512-byte
//! sectors written, the others not), at random from a seed.
//!
//! The disk also fails on purpose (`Fault`): the Nth write, sync or read of
//! the database or its WAL returns `EIO` or `ENOSPC` to SQLite. A failed sync
//! leaves the writes it should have made durable in doubt for good: a later
//! sync does not cover them (Linux marks such pages clean), so after a power
//! failure each of them may or may not be there.
//!
//! Not modelled: directory entries (a created or deleted file is taken to be
//! so durably) and the shared-memory index, which is not durable and which
//! SQLite rebuilds from the WAL.

use rusqlite::ffi;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The VFS's name, for `SqliteOptions::vfs`.
pub const NAME: &str = "simdisk";
const SECTOR: i64 = 512;

/// Which file of a database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Db,
    Wal,
    Journal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Write,
    Sync,
    Read,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Errno {
    Eio,
    Enospc,
}

/// An error the disk returns on purpose: on the `nth` `op` of `kind` files
/// (counted from when it is set), and on every later one if `sticky`.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub kind: Kind,
    pub op: Op,
    pub nth: u64,
    pub errno: Errno,
    pub sticky: bool,
}

/// The files under one directory.
pub struct Disk {
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    power_lost: bool,
    files: HashMap<PathBuf, Tracked>,
    fault: Option<Fault>,
    counts: HashMap<(Kind, Op), u64>,
    /// Faults returned so far.
    injected: u64,
    /// A power failure armed to come at a write or sync (`arm_power_cut`).
    armed: Option<Armed>,
    /// What the power failure did, once it came.
    cut: Option<String>,
}

struct Armed {
    /// Writes and syncs to let through first.
    left: u64,
    rng: Rng,
    to: PathBuf,
}

/// A file's content as last synced, and the changes made since, oldest first.
struct Tracked {
    base: Vec<u8>,
    changes: Vec<Change>,
}

struct Change {
    /// A write of `data` at `at`, or a truncation to `at` when `data` is `None`.
    at: i64,
    data: Option<Vec<u8>>,
    fate: Fate,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// A sync covered it.
    Durable,
    /// Not synced yet.
    Pending,
    /// Its sync failed: it may or may not be on the disk, whatever comes later.
    InDoubt,
}

/// The disks by directory; a disk is forgotten when its last `Arc` goes.
fn disks() -> &'static Mutex<Vec<Weak<Disk>>> {
    static DISKS: OnceLock<Mutex<Vec<Weak<Disk>>>> = OnceLock::new();
    DISKS.get_or_init(Default::default)
}

impl Disk {
    /// Puts the files under `dir` on a simulated disk.
    pub fn new(dir: &Path) -> Arc<Disk> {
        register();
        let disk = Arc::new(Disk { dir: dir.canonicalize().expect("the disk's directory"), state: Default::default() });
        let mut all = disks().lock().unwrap();
        all.retain(|d| d.strong_count() > 0);
        all.push(Arc::downgrade(&disk));
        disk
    }

    fn of(path: &Path) -> Option<Arc<Disk>> {
        disks().lock().unwrap().iter().filter_map(Weak::upgrade).find(|d| path.starts_with(&d.dir))
    }

    /// Sets the fault the disk returns from now on, counting from zero.
    pub fn set_fault(&self, fault: Option<Fault>) {
        let mut state = self.state.lock().unwrap();
        state.fault = fault;
        state.counts.clear();
    }

    /// How many faults the disk has returned.
    pub fn injected(&self) -> u64 {
        self.state.lock().unwrap().injected
    }

    /// Loses power now: nothing written from now on reaches the disk. Writes
    /// what the disk holds after the failure, decided by `rng`, into `to`
    /// (each file under the same name), and says what became of the writes
    /// in flight. A failure armed earlier that already came stands.
    pub fn cut_power(&self, rng: &mut Rng, to: &Path) -> String {
        let mut state = self.state.lock().unwrap();
        if let Some(done) = &state.cut {
            return done.clone();
        }
        state.cut(&self.dir, rng, to)
    }

    /// Arms a power failure to come right before the `after`th write or
    /// sync from now, in the middle of whatever SQLite is doing.
    pub fn arm_power_cut(&self, after: u64, rng: Rng, to: &Path) {
        self.state.lock().unwrap().armed = Some(Armed { left: after, rng, to: to.to_owned() });
    }

    /// Whether the armed power failure has come.
    pub fn power_lost(&self) -> bool {
        self.state.lock().unwrap().power_lost
    }
}

impl State {
    fn cut(&mut self, dir: &Path, rng: &mut Rng, to: &Path) -> String {
        self.power_lost = true;
        self.armed = None;
        let (mut kept, mut dropped, mut torn, mut doubtful) = (0, 0, 0, 0);
        let mut names: Vec<&PathBuf> = self.files.keys().collect();
        names.sort();
        for path in names {
            let file = &self.files[path];
            let mut content = file.base.clone();
            for change in &file.changes {
                match change.fate {
                    Fate::Durable => {
                        change.apply(&mut content, |_| true);
                        continue;
                    }
                    Fate::InDoubt => doubtful += 1,
                    Fate::Pending => {}
                }
                match (rng.below(3), &change.data) {
                    (0, _) => {
                        kept += 1;
                        change.apply(&mut content, |_| true);
                    }
                    (1, Some(_)) => {
                        torn += 1;
                        let mut coin = rng.clone_fork();
                        change.apply(&mut content, |_| coin.below(2) == 0);
                    }
                    _ => dropped += 1,
                }
            }
            std::fs::write(to.join(path.strip_prefix(dir).unwrap()), content).expect("writing the image");
        }
        let report = format!(
            "of the writes in flight ({doubtful} after a failed sync) {kept} kept, {dropped} dropped, {torn} torn"
        );
        self.cut = Some(report.clone());
        report
    }
}

impl Change {
    /// Applies the change to `content`, each sector of a write only where
    /// `sector_written` says so.
    fn apply(&self, content: &mut Vec<u8>, mut sector_written: impl FnMut(i64) -> bool) {
        let Some(data) = &self.data else {
            content.truncate(self.at as usize);
            return;
        };
        let end = self.at as usize + data.len();
        if content.len() < end {
            content.resize(end, 0);
        }
        let mut from = self.at;
        while from < end as i64 {
            let sector = from / SECTOR;
            let to = ((sector + 1) * SECTOR).min(end as i64);
            if sector_written(sector) {
                let src = (from - self.at) as usize..(to - self.at) as usize;
                content[from as usize..to as usize].copy_from_slice(&data[src]);
            }
            from = to;
        }
    }
}

/// A small, seeded random generator (splitmix64): a failure names its seed,
/// and the same seed replays the same choices.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn clone_fork(&mut self) -> Rng {
        Rng(self.next())
    }
}

// ---- the VFS ----

struct Base(*mut ffi::sqlite3_vfs);
// SAFETY: the default VFS is a static inside SQLite, usable from any thread.
unsafe impl Send for Base {}
unsafe impl Sync for Base {}
static BASE: OnceLock<Base> = OnceLock::new();

/// Registers the VFS, once.
fn register() {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        static NAME_C: &CStr = c"simdisk";
        // SAFETY: the default VFS outlives the process; the copy made here is
        // leaked, so it does too. Only `xOpen`, `xDelete` and the size of a
        // file change; the base's other methods read nothing but `pAppData`,
        // which the copy carries.
        unsafe {
            let base = ffi::sqlite3_vfs_find(std::ptr::null());
            assert!(!base.is_null(), "SQLite has a default VFS");
            let mut vfs = *base;
            vfs.pNext = std::ptr::null_mut();
            vfs.zName = NAME_C.as_ptr();
            vfs.szOsFile = (std::mem::size_of::<SimFile>() + (*base).szOsFile as usize) as c_int;
            vfs.xOpen = Some(open);
            vfs.xDelete = Some(delete);
            BASE.set(Base(base)).ok();
            assert_eq!(ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 0), ffi::SQLITE_OK);
        }
    });
}

fn base_vfs() -> *mut ffi::sqlite3_vfs {
    BASE.get().expect("registered").0
}

/// An open file: the base VFS's file follows this struct in the same block.
#[repr(C)]
struct SimFile {
    file: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    /// The disk and the file's path, when tracked.
    tracked: Option<(Arc<Disk>, PathBuf, Kind)>,
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let sim = file as *mut SimFile;
    let inner = (file as *mut u8).add(std::mem::size_of::<SimFile>()) as *mut ffi::sqlite3_file;
    let base_open = (*base_vfs()).xOpen.expect("a VFS opens files");
    let rc = base_open(base_vfs(), name, inner, flags, out_flags);
    if rc != ffi::SQLITE_OK {
        (*sim).file.pMethods = std::ptr::null();
        return rc;
    }
    let kind = if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
        Some(Kind::Db)
    } else if flags & ffi::SQLITE_OPEN_WAL != 0 {
        Some(Kind::Wal)
    } else if flags & ffi::SQLITE_OPEN_MAIN_JOURNAL != 0 {
        Some(Kind::Journal)
    } else {
        None
    };
    let tracked = match (kind, name.is_null()) {
        (Some(kind), false) => {
            let path = PathBuf::from(CStr::from_ptr(name).to_string_lossy().into_owned());
            Disk::of(&path).map(|disk| {
                let mut state = disk.state.lock().unwrap();
                state
                    .files
                    .entry(path.clone())
                    .or_insert_with(|| Tracked { base: std::fs::read(&path).unwrap_or_default(), changes: Vec::new() });
                drop(state);
                (disk, path, kind)
            })
        }
        _ => None,
    };
    // SAFETY: SQLite gave us `szOsFile` bytes at `file`; the struct is
    // dropped in `close`.
    std::ptr::write(sim, SimFile { file: ffi::sqlite3_file { pMethods: methods((*inner).pMethods) }, inner, tracked });
    rc
}

unsafe extern "C" fn delete(_vfs: *mut ffi::sqlite3_vfs, name: *const c_char, sync_dir: c_int) -> c_int {
    let path = PathBuf::from(CStr::from_ptr(name).to_string_lossy().into_owned());
    if let Some(disk) = Disk::of(&path) {
        let mut state = disk.state.lock().unwrap();
        if state.power_lost {
            return ffi::SQLITE_IOERR_DELETE;
        }
        state.files.remove(&path);
    }
    (*base_vfs()).xDelete.expect("a VFS deletes files")(base_vfs(), name, sync_dir)
}

fn methods(base: *const ffi::sqlite3_io_methods) -> *const ffi::sqlite3_io_methods {
    struct Methods(ffi::sqlite3_io_methods);
    // SAFETY: a table of function pointers, never written after it is made.
    unsafe impl Send for Methods {}
    unsafe impl Sync for Methods {}
    static METHODS: OnceLock<Methods> = OnceLock::new();
    &METHODS
        .get_or_init(|| {
            Methods(ffi::sqlite3_io_methods {
                // SAFETY: SQLite's own table, valid while the file is open.
                iVersion: unsafe { (*base).iVersion },
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

unsafe fn parts<'a>(
    file: *mut ffi::sqlite3_file,
) -> (&'a SimFile, *mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods) {
    let sim = &*(file as *mut SimFile);
    (sim, sim.inner, &*(*sim.inner).pMethods)
}

/// What the disk says to an operation on a tracked file before it runs:
/// `Err(code)` to fail it.
fn check(disk: &Disk, state: &mut State, kind: Kind, op: Op) -> Result<(), c_int> {
    if op != Op::Read {
        if let Some(armed) = &mut state.armed {
            if armed.left == 0 {
                let Armed { mut rng, to, .. } = state.armed.take().unwrap();
                state.cut(&disk.dir, &mut rng, &to);
            } else {
                armed.left -= 1;
            }
        }
    }
    if state.power_lost && op != Op::Read {
        return Err(if op == Op::Sync { ffi::SQLITE_IOERR_FSYNC } else { ffi::SQLITE_IOERR_WRITE });
    }
    let n = state.counts.entry((kind, op)).or_insert(0);
    *n += 1;
    let Some(fault) = state.fault else { return Ok(()) };
    if fault.kind != kind || fault.op != op || *n < fault.nth || (*n > fault.nth && !fault.sticky) {
        return Ok(());
    }
    state.injected += 1;
    Err(match (op, fault.errno) {
        (Op::Write, Errno::Enospc) => ffi::SQLITE_FULL,
        (Op::Write, Errno::Eio) => ffi::SQLITE_IOERR_WRITE,
        (Op::Sync, _) => ffi::SQLITE_IOERR_FSYNC,
        (Op::Read, _) => ffi::SQLITE_IOERR_READ,
    })
}

unsafe extern "C" fn write(file: *mut ffi::sqlite3_file, data: *const c_void, amount: c_int, offset: i64) -> c_int {
    let (sim, inner, m) = parts(file);
    let Some((disk, path, kind)) = &sim.tracked else { return m.xWrite.unwrap()(inner, data, amount, offset) };
    let mut state = disk.state.lock().unwrap();
    if let Err(rc) = check(disk, &mut state, *kind, Op::Write) {
        return rc;
    }
    let rc = m.xWrite.unwrap()(inner, data, amount, offset);
    if rc == ffi::SQLITE_OK {
        // SAFETY: SQLite's buffer holds `amount` bytes for the length of the call.
        let bytes = std::slice::from_raw_parts(data as *const u8, amount as usize).to_vec();
        let change = Change { at: offset, data: Some(bytes), fate: Fate::Pending };
        state.files.get_mut(path).expect("tracked").changes.push(change);
    }
    rc
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    let (sim, inner, m) = parts(file);
    let Some((disk, path, _)) = &sim.tracked else { return m.xTruncate.unwrap()(inner, size) };
    let mut state = disk.state.lock().unwrap();
    if state.power_lost {
        return ffi::SQLITE_IOERR_TRUNCATE;
    }
    let rc = m.xTruncate.unwrap()(inner, size);
    if rc == ffi::SQLITE_OK {
        let change = Change { at: size, data: None, fate: Fate::Pending };
        state.files.get_mut(path).expect("tracked").changes.push(change);
    }
    rc
}

/// Makes the file's changes durable; the real file is not synced, as only
/// the simulated disk's content matters.
unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    let (sim, inner, m) = parts(file);
    let Some((disk, path, kind)) = &sim.tracked else { return m.xSync.unwrap()(inner, flags) };
    let mut state = disk.state.lock().unwrap();
    let outcome = check(disk, &mut state, *kind, Op::Sync);
    let tracked = state.files.get_mut(path).expect("tracked");
    let fate = if outcome.is_ok() { Fate::Durable } else { Fate::InDoubt };
    for change in tracked.changes.iter_mut().filter(|c| c.fate == Fate::Pending) {
        change.fate = fate;
    }
    if state.power_lost {
        return ffi::SQLITE_IOERR_FSYNC;
    }
    // Changes before the first one not durable need not be kept apart.
    let tracked = state.files.get_mut(path).expect("tracked");
    let settled = tracked.changes.iter().take_while(|c| c.fate == Fate::Durable).count();
    let mut base = std::mem::take(&mut tracked.base);
    for change in tracked.changes.drain(..settled) {
        change.apply(&mut base, |_| true);
    }
    tracked.base = base;
    match outcome {
        Ok(()) => ffi::SQLITE_OK,
        Err(rc) => rc,
    }
}

unsafe extern "C" fn read(file: *mut ffi::sqlite3_file, buf: *mut c_void, amount: c_int, offset: i64) -> c_int {
    let (sim, inner, m) = parts(file);
    if let Some((disk, _, kind)) = &sim.tracked {
        if let Err(rc) = check(disk, &mut disk.state.lock().unwrap(), *kind, Op::Read) {
            return rc;
        }
    }
    m.xRead.unwrap()(inner, buf, amount, offset)
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let (_, inner, m) = parts(file);
    let rc = m.xClose.map_or(ffi::SQLITE_OK, |f| f(inner));
    // SAFETY: written in `open`, dropped once here.
    std::ptr::drop_in_place(&mut (*(file as *mut SimFile)).tracked);
    rc
}

/// Methods that go straight to the base file.
macro_rules! forward {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*), $ret:ty, $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
            let (_, inner, m) = parts(file);
            match m.$field {
                Some(f) => f(inner $(, $arg)*),
                None => $missing,
            }
        }
    };
}

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

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    let (_, inner, m) = parts(file);
    if let Some(f) = m.xShmBarrier {
        f(inner)
    }
}
