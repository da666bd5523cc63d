//! WAL checkpoints beside the writer. The writer connection has automatic checkpoints off (they
//! would run inside a commit and hold up every queued request); this thread, on a connection of
//! its own, copies committed WAL pages back into the database every second with a PASSIVE
//! checkpoint, which never waits for the writer or readers. Durability is unchanged: commits
//! fsync the WAL either way.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

const INTERVAL: Duration = Duration::from_secs(1);

/// Runs until `stop` is dropped or sent to.
pub(crate) fn run(conn: Connection, stop: Receiver<()>) {
    loop {
        match stop.recv_timeout(INTERVAL) {
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "store: WAL checkpoint failed; will retry");
                }
            }
            _ => return,
        }
    }
}
