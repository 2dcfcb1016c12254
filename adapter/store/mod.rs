//! The store: SQLite as the embedded default (by direct calls), PostgreSQL for production
//! (through sqlx).
//!
//! One module per table family. Every version of every resource is kept; search values live
//! in indexed tables beside the versions. Migrations for both engines are in `migrations/`
//! and are applied at start.

pub mod accounts;
pub mod checkpoint;
pub mod clients;
pub mod db;
pub mod error;
pub mod release;
pub mod resources;
pub mod sqlite;

pub use db::{Db, Sql};
pub use error::Error;
