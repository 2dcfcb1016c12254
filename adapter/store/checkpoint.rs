//! Checkpoints of the SQLite write-ahead log, on a thread of their own.
//!
//! SQLite's own checkpoint runs inside the `COMMIT` that takes the log over its threshold:
//! that commit copies the log into the database file and waits for two `fsync`s while it
//! still holds the writer. Under a steady push that was a third of a Bundle's time (tens of
//! milliseconds every few megabytes). Here the writer only appends; after a commit this
//! thread copies what is new (`PASSIVE`: it never blocks the writer or readers).
//!
//! A log is reused from its start only once it has been copied completely while nobody was
//! writing. Between pushes that happens by itself; under a push that never pauses it would
//! not, and the log would grow without end. So when the log has grown past
//! [`Policy::hold_frames`], the thread takes the writer for one more checkpoint (most of the
//! log is copied already, so it holds it briefly), and the next commit starts the log again.

use rusqlite::Connection;
use std::sync::Weak;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::time::{Duration, Instant};

/// When to checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// At most one checkpoint per pause; the commits in between are copied together.
    pub pause: Duration,
    /// Frames (pages) in the log past which the writer is held for a checkpoint.
    pub hold_frames: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            pause: Duration::from_millis(250),
            // 40 MB of 4 KB pages (SQLite checkpoints at 1,000 by default); each hold waits for
            // a copy and two fsyncs, so the larger the log, the rarer the holds.
            hold_frames: 10000,
        }
    }
}

/// The handle the store keeps: told of every commit. Dropped, the thread ends.
#[derive(Debug)]
pub struct Checkpointer {
    poke: SyncSender<()>,
}

/// The writer as the store shares it.
type Writer = tokio::sync::Mutex<Connection>;

impl Checkpointer {
    /// Starts the thread, checkpointing through `conn` (a read-write connection to the same
    /// file); `writer` is taken when the log must be reset.
    pub fn start(conn: Connection, writer: Weak<Writer>, policy: Policy) -> std::io::Result<Self> {
        let (poke, commits) = sync_channel(1);
        std::thread::Builder::new()
            .name("sluis-checkpoint".into())
            .spawn(move || run(&conn, &commits, &writer, policy))?;
        Ok(Self { poke })
    }

    /// Something was committed: checkpoint soon.
    pub fn poke(&self) {
        // Full means a checkpoint is due already.
        let _ = self.poke.try_send(());
    }
}

fn run(conn: &Connection, commits: &Receiver<()>, writer: &Weak<Writer>, policy: Policy) {
    let mut due = commits.recv().is_ok();
    while due {
        let started = Instant::now();
        match checkpoint(conn) {
            Ok((frames, _)) if frames >= policy.hold_frames => {
                // The log is not being reused: copy the rest while nobody writes.
                let Some(writer) = writer.upgrade() else {
                    return;
                };
                let held = writer.blocking_lock();
                let result = checkpoint(conn);
                drop(held);
                log(&result, started, true);
            }
            result => log(&result, started, false),
        }
        std::thread::sleep(policy.pause);
        due = match commits.try_recv() {
            Ok(()) => true,
            Err(TryRecvError::Empty) => commits.recv().is_ok(),
            Err(TryRecvError::Disconnected) => false,
        };
    }
}

/// A passive checkpoint: frames in the log, and how many of them are in the database file.
fn checkpoint(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get(1)?, row.get(2)?))
    })
}

fn log(result: &rusqlite::Result<(i64, i64)>, started: Instant, held: bool) {
    let elapsed_us = started.elapsed().as_micros() as u64;
    match result {
        Ok((frames, copied)) => {
            tracing::debug!(target: "sluis::sql", frames, copied, held, elapsed_us, "checkpoint");
        }
        Err(e) => tracing::warn!(target: "sluis::sql", error = %e, "checkpoint failed"),
    }
}
