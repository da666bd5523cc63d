//! The durable store: every accepted request's raw bytes, metadata and parse result, and the
//! outbox of transactions waiting for delivery to Lunch Money, in one SQLite file.
//!
//! - **Durability.** The database runs in WAL mode with `synchronous = FULL`, so each commit
//!   fsyncs the WAL. `ingest` (like every write) resolves only after its commit returned: an
//!   acknowledged request survives a crash or power loss.
//! - **Group commit.** One thread (`store-writer`) owns the only write connection. Requests reach
//!   it over a bounded channel (callers wait for room, which is the backpressure); it takes one,
//!   drains whatever else is already queued, and commits them together, each in its own savepoint
//!   so one failing request is rolled back alone. Under load many requests share one fsync.
//! - **Dedupe.** A message is stored once per `dedupe_key`; a repeat is answered from the stored
//!   original (`Receipt::duplicate`). A transaction is queued once per `external_id`, whichever
//!   message carried it.
//! - **Reads** (`message`, `transactions_of`, …) use a separate read-only connection; WAL lets
//!   them run while the writer commits.
//! - **Outbox.** Each transaction row is `pending` until delivered (`delivered`) or given up on
//!   (`dead`, the dead letter). A delivery worker leases due rows with [`Store::claim_pending`]
//!   and settles them with `mark_delivered` / `mark_retry` / `mark_dead` / `release`; a lease
//!   that runs out (the worker crashed or restarted) makes the row claimable again. Writes that
//!   queue something new wake the worker through [`Store::queued_signal`]. See `outbox.rs`.
//!
//! Times are stored as RFC 3339 text, UTC, with microseconds (see [`timestamp`]), so they compare
//! and sort correctly as text.
//!
//! Shutdown: [`Store::close`] drains and commits everything queued, checkpoints the WAL and joins
//! the writer. Dropping a `Store` without closing it lets the writer finish the queue in the
//! background without waiting for it; nothing acknowledged can be lost either way.

mod checkpoint;
mod drift;
mod outbox;
mod plaid;
mod schema;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::parse::Status;
use crate::transaction::Transaction;

pub use drift::{sender_domain, DriftCount, DriftNote};
pub use outbox::{Claimed, OutboxSummary, ReparseResult};
pub use plaid::{FetchSlot, PlaidFetch};
pub use schema::SCHEMA_VERSION;
use writer::{Counters, Job, Op};

/// Requests that can wait for the writer before `ingest` callers are made to wait for room.
const QUEUE_CAPACITY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: Box<StoreError>,
    },
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The batch this request was part of could not be committed.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The store is shut down, or its writer thread died.
    #[error("the store is closed")]
    Closed,
    #[error("the store writer thread panicked")]
    WriterPanicked,
    #[error("database schema version {found} is newer than this build understands ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    /// The thing asked for (e.g. a message to re-parse) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The caller asked for something that cannot be (e.g. an unknown transaction state).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// What was decided about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Transactions were found and queued for delivery.
    Queued,
    /// A plugin recognised it and it moves no money.
    Ignored,
    /// No plugin claims it (or its plugin has no template for it): kept for re-parsing.
    Unmatched,
    /// Unreadable, or a field could not be read.
    Failed,
    /// Refused before parsing (for example, a provider verdict); kept for the record.
    Rejected,
}

impl MessageStatus {
    pub const ALL: [MessageStatus; 5] = [
        MessageStatus::Queued,
        MessageStatus::Ignored,
        MessageStatus::Unmatched,
        MessageStatus::Failed,
        MessageStatus::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Queued => "queued",
            MessageStatus::Ignored => "ignored",
            MessageStatus::Unmatched => "unmatched",
            MessageStatus::Failed => "failed",
            MessageStatus::Rejected => "rejected",
        }
    }

    pub fn from_outcome(status: Status) -> Self {
        match status {
            Status::Parsed => MessageStatus::Queued,
            Status::Ignored => MessageStatus::Ignored,
            Status::Unmatched => MessageStatus::Unmatched,
            Status::Error => MessageStatus::Failed,
        }
    }
}

impl fmt::Display for MessageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageStatus {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, StoreError> {
        MessageStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown message status {s:?}")))
    }
}

/// One accepted request and what parsing it found.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub received_at: DateTime<Utc>,
    /// `email`, `mailgun`, `postmark`, `sendgrid` or `hook` (enforced by the schema).
    pub route: String,
    /// The webhook plugin id for route `hook`, else `None`.
    pub source: Option<String>,
    /// Identity for dedupe, e.g. `msgid:<id@host>`, `sha256:<hex>`, `hook:monzo:evt_1`.
    pub dedupe_key: String,
    /// The request's Content-Type: `raw` is its body exactly as received.
    pub content_type: String,
    /// Exactly the bytes that were parsed.
    pub raw: Vec<u8>,
    pub meta: serde_json::Value,
    pub status: MessageStatus,
    pub plugin: Option<String>,
    pub reason: Option<String>,
    /// Queued for delivery only when `status` is `Queued`; ignored otherwise.
    pub transactions: Vec<Transaction>,
    /// The sender and what its template lacked, for the parser-drift counts (`drift.rs`);
    /// `None` counts nothing.
    pub drift: Option<DriftNote>,
}

/// The answer to `ingest`, given once the message is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// The stored message's id (the original's when `duplicate`).
    pub id: i64,
    /// The dedupe key was already stored; nothing was written.
    pub duplicate: bool,
    /// The stored status (the original's when `duplicate`).
    pub status: MessageStatus,
    /// Transactions carried by the message as submitted.
    pub transactions: usize,
    /// Of those, how many were newly queued (their `external_id` was new); 0 for duplicates.
    pub new_transactions: usize,
    /// Of those, how many were already stored with other content and were rewritten (an update,
    /// e.g. a settled bank transaction); 0 for duplicates.
    pub updated_transactions: usize,
    /// Of those, how many were voids recorded (a transaction withdrawn before it was sent, one
    /// voided before it arrived, or a delete of a delivered one queued); 0 for duplicates.
    pub voided_transactions: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub id: i64,
    /// RFC 3339, UTC, microseconds.
    pub received_at: String,
    pub route: String,
    pub source: Option<String>,
    pub dedupe_key: String,
    pub content_type: String,
    pub raw: Vec<u8>,
    pub meta: serde_json::Value,
    pub status: MessageStatus,
    pub plugin: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredTransaction {
    pub id: i64,
    pub message_id: i64,
    /// With `plugin` restored from its own column.
    pub transaction: Transaction,
    /// `pending`, `delivered`, `dead` or `fetched` (a Plaid fetch was triggered instead).
    pub state: String,
    /// Failed delivery attempts (reset to 0 by a replay or a re-parse that revives a dead row).
    pub attempts: i64,
    /// The latest delivery error; kept through a replay for the record, cleared on delivery.
    pub last_error: Option<String>,
    /// Lunch Money's id for it, once delivered (when the API returned one).
    pub lunchmoney_id: Option<i64>,
    /// When it is next due (RFC 3339); `None` once delivered or dead.
    pub next_attempt_at: Option<String>,
    /// RFC 3339, UTC, microseconds.
    pub created_at: String,
    /// RFC 3339, UTC, microseconds: the last change of state, body or error (claims and releases
    /// are leases, not changes, and leave it alone).
    pub updated_at: String,
}

/// Writer activity since open: `requests / commits` is the average group-commit size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Transactions committed by the writer.
    pub commits: u64,
    /// Write requests the writer has handled (committed or failed).
    pub requests: u64,
}

pub struct Store {
    path: PathBuf,
    /// `None` once closing: dropping the sender is what tells the writer to finish.
    queue: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<Result<(), StoreError>>>,
    reader: Mutex<Connection>,
    counters: Arc<Counters>,
    /// Woken after a commit that made new transactions pending (see [`Store::queued_signal`]).
    queued: Arc<Notify>,
    /// The checkpoint thread and the sender whose drop stops it.
    checkpoints: Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating it and its parent folders if needed) the database at `path`, brings its
    /// schema up to date, checks that it is writable and starts the writer thread.
    ///
    /// Blocking (file I/O, possibly waiting up to 5 s for another process's lock): call it before
    /// serving, or from `spawn_blocking`. Every failure is `StoreError::Open` naming the path.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_inner(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    fn open_inner(path: &Path) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot create folder {}: {e}", parent.display()),
                )
            })?;
        }
        let write = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        schema::configure_writer(&write)?;
        schema::migrate(&write)?;
        // A real write now, so a read-only file or full disk fails here rather than on the first
        // request.
        writer::ping(&write)?;

        let read = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        schema::configure_reader(&read)?;

        let checkpoint_conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        checkpoint_conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let (stop_checkpoints, checkpoint_stop) = std::sync::mpsc::channel();
        let checkpointer = std::thread::Builder::new()
            .name("store-checkpoint".to_owned())
            .spawn(move || checkpoint::run(checkpoint_conn, checkpoint_stop))?;

        let counters = Arc::new(Counters::default());
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let thread_counters = Arc::clone(&counters);
        let writer = std::thread::Builder::new()
            .name("store-writer".to_owned())
            .spawn(move || writer::run(write, rx, thread_counters))?;
        Ok(Store {
            path: path.to_owned(),
            queue: Some(queue),
            writer: Some(writer),
            reader: Mutex::new(read),
            counters,
            queued: Arc::new(Notify::new()),
            checkpoints: Some((stop_checkpoints, checkpointer)),
        })
    }

    /// Stores a message and queues its transactions; resolves once committed (fsync'd). A repeat
    /// of a stored `dedupe_key` writes nothing and is answered with the original's id and status.
    ///
    /// If the future is dropped after the request was queued, the request is still committed.
    pub async fn ingest(&self, message: NewMessage) -> Result<Receipt, StoreError> {
        let parsed_at = timestamp(Utc::now());
        let queued = Arc::clone(&self.queued);
        self.write_then(
            move |conn| writer::ingest(conn, &message, &parsed_at),
            move |receipt: &Receipt| {
                // A void may have queued a delete; waking for one that did not costs one claim.
                if receipt.new_transactions
                    + receipt.updated_transactions
                    + receipt.voided_transactions
                    > 0
                {
                    wake(&queued);
                }
            },
        )
        .await
    }

    /// Records a one-time token (e.g. Mailgun's) under `scope`; `Ok(true)` if never seen before,
    /// `Ok(false)` if a replay. Also deletes tokens of that scope older than `forget_before`
    /// (unix seconds) in the same commit, before looking this one up.
    pub async fn remember_token(
        &self,
        scope: &str,
        token: &str,
        now_unix: i64,
        forget_before: i64,
    ) -> Result<bool, StoreError> {
        let (scope, token) = (scope.to_owned(), token.to_owned());
        self.write(move |conn| {
            writer::remember_token(conn, &scope, &token, now_unix, forget_before)
        })
        .await
    }

    /// Replaces a stored message's `meta` (a re-parse's new sender-trust verdict).
    pub async fn set_meta(&self, id: i64, meta: serde_json::Value) -> Result<(), StoreError> {
        let text = serde_json::to_string(&meta)?;
        self.write(move |conn| {
            let changed = conn
                .prepare_cached("UPDATE messages SET meta = ?2 WHERE id = ?1")?
                .execute(rusqlite::params![id, text])?;
            if changed == 0 {
                return Err(StoreError::NotFound(format!("message {id}")));
            }
            Ok(())
        })
        .await
    }

    /// A real write and commit through the writer (upserts the health row): readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.write(writer::ping).await
    }

    /// Signalled after every commit that made transactions pending and due (a new message's
    /// transactions, a `replay`, an `apply_reparse` that queued or revived some). The outbox
    /// worker waits on it with a timeout: a permit is kept when nobody waits (`notify_one`), so a
    /// wake-up sent while the worker is busy is not lost; a missed one would only cost latency.
    pub fn queued_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.queued)
    }

    /// Runs `work` on the writer thread inside the next batch's transaction (in its own
    /// savepoint) and resolves with its result once the batch committed.
    ///
    /// If the future is dropped after the job was queued, the job still runs and commits.
    async fn write<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write_then(work, |_: &T| {}).await
    }

    /// [`Store::write`], plus `committed`, run on the writer thread right after the `COMMIT` that
    /// made `work`'s successful result durable and before the caller is answered (even when the
    /// caller stopped waiting). It must be quick and must not block.
    async fn write_then<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        committed: impl FnOnce(&T) + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Op::job(work, move |result: Result<T, StoreError>| {
            if let Ok(value) = &result {
                committed(value);
            }
            // A caller that stopped waiting is not an error.
            let _ = reply.send(result);
        }))
        .await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn send(&self, job: Job) -> Result<(), StoreError> {
        let queue = self.queue.as_ref().ok_or(StoreError::Closed)?;
        queue.send(job).await.map_err(|_| StoreError::Closed)
    }

    /// Bytes on disk: the database file plus its `-wal` and `-shm` files (missing ones count 0).
    pub fn size_bytes(&self) -> u64 {
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| {
                let mut name = self.path.clone().into_os_string();
                name.push(suffix);
                std::fs::metadata(name).map(|m| m.len()).unwrap_or(0)
            })
            .sum()
    }

    pub fn stats(&self) -> StoreStats {
        StoreStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads use their own connection and briefly block the calling thread.
    pub fn message(&self, id: i64) -> Result<Option<StoredMessage>, StoreError> {
        let conn = self.reader();
        let row = conn
            .prepare_cached(
                "SELECT id, received_at, route, source, dedupe_key, content_type, raw, meta,
                        status, plugin, reason
                 FROM messages WHERE id = ?1",
            )?
            .query_row([id], |row| {
                let meta: String = row.get(7)?;
                let status: String = row.get(8)?;
                let decoded = serde_json::from_str(&meta)
                    .map_err(|e| {
                        StoreError::Corrupt(format!("message {id}: meta is not JSON: {e}"))
                    })
                    .and_then(|meta| Ok((meta, status.parse::<MessageStatus>()?)));
                let (meta, status) = match decoded {
                    Ok(decoded) => decoded,
                    Err(e) => return Ok(Err(e)),
                };
                Ok(Ok(StoredMessage {
                    id: row.get(0)?,
                    received_at: row.get(1)?,
                    route: row.get(2)?,
                    source: row.get(3)?,
                    dedupe_key: row.get(4)?,
                    content_type: row.get(5)?,
                    raw: row.get(6)?,
                    meta,
                    status,
                    plugin: row.get(9)?,
                    reason: row.get(10)?,
                }))
            })
            .optional()?;
        row.transpose()
    }

    /// The transactions first queued by message `message_id`, oldest first. A transaction whose
    /// `external_id` was already queued by an earlier message belongs to that message.
    pub fn transactions_of(&self, message_id: i64) -> Result<Vec<StoredTransaction>, StoreError> {
        let conn = self.reader();
        query_transactions(&conn, "WHERE message_id = ?1 ORDER BY id", [message_id])
    }

    /// Ids of stored messages, newest first, optionally only those with `status`.
    pub fn message_ids(
        &self,
        status: Option<MessageStatus>,
        limit: usize,
    ) -> Result<Vec<i64>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT id FROM messages WHERE ?1 IS NULL OR status = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(
            rusqlite::params![status.map(MessageStatus::as_str), limit],
            |row| row.get(0),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// `(status, count)` for every status with at least one message, sorted by status.
    pub fn count_messages_by_status(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT status, COUNT(*) FROM messages GROUP BY status ORDER BY status",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stops accepting requests, lets the writer commit everything already queued, checkpoints
    /// the WAL into the database (`wal_checkpoint(TRUNCATE)`) and joins the writer thread.
    ///
    /// Blocks the calling thread until then (normally milliseconds; longer with a deep queue). In
    /// async code call it from `tokio::task::spawn_blocking` or `block_in_place`. It needs no
    /// runtime to make progress, so it cannot deadlock one.
    pub fn close(mut self) -> Result<(), StoreError> {
        // Checkpoints stop first, so the writer's final TRUNCATE checkpoint runs alone.
        if let Some((stop, thread)) = self.checkpoints.take() {
            drop(stop);
            let _ = thread.join();
        }
        self.queue = None;
        match self.writer.take() {
            Some(handle) => handle.join().map_err(|_| StoreError::WriterPanicked)?,
            None => Ok(()),
        }
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a read connection inconsistent.
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tests only: runs `f` on the writer connection, outside any transaction, before the writer
    /// drains its next batch.
    #[cfg(test)]
    pub(crate) async fn exec_on_writer(
        &self,
        f: impl FnOnce(&Connection) + Send + 'static,
    ) -> Result<(), StoreError> {
        self.send(Job::Exec(Box::new(f))).await
    }
}

impl Drop for Store {
    /// Closes the queue and lets the writer finish it in the background without waiting (so a
    /// drop never blocks a runtime thread). Every acknowledged request is already committed.
    fn drop(&mut self) {
        self.checkpoints = None;
        self.queue = None;
        self.writer = None;
    }
}

/// The stored form of a time: RFC 3339, UTC, microseconds (sorts as text).
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Wakes the outbox worker: the one waiting, or (when none is) the next to wait, through the
/// stored permit; and any further waiters.
fn wake(signal: &Notify) {
    signal.notify_one();
    signal.notify_waiters();
}

/// The columns `read_transaction` expects, in order.
const TRANSACTION_COLUMNS: &str = "id, message_id, plugin, body, state, attempts, last_error, \
                                   lunchmoney_id, next_attempt_at, created_at, updated_at";

/// `SELECT <TRANSACTION_COLUMNS> FROM transactions <tail>`, each row decoded.
fn query_transactions(
    conn: &Connection,
    tail: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<StoredTransaction>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TRANSACTION_COLUMNS} FROM transactions {tail}"
    ))?;
    let rows = stmt.query_map(params, read_transaction)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row??);
    }
    Ok(out)
}

/// One row of `TRANSACTION_COLUMNS`; the inner `Err` is an undecodable body.
fn read_transaction(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<Result<StoredTransaction, StoreError>> {
    let id: i64 = row.get(0)?;
    let body: String = row.get(3)?;
    let transaction = match decode_transaction(id, &body, row.get(2)?) {
        Ok(transaction) => transaction,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(StoredTransaction {
        id,
        message_id: row.get(1)?,
        transaction,
        state: row.get(4)?,
        attempts: row.get(5)?,
        last_error: row.get(6)?,
        lunchmoney_id: row.get(7)?,
        next_attempt_at: row.get(8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
    }))
}

/// A stored body with `plugin` restored from its own column.
fn decode_transaction(id: i64, body: &str, plugin: String) -> Result<Transaction, StoreError> {
    let mut transaction: Transaction = serde_json::from_str(body)
        .map_err(|e| StoreError::Corrupt(format!("transaction {id}: unreadable body: {e}")))?;
    transaction.plugin = plugin;
    Ok(transaction)
}
