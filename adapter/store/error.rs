//! What can go wrong in the store, on either engine.

/// A store error. At the edge every one of these is a 500 (logged, never shown).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("SQLite row: {0}")]
    Row(#[from] serde_rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("a statement returned no row where one was expected")]
    NotFound,
    #[error("placeholder {0} of a statement has no value")]
    Unbound(usize),
    #[error("the store's blocking task failed: {0}")]
    Worker(String),
}
