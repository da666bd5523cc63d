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
//!
//! Shutdown: [`Store::close`] drains and commits everything queued, checkpoints the WAL and joins
//! the writer. Dropping a `Store` without closing it lets the writer finish the queue in the
//! background without waiting for it; nothing acknowledged can be lost either way.

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
use tokio::sync::{mpsc, oneshot};

use crate::parse::Status;
use crate::transaction::Transaction;

pub use schema::SCHEMA_VERSION;
use writer::{Counters, Job};

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
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
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
        })
    }

    /// Stores a message and queues its transactions; resolves once committed (fsync'd). A repeat
    /// of a stored `dedupe_key` writes nothing and is answered with the original's id and status.
    ///
    /// If the future is dropped after the request was queued, the request is still committed.
    pub async fn ingest(&self, message: NewMessage) -> Result<Receipt, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Ingest {
            message: Box::new(message),
            parsed_at: timestamp(Utc::now()),
            reply,
        })
        .await?;
        rx.await.map_err(|_| StoreError::Closed)?
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
        let (reply, rx) = oneshot::channel();
        self.send(Job::Token {
            scope: scope.to_owned(),
            token: token.to_owned(),
            now_unix,
            forget_before,
            reply,
        })
        .await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// A real write and commit through the writer (upserts the health row): readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Ping { reply }).await?;
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
        let mut stmt = conn.prepare_cached(
            "SELECT id, message_id, plugin, body, state, attempts, last_error
             FROM transactions WHERE message_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([message_id], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
                row.get::<_, i64>(5)?,
                row.get::<_, Option<String>>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, message_id, plugin, body, state, attempts, last_error) = row?;
            let mut transaction: Transaction = serde_json::from_str(&body).map_err(|e| {
                StoreError::Corrupt(format!("transaction {id}: unreadable body: {e}"))
            })?;
            transaction.plugin = plugin;
            out.push(StoredTransaction {
                id,
                message_id,
                transaction,
                state,
                attempts,
                last_error,
            });
        }
        Ok(out)
    }

    /// `(status, count)` for every status with at least one message, sorted by status.
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
        self.queue = None;
        self.writer = None;
    }
}

/// The stored form of a time: RFC 3339, UTC, microseconds (sorts as text).
pub(crate) fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}
