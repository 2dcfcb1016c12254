//! The store: SQLite as the embedded default (by direct calls), PostgreSQL for production
//! (through sqlx).
//!
//! One module per table family. Every version of every resource is kept; search values live
//! in indexed tables beside the versions. Migrations for both engines are in `migrations/`
//! and are applied at start.

pub mod accounts;
pub mod audit;
pub mod bodies;
pub mod checkpoint;
pub mod clients;
pub mod db;
pub mod error;
pub mod messages;
pub mod outbox;
pub mod processes;
pub mod pull;
pub mod release;
pub mod requests;
pub mod resources;
pub mod sqlite;

pub use db::{Db, Pairs, Sql};
pub use error::Error;

/// The distinct clients (`patient_id`) a statement finds for `values`, each once, in the
/// order found: `sql` writes the statement for one part of at most a thousand values (well
/// below either engine's limit on bound values).
pub(crate) async fn patients_in_parts<T>(
    db: &Db,
    values: &[T],
    sql: impl Fn(&[T]) -> Sql,
) -> Result<Vec<String>, Error> {
    #[derive(sqlx::FromRow, serde::Deserialize)]
    struct Row {
        patient_id: String,
    }
    let mut out: Vec<String> = Vec::new();
    for part in values.chunks(1000) {
        for row in db.fetch_all::<Row>(&sql(part)).await? {
            if !out.contains(&row.patient_id) {
                out.push(row.patient_id);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// The layers above the store: it names none of them, so that every flow (push, pull,
    /// audit, write-back) can use it without pulling in another.
    const ABOVE: &[&str] = &[
        "access", "admin", "app", "auth", "body", "cli", "demo", "ingest", "mapping", "portal",
        "release", "search", "serve",
    ];

    #[test]
    fn the_store_names_nothing_above_it() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("adapter/store");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                for module in ABOVE {
                    if line.contains(&format!("crate::{module}::"))
                        || line.contains(&format!("crate::{module};"))
                        || line.contains(&format!("crate::{{{module}"))
                    {
                        found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "the store names layers above it:\n{}",
            found.join("\n")
        );
    }
}
