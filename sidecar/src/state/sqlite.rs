//! `state.sqlite`: one SQLite file in WAL mode, the embedded persistent default.
//!
//! The table has the layout of Dapr's own SQLite component (`key`, `value`, `is_binary`,
//! `etag`, `expiration_time`, `update_time`), with UUID ETags and values that are not JSON
//! kept base64-encoded, so a file written here reads the same under real `daprd`.
//! Writes run on a thread of the store's own, off the async runtime (but see NORMAL
//! below): a database that is busy (a second writer, `reset-state`, a slow disk) makes
//! only this store's writes wait, while locks, health checks and invocation go on. Reads
//! queue there too, except in WAL mode while that thread is idle with nothing pending: then a read runs
//! where it is asked, on the store's connection (a WAL reader takes no lock a writer
//! holds, and sees only committed data), saving two thread hand-offs per read at moderate
//! load; such a read holds the runtime's thread for its few page reads (a slow disk
//! slows it there), and one the database turns away as busy queues instead of waiting.
//! With `synchronous=NORMAL` (a WAL commit waits for no disk sync) a write does the same:
//! alone in its own transaction, where it is asked, while that thread is idle. The one
//! commit that syncs even with NORMAL, the first after a checkpoint caught up (it starts
//! the WAL over and syncs its new header), is the store's own: a one-page commit on its
//! thread right after that checkpoint, so that no caller's commit waits for that flush (a
//! checkpoint by another process on the same file is not seen, and may leave it to one); and
//! at low rates the checkpointer waits for a few hundred writes (or half a minute) before
//! it copies, so that such flushes, which a caller's write may queue behind, stay rare.
//! Under heavy load reads queue, and those queued together run in one go beside the
//! runtime. A request whose caller has given up
//! (its deadline passed) before its turn is not run at all. Commits are `synchronous=FULL`
//! by default, so an acknowledged write survives a power loss; the `synchronous`
//! metadata (`NORMAL`) trades that for speed. Writes that queue up behind one another
//! commit together (group commit): each in a savepoint of one transaction, so each stays
//! all-or-nothing on its own, and the group pays for one disk sync instead of one each;
//! no writer hears "done" before the commit that holds its write. The WAL is checkpointed
//! by a background thread, not inside commits, so that no request pays for a checkpoint;
//! while commits that sync keep coming, that thread also keeps the WAL file longer than
//! what it holds (`headroom`), so that they overwrite it instead of extending it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::{
    Concurrency, DeleteRequest, SetRequest, StoreError, Stored, TxOperation, is_json, new_uuid_etag,
};

mod headroom;

/// Settings from the component's metadata.
#[derive(Debug, Clone)]
pub struct SqliteSettings {
    pub connection_string: String,
    pub table_name: String,
    pub busy_timeout: Duration,
    pub disable_wal: bool,
    pub synchronous: Synchronous,
}

/// SQLite's `synchronous` setting: how hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// A commit is on disk when it returns: nothing acknowledged is lost on power loss.
    #[default]
    Full,
    /// Like `Full`, and the WAL's directory is synced too.
    Extra,
    /// In WAL mode, the last commits before a power loss (not a crash) may be lost.
    Normal,
}

impl Synchronous {
    pub fn parse(v: &str) -> Option<Self> {
        match v.to_ascii_uppercase().as_str() {
            "FULL" => Some(Synchronous::Full),
            "EXTRA" => Some(Synchronous::Extra),
            "NORMAL" => Some(Synchronous::Normal),
            _ => None,
        }
    }

    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Extra => "EXTRA",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Sends a write's reply once the outcome of the commit that holds it is known.
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// One piece of work for the store's thread, with the caller's reply channel.
enum Job {
    /// Runs on its own, after the writes queued before it have committed: a read never
    /// sees a write that might still fail to commit.
    Read(ReadJob),
    /// Runs inside a group's transaction (in a savepoint of its own), and says whether it
    /// wrote (else it failed and is undone) with the reply to send once the group's commit
    /// is known. `None`: its caller gave up before its turn, and nothing ran.
    Write(WriteJob),
}

/// A read: runs on the connection, and sends its own reply.
type ReadJob = Box<dyn FnOnce(&Connection, &Sql) + Send>;

/// A write: given the connection inside its savepoint (or why there is none), it runs,
/// and hands back whether it wrote and the reply to send after the commit.
type WriteJob = Box<dyn FnOnce(Result<&Connection, &str>, &Sql) -> Option<(bool, Reply)> + Send>;

/// The most writes one commit takes: enough to share a disk sync widely, few enough that
/// the first of them does not wait long for the others.
const MAX_GROUP: usize = 64;

pub struct SqliteStore {
    queue: Queue,
    /// In WAL mode: what a read needs to run on the caller's thread.
    inline: Option<Inline>,
    /// Group commits made so far.
    groups: Arc<AtomicUsize>,
    path: String,
    _checkpointer: Option<Checkpointer>,
}

/// What the store's thread, its checkpointer and the callers share about the store's work.
#[derive(Default)]
struct Work {
    /// Jobs handed to the store's thread and not yet done: while any is, nothing runs on a
    /// caller's thread (it would overtake them).
    pending: AtomicUsize,
    /// Whether the next commit may start the WAL over: such a commit syncs the WAL's header
    /// even with NORMAL, so while it may, writes are left to the store's thread, off the
    /// runtime, where the store's own commit normally starts it over first
    /// (`WAL_GROWS`, `WAL_CHECKPOINTING`, `WAL_MAY_RESTART`).
    wal: WalPhase,
    /// How far the WAL file is kept ahead of its writer (commits that sync only).
    room: headroom::Room,
    /// Writes this store's callers have made (each of a group counts): what tells the
    /// checkpointer whether a round has anything of this store's to copy.
    writes: AtomicUsize,
    /// The checkpointer's rounds so far, checkpointing or not (tests wait for them).
    rounds: AtomicUsize,
}

/// The next commit appends to the WAL: a write may run on the caller's thread.
const WAL_GROWS: u32 = 0;
/// A checkpoint is under way; if it catches up, the next commit starts the WAL over.
const WAL_CHECKPOINTING: u32 = 1;
/// A checkpoint caught up, a RESTART is under way, or the store's own start at open was
/// turned away: the next commit (the store's own, or a caller's group on the store's
/// thread, which then writes page 1 as well) starts the WAL over, and sets `WAL_GROWS`
/// again unless a phase began meanwhile.
const WAL_MAY_RESTART: u32 = 2;
/// The low bits of a [`WalPhase`] token hold the phase, the rest the times one began.
const PHASE_BITS: u32 = 3;

/// Where the WAL is in its cycle (one of the `WAL_*` above), with a count of the times a
/// checkpoint or a restart set it: whoever ends a phase ends the one it saw begin, never
/// a later one that began meanwhile (a commit that started the WAL over must not clear
/// the "may restart" of a checkpoint that caught up while it ran, or a caller's commit
/// would start the WAL over on the runtime).
#[derive(Default)]
struct WalPhase(AtomicU32);

impl WalPhase {
    /// What it is now, as a token for [`WalPhase::end`].
    fn seen(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }

    fn phase(&self) -> u32 {
        self.seen() & PHASE_BITS
    }

    fn is(&self, phase: u32) -> bool {
        self.phase() == phase
    }

    /// Begins `phase` (a checkpoint or a restart), returning its token.
    fn begin(&self, phase: u32) -> u32 {
        let next = |v: u32| (v & !PHASE_BITS).wrapping_add(PHASE_BITS + 1) | phase;
        let before = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(next(v)))
            .unwrap_or_else(|v| v);
        next(before)
    }

    /// Sets `WAL_GROWS` if the phase is still the one `seen` names.
    fn end(&self, seen: u32) {
        let grows = seen & !PHASE_BITS;
        let _ = self
            .0
            .compare_exchange(seen, grows, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether the token says the next commit may start the WAL over.
    fn may_restart(seen: u32) -> bool {
        seen & PHASE_BITS == WAL_MAY_RESTART
    }

    /// A commit that may have started the WAL over is done (`seen` before it began): later
    /// ones may run where they are asked again, unless a checkpoint began since, whose end
    /// decides.
    fn started_over(&self, seen: u32) {
        if Self::may_restart(seen) {
            self.end(seen);
        }
    }
}

impl Work {
    /// Whether a write may run on the caller's thread now: the next commit appends to the
    /// WAL, and nothing queued would be overtaken.
    fn allows_writes_here(&self) -> bool {
        self.wal.is(WAL_GROWS) && self.pending.load(Ordering::Acquire) == 0
    }
}

/// The store's connection lent to a read (or, with NORMAL, a write) on the caller's thread,
/// without waiting on a busy database; given back (even when the work panics) out of any
/// transaction it began (one left open would make the store's next `BEGIN` fail) and with
/// its own busy timeout again.
struct Borrowed<'a> {
    conn: std::sync::MutexGuard<'a, Connection>,
    busy_timeout: Duration,
}

impl<'a> Borrowed<'a> {
    fn new(conn: std::sync::MutexGuard<'a, Connection>, busy_timeout: Duration) -> Self {
        let _ = conn.busy_timeout(Duration::ZERO);
        Borrowed { conn, busy_timeout }
    }
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = control(&self.conn, "ROLLBACK");
        }
        let _ = self.conn.busy_timeout(self.busy_timeout);
    }
}

/// Whether SQLite turned a statement away as busy: `SQLITE_BUSY` ("database is locked")
/// or `SQLITE_LOCKED` ("database table is locked"), as `StoreError::backend` words them.
fn is_busy(e: &StoreError) -> bool {
    matches!(e, StoreError::Backend(why) if why.contains("is locked"))
}

/// The store's thread holds its connection while it runs a job; between jobs a read may
/// borrow it.
fn lock(writer: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    writer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What lets a read (and with NORMAL a write) run on the caller's thread (WAL only): the
/// store's connection, taken while the store's thread is idle.
struct Inline {
    sql: Arc<Sql>,
    busy_timeout: Duration,
    writer: Arc<Mutex<Connection>>,
    /// A commit waits for no disk sync (`synchronous=NORMAL` in WAL mode), so a write may
    /// run here too; one that syncs stays on the store's thread, off the runtime.
    writes: bool,
}

/// The checkpoint thread; dropping it stops the thread and waits for its last checkpoint,
/// the one that empties the WAL.
struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const LIVE: &str = "(expiration_time IS NULL OR expiration_time > CURRENT_TIMESTAMP)";
const EXPIRES: &str =
    "CASE WHEN ?4 > 0 THEN datetime('now', '+' || ?4 || ' seconds') ELSE NULL END";

/// A store's statements, written out once for its table: formatting them for every read
/// and write was about 6,000 instructions per booking (callgrind,
/// `scripts/instructions backend-sidecar`).
struct Sql {
    table: String,
    get: String,
    /// A write under the ETag it was given.
    update_matching: String,
    /// A first write (`concurrency=first-write` without an ETag): only where nothing is.
    insert_new: String,
    upsert: String,
    delete_matching: String,
    delete: String,
}

impl Sql {
    fn new(table: &str) -> Sql {
        let set = "value = excluded.value, is_binary = excluded.is_binary, \
                   expiration_time = excluded.expiration_time, etag = excluded.etag, \
                   update_time = excluded.update_time";
        let insert = format!(
            "INSERT INTO {table} (key, value, is_binary, expiration_time, etag, update_time) \
             VALUES (?1, ?2, ?3, {EXPIRES}, ?5, CURRENT_TIMESTAMP) \
             ON CONFLICT (key) DO UPDATE SET {set}"
        );
        Sql {
            table: table.to_string(),
            get: format!("SELECT value, is_binary, etag FROM {table} WHERE key = ?1 AND {LIVE}"),
            update_matching: format!(
                "UPDATE {table} SET value = ?2, is_binary = ?3, expiration_time = {EXPIRES}, \
                 etag = ?5, update_time = CURRENT_TIMESTAMP WHERE key = ?1 AND etag = ?6 AND {LIVE}"
            ),
            insert_new: format!(
                "{insert} WHERE {table}.expiration_time IS NOT NULL \
                 AND {table}.expiration_time <= CURRENT_TIMESTAMP"
            ),
            upsert: insert,
            delete_matching: format!("DELETE FROM {table} WHERE key = ?1 AND etag = ?2 AND {LIVE}"),
            delete: format!("DELETE FROM {table} WHERE key = ?1"),
        }
    }
}

fn open(settings: &SqliteSettings) -> Result<Connection, StoreError> {
    let cs = settings.connection_string.as_str();
    if cs != ":memory:"
        && !cs.starts_with("file:")
        && let Some(dir) = Path::new(cs).parent().filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(cs, flags).map_err(StoreError::backend)?;
    conn.busy_timeout(settings.busy_timeout)
        .map_err(StoreError::backend)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (and if needed creates) the database. Several sidecars may open one file at
    /// once (as the two of one stack do); a busy database is retried for a while.
    pub fn open(settings: &SqliteSettings) -> Result<Self, StoreError> {
        Self::open_with(settings, CHECKPOINTS)
    }

    fn open_with(settings: &SqliteSettings, checkpoints: Cadence) -> Result<Self, StoreError> {
        let table = &settings.table_name;
        if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StoreError::Backend(format!("invalid tableName {table:?}")));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Self::try_open(settings, checkpoints) {
                Err(StoreError::Backend(m)) if m.contains("locked") || m.contains("busy") => {
                    if std::time::Instant::now() >= deadline {
                        return Err(StoreError::Backend(m));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn try_open(settings: &SqliteSettings, checkpoints: Cadence) -> Result<Self, StoreError> {
        let table = &settings.table_name;
        let conn = open(settings)?;
        let in_memory = settings.connection_string.contains(":memory:");
        let wal = !settings.disable_wal && !in_memory;
        let journal = if wal { "wal" } else { "delete" };
        let current: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .map_err(StoreError::backend)?;
        let already = current.eq_ignore_ascii_case(journal)
            || (in_memory && current.eq_ignore_ascii_case("memory"));
        if !already {
            conn.pragma_update(None, "journal_mode", journal)
                .map_err(StoreError::backend)?;
        }
        conn.pragma_update(None, "synchronous", settings.synchronous.pragma())
            .map_err(StoreError::backend)?;
        if wal {
            // Checkpoints run on a background thread, not inside commits. The WAL keeps
            // its largest size (SQLite's default): trimming it is an ftruncate that the
            // first commit after a checkpoint would pay for (27 ms measured for a WAL of a
            // few hundred MB). The checkpointer empties it when the store closes.
            conn.pragma_update(None, "wal_autocheckpoint", 0)
                .map_err(StoreError::backend)?;
        }
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                key TEXT NOT NULL PRIMARY KEY,
                value TEXT NOT NULL,
                is_binary BOOLEAN NOT NULL,
                etag TEXT NOT NULL,
                expiration_time TIMESTAMP DEFAULT NULL,
                update_time TIMESTAMP DEFAULT NULL
            );"
        ))
        .map_err(StoreError::backend)?;
        let work = Arc::new(Work::default());
        if wal {
            // An empty WAL (one emptied at the last close) is started by the store, not by
            // its first caller's commit; if another process holds the database, that
            // commit may start it, and so runs on the store's thread.
            if !start_wal_over(&conn, settings.busy_timeout, &work) {
                work.wal.begin(WAL_MAY_RESTART);
            }
        }
        let groups = Arc::new(AtomicUsize::new(0));
        let writer = Arc::new(Mutex::new(conn));
        let sql = Arc::new(Sql::new(table));
        let jobs = spawn_worker(writer.clone(), sql.clone(), groups.clone(), work.clone())?;
        let queue = Queue { jobs, work };
        let checkpointer = if wal {
            Some(spawn_checkpointer(settings, queue.clone(), checkpoints)?)
        } else {
            None
        };
        let inline = wal.then(|| Inline {
            sql,
            busy_timeout: settings.busy_timeout,
            writer,
            writes: settings.synchronous == Synchronous::Normal,
        });
        Ok(SqliteStore {
            queue,
            inline,
            groups,
            path: settings.connection_string.clone(),
            _checkpointer: checkpointer,
        })
    }

    /// Queues the read `work` on the store's thread at once; the future waits for its
    /// result without blocking the runtime. If the caller stops waiting first, `work` is
    /// skipped.
    fn run<T: Send + 'static, W>(
        &self,
        work: W,
    ) -> impl Future<Output = Result<T, StoreError>> + use<T, W>
    where
        W: FnOnce(&Connection, &Sql) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let queued = self.queue.send(Job::Read(Box::new(move |conn, sql| {
            if !tx.is_closed() {
                let _ = tx.send(work(conn, sql));
            }
        })));
        async move {
            queued?;
            Self::reply(rx).await
        }
    }

    /// Queues the write `work` for the next group commit at once; the future's result
    /// comes once that commit is known (a write that succeeded in a commit that failed is
    /// a failure).
    fn write<W>(&self, work: W) -> impl Future<Output = Result<(), StoreError>> + use<W>
    where
        W: FnOnce(&Connection, &Sql) -> Result<(), StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let queued = self.queue.send(Job::Write(Box::new(move |conn, sql| {
            if tx.is_closed() {
                return None;
            }
            let result = match conn {
                Ok(conn) => work(conn, sql),
                Err(why) => Err(StoreError::Backend(why.to_string())),
            };
            let wrote = result.is_ok();
            let reply: Reply = Box::new(move |commit| {
                let _ = tx.send(result.and(commit.map_err(StoreError::Backend)));
            });
            Some((wrote, reply))
        })));
        async move {
            queued?;
            Self::reply(rx).await
        }
    }

    async fn reply<T>(
        rx: tokio::sync::oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        rx.await
            .map_err(|_| StoreError::Backend("the SQLite store failed this request".into()))?
    }

    pub async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        if let Some(found) = self.read_here(|conn, sql| get_one(conn, sql, key)) {
            return found;
        }
        let key = key.to_string();
        self.run(move |conn, sql| get_one(conn, sql, &key)).await
    }

    pub async fn bulk_get(
        &self,
        keys: &[String],
    ) -> Result<Vec<Result<Option<Stored>, StoreError>>, StoreError> {
        let all = |conn: &Connection, sql: &Sql| {
            let items: Vec<_> = keys.iter().map(|k| get_one(conn, sql, k)).collect();
            // One key turned away as busy: the whole read goes to the store's thread.
            match items
                .iter()
                .find_map(|i| i.as_ref().err().filter(|e| is_busy(e)))
            {
                Some(busy) => Err(StoreError::Backend(busy.to_string())),
                None => Ok(items),
            }
        };
        if let Some(found) = self.read_here(all) {
            return found;
        }
        let keys = keys.to_vec();
        self.run(move |conn, sql| Ok(keys.iter().map(|k| get_one(conn, sql, k)).collect()))
            .await
    }

    /// Runs the read `work` on this thread, on the store's own connection, when the
    /// store's thread is idle with nothing queued: no hand-off to that thread and back, and
    /// a page cache that holds what it last wrote (another connection's would start cold
    /// after every commit). `None` when the store's thread is at work or has work waiting
    /// (there, reads queued together run in one go, beside the runtime), when there is no
    /// WAL, or when the database turned the read away as busy: then it queues.
    fn read_here<T>(
        &self,
        work: impl FnOnce(&Connection, &Sql) -> Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        let (borrowed, sql) = self.borrow()?;
        let out = work(&borrowed.conn, sql);
        drop(borrowed);
        match &out {
            Err(e) if is_busy(e) => None,
            _ => Some(out),
        }
    }

    /// The store's connection, for work on the caller's thread: only in WAL mode, with
    /// nothing pending on the store's thread and the connection free.
    fn borrow(&self) -> Option<(Borrowed<'_>, &Sql)> {
        let inline = self.inline.as_ref()?;
        if self.queue.work.pending.load(Ordering::Acquire) != 0 {
            return None;
        }
        let conn = match inline.writer.try_lock() {
            Ok(conn) => conn,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some((Borrowed::new(conn, inline.busy_timeout), &inline.sql))
    }

    pub async fn set(&self, req: &SetRequest) -> Result<(), StoreError> {
        match self.write_here(|conn, sql| set_one(conn, sql, req)) {
            Some(done) => done,
            None => self.set_queued(req.clone()).await,
        }
    }

    /// The write queued now, its outcome later.
    fn set_queued(&self, req: SetRequest) -> impl Future<Output = Result<(), StoreError>> + use<> {
        self.write(move |conn, sql| set_one(conn, sql, &req))
    }

    pub async fn delete(&self, req: &DeleteRequest) -> Result<(), StoreError> {
        if let Some(done) = self.write_here(|conn, sql| delete_one(conn, sql, req)) {
            return done;
        }
        let req = req.clone();
        self.write(move |conn, sql| delete_one(conn, sql, &req))
            .await
    }

    /// Not grouped: the count must be the committed one. (`reset-state` only.)
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let prefix = prefix.to_string();
        self.run(move |conn, sql| {
            conn.execute(
                &format!(
                    "DELETE FROM {} WHERE substr(key, 1, length(?1)) = ?1",
                    sql.table
                ),
                [&prefix],
            )
            .map(|n| n as u64)
            .map_err(StoreError::backend)
        })
        .await
        // A write the checkpointer counts (one, however many rows it took).
        .inspect(|_| {
            self.queue.work.writes.fetch_add(1, Ordering::Relaxed);
        })
    }

    pub async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let prefix = prefix.to_string();
        self.run(move |conn, sql| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT key FROM {} WHERE substr(key, 1, length(?1)) = ?1 AND {LIVE} \
                     ORDER BY key",
                    sql.table
                ))
                .map_err(StoreError::backend)?;
            let keys = stmt
                .query_map([&prefix], |r| r.get::<_, String>(0))
                .map_err(StoreError::backend)?;
            keys.collect::<Result<_, _>>().map_err(StoreError::backend)
        })
        .await
    }

    /// Commits made so far: each one transaction (and, with FULL, one disk sync) for however
    /// many writes it held.
    pub fn group_commits(&self) -> usize {
        self.groups.load(Ordering::Relaxed)
    }

    pub fn location(&self) -> String {
        format!("SQLite {}", self.path)
    }

    /// All operations or none: the write's savepoint undoes the ones before a failure.
    pub async fn multi(&self, ops: &[TxOperation]) -> Result<(), StoreError> {
        match self.write_here(|conn, sql| apply(conn, sql, ops)) {
            Some(done) => done,
            None => self.multi_queued(ops.to_vec()).await,
        }
    }

    /// The transaction queued now, its outcome later.
    fn multi_queued(
        &self,
        ops: Vec<TxOperation>,
    ) -> impl Future<Output = Result<(), StoreError>> + use<> {
        self.write(move |conn, sql| apply(conn, sql, &ops))
    }

    /// Runs the write `work` in a transaction of its own on this thread, on the store's
    /// connection, when commits wait for no disk sync and the store's thread is idle with
    /// nothing queued: two thread hand-offs less per write at moderate load, as for reads.
    /// `None` when it must queue instead: commits sync, the store's thread is at work or
    /// has work waiting (writes queued together still commit together), or the database is
    /// busy (another writer): the store's thread waits for it with its busy timeout.
    fn write_here(
        &self,
        work: impl FnOnce(&Connection, &Sql) -> Result<(), StoreError>,
    ) -> Option<Result<(), StoreError>> {
        self.inline.as_ref().filter(|i| i.writes)?;
        if !self.queue.work.allows_writes_here() {
            return None;
        }
        let (borrowed, sql) = self.borrow()?;
        let conn = &*borrowed.conn;
        control(conn, "BEGIN IMMEDIATE").ok()?;
        // Whether this commit starts the WAL over was settled by BEGIN (SQLite restarts it
        // from a snapshot taken while the WAL was wholly copied): a checkpoint that began
        // since the check above sends the write to the store's thread after all (given
        // back, the connection rolls the empty transaction back).
        if !self.queue.work.allows_writes_here() {
            return None;
        }
        let outcome = match caught(|| work(conn, sql)) {
            Some(Ok(())) => control(conn, "COMMIT").map_err(StoreError::backend),
            Some(Err(e)) => Err(e),
            None => Err(StoreError::Backend(
                "the SQLite store failed this request".into(),
            )),
        };
        // A failed write or commit is rolled back when the connection is given back.
        drop(borrowed);
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.queue.work.writes.fetch_add(1, Ordering::Relaxed);
        Some(outcome)
    }
}

/// A transaction's operations, in order; the first failure stops it.
fn apply(conn: &Connection, sql: &Sql, ops: &[TxOperation]) -> Result<(), StoreError> {
    for op in ops {
        match op {
            TxOperation::Upsert(r) => set_one(conn, sql, r)?,
            TxOperation::Delete(r) => delete_one(conn, sql, r)?,
        }
    }
    Ok(())
}

/// The way to the store's thread, for the store and its checkpointer.
#[derive(Clone)]
struct Queue {
    jobs: mpsc::Sender<Job>,
    work: Arc<Work>,
}

impl Queue {
    /// Hands `job` to the store's thread, counted as pending until that thread has done it.
    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.work.pending.fetch_add(1, Ordering::AcqRel);
        self.jobs.send(job).map_err(|_| {
            self.work.pending.fetch_sub(1, Ordering::AcqRel);
            StoreError::Backend("the SQLite store's thread has stopped".into())
        })
    }
}

/// The store's thread: owns the connection and runs jobs in order until the store is
/// dropped (its sender with it). A write takes every write queued right behind it (up to
/// `MAX_GROUP`) into one commit; a read ends the group, and runs after its commit.
fn spawn_worker(
    writer: Arc<Mutex<Connection>>,
    sql: Arc<Sql>,
    groups: Arc<AtomicUsize>,
    work: Arc<Work>,
) -> Result<mpsc::Sender<Job>, StoreError> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("sqlite-store".into())
        .spawn(move || {
            let mut next = None;
            // Counted done only once run, so that nothing on a caller's thread overtakes
            // a job this thread has taken but not yet run.
            let done = |n: usize| work.pending.fetch_sub(n, Ordering::AcqRel);
            while let Some(job) = next.take().or_else(|| rx.recv().ok()) {
                match job {
                    Job::Read(read) => {
                        caught(|| read(&lock(&writer), &sql));
                        done(1);
                    }
                    Job::Write(first) => {
                        let mut group = vec![first];
                        while group.len() < MAX_GROUP {
                            match rx.try_recv() {
                                Ok(Job::Write(w)) => group.push(w),
                                Ok(read) => {
                                    next = Some(read);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        let n = group.len();
                        let wal = work.wal.seen();
                        // The writers hear the outcome once the connection is free again,
                        // so a read each of them makes next can run where it is asked.
                        let replies = commit_group(
                            &lock(&writer),
                            &sql,
                            group,
                            &groups,
                            WalPhase::may_restart(wal),
                        );
                        work.writes.fetch_add(n, Ordering::Relaxed);
                        // A commit that was to start the WAL over did (it wrote page 1
                        // whatever its writes did): later ones may run where they are asked
                        // again (unless a checkpoint began since).
                        if replies.outcome.is_ok() {
                            work.wal.started_over(wal);
                        }
                        done(n);
                        replies.send();
                    }
                }
            }
        })
        .map_err(StoreError::backend)?;
    Ok(tx)
}

/// Runs `f`; one that panics fails its own caller (its reply is dropped), not the store.
fn caught<T>(f: impl FnOnce() -> T) -> Option<T> {
    let run = std::panic::AssertUnwindSafe(f);
    let out = std::panic::catch_unwind(run).ok();
    if out.is_none() {
        tracing::error!("a SQLite store job panicked; its request failed");
    }
    out
}

/// Tells a write it cannot run, and why (its caller hears that error).
fn refuse(write: WriteJob, why: &str, sql: &Sql) {
    if let Some(Some((_, reply))) = caught(|| write(Err(why), sql)) {
        reply(Ok(()));
    }
}

/// Runs one transaction-control statement, prepared once per connection: parsing
/// `SAVEPOINT` and `RELEASE` again for every write cost about 10,000 instructions per
/// booking (callgrind, `scripts/instructions backend-sidecar`).
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// The replies of a group's writes, to send once the commit's outcome is known.
struct Replies {
    replies: Vec<Reply>,
    outcome: Result<(), String>,
}

impl Replies {
    fn send(self) {
        for reply in self.replies {
            reply(self.outcome.clone());
        }
    }
}

/// One transaction for the group, a savepoint for each write in it: a write that fails is
/// rolled back to its savepoint alone. Every reply waits for the commit's outcome. With
/// `start_over` (the WAL may start over) page 1 is written too, so that a commit, even one
/// whose writes all fail or change nothing, starts it over. The outcome says whether it
/// committed.
fn commit_group(
    conn: &Connection,
    sql: &Sql,
    group: Vec<WriteJob>,
    commits: &AtomicUsize,
    start_over: bool,
) -> Replies {
    let begun = control(conn, "BEGIN IMMEDIATE").and_then(|()| {
        if start_over {
            rewrite_page_one(conn)?;
        }
        Ok(())
    });
    if let Err(e) = begun {
        if !conn.is_autocommit() {
            let _ = control(conn, "ROLLBACK");
        }
        // Nothing runs; each caller hears why.
        let why = e.to_string();
        for write in group {
            refuse(write, &why, sql);
        }
        return Replies {
            replies: Vec::new(),
            outcome: Err(why),
        };
    }
    let mut replies: Vec<Reply> = Vec::with_capacity(group.len());
    for write in group {
        // Some errors make SQLite roll the whole transaction back by itself; what follows
        // would then commit statement by statement. Nothing more runs in such a group.
        let started = if conn.is_autocommit() {
            Err("the group's transaction was rolled back by the database".to_string())
        } else {
            control(conn, "SAVEPOINT write").map_err(|e| e.to_string())
        };
        if let Err(why) = started {
            refuse(write, &why, sql);
            continue;
        }
        match caught(|| write(Ok(conn), sql)) {
            Some(Some((true, reply))) => {
                let _ = control(conn, "RELEASE write");
                replies.push(reply);
            }
            Some(Some((false, reply))) => {
                let _ = control(conn, "ROLLBACK TO write")
                    .and_then(|()| control(conn, "RELEASE write"));
                // Its own error; the commit of the others does not change it.
                reply(Ok(()));
            }
            // Its caller gave up (nothing ran), or it panicked (its reply is dropped).
            _ => {
                let _ = control(conn, "ROLLBACK TO write")
                    .and_then(|()| control(conn, "RELEASE write"));
            }
        }
    }
    let committed = if conn.is_autocommit() {
        Err("the group's transaction was rolled back by the database".to_string())
    } else {
        control(conn, "COMMIT").map_err(|e| e.to_string())
    };
    if committed.is_err() && !conn.is_autocommit() {
        let _ = control(conn, "ROLLBACK");
    }
    // Counted before anyone hears of it.
    commits.fetch_add(1, Ordering::Relaxed);
    Replies {
        replies,
        outcome: committed,
    }
}

fn get_one(conn: &Connection, sql: &Sql, key: &str) -> Result<Option<Stored>, StoreError> {
    let mut stmt = conn.prepare_cached(&sql.get).map_err(StoreError::backend)?;
    let row = stmt
        .query_row([key], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, bool>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .optional()
        .map_err(StoreError::backend)?;
    let Some((value, is_binary, etag)) = row else {
        return Ok(None);
    };
    let data = if is_binary {
        Bytes::from(B64.decode(value.as_bytes()).map_err(StoreError::backend)?)
    } else {
        Bytes::from(value)
    };
    Ok(Some(Stored {
        data,
        etag: Some(etag),
        metadata: Vec::new(),
    }))
}

/// JSON stays readable text; anything else is base64 with `is_binary = 1`, as Dapr does.
fn encode(value: &[u8]) -> (String, bool) {
    match std::str::from_utf8(value) {
        Ok(text) if is_json(value) => (text.to_string(), false),
        _ => (B64.encode(value), true),
    }
}

fn set_one(conn: &Connection, sql: &Sql, req: &SetRequest) -> Result<(), StoreError> {
    let (value, is_binary) = encode(&req.value);
    let etag = new_uuid_etag();
    let ttl = req.ttl.unwrap_or(0).max(0);
    let changed = match (&req.etag, req.concurrency) {
        (Some(old), _) => conn
            .prepare_cached(&sql.update_matching)
            .and_then(|mut s| s.execute(params![req.key, value, is_binary, ttl, etag, old])),
        (None, Concurrency::FirstWrite) => conn
            .prepare_cached(&sql.insert_new)
            .and_then(|mut s| s.execute(params![req.key, value, is_binary, ttl, etag])),
        (None, _) => conn
            .prepare_cached(&sql.upsert)
            .and_then(|mut s| s.execute(params![req.key, value, is_binary, ttl, etag])),
    }
    .map_err(StoreError::backend)?;
    if changed == 0 {
        return Err(StoreError::EtagMismatch(format!("key {}", req.key)));
    }
    Ok(())
}

fn delete_one(conn: &Connection, sql: &Sql, req: &DeleteRequest) -> Result<(), StoreError> {
    match &req.etag {
        Some(etag) => {
            let n = conn
                .prepare_cached(&sql.delete_matching)
                .and_then(|mut s| s.execute(params![req.key, etag]))
                .map_err(StoreError::backend)?;
            if n == 0 {
                return Err(StoreError::EtagMismatch(format!("key {}", req.key)));
            }
        }
        None => {
            conn.prepare_cached(&sql.delete)
                .and_then(|mut s| s.execute([&req.key]))
                .map_err(StoreError::backend)?;
        }
    }
    Ok(())
}

/// On the store's connection, between groups: copies what the WAL holds beyond the last
/// checkpoint and starts the WAL over ([`start_wal_over`]), without waiting on another
/// process that holds the database (then the WAL is left as it is).
fn restart_wal(conn: &Connection, busy_timeout: Duration, work: &Work) {
    work.wal.begin(WAL_MAY_RESTART);
    let _ = conn.busy_timeout(Duration::ZERO);
    let restarted = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
    let _ = conn.busy_timeout(busy_timeout);
    match restarted {
        // Another process reads the WAL or holds the database: tried again next round; a
        // WAL that never starts over grows with every commit, so this is said.
        Ok(1) => tracing::info!("the WAL could not start over (the database is busy); next round"),
        Ok(_) => {
            start_wal_over(conn, busy_timeout, work);
        }
        Err(e) => tracing::warn!(error = %e, "sqlite checkpoint failed"),
    }
}

/// On the store's connection, once a checkpoint has copied the whole WAL: the commit that
/// starts the WAL over first writes its new header and syncs it, whatever `synchronous`
/// says (a frame must not reach the disk before the header that makes it valid). This
/// makes that commit one of the store's own, so that no caller's commit waits for a device
/// flush it did not ask for (with NORMAL, no other commit waits for one): page 1 written
/// as it is (`user_version` set to its own value). A caller's write arriving meanwhile
/// queues behind it. It does not wait for another process that holds the database: then
/// it says so (false), and the next commit starts the WAL over instead.
fn start_wal_over(conn: &Connection, busy_timeout: Duration, work: &Work) -> bool {
    let seen = work.wal.seen();
    let _ = conn.busy_timeout(Duration::ZERO);
    let written = control(conn, "BEGIN IMMEDIATE")
        .and_then(|()| rewrite_page_one(conn))
        .and_then(|()| control(conn, "COMMIT"));
    if written.is_err() && !conn.is_autocommit() {
        let _ = control(conn, "ROLLBACK");
    }
    let _ = conn.busy_timeout(busy_timeout);
    if written.is_ok() {
        work.wal.started_over(seen);
    }
    written.is_ok()
}

/// Inside a write transaction: page 1 written as it is (`user_version` set to its own
/// value), so that the commit writes at least one frame.
fn rewrite_page_one(conn: &Connection) -> rusqlite::Result<()> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    conn.pragma_update(None, "user_version", v)
}

/// Queues one chunk of [`headroom::lengthen`] on the store's thread; each chunk queues the
/// next, so that writes arriving meanwhile run between them.
fn queue_lengthen(queue: &Queue, wal: PathBuf, busy_timeout: Duration) {
    let next = queue.clone();
    let job: ReadJob = Box::new(move |conn, _| {
        if headroom::lengthen(conn, &wal, &next.work.room, busy_timeout) {
            queue_lengthen(&next, wal, busy_timeout);
        }
    });
    // Fails only once the store's thread has stopped: nothing is left to run ahead of.
    let _ = queue.send(Job::Read(job));
}

/// How often the checkpointer runs, and how many WAL frames (pages) it lets the WAL hold
/// before it starts the WAL over.
#[derive(Debug, Clone, Copy)]
struct Cadence {
    every: Duration,
    restart_frames: i64,
    /// Growth of the WAL in one round from which its file is kept ahead of the writer.
    sustained_frames: i64,
    /// A round checkpoints once the store's callers have made this many writes since the
    /// last checkpoint, or made any and `patience` has passed; without writes of its own,
    /// never (another process on the file checkpoints its own).
    writes: usize,
    patience: Duration,
}

/// Once a second; a restart past 64 MiB of 4 KiB pages, about four seconds of bookings at
/// 1,000/s; room ahead once the WAL grows by 4 MiB in a second. A checkpoint every round
/// from 256 writes a second; at 10 a second, one every 26 s: each that catches up is
/// followed by the store's own commit that starts the WAL over and waits for a device
/// flush, and a caller's write arriving meanwhile waits behind it.
const CHECKPOINTS: Cadence = Cadence {
    every: Duration::from_secs(1),
    restart_frames: 16_384,
    sustained_frames: 1_024,
    writes: 256,
    patience: Duration::from_secs(30),
};

/// A thread with its own connection that checkpoints the WAL (once a second). PASSIVE copies
/// the WAL into the database without waiting for or blocking a writer; under steady writes
/// it never catches up, though (commits land while it copies), and then the WAL only grows:
/// every commit extends the file, and with `synchronous=FULL` each sync must then write the
/// file's inode as well (three device flushes instead of one, measured), while reads search
/// an ever longer WAL index. So once the WAL holds `restart_frames`, RESTART follows: it
/// copies the few frames committed meanwhile and syncs, holding writers back for that short
/// while (2-6 ms measured at 1,000 bookings/s), so that the next commit starts the WAL over
/// from its beginning; from then on the file is overwritten, not extended. RESTART runs as a
/// job on the store's thread, on the store's connection, between two groups: the store's
/// writes queue behind it and go on the moment it is done (a separate connection would make
/// them wait in SQLite's busy handler, whose sleeps of 1, 2, 5, 10 ms, ... overshoot, or
/// wait for a lock the store's thread keeps taking); and it does not wait itself: when
/// another process holds the database, the restart is left for the next round. When the
/// store is dropped, TRUNCATE empties the file.
fn spawn_checkpointer(
    settings: &SqliteSettings,
    store: Queue,
    cadence: Cadence,
) -> Result<Checkpointer, StoreError> {
    let conn = open(settings)?;
    conn.busy_timeout(Duration::ZERO)
        .map_err(StoreError::backend)?;
    let busy_timeout = settings.busy_timeout;
    // Only commits that sync pay for extending the file.
    let mut headroom = match (settings.synchronous, conn.path()) {
        (Synchronous::Normal, _) | (_, None | Some("")) => None,
        (_, Some(db)) => {
            let page: u64 = conn
                .pragma_query_value(None, "page_size", |r| r.get(0))
                .map_err(StoreError::backend)?;
            Some(headroom::Headroom::new(
                db,
                page,
                cadence.sustained_frames,
                cadence.restart_frames,
            ))
        }
    };
    let (tx, rx) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            // The store's writes counted at its last checkpoint, when that was, and the
            // rounds since (the WAL's growth per round is what `headroom` weighs).
            let mut checkpointed = (0, std::time::Instant::now());
            let mut rounds = 0;
            // (frames in the WAL, frames copied into the database)
            let checkpoint = |mode: &str| {
                conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                    Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                })
            };
            let wal = &store.work.wal;
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(cadence.every) {
                store.work.rounds.fetch_add(1, Ordering::Release);
                rounds += 1;
                let now = (
                    store.work.writes.load(Ordering::Relaxed),
                    std::time::Instant::now(),
                );
                let new = now.0.wrapping_sub(checkpointed.0);
                let waited = now.1.duration_since(checkpointed.1);
                if new == 0 || (new < cadence.writes && waited < cadence.patience) {
                    continue;
                }
                // The last round's restart, or the start over after it caught up, is still
                // to come: a phase is one slot, and a round begun now would be overwritten
                // by it while its own checkpoint might catch up.
                if !wal.is(WAL_GROWS) {
                    continue;
                }
                let this_round = wal.begin(WAL_CHECKPOINTING);
                let grows = || wal.end(this_round);
                let round = checkpoint("PASSIVE");
                if let (Ok((frames, _)), Some(headroom)) = (&round, headroom.as_mut())
                    && headroom.after_round(*frames, rounds, &store.work.room)
                {
                    queue_lengthen(&store, headroom.wal().clone(), busy_timeout);
                }
                // Turned away as busy (-1: another connection checkpoints): tried again
                // next round.
                if matches!(round, Ok((frames, _)) if frames >= 0) {
                    (checkpointed, rounds) = (now, 0);
                }
                match round {
                    Ok((frames, _)) if frames < 0 => grows(),
                    Ok((frames, _)) if frames >= cadence.restart_frames => {
                        let work = store.work.clone();
                        let restart: ReadJob = Box::new(move |conn, _| {
                            restart_wal(conn, busy_timeout, &work);
                        });
                        // Pending until done (no write runs on a caller's thread before it),
                        // after which the next commit, on the store's thread, starts over.
                        // The round's phase stays until the restart begins its own, so that
                        // no round begins meanwhile. Fails only once the store is closing:
                        // its last checkpoint follows.
                        let _ = store.send(Job::Read(restart));
                    }
                    // Caught up: the next commit may start the WAL over, and the store's
                    // thread makes it its own (a round checkpoints only after callers'
                    // writes, so an idle store is not written to).
                    Ok((frames, copied)) if frames == copied => {
                        wal.begin(WAL_MAY_RESTART);
                        let work = store.work.clone();
                        let start: ReadJob = Box::new(move |conn, _| {
                            start_wal_over(conn, busy_timeout, &work);
                        });
                        // Fails only once the store is closing.
                        let _ = store.send(Job::Read(start));
                    }
                    Ok(_) => grows(),
                    Err(e) => {
                        grows();
                        tracing::warn!(error = %e, "sqlite checkpoint failed");
                    }
                }
            }
            store.work.room.stop();
            let _ = conn.busy_timeout(busy_timeout);
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        })
        .map_err(StoreError::backend)?;
    Ok(Checkpointer {
        stop: Some(tx),
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> SqliteStore {
        SqliteStore::open(&SqliteSettings {
            connection_string: ":memory:".into(),
            table_name: "state".into(),
            busy_timeout: Duration::from_secs(2),
            disable_wal: false,
            synchronous: Synchronous::Full,
        })
        .unwrap()
    }

    fn set(key: &str, value: &'static [u8], etag: Option<String>) -> SetRequest {
        SetRequest {
            key: key.into(),
            value: Bytes::from_static(value),
            etag,
            concurrency: Concurrency::Unspecified,
            ttl: None,
        }
    }

    /// A store's settings for a file at `db`.
    fn at(db: &Path, synchronous: Synchronous) -> SqliteSettings {
        SqliteSettings {
            connection_string: db.display().to_string(),
            table_name: "state".into(),
            busy_timeout: Duration::from_secs(2),
            disable_wal: false,
            synchronous,
        }
    }

    /// The WAL is never trimmed inside a commit; the store empties it when dropped.
    #[tokio::test]
    async fn the_wal_is_emptied_when_the_store_is_dropped() {
        let dir = testkit::TempDir::new("sqlite-wal");
        let db = dir.path().join("state.db");
        let s = SqliteStore::open(&at(&db, Synchronous::Normal)).unwrap();
        for i in 0..50 {
            s.set(&set(&format!("k{i}"), b"1", None)).await.unwrap();
        }
        let wal = dir.path().join("state.db-wal");
        assert!(std::fs::metadata(&wal).unwrap().len() > 0);
        drop(s);
        assert_eq!(std::fs::metadata(&wal).map_or(0, |m| m.len()), 0);
    }

    /// Polls `done` until it holds (for at most 20 s, then fails saying `what`).
    async fn until(what: &str, done: impl Fn() -> bool) {
        testkit::wait_until(what, Duration::from_secs(20), || async {
            done().then_some(())
        })
        .await
        .unwrap();
    }

    /// Runs `job` as a job of the store's thread, behind what is queued, and waits for it.
    async fn on_the_stores_thread(s: &SqliteStore, job: impl FnOnce(&Connection) + Send + 'static) {
        let (done, ran) = tokio::sync::oneshot::channel();
        let job: ReadJob = Box::new(move |conn, _| {
            job(conn);
            let _ = done.send(());
        });
        s.queue.send(Job::Read(job)).unwrap();
        ran.await.unwrap();
    }

    /// A PASSIVE checkpoint by another connection, as the checkpointer's round would run it;
    /// it must copy the whole WAL.
    fn catch_up(other: &Connection) {
        let (frames, copied): (i64, i64) = other
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(frames, copied, "caught up");
    }

    /// A checkpointer that never comes round: the tests play its rounds themselves.
    const NO_ROUNDS: Cadence = Cadence {
        every: Duration::from_secs(3_600),
        restart_frames: i64::MAX,
        sustained_frames: i64::MAX,
        writes: 1,
        patience: Duration::ZERO,
    };

    /// The WAL's checkpoint sequence (header bytes 12..16): SQLite counts one more each
    /// time a commit starts the WAL over.
    fn wal_starts(db: &Path) -> u32 {
        let head = std::fs::read(db.with_extension("db-wal")).unwrap_or_default();
        head.get(12..16)
            .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()))
    }

    /// A commit that began while the WAL might start over ends that phase, not one a
    /// checkpoint began while it ran: the interleavings, played in order.
    #[test]
    fn a_phase_is_ended_only_by_whoever_saw_it_begin() {
        let work = Work::default();
        // A commit sees "may restart"; meanwhile a round begins and catches up.
        let commit = work.wal.begin(WAL_MAY_RESTART);
        let round = work.wal.begin(WAL_CHECKPOINTING);
        work.wal.begin(WAL_MAY_RESTART);
        work.wal.started_over(commit);
        assert!(work.wal.is(WAL_MAY_RESTART), "the round's end stands");
        work.wal.end(round);
        assert!(
            work.wal.is(WAL_MAY_RESTART),
            "the round's token is gone too"
        );
        // The store's own commit after that round ends it.
        work.wal.started_over(work.wal.seen());
        assert!(work.wal.is(WAL_GROWS));

        // A commit that saw the WAL growing, or a checkpoint under way, ends nothing.
        let commit = work.wal.seen();
        work.wal.begin(WAL_MAY_RESTART);
        work.wal.started_over(commit);
        assert!(work.wal.is(WAL_MAY_RESTART));
        let round = work.wal.begin(WAL_CHECKPOINTING);
        work.wal.started_over(work.wal.seen());
        assert!(
            work.wal.is(WAL_CHECKPOINTING),
            "only the round's end clears it"
        );
        work.wal.end(round);
        assert!(work.wal.is(WAL_GROWS));

        // A round that queued a restart which ran first leaves the restart's phase.
        let round = work.wal.begin(WAL_CHECKPOINTING);
        work.wal.begin(WAL_MAY_RESTART);
        work.wal.end(round);
        assert!(work.wal.is(WAL_MAY_RESTART));
    }

    /// The store's thread, once a checkpoint caught up: a group whose writes all fail still
    /// starts the WAL over (were the phase ended without that, the next caller's commit
    /// would start it on the runtime), and a group ends only the phase it saw begin.
    #[tokio::test]
    async fn a_group_ends_only_the_phase_it_saw_and_starts_the_wal_over() {
        let dir = testkit::TempDir::new("sqlite-group-phase");
        let db = dir.path().join("state.db");
        let s = SqliteStore::open_with(&at(&db, Synchronous::Normal), NO_ROUNDS).unwrap();
        s.set(&set("k", b"1", None)).await.unwrap();
        let other = Connection::open(&db).unwrap();
        catch_up(&other);
        s.queue.work.wal.begin(WAL_MAY_RESTART);
        let before = wal_starts(&db);
        let stale = s.set(&set("k", b"2", Some("not-its-etag".into()))).await;
        assert!(stale.is_err(), "the write itself fails");
        // A write that fails hears so at once; its group commits after.
        on_the_stores_thread(&s, |_| {}).await;
        assert_eq!(
            wal_starts(&db),
            before + 1,
            "its group started the WAL over"
        );
        assert!(s.queue.work.wal.is(WAL_GROWS));

        // A round begins and catches up while a group commits on the store's thread.
        s.set(&set("k", b"3", None)).await.unwrap();
        catch_up(&other);
        s.queue.work.wal.begin(WAL_MAY_RESTART);
        let work = s.queue.work.clone();
        s.write(move |conn, sql| {
            work.wal.begin(WAL_CHECKPOINTING);
            work.wal.begin(WAL_MAY_RESTART);
            set_one(conn, sql, &set("k", b"4", None))
        })
        .await
        .unwrap();
        assert!(
            s.queue.work.wal.is(WAL_MAY_RESTART),
            "the round's end stands after the group's commit"
        );
    }

    /// Once a checkpoint has copied the whole WAL, the store's own one-page commit starts
    /// it over (and syncs its new header), so that the next caller's commit appends
    /// instead: it waits for no device flush with NORMAL.
    #[tokio::test]
    async fn the_stores_own_commit_starts_the_wal_over_not_a_callers() {
        let dir = testkit::TempDir::new("sqlite-start-over");
        let db = dir.path().join("state.db");
        let s = SqliteStore::open_with(&at(&db, Synchronous::Normal), NO_ROUNDS).unwrap();
        for i in 0..5 {
            s.set(&set(&format!("k{i}"), b"1", None)).await.unwrap();
        }
        // A checkpoint that catches up, as the checkpointer's would.
        let other = Connection::open(&db).unwrap();
        catch_up(&other);
        s.queue.work.wal.begin(WAL_MAY_RESTART);
        let before = wal_starts(&db);
        let work = s.queue.work.clone();
        on_the_stores_thread(&s, move |conn| {
            start_wal_over(conn, Duration::from_secs(2), &work);
        })
        .await;
        assert_eq!(
            wal_starts(&db),
            before + 1,
            "the store's commit started it over"
        );
        assert_eq!(s.queue.work.wal.phase(), WAL_GROWS);
        s.set(&set("k9", b"2", None)).await.unwrap();
        assert_eq!(wal_starts(&db), before + 1, "the caller's commit appended");
        assert_eq!(&s.get("k9").await.unwrap().unwrap().data[..], b"2");
        let version: i64 = other
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 0, "page 1 written as it was");
    }

    /// The checkpointer starts the WAL over after callers' commits, once per catching up;
    /// a store left idle is left alone (no commit of its own, round after round).
    #[tokio::test]
    async fn the_checkpointer_starts_the_wal_over_after_commits_only() {
        let dir = testkit::TempDir::new("sqlite-start-over-rounds");
        let db = dir.path().join("state.db");
        let s = SqliteStore::open_with(
            &at(&db, Synchronous::Normal),
            Cadence {
                every: Duration::from_millis(20),
                restart_frames: i64::MAX,
                sustained_frames: i64::MAX,
                writes: 1,
                patience: Duration::ZERO,
            },
        )
        .unwrap();
        let rounds = || s.queue.work.rounds.load(Ordering::Acquire);
        for i in 0..3 {
            let before = wal_starts(&db);
            s.set(&set(&format!("k{i}"), b"1", None)).await.unwrap();
            until("the WAL to start over", || wal_starts(&db) > before).await;
        }
        // Idle: rounds go on, the WAL is not started over again, nothing is written.
        let (starts, len) = (
            wal_starts(&db),
            std::fs::metadata(db.with_extension("db-wal"))
                .unwrap()
                .len(),
        );
        let round = rounds();
        until("five more checkpoint rounds", || rounds() >= round + 5).await;
        assert_eq!(
            wal_starts(&db),
            starts,
            "an idle store started its WAL over"
        );
        assert_eq!(
            std::fs::metadata(db.with_extension("db-wal"))
                .unwrap()
                .len(),
            len
        );
    }

    /// At a low rate a store checkpoints (and starts its WAL over) only after the cadence's
    /// writes, or once its patience is out: few device flushes for a caller to queue behind.
    #[tokio::test]
    async fn few_writes_wait_for_more_or_for_patience() {
        let dir = testkit::TempDir::new("sqlite-few-writes");
        let db = dir.path().join("state.db");
        let open = |patience| {
            let cadence = Cadence {
                every: Duration::from_millis(10),
                restart_frames: i64::MAX,
                sustained_frames: i64::MAX,
                writes: 20,
                patience,
            };
            SqliteStore::open_with(&at(&db, Synchronous::Normal), cadence).unwrap()
        };
        let s = open(Duration::from_secs(3_600));
        let rounds = |s: &SqliteStore| s.queue.work.rounds.load(Ordering::Acquire);
        let starts = wal_starts(&db);
        for i in 0..19 {
            s.set(&set(&format!("k{i}"), b"1", None)).await.unwrap();
        }
        let round = rounds(&s);
        until("ten checkpointer rounds", || rounds(&s) >= round + 10).await;
        assert_eq!(
            wal_starts(&db),
            starts,
            "19 writes of 20: no checkpoint yet"
        );
        s.set(&set("k19", b"1", None)).await.unwrap();
        until("the WAL to start over", || wal_starts(&db) > starts).await;
        drop(s);

        let s = open(Duration::from_millis(50));
        let starts = wal_starts(&db);
        s.set(&set("k0", b"2", None)).await.unwrap();
        until("the WAL to start over", || wal_starts(&db) > starts).await;
    }

    /// Under steady writes the WAL is started over once it holds the cadence's frames: the
    /// file stops growing (overwritten, not extended), while a PASSIVE checkpoint alone never
    /// catches up and lets it grow with every commit.
    #[tokio::test]
    async fn the_wal_is_started_over_under_steady_writes() {
        let dir = testkit::TempDir::new("sqlite-wal-restart");
        let db = dir.path().join("state.db");
        let s = SqliteStore::open_with(
            &at(&db, Synchronous::Normal),
            Cadence {
                every: Duration::from_millis(20),
                restart_frames: 64,
                sustained_frames: i64::MAX,
                writes: 1,
                patience: Duration::ZERO,
            },
        )
        .unwrap();
        let wal = dir.path().join("state.db-wal");
        let len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
        // Writes without a pause, as under full load: a checkpoint never finds the WAL
        // without commits landing meanwhile.
        let mut i = 0;
        let mut write = async |n: usize| {
            for _ in 0..n {
                s.set(&set(&format!("k{}", i % 500), b"0123456789abcdef", None))
                    .await
                    .unwrap();
                i += 1;
                if i % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        };
        write(1_000).await;
        let (first, starts) = (len(), wal_starts(&db));
        write(20_000).await;
        // Grown with every commit, it would be well over ten times as long now; started
        // over every few dozen milliseconds, it stays near its first length. The bound
        // leaves room for a checkpointer the machine keeps waiting a while (on 2 busy
        // cores, a WAL of 4 MB after a few hundred ms without a round): a quarter of
        // what 20,000 more commits of a frame each would have added.
        let unbounded = first + 20_000 * (4096 + headroom::FRAME_HEADER);
        assert!(
            len() < unbounded / 4,
            "the WAL grew from {first} bytes after 1,000 commits to {} after 21,000",
            len()
        );
        assert!(
            wal_starts(&db) >= starts + 10,
            "the WAL started over {} times in 20,000 commits",
            wal_starts(&db) - starts
        );
    }

    /// Under steady writes that sync, the WAL file is lengthened with zeros ahead of its
    /// writer, so that commits overwrite it rather than extend it; a copy of the database
    /// and its WAL as a crash would leave them (the WAL not started over, no shared memory)
    /// still holds every acknowledged write: the zeros are never read as frames, and never
    /// land on one; and the store still empties the WAL when it closes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_is_kept_ahead_of_steady_writes_that_sync() {
        let dir = testkit::TempDir::new("sqlite-wal-room");
        let db = dir.path().join("state.db");
        let s = Arc::new(
            SqliteStore::open_with(
                &at(&db, Synchronous::Full),
                Cadence {
                    every: Duration::from_millis(20),
                    restart_frames: i64::MAX,
                    sustained_frames: 8,
                    writes: 1,
                    patience: Duration::ZERO,
                },
            )
            .unwrap(),
        );
        let room = || s.queue.work.room.written.load(Ordering::Acquire);
        // Four writers at once, so that groups form as under load, until the WAL has been
        // lengthened at least once (and a while after).
        let mut written: i64 = 0;
        let mut batches_after = 0;
        while batches_after < 3 {
            assert!(written < 100_000, "the WAL was never lengthened");
            let batch = (0..4).map(|w| {
                let s = s.clone();
                tokio::spawn(async move {
                    for i in 0..50 {
                        let key = format!("k{}", written + w * 50 + i);
                        s.set(&set(&key, b"{\"booked\":1}", None)).await.unwrap();
                    }
                })
            });
            for task in batch.collect::<Vec<_>>() {
                task.await.unwrap();
            }
            written += 200;
            if room() > 0 {
                batches_after += 1;
            }
        }
        // Frames in the WAL; -1 while the background checkpointer holds the checkpoint.
        let wal_frames = |c: &Connection| {
            c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1))
                .map_err(StoreError::backend)
        };
        let (frames, page): (i64, i64) = s
            .run(move |c, _| {
                let mut frames = wal_frames(c)?;
                while frames < 0 {
                    std::thread::sleep(Duration::from_millis(1));
                    frames = wal_frames(c)?;
                }
                let page = c
                    .pragma_query_value(None, "page_size", |r| r.get(0))
                    .map_err(StoreError::backend)?;
                Ok((frames, page))
            })
            .await
            .unwrap();
        let wal = dir.path().join("state.db-wal");
        let len = std::fs::metadata(&wal).unwrap().len();
        let used = headroom::wal_bytes(frames as u64, page as u64 + headroom::FRAME_HEADER);
        assert!(
            len > used,
            "WAL file {len} bytes, of which SQLite wrote {used}"
        );

        // The two files as of one instant, as a crash leaves them: no commit (and so no
        // start of the WAL over, which may follow a checkpoint that caught up) while they
        // are copied; a checkpoint may still copy frames into the database file meanwhile,
        // and the WAL's copy holds those frames all the same.
        let hold = Connection::open(&db).unwrap();
        hold.execute_batch("BEGIN IMMEDIATE").unwrap();
        let copy = testkit::TempDir::new("sqlite-wal-room-copy");
        std::fs::copy(&db, copy.path().join("state.db")).unwrap();
        std::fs::copy(&wal, copy.path().join("state.db-wal")).unwrap();
        hold.execute_batch("ROLLBACK").unwrap();
        drop(hold);
        let conn = Connection::open(copy.path().join("state.db")).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM state", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, written, "rows recovered from the copy");

        drop(Arc::into_inner(s).expect("no task holds the store"));
        assert_eq!(std::fs::metadata(&wal).map_or(0, |m| m.len()), 0);
    }

    /// A store that closes while its WAL is being lengthened stops that (no chunk after its
    /// last checkpoint, which would otherwise wait for the chain, or see zeros written into
    /// the file it emptied) and empties the WAL.
    #[tokio::test]
    async fn a_closing_store_stops_lengthening_its_wal_and_empties_it() {
        let dir = testkit::TempDir::new("sqlite-wal-room-close");
        let db = dir.path().join("state.db");
        let s = SqliteStore::open(&at(&db, Synchronous::Full)).unwrap();
        s.set(&set("k", b"1", None)).await.unwrap();
        let wal = dir.path().join("state.db-wal");
        // A chain far longer than the store lives: 4 GiB.
        s.queue.work.room.start(4 << 30);
        queue_lengthen(&s.queue, wal.clone(), Duration::from_secs(2));
        drop(s);
        assert_eq!(std::fs::metadata(&wal).map_or(0, |m| m.len()), 0);
    }

    #[tokio::test]
    async fn binary_values_round_trip() {
        let s = store();
        s.set(&set("k", b"\xff\x00raw", None)).await.unwrap();
        assert_eq!(&s.get("k").await.unwrap().unwrap().data[..], b"\xff\x00raw");
    }

    #[tokio::test]
    async fn etag_changes_and_stale_etag_is_refused() {
        let s = store();
        s.set(&set("k", b"1", None)).await.unwrap();
        let e1 = s.get("k").await.unwrap().unwrap().etag.unwrap();
        s.set(&set("k", b"2", Some(e1.clone()))).await.unwrap();
        let e2 = s.get("k").await.unwrap().unwrap().etag.unwrap();
        assert_ne!(e1, e2);
        assert!(matches!(
            s.set(&set("k", b"3", Some(e1))).await,
            Err(StoreError::EtagMismatch(_))
        ));
    }

    #[tokio::test]
    async fn synchronous_is_full_unless_relaxed() {
        assert_eq!(Synchronous::default(), Synchronous::Full);
        assert_eq!(Synchronous::parse("normal"), Some(Synchronous::Normal));
        assert_eq!(
            Synchronous::parse("off"),
            None,
            "no setting that loses a crash"
        );
        let conn = store();
        let mode: i64 = conn
            .run(|c, _| {
                c.pragma_query_value(None, "synchronous", |r| r.get(0))
                    .map_err(StoreError::backend)
            })
            .await
            .unwrap();
        assert_eq!(mode, 2, "PRAGMA synchronous: 2 is FULL");
    }

    /// A read runs where it is asked only while the store's thread is idle with nothing
    /// queued; one the database turns away as busy goes to the store's thread (which waits
    /// for the database) instead of failing, and leaves the store's connection out of any
    /// transaction it began (else the next group's `BEGIN` would fail).
    #[tokio::test]
    async fn reads_run_here_only_beside_an_idle_store_thread() {
        let dir = testkit::TempDir::new("sqlite-read-here");
        let s = SqliteStore::open(&SqliteSettings {
            connection_string: dir.path().join("state.db").display().to_string(),
            table_name: "state".into(),
            busy_timeout: Duration::from_secs(2),
            disable_wal: false,
            synchronous: Synchronous::Normal,
        })
        .unwrap();
        s.set(&set("k", b"1", None)).await.unwrap();
        let here = |s: &SqliteStore| s.read_here(|conn, sql| get_one(conn, sql, "k"));
        let found = here(&s).expect("an idle store thread: the read runs here");
        assert_eq!(&found.unwrap().unwrap().data[..], b"1");
        let busy = s.read_here(|conn, sql| {
            control(conn, "BEGIN").map_err(StoreError::backend)?;
            get_one(conn, sql, "k")?;
            Err::<(), _>(StoreError::Backend("database is locked".into()))
        });
        assert!(busy.is_none(), "a busy read is handed on, not failed");
        let writer = &s.inline.as_ref().unwrap().writer;
        assert!(
            lock(writer).is_autocommit(),
            "the store's connection, clean"
        );
        let failed = s.read_here(|_, _| Err::<(), _>(StoreError::Backend("disk I/O error".into())));
        assert!(
            matches!(failed, Some(Err(_))),
            "any other error is the read's answer"
        );
        // The store's thread at work (its connection taken), or work queued for it.
        let held = lock(writer);
        assert!(here(&s).is_none());
        drop(held);
        s.queue.work.pending.fetch_add(1, Ordering::AcqRel);
        assert!(here(&s).is_none());
        s.queue.work.pending.fetch_sub(1, Ordering::AcqRel);
        s.set(&set("k", b"2", None)).await.unwrap();
        assert_eq!(&s.get("k").await.unwrap().unwrap().data[..], b"2");
        assert!(here(&s).is_some(), "idle again once its work is done");
    }

    /// With `synchronous=NORMAL` a write beside an idle store thread commits where it is
    /// asked, alone and all-or-nothing; with the thread at work, with work queued, or with
    /// the database held by another writer it queues (the store's thread waits for the
    /// database) instead of failing; with `FULL` it always queues (its sync stays off the
    /// runtime).
    #[tokio::test]
    async fn writes_run_here_only_when_commits_do_not_sync() {
        let dir = testkit::TempDir::new("sqlite-write-here");
        let db = dir.path().join("state.db").display().to_string();
        let open = |synchronous| {
            SqliteStore::open(&SqliteSettings {
                connection_string: db.clone(),
                table_name: "state".into(),
                busy_timeout: Duration::from_secs(5),
                disable_wal: false,
                synchronous,
            })
            .unwrap()
        };
        let s = open(Synchronous::Normal);
        let here =
            |s: &SqliteStore, ops: &[TxOperation]| s.write_here(|conn, sql| apply(conn, sql, ops));
        let one = [TxOperation::Upsert(set("a", b"1", None))];
        assert!(matches!(here(&s, &one), Some(Ok(()))), "idle: runs here");
        assert_eq!(&s.get("a").await.unwrap().unwrap().data[..], b"1");
        let half_way = [
            TxOperation::Upsert(set("b", b"1", None)),
            TxOperation::Upsert(set("a", b"2", Some("stale".into()))),
        ];
        assert!(matches!(
            here(&s, &half_way),
            Some(Err(StoreError::EtagMismatch(_)))
        ));
        assert!(s.get("b").await.unwrap().is_none(), "undone as a whole");
        let writer = &s.inline.as_ref().unwrap().writer;
        assert!(lock(writer).is_autocommit(), "the connection, clean");

        let held = lock(writer);
        assert!(here(&s, &one).is_none(), "the store's thread at work");
        drop(held);
        s.queue.work.pending.fetch_add(1, Ordering::AcqRel);
        assert!(here(&s, &one).is_none(), "work queued before it");
        s.queue.work.pending.fetch_sub(1, Ordering::AcqRel);
        // A commit that may start the WAL over syncs its header: left to the store's thread.
        for wal in [WAL_MAY_RESTART, WAL_CHECKPOINTING] {
            s.queue.work.wal.begin(wal);
            assert!(here(&s, &one).is_none(), "the WAL may start over");
        }
        s.set(&set("d", b"1", None)).await.unwrap();
        assert_eq!(
            s.queue.work.wal.phase(),
            WAL_CHECKPOINTING,
            "only a checkpoint's own end clears this"
        );
        s.queue.work.wal.begin(WAL_MAY_RESTART);
        s.set(&set("d", b"2", None)).await.unwrap();
        assert_eq!(
            s.queue.work.wal.phase(),
            WAL_GROWS,
            "the store's commit ended it"
        );
        assert!(matches!(here(&s, &one), Some(Ok(()))), "here again");

        // Another writer holds the database: not here, and not failed either.
        let other = Connection::open(&db).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert!(here(&s, &one).is_none(), "a busy database");
        assert!(lock(writer).is_autocommit());
        let c = set("c", b"1", None);
        let queued = s.set(&c);
        let release = async {
            tokio::task::yield_now().await;
            other.execute_batch("COMMIT").unwrap();
        };
        let (written, ()) = tokio::join!(queued, release);
        written.unwrap();
        assert!(s.get("c").await.unwrap().is_some());
        drop(s);

        let full = open(Synchronous::Full);
        assert!(here(&full, &one).is_none(), "FULL: on the store's thread");
    }

    /// Writes queued behind one another share one commit; each stays all-or-nothing on its
    /// own (a transaction failing half-way leaves nothing, the others are written); a read
    /// queued among them runs after their commit.
    #[tokio::test]
    async fn writes_queued_together_commit_together_each_on_its_own() {
        let s = store();
        // Hold the store's thread with a read until every write below is queued.
        let (release, held) = mpsc::channel::<()>();
        let blocker = s.run(move |_, _| {
            let _ = held.recv();
            Ok(())
        });
        let writes: Vec<_> = (0..40)
            .map(|i| s.set_queued(set(&format!("k{i}"), b"1", None)))
            .collect();
        let half_way = s.multi_queued(vec![
            TxOperation::Upsert(set("tx-a", b"1", None)),
            TxOperation::Upsert(set("tx-b", b"1", Some("stale".into()))),
        ]);
        let more: Vec<_> = (40..50)
            .map(|i| s.set_queued(set(&format!("k{i}"), b"1", None)))
            .collect();
        let before = s.group_commits();
        release.send(()).unwrap();
        blocker.await.unwrap();
        for w in writes.into_iter().chain(more) {
            w.await.unwrap();
        }
        assert!(matches!(half_way.await, Err(StoreError::EtagMismatch(_))));
        assert_eq!(
            s.group_commits() - before,
            1,
            "51 writes queued together, one commit"
        );
        for i in 0..50 {
            assert!(s.get(&format!("k{i}")).await.unwrap().is_some(), "k{i}");
        }
        assert!(
            s.get("tx-a").await.unwrap().is_none(),
            "the failed transaction undone"
        );
    }
}
