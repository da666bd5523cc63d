//! Connection settings and the versioned schema.
//!
//! The schema version lives in `PRAGMA user_version`. Migrations are forward-only: `MIGRATIONS[i]`
//! takes a database from version `i` to `i + 1`, and each runs in its own `BEGIN IMMEDIATE`
//! transaction together with the version bump, so a crash mid-migration leaves the old version.
//! Never edit a released migration; append a new one.

use std::time::Duration;

use rusqlite::Connection;

use super::StoreError;

/// How long a connection waits for another one's lock before giving up with `SQLITE_BUSY`.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// After a checkpoint, a WAL file larger than this is truncated back to it.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Version 1: messages (raw request + parse result), the transaction outbox, replay tokens and
/// the readiness row.
///
/// Beyond the design sketch it adds CHECK constraints on the closed vocabularies (route,
/// content type, status, state), on `meta` being JSON, and on `external_id` fitting Lunch Money's
/// 1..=75 characters, plus an index for forgetting old replay tokens.
///
/// The outbox indexes (`transactions_by_state`, `transactions_pending`, `transactions_with_error`)
/// and `messages_by_received` were added in place before any deployment, while version 1 was
/// still unreleased; a database created before that lacks only those indexes (it works, slower).
const V1: &str = r#"
CREATE TABLE messages (
  id INTEGER PRIMARY KEY,
  received_at TEXT NOT NULL,
  route TEXT NOT NULL CHECK (route IN ('email', 'mailgun', 'postmark', 'sendgrid', 'hook')),
  source TEXT,
  dedupe_key TEXT NOT NULL UNIQUE CHECK (dedupe_key <> ''),
  content_type TEXT NOT NULL,           -- the request's own Content-Type: its body is stored as received
  raw BLOB NOT NULL,
  meta TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta)),
  status TEXT NOT NULL CHECK (status IN ('queued', 'ignored', 'unmatched', 'failed', 'rejected')),
  plugin TEXT,
  reason TEXT,
  parsed_at TEXT NOT NULL
);
CREATE INDEX messages_by_status ON messages(status, received_at);
CREATE INDEX messages_by_received ON messages(received_at);     -- re-parse: messages since

CREATE TABLE transactions (
  id INTEGER PRIMARY KEY,
  message_id INTEGER NOT NULL REFERENCES messages(id),
  external_id TEXT NOT NULL UNIQUE CHECK (length(external_id) BETWEEN 1 AND 75),
  plugin TEXT NOT NULL,
  body TEXT NOT NULL CHECK (json_valid(body)),
  state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at TEXT,
  claimed_until TEXT,
  last_error TEXT,
  lunchmoney_id INTEGER,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
-- Claim order (pending, oldest first: created_at then rowid), listings by state, counts.
CREATE INDEX transactions_by_state ON transactions(state, created_at);
-- The earliest next attempt.
CREATE INDEX transactions_pending ON transactions(state, next_attempt_at);
-- The latest error (few rows: pending after a failure, and dead letters).
CREATE INDEX transactions_with_error ON transactions(updated_at) WHERE last_error IS NOT NULL;
CREATE INDEX transactions_by_message ON transactions(message_id);

CREATE TABLE replay_tokens (
  scope TEXT NOT NULL,
  token TEXT NOT NULL,
  seen_at INTEGER NOT NULL,
  PRIMARY KEY (scope, token)
);
CREATE INDEX replay_tokens_by_age ON replay_tokens(scope, seen_at);

CREATE TABLE health (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at TEXT NOT NULL);
"#;

/// Version 2: Plaid-linked sources and parser drift.
///
/// - Transactions of a source linked through Plaid are never inserted: the alert triggers a Plaid
///   fetch and the row ends `fetched`. SQLite cannot change a CHECK constraint in place, so the
///   transactions table is rebuilt with the wider state list (nothing references it).
/// - `plaid_fetches`: the last fetch of each Plaid account and when the next is allowed, so a
///   restart never fetches within Lunch Money's minute.
/// - `parse_drift`: per sender counts of unmatched and failed mail and of parses missing a field
///   (see `Store::record_drift` for how the number of senders is bounded).
const V2: &str = r#"
CREATE TABLE transactions_v2 (
  id INTEGER PRIMARY KEY,
  message_id INTEGER NOT NULL REFERENCES messages(id),
  external_id TEXT NOT NULL UNIQUE CHECK (length(external_id) BETWEEN 1 AND 75),
  plugin TEXT NOT NULL,
  body TEXT NOT NULL CHECK (json_valid(body)),
  state TEXT NOT NULL DEFAULT 'pending'
    CHECK (state IN ('pending', 'delivered', 'dead', 'fetched')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at TEXT,
  claimed_until TEXT,
  last_error TEXT,
  lunchmoney_id INTEGER,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
INSERT INTO transactions_v2 SELECT id, message_id, external_id, plugin, body, state, attempts,
  next_attempt_at, claimed_until, last_error, lunchmoney_id, created_at, updated_at
  FROM transactions;
DROP TABLE transactions;
ALTER TABLE transactions_v2 RENAME TO transactions;
CREATE INDEX transactions_by_state ON transactions(state, created_at);
CREATE INDEX transactions_pending ON transactions(state, next_attempt_at);
CREATE INDEX transactions_with_error ON transactions(updated_at) WHERE last_error IS NOT NULL;
CREATE INDEX transactions_by_message ON transactions(message_id);

CREATE TABLE plaid_fetches (
  plaid_account_id INTEGER PRIMARY KEY,
  requested_at TEXT NOT NULL,           -- the last fetch request (recorded before it is sent)
  next_allowed_at TEXT NOT NULL,        -- no fetch of this account before this time
  last_outcome TEXT
);

CREATE TABLE parse_drift (
  sender TEXT NOT NULL,                 -- a sender domain, `hook:<plugin>`, or `other`
  plugin TEXT NOT NULL DEFAULT '',      -- '' when no plugin claimed the message
  kind TEXT NOT NULL CHECK (kind IN ('unmatched', 'failed', 'missing_field')),
  field TEXT NOT NULL DEFAULT '',       -- for `missing_field`: which one
  count INTEGER NOT NULL,
  last_seen TEXT NOT NULL,
  PRIMARY KEY (sender, plugin, kind, field)
);
"#;

/// Version 3: voided transactions (a reversed or expired card authorisation).
///
/// - `voided`: never sent, never to be sent: the void came before delivery, or before the
///   transaction itself (webhooks arrive in any order), so a late insert of it is dropped.
/// - `deleted`: it had been delivered, and Lunch Money has since deleted it at our request.
///
/// A delivered transaction being deleted is `pending` with a void body (see
/// `store::outbox::reconcile`). The table is rebuilt as in version 2 for the wider CHECK.
const V3: &str = r#"
CREATE TABLE transactions_v3 (
  id INTEGER PRIMARY KEY,
  message_id INTEGER NOT NULL REFERENCES messages(id),
  external_id TEXT NOT NULL UNIQUE CHECK (length(external_id) BETWEEN 1 AND 75),
  plugin TEXT NOT NULL,
  body TEXT NOT NULL CHECK (json_valid(body)),
  state TEXT NOT NULL DEFAULT 'pending'
    CHECK (state IN ('pending', 'delivered', 'dead', 'fetched', 'voided', 'deleted')),
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at TEXT,
  claimed_until TEXT,
  last_error TEXT,
  lunchmoney_id INTEGER,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
INSERT INTO transactions_v3 SELECT id, message_id, external_id, plugin, body, state, attempts,
  next_attempt_at, claimed_until, last_error, lunchmoney_id, created_at, updated_at
  FROM transactions;
DROP TABLE transactions;
ALTER TABLE transactions_v3 RENAME TO transactions;
CREATE INDEX transactions_by_state ON transactions(state, created_at);
CREATE INDEX transactions_pending ON transactions(state, next_attempt_at);
CREATE INDEX transactions_with_error ON transactions(updated_at) WHERE last_error IS NOT NULL;
CREATE INDEX transactions_by_message ON transactions(message_id);
"#;

/// Every migration, oldest first. The schema version a build understands is `MIGRATIONS.len()`.
const MIGRATIONS: &[&str] = &[V1, V2, V3];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Settings for the writer connection: WAL, a fsync on every commit, enforced foreign keys.
pub(crate) fn configure_writer(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "cannot switch the database to WAL mode (it stays in {mode:?} mode)"
        )));
    }
    // FULL: in WAL mode every commit fsyncs the WAL, so an acknowledged request survives power loss.
    // No automatic checkpoints on the writer: copying the WAL back into the database inside
    // a commit stalls every request queued behind it (most of the latency tail under load).
    // The checkpoint thread does it beside the writer instead (`checkpoint::run`).
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA wal_autocheckpoint = 0;",
    )?;
    let _: i64 = conn.query_row(
        &format!("PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}"),
        [],
        |row| row.get(0),
    )?;
    Ok(())
}

/// Settings for the read-only connection.
pub(crate) fn configure_reader(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch("PRAGMA query_only = ON;")?;
    Ok(())
}

/// Brings the schema up to `SCHEMA_VERSION`, refusing a database written by a newer build.
pub(crate) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    loop {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        match migrate_one(conn) {
            Ok(true) => conn.execute_batch("COMMIT")?,
            Ok(false) => {
                conn.execute_batch("COMMIT")?;
                return Ok(());
            }
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                return Err(e);
            }
        }
    }
}

/// Applies the next migration inside the caller's transaction; `Ok(false)` when up to date. The
/// version is read under the write lock, so two processes opening a new file never both migrate.
fn migrate_one(conn: &Connection) -> Result<bool, StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 0 {
        return Err(StoreError::Corrupt(format!(
            "negative schema version {version}"
        )));
    }
    if version == SCHEMA_VERSION {
        return Ok(false);
    }
    conn.execute_batch(MIGRATIONS[version as usize])?;
    conn.execute_batch(&format!("PRAGMA user_version = {}", version + 1))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written by a version-1 build keeps its rows through version 2, and the rebuilt
    /// transactions table takes the new `fetched` state and still refuses unknown ones.
    #[test]
    fn version_one_databases_migrate_with_their_rows() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1).unwrap();
        conn.execute_batch(
            "PRAGMA user_version = 1;
             INSERT INTO messages (id, received_at, route, dedupe_key, content_type, raw, status,
                                   parsed_at)
             VALUES (1, 't', 'email', 'k', 'message/rfc822', x'00', 'queued', 't');
             INSERT INTO transactions (message_id, external_id, plugin, body, state, attempts,
                                       created_at, updated_at)
             VALUES (1, 'venmo:1', 'venmo', '{}', 'dead', 3, 't', 't');",
        )
        .unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
        migrate(&conn).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let (state, attempts): (String, i64) = conn
            .query_row(
                "SELECT state, attempts FROM transactions WHERE external_id = 'venmo:1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((state.as_str(), attempts), ("dead", 3));
        conn.execute("UPDATE transactions SET state = 'fetched'", [])
            .unwrap();
        assert!(conn
            .execute("UPDATE transactions SET state = 'gone'", [])
            .is_err());
        let indexes: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index'
                 AND tbl_name = 'transactions' AND name LIKE 'transactions_%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 4);
    }
}
