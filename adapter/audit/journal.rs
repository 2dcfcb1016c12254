//! The audit journal (SQLite files): a request's record is appended to a file of this
//! process's own, in the directory `<database>.audit/`, before its response is sent; a task
//! moves the records into the audit tables, chained, in one transaction ten times a second.
//!
//! Why: a SQLite commit per batch of concurrent requests (about a thousand a second under
//! load) costs every reader its page cache (SQLite drops it when the log changed) and the
//! writer a commit's pages; a line appended to a file costs a `write`. The line is in the
//! operating system's page cache when the response leaves, as a SQLite commit is with
//! `synchronous = NORMAL`: a killed process loses none; a power cut can lose the last of
//! either.
//!
//! Each file is locked (`flock`) by the process that writes it. A move names its file in
//! `audit_journal` in the same transaction as its records, then removes the file, so a file
//! found again after a crash is moved once. A file no process holds is another process's
//! that stopped without moving it: it is moved at the next start (of `serve` or of a
//! `sluis audit` command) and every minute by the processes running.
//!
//! A process registers its files' prefix in `audit_writers` when it starts; a file of a
//! prefix not registered there was put in the directory by someone else and is set aside
//! (`.foreign`, with an error in the log), not taken: writing to the directory alone does not
//! add records to the log. (Files that versions before registration left are taken once, by
//! the first recovery after the migration.)
//!
//! When the audit tables cannot be written, the records stay in the journal (and in memory)
//! and requests are refused (503) from the first move that fails until one succeeds; nothing
//! journaled is lost. A request whose line cannot be written is refused.
//!
//! What a reader of the tables sees: this process's records once [`Journal::flush`] ran (the
//! audit endpoints and commands call it first); another process's within a move's interval.

use super::AuditError;
use crate::store::Db;
use crate::store::audit::{self as store, Stored};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the records are moved into the tables.
const EVERY: Duration = Duration::from_millis(100);

/// A move starts early when this many records wait.
const EARLY: usize = 2_000;

/// The most records that may wait; past it a request is refused rather than grow memory.
const MOST: usize = 50_000;

/// How often files no process holds are looked for (in ticks of [`EVERY`]).
const ORPHANS_EVERY: u32 = 600;

/// One line of a journal file: a record and, per client, the types served.
#[derive(serde::Serialize)]
struct LineRef<'a> {
    record: &'a Stored,
    types: &'a [(String, String)],
}

#[derive(serde::Deserialize)]
struct Line {
    record: Stored,
    types: Vec<(String, String)>,
}

/// The file records are appended to now, and what waits to be moved.
#[derive(Default)]
struct Open {
    /// The file and its name, created at the first record after a move.
    file: Option<(File, String)>,
    /// Records appended and not yet moved, in order.
    pending: Vec<Stored>,
    /// Files whose records are all in `pending` (held locked until they are moved).
    retired: Vec<(File, String)>,
}

/// Records taken from the journal to be moved, and the files they came from.
struct Move {
    records: Vec<Stored>,
    files: Vec<(File, String)>,
}

/// A process's journal.
pub struct Journal {
    dir: PathBuf,
    /// This process's files are named `<prefix>-<n>.ndjson`.
    prefix: String,
    files: std::sync::atomic::AtomicU64,
    open: Mutex<Open>,
    /// One move at a time; a move that failed is kept here and tried again first.
    moving: tokio::sync::Mutex<Option<Move>>,
    db: Db,
    early: tokio::sync::Notify,
    /// Set from a move that failed until one succeeds (the move logs why).
    failing: std::sync::atomic::AtomicBool,
}

/// The journal directory of a SQLite database file.
pub fn dir_of(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".audit");
    PathBuf::from(name)
}

fn io(what: &str, path: &Path, e: std::io::Error) -> AuditError {
    AuditError(format!("cannot {what} {}: {e}", path.display()))
}

impl Journal {
    /// Opens the journal of `db` (a SQLite file), moves what stopped processes left in it, and
    /// starts the task that moves records (it ends when the journal is dropped).
    pub async fn start(db: Db, database: &Path) -> Result<Arc<Self>, AuditError> {
        let dir = dir_of(database);
        create_dir(&dir)?;
        let journal = Arc::new(Self {
            dir,
            prefix: uuid::Uuid::new_v4().simple().to_string(),
            files: Default::default(),
            open: Default::default(),
            moving: Default::default(),
            db,
            early: Default::default(),
            failing: Default::default(),
        });
        let recovered = recover(&journal.db, &journal.dir).await?;
        store::register_writer(
            &journal.db,
            &journal.prefix,
            crate::time::to_micros(crate::clock::Clock::system().wall()),
        )
        .await
        .map_err(|e| AuditError(crate::error::with_causes(&e)))?;
        if recovered > 0 {
            tracing::info!(
                records = recovered,
                "audit records a stopped process left in its journal were moved into the log"
            );
        }
        let weak = Arc::downgrade(&journal);
        tokio::spawn(async move {
            let mut tick = 0u32;
            loop {
                let Some(j) = weak.upgrade() else { return };
                let early = j.early.notified();
                tokio::select! {
                    () = tokio::time::sleep(EVERY) => {}
                    () = early => {}
                }
                if let Err(e) = j.flush().await {
                    tracing::error!(error = %e, "cannot move audit records into the log; requests are refused until it can");
                }
                tick = tick.wrapping_add(1);
                if tick.is_multiple_of(ORPHANS_EVERY)
                    && let Err(e) = recover(&j.db, &j.dir).await
                {
                    tracing::warn!(error = %e, "cannot move another process's audit journal");
                }
            }
        });
        Ok(journal)
    }

    /// Whether records cannot be moved into the tables now (requests are refused).
    pub fn failing(&self) -> bool {
        self.failing.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Appends a record; once this returns it survives the process.
    pub fn append(&self, record: Stored) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(&LineRef {
            record: &record,
            types: &record.types,
        })
        .map_err(|e| AuditError(format!("cannot serialize an audit record: {e}")))?;
        line.push(b'\n');
        let mut open = self
            .open
            .lock()
            .map_err(|_| AuditError("the audit journal is unusable".into()))?;
        if self.failing() {
            return Err(AuditError(
                "the audit log cannot be written: moving records into it fails".into(),
            ));
        }
        if open.pending.len() >= MOST {
            return Err(AuditError("too many audit records wait to be moved".into()));
        }
        if open.file.is_none() {
            open.file = Some(self.create()?);
        }
        let Some((file, name)) = open.file.as_mut() else {
            return Err(AuditError("the audit journal has no file".into()));
        };
        if let Err(e) = file.write_all(&line) {
            // Part of the line may be in the file: the file takes no more lines (its records
            // before this one are moved from memory; found after a crash, a last line that
            // does not parse is skipped) and the next record starts a new file.
            let e = io("write to", &self.dir.join(name.as_str()), e);
            if let Some(f) = open.file.take() {
                open.retired.push(f);
            }
            return Err(e);
        }
        open.pending.push(record);
        if open.pending.len() == EARLY {
            self.early.notify_one();
        }
        Ok(())
    }

    /// A new file of this process's, locked before it takes the name [`recover`] looks for
    /// (tried again if another process's [`recover`] took the half-made file for a crash's).
    fn create(&self) -> Result<(File, String), AuditError> {
        match self.create_once() {
            Ok(made) => Ok(made),
            Err(_) => self.create_once(),
        }
    }

    fn create_once(&self) -> Result<(File, String), AuditError> {
        let n = self
            .files
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{}-{n}.ndjson", self.prefix);
        let path = self.dir.join(&name);
        let new = path.with_extension("new");
        let mut options = std::fs::OpenOptions::new();
        options.append(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&new).map_err(|e| io("create", &new, e))?;
        file.try_lock()
            .map_err(|e| AuditError(format!("cannot lock {}: {e}", new.display())))?;
        std::fs::rename(&new, &path).map_err(|e| io("name", &path, e))?;
        Ok((file, name))
    }

    /// Moves every record appended so far into the log; returns once they are committed.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let mut moving = self.moving.lock().await;
        let taken = {
            let mut open = self
                .open
                .lock()
                .map_err(|_| AuditError("the audit journal is unusable".into()))?;
            let mut files = std::mem::take(&mut open.retired);
            files.extend(open.file.take());
            Move {
                records: std::mem::take(&mut open.pending),
                files,
            }
        };
        let mut m = match moving.take() {
            Some(mut earlier) => {
                earlier.records.extend(taken.records);
                earlier.files.extend(taken.files);
                earlier
            }
            None => taken,
        };
        if m.files.is_empty() {
            return Ok(());
        }
        let result = commit(&self.db, &mut m.records, &m.files).await;
        self.failing
            .store(result.is_err(), std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(()) => {
                for (file, name) in m.files {
                    remove(&self.db, &self.dir, file, &name).await;
                }
                Ok(())
            }
            Err(e) => {
                *moving = Some(m);
                Err(AuditError(format!(
                    "cannot move audit records into the log: {}",
                    crate::error::with_causes(&e)
                )))
            }
        }
    }
}

fn create_dir(dir: &Path) -> Result<(), AuditError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| io("create", dir, e))?;
    // One made before (by an older process, or by someone else) is narrowed too.
    #[cfg(unix)]
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| io("narrow the permissions of", dir, e))?;
    Ok(())
}

/// Chains `records` to the log's head and appends them, naming `files` as moved, in one
/// transaction.
async fn commit(
    db: &Db,
    records: &mut [Stored],
    files: &[(File, String)],
) -> Result<(), crate::store::Error> {
    let mut tx = store::begin(db).await?;
    if !records.is_empty() {
        super::chain_in(&mut tx, records).await?;
    }
    for (_, name) in files {
        store::mark_moved(&mut tx, name).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Removes a moved file, then its name from `audit_journal` (a name left there, its file
/// gone, is removed by the next [`recover`]).
async fn remove(db: &Db, dir: &Path, file: File, name: &str) {
    let path = dir.join(name);
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(error = %e, file = %path.display(), "cannot remove a moved audit journal file");
        return;
    }
    drop(file);
    if let Err(e) = store::forget_moved(db, name).await {
        tracing::debug!(error = %e, "cannot forget a removed audit journal file");
    }
}

/// Moves into the log the records of every journal file in `dir` that no process holds (its
/// process stopped before moving them), and removes the files; how many records it moved.
/// A line that does not parse is skipped (its request was refused); a file with such a line
/// in its middle is kept beside, renamed `.bad`, for the operator. What is not a plain file
/// of its own (a link, a pipe, a directory) or is larger than any journal grows is left
/// where it is, with an error in the log; so is a file that cannot be read. Only a database
/// that cannot be written stops it.
pub async fn recover(db: &Db, dir: &Path) -> Result<u64, AuditError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("read", dir, e)),
    };
    let store_error = |e: crate::store::Error| AuditError(crate::error::with_causes(&e));
    let moved: std::collections::HashSet<String> = store::moved(db)
        .await
        .map_err(store_error)?
        .into_iter()
        .collect();
    // Files are taken only from this database's processes (and, once, from versions before
    // they registered): one put here by someone else is set aside, not taken into the log.
    let writers: std::collections::HashSet<String> = store::writers(db)
        .await
        .map_err(store_error)?
        .into_iter()
        .collect();
    let unregistered = writers.contains("");
    let mut present = std::collections::HashSet::new();
    let mut total = 0u64;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let path = entry.path();
        if !(name.ends_with(".new") || name.ends_with(".ndjson")) {
            continue;
        }
        present.insert(name.clone());
        let Some(file) = open_own(&path) else {
            continue;
        };
        // Held by a running process (this one included): its own to move. Removed since it
        // was opened: moved by another process's recovery that held it in between.
        if !lock_linked(&file) {
            continue;
        }
        // A file being made (`Journal::create`) holds no record yet; one no process holds was
        // left by a crash.
        if name.ends_with(".new") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if moved.contains(&name) {
            remove(db, dir, file, &name).await;
            continue;
        }
        let prefix = name.rsplit_once('-').map_or("", |(p, _)| p);
        if !unregistered && !writers.contains(prefix) {
            let aside = path.with_extension("foreign");
            match std::fs::rename(&path, &aside) {
                Ok(()) => {
                    tracing::error!(file = %aside.display(), "an audit journal file that no process of this database wrote was found: it is set aside, its lines are not taken into the log")
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "an audit journal file that no process of this database wrote was found and cannot be set aside: it is left where it is, not taken into the log")
                }
            }
            continue;
        }
        let mut text = Vec::new();
        if let Err(e) = std::io::Read::read_to_end(&mut &file, &mut text) {
            tracing::error!(file = %path.display(), error = %e, "cannot read an audit journal file; it is left where it is");
            continue;
        }
        let (mut records, bad) = parse(&text);
        let files = [(file, name.clone())];
        commit(db, &mut records, &files)
            .await
            .map_err(store_error)?;
        total += records.len() as u64;
        let [(file, _)] = files;
        if bad {
            let aside = path.with_extension("bad");
            match std::fs::rename(&path, &aside) {
                Ok(()) => {
                    tracing::error!(file = %aside.display(), "an audit journal file has lines that do not parse; its other records were moved, the file is kept for the operator");
                    let _ = store::forget_moved(db, &name).await;
                }
                // Still named as moved: the next recovery removes it and moves nothing twice.
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "an audit journal file has lines that do not parse and cannot be set aside; its other records were moved")
                }
            }
            drop(file);
        } else {
            remove(db, dir, file, &name).await;
        }
    }
    for name in moved.difference(&present) {
        let _ = store::forget_moved(db, name).await;
    }
    if unregistered {
        store::end_unregistered(db).await.map_err(store_error)?;
    }
    Ok(total)
}

/// The largest journal file taken: one holds what waits between two moves, at most
/// [`MOST`] records.
const LARGEST: u64 = 512 << 20;

/// `path` opened, if it is a plain file with no other name (not a link, a pipe or a
/// directory, nor a second name of another journal file) and no larger than [`LARGEST`].
fn open_own(path: &Path) -> Option<File> {
    let refuse = |why: &str| {
        tracing::error!(file = %path.display(), "{why}: it is left where it is");
        None
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => {}
        Ok(_) => return refuse("an audit journal entry is not a plain file"),
        Err(_) => return None,
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).append(true);
    #[cfg(unix)]
    // A link put in place after the check is not followed, and a pipe does not hold the open.
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        libc::O_NOFOLLOW | libc::O_NONBLOCK,
    );
    let file = options.open(path).ok()?;
    let meta = file.metadata().ok()?;
    #[cfg(unix)]
    let links = std::os::unix::fs::MetadataExt::nlink(&meta);
    #[cfg(not(unix))]
    let links = 1;
    if !meta.is_file() {
        return refuse("an audit journal entry is not a plain file");
    }
    if links != 1 {
        return refuse("an audit journal file has another name too");
    }
    if meta.len() > LARGEST {
        return refuse("an audit journal file is larger than any the adapter writes");
    }
    Some(file)
}

/// Whether `file`'s lock was taken and the file still has its name. A file is removed only by
/// the process that holds its lock, after its records were moved; one opened before that and
/// locked after holds records that are in the log already.
fn lock_linked(file: &File) -> bool {
    if file.try_lock().is_err() {
        return false;
    }
    #[cfg(unix)]
    return file
        .metadata()
        .is_ok_and(|m| std::os::unix::fs::MetadataExt::nlink(&m) > 0);
    #[cfg(not(unix))]
    return true;
}

/// The records of a journal file's text, and whether a line before the last did not parse.
/// The last line, unfinished (no newline) or not parsing, is a write cut short.
fn parse(text: &[u8]) -> (Vec<Stored>, bool) {
    let mut records = Vec::new();
    let mut bad = false;
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.into_iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Line>(line) {
            Ok(Line { mut record, types }) => {
                // As the adapter writes them: types only of the clients the record names, once
                // each (a line made otherwise would be stored unlike its hash).
                let named: Vec<&str> = record
                    .patient
                    .as_deref()
                    .unwrap_or_default()
                    .split(' ')
                    .collect();
                let mut kept: Vec<(String, String)> = Vec::new();
                for (p, t) in types {
                    if named.contains(&p.as_str()) && !kept.iter().any(|(q, _)| *q == p) {
                        kept.push((p, t));
                    }
                }
                record.types = kept;
                records.push(record);
            }
            Err(_) if i == last => {}
            Err(_) => bad = true,
        }
    }
    (records, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(action: &str) -> Vec<u8> {
        let r = Stored {
            action: action.into(),
            patient: Some("p1".into()),
            types: vec![("p1".into(), "Observation".into())],
            ..Default::default()
        };
        let mut l = serde_json::to_vec(&LineRef {
            record: &r,
            types: &r.types,
        })
        .unwrap();
        l.push(b'\n');
        l
    }

    #[test]
    fn a_cut_last_line_is_skipped_and_a_bad_middle_line_is_reported() {
        let mut text = [line("read"), line("search")].concat();
        let cut = line("history");
        text.extend_from_slice(&cut[..cut.len() / 2]);
        let (records, bad) = parse(&text);
        assert_eq!(records.len(), 2);
        assert!(!bad);
        assert_eq!(records[0].types, vec![("p1".into(), "Observation".into())]);
        let mut text = line("read");
        text.extend_from_slice(b"{not json\n");
        text.extend(line("search"));
        let (records, bad) = parse(&text);
        assert_eq!(records.len(), 2);
        assert!(bad);
        assert_eq!(parse(b"").0.len(), 0);
        assert_eq!(parse(b"\n\n").0.len(), 0);
    }

    /// A recovery that opened a file, then waited while another moved and removed it, finds
    /// the file unlinked once it has the lock, and leaves it.
    #[test]
    fn a_file_removed_while_waiting_for_its_lock_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead-0.ndjson");
        std::fs::write(&path, line("read")).unwrap();
        let waiting = open_own(&path).unwrap();
        let mover = open_own(&path).unwrap();
        assert!(lock_linked(&mover));
        assert!(!lock_linked(&waiting), "held by the mover");
        std::fs::remove_file(&path).unwrap();
        drop(mover);
        assert!(!lock_linked(&waiting), "moved and removed meanwhile");
        std::fs::write(&path, line("read")).unwrap();
        assert!(lock_linked(&open_own(&path).unwrap()));
    }
}

/// What a record costs this process's CPU, apart from the request it records: run with
/// `cargo test --release --lib what_a_record_costs -- --ignored --nocapture` (`CHUNK`: records
/// a move, 700 by default; `ROUNDS`: rounds of 42,000 records, 3 by default). Precise where
/// the benchmark's comparison of auditing on and off is not (the machine's drift moves that
/// by more than a record's whole cost).
#[cfg(test)]
mod cost {
    use super::*;

    fn cpu(clock: libc::clockid_t) -> f64 {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime only writes into `t`, a valid timespec.
        unsafe { libc::clock_gettime(clock, &mut t) };
        t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 / 1e3
    }

    /// A holder's search of 50 Observations, as the benchmark makes them (500 clients).
    fn record(i: usize) -> Stored {
        let p = format!("c{:04}", i % 500);
        let mut note = crate::audit::Note::default();
        for k in 0..50 {
            note.serve(
                "Observation",
                &format!("{p}-obs-{}", (i * 50 + k) % 99_991),
                Some(&p),
            );
        }
        note.draft = Some(Stored {
            at: 1_780_000_000_000_000 + i as i64,
            action: "search".into(),
            route: "/fhir/{type}".into(),
            method: "GET".into(),
            query: Some(format!("patient={p}&category=vital-signs&_count=50")),
            request_id: Some(uuid::Uuid::new_v4().to_string()),
            remote: Some("127.0.0.1".into()),
            ..Default::default()
        });
        note.client_id = Some("portal".into());
        note.user_id = Some(format!("h-{p}"));
        let mut r = note.into_record();
        r.status = 200;
        r
    }

    fn env(name: &str, default: usize) -> usize {
        std::env::var(name)
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(default)
    }

    #[tokio::test(flavor = "current_thread")]
    #[ignore]
    async fn what_a_record_costs() {
        let (chunk, rounds) = (env("CHUNK", 700), env("ROUNDS", 3));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.db");
        let db = Db::connect(&format!("sqlite://{}", file.display()), 2)
            .await
            .unwrap();
        db.migrate().await.unwrap();
        let j = Journal::start(db.clone(), &file).await.unwrap();
        let n = 42_000;
        let records: Vec<Stored> = (0..n).map(record).collect();
        let thread = || cpu(libc::CLOCK_THREAD_CPUTIME_ID);
        for round in 0..rounds {
            let mut batch = records.clone();
            let (mut line, mut moved) = (0.0, 0.0);
            let all = cpu(libc::CLOCK_PROCESS_CPUTIME_ID);
            for part in batch.chunks_mut(chunk) {
                let t = thread();
                for r in part.iter_mut() {
                    j.append(std::mem::take(r)).unwrap();
                }
                let u = thread();
                j.flush().await.unwrap();
                line += u - t;
                moved += thread() - u;
            }
            // The checkpoints the moves called for, on their own thread.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let all = cpu(libc::CLOCK_PROCESS_CPUTIME_ID) - all;
            let k = n as f64;
            println!(
                "{chunk} a move, round {round}: the line {:.2} µs a record, the move {:.2}, \
                 checkpoints {:.2}, in all {:.2}",
                line / k,
                moved / k,
                (all - line - moved) / k,
                all / k
            );
        }
        let size = |ext: &str| {
            std::fs::metadata(dir.path().join(format!("a.db{ext}"))).map_or(0, |m| m.len())
        };
        println!(
            "the database and its log: {:.0} bytes a record",
            (size("") + size("-wal")) as f64 / (n * rounds) as f64
        );
    }
}
