//! FHIR R4 (4.0.1) knowledge for the adapter: tables generated from the
//! official definitions (`r4_tables`, produced by `r4gen`), the API over
//! them (`definitions`), a search-parameter path evaluator (`path`), ids and
//! references (`reference`) and a resource validator (`validate`).

pub mod definitions;
pub mod path;
pub mod reference;
pub mod validate;

mod primitive;
mod r4_tables;

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod r4gen;
