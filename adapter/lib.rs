//! sluis: the adapter between a care organisation's record systems and its clients' portals.
//!
//! Data flows through the modules in this order: `ingest` (FHIR R4 in, checked with `fhir`),
//! `mapping` and `release` (section and release moment, stored with each version in `store`),
//! then per request `auth` → `access` (one pure decision) → `search` (the decision as SQL) →
//! `serve` (FHIR Bundles out). `pull` polls record systems and hands their pages to `ingest`;
//! `metrics` counts for `GET /metrics`. `app` wires them to HTTP; `main.rs` is the command line.

pub mod access;
pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod body;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod edge;
pub mod error;
pub mod fhir;
pub mod ingest;
pub mod mapping;
pub mod messages;
pub mod metrics;
pub mod outbox;
pub mod portal;
pub mod pull;
pub mod release;
pub mod search;
pub mod serve;
pub mod store;
pub mod time;
