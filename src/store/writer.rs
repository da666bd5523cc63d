//! The writer thread: the only code that writes to the database.
//!
//! It blocks for one job, drains whatever else is already queued (up to `MAX_BATCH`), and runs
//! them all in one `BEGIN IMMEDIATE` … `COMMIT`, each inside its own savepoint so a failing job is
//! rolled back alone and gets its own error. Replies are sent only after `COMMIT` returned, so an
//! acknowledgement always means the data is fsync'd. Many requests share one fsync (group commit).
//!
//! A write is a [`Job::Write`] carrying an [`Op`]: a closure run on the open transaction inside
//! the job's savepoint, and a reply continuation called with the final result once the batch's
//! fate is known. Adding a write operation is a function taking `&Connection` plus a call to
//! `Store::write` (or `Store::write_then` for work that must follow the commit, such as waking the
//! outbox worker); the writer itself never changes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::Utc;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::mpsc;

use super::outbox::{reconcile, Reconciled};
use super::{timestamp, MessageStatus, NewMessage, Receipt, StoreError};

/// Most jobs committed together; bounds the latency one batch adds and the transaction's size.
pub(crate) const MAX_BATCH: usize = 512;

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) requests: AtomicU64,
}

/// What the writer runs: every write is a [`Job::Write`], whatever it does and returns.
pub(crate) enum Job {
    Write(Box<dyn Write>),
    /// Tests only: runs on the writer connection outside any transaction, before the next batch
    /// is drained (so a closure that blocks lets jobs pile up into one batch).
    #[cfg(test)]
    Exec(Box<dyn FnOnce(&Connection) + Send>),
}

/// A write with its result type erased, so the writer treats every kind of write alike. [`Op`] is
/// the implementation; adding a write operation needs no new type here.
pub(crate) trait Write: Send {
    /// Runs the write inside its own savepoint of the batch's open transaction.
    fn run(self: Box<Self>, conn: &Connection) -> Finished;
    /// The batch's transaction broke before this write could run: it fails with `error`.
    fn skip(self: Box<Self>, error: StoreError) -> Finished;
}

/// The body of a write: runs on the writer's connection, inside the open transaction and the
/// job's savepoint. An `Err` rolls back to the savepoint (this job's changes only).
pub(crate) type Work<T> = Box<dyn FnOnce(&Connection) -> Result<T, StoreError> + Send>;

/// What happens to a write's final result: called exactly once on the writer thread, after the
/// `COMMIT` returned (`Ok` only if the job succeeded *and* the commit did), or with the error that
/// prevented it. It must not block: it typically sends on a oneshot channel.
pub(crate) type Settle<T> = Box<dyn FnOnce(Result<T, StoreError>) + Send>;

/// One write: its work and its reply continuation.
pub(crate) struct Op<T> {
    work: Work<T>,
    settle: Settle<T>,
}

impl<T: Send + 'static> Op<T> {
    pub(crate) fn job(
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        settle: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) -> Job {
        Job::Write(Box::new(Op {
            work: Box::new(work),
            settle: Box::new(settle),
        }))
    }
}

impl<T: Send + 'static> Write for Op<T> {
    fn run(self: Box<Self>, conn: &Connection) -> Finished {
        let Op { work, settle } = *self;
        Finished::new(work(conn), settle)
    }

    fn skip(self: Box<Self>, error: StoreError) -> Finished {
        Finished::new(Err(error), self.settle)
    }
}

/// A job that has run inside the open transaction, holding its result until the commit decides
/// whether that result stands.
pub(crate) struct Finished {
    ok: bool,
    /// `None`: committed, the job's own result stands. `Some(e)`: the batch did not commit, so a
    /// success becomes `e` (a job's own failure stays its own).
    settle: Box<dyn FnOnce(Option<StoreError>) + Send>,
}

impl Finished {
    fn new<T: Send + 'static>(result: Result<T, StoreError>, settle: Settle<T>) -> Finished {
        Finished {
            ok: result.is_ok(),
            settle: Box::new(move |batch: Option<StoreError>| {
                settle(match batch {
                    None => result,
                    Some(error) => result.and(Err(error)),
                })
            }),
        }
    }

    fn is_ok(&self) -> bool {
        self.ok
    }

    /// The batch committed. (A caller that stopped waiting is not an error here.)
    fn committed(self) {
        (self.settle)(None)
    }

    /// The batch did not commit.
    fn failed(self, error: StoreError) {
        (self.settle)(Some(error))
    }
}

/// The thread body. Returns when every sender is gone and the queue is empty, after a final
/// `wal_checkpoint(TRUNCATE)`.
pub(crate) fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    counters: Arc<Counters>,
) -> Result<(), StoreError> {
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match rx.blocking_recv() {
                Some(job) => job,
                None => break,
            },
        };
        #[cfg(test)]
        let first = match first {
            Job::Exec(f) => {
                f(&conn);
                continue;
            }
            job => job,
        };
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                #[cfg(test)]
                Ok(job @ Job::Exec(_)) => {
                    carried = Some(job);
                    break;
                }
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&conn, batch, &counters);
    }
    // Every queued job is committed: fold the WAL back into the database and empty it.
    let (busy, _, _): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
    if busy != 0 {
        tracing::warn!("store: final WAL checkpoint was blocked by a reader; the WAL stays");
    }
    conn.close().map_err(|(_, e)| StoreError::Sqlite(e))
}

fn run_batch(conn: &Connection, batch: Vec<Job>, counters: &Counters) {
    counters
        .requests
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    let mut finished = Vec::with_capacity(batch.len());
    let outcome = execute_batch(conn, batch, &mut finished);
    let outcome = outcome.and_then(|()| conn.execute_batch("COMMIT"));
    match outcome {
        Ok(()) => {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            for f in finished {
                f.committed();
            }
        }
        Err(e) => {
            tracing::error!("store: batch of {} not committed: {e}", finished.len());
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            for f in finished {
                f.failed(batch_error(&e));
            }
        }
    }
}

/// Runs every job inside one open transaction. An `Err` means the transaction itself is broken
/// (it could not begin, a savepoint could not be managed, or SQLite rolled it back on its own);
/// every job, run or not, is then in `finished` with the result it must not keep.
fn execute_batch(
    conn: &Connection,
    batch: Vec<Job>,
    finished: &mut Vec<Finished>,
) -> rusqlite::Result<()> {
    let mut jobs = batch.into_iter();
    let mut broken = conn.execute_batch("BEGIN IMMEDIATE").err();
    for job in jobs.by_ref() {
        if let Some(e) = &broken {
            finished.push(not_run(job, batch_error(e)));
            continue;
        }
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            finished.push(not_run(job, batch_error(&e)));
            broken = Some(e);
            continue;
        }
        let done = run_job(conn, job);
        let ok = done.is_ok();
        finished.push(done);
        // SQLite rolls the whole transaction back by itself on some errors (disk full, I/O).
        if conn.is_autocommit() {
            broken = Some(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                Some("the transaction was rolled back by SQLite".to_owned()),
            ));
            continue;
        }
        let end = if ok {
            conn.execute_batch("RELEASE job")
        } else {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")
        };
        if let Err(e) = end {
            broken = Some(e);
        }
    }
    match broken {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn not_run(job: Job, error: StoreError) -> Finished {
    match job {
        Job::Write(write) => write.skip(error),
        #[cfg(test)]
        Job::Exec(_) => unreachable!("Exec jobs never enter a batch"),
    }
}

fn run_job(conn: &Connection, job: Job) -> Finished {
    match job {
        Job::Write(write) => write.run(conn),
        #[cfg(test)]
        Job::Exec(_) => unreachable!("Exec jobs never enter a batch"),
    }
}

/// One `StoreError` per waiting request for a failure they all share (`rusqlite::Error` is not
/// `Clone`): SQLite's own failures keep their code, anything else is carried as text.
fn batch_error(e: &rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(*code, message.clone()))
        }
        other => StoreError::Commit(other.to_string()),
    }
}

pub(crate) fn ingest(
    conn: &Connection,
    m: &NewMessage,
    parsed_at: &str,
) -> Result<Receipt, StoreError> {
    let meta = serde_json::to_string(&m.meta)?;
    let inserted: Option<i64> = conn
        .prepare_cached(
            "INSERT INTO messages (received_at, route, source, dedupe_key, content_type, raw, meta,
                                   status, plugin, reason, parsed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (dedupe_key) DO NOTHING
             RETURNING id",
        )?
        .query_row(
            params![
                timestamp(m.received_at),
                m.route,
                m.source,
                m.dedupe_key,
                m.content_type,
                m.raw,
                meta,
                m.status.as_str(),
                m.plugin,
                m.reason,
                parsed_at,
            ],
            |row| row.get(0),
        )
        .optional()?;
    let Some(id) = inserted else {
        let (id, status): (i64, String) = conn
            .prepare_cached("SELECT id, status FROM messages WHERE dedupe_key = ?1")?
            .query_row([&m.dedupe_key], |row| Ok((row.get(0)?, row.get(1)?)))?;
        return Ok(Receipt {
            id,
            duplicate: true,
            status: status.parse()?,
            transactions: m.transactions.len(),
            new_transactions: 0,
            updated_transactions: 0,
            voided_transactions: 0,
        });
    };
    if let Some(note) = &m.drift {
        super::drift::record(conn, note, m.status, m.plugin.as_deref(), parsed_at)?;
    }
    let mut new_transactions = 0;
    let mut updated_transactions = 0;
    let mut voided_transactions = 0;
    if m.status == MessageStatus::Queued && !m.transactions.is_empty() {
        let now = timestamp(Utc::now());
        for t in &m.transactions {
            let plugin = if t.plugin.is_empty() {
                m.plugin.as_deref().unwrap_or_default()
            } else {
                t.plugin.as_str()
            };
            match reconcile(conn, id, t, plugin, &now)? {
                Reconciled::New => new_transactions += 1,
                Reconciled::Rewritten { .. } => updated_transactions += 1,
                Reconciled::Voided { .. } => voided_transactions += 1,
                Reconciled::Unchanged | Reconciled::ChangedUnreachable => {}
            }
        }
    }
    Ok(Receipt {
        id,
        duplicate: false,
        status: m.status,
        transactions: m.transactions.len(),
        new_transactions,
        updated_transactions,
        voided_transactions,
    })
}

/// Forgets the scope's tokens older than `forget_before` first, then records this one, so a
/// token is a replay exactly when it was seen at or after `forget_before`.
pub(crate) fn remember_token(
    conn: &Connection,
    scope: &str,
    token: &str,
    now_unix: i64,
    forget_before: i64,
) -> Result<bool, StoreError> {
    conn.prepare_cached("DELETE FROM replay_tokens WHERE scope = ?1 AND seen_at < ?2")?
        .execute(params![scope, forget_before])?;
    let added = conn
        .prepare_cached(
            "INSERT INTO replay_tokens (scope, token, seen_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (scope, token) DO NOTHING",
        )?
        .execute(params![scope, token, now_unix])?;
    Ok(added == 1)
}

pub(crate) fn ping(conn: &Connection) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO health (id, checked_at) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
    )?
    .execute([timestamp(Utc::now())])?;
    Ok(())
}
