//! What can go wrong in the store, on either engine.

/// A store error. At the edge every one of these is a 500 (logged, never shown). The wrapped
/// error is the source, so that a report of the chain (`{:#}`) names it once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("SQLite")]
    Sqlite(#[from] rusqlite::Error),
    #[error("a SQLite row did not decode")]
    Row(#[from] serde_rusqlite::Error),
    #[error("PostgreSQL")]
    Postgres(#[from] sqlx::Error),
    #[error("migrations")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("a statement returned no row where one was expected")]
    NotFound,
    #[error("placeholder {0} of a statement has no value")]
    Unbound(usize),
    #[error("the store's blocking task failed: {0}")]
    Worker(String),
    #[error("a version's body")]
    Body(#[from] super::bodies::BodyError),
    #[error("{0} is not available on this engine")]
    Unsupported(&'static str),
}

impl Error {
    /// A unique constraint refused the write (another writer got there first).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
            }
            Error::Postgres(sqlx::Error::Database(e)) => e.code().as_deref() == Some("23505"),
            _ => false,
        }
    }
}
