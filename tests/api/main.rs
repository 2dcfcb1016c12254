//! Black-box tests: the real adapter on a random port, over HTTP, on SQLite and (when
//! `SLUIS_TEST_POSTGRES_URL` is set) PostgreSQL. One binary, a module per area.

mod helpers;

mod audit;
mod cli;
mod clients;
mod consent;
mod corpus;
mod delay;
mod differential;
mod ingest;
mod leaks;
mod limits;
mod messages;
mod plans;
mod portal;
mod processes;
mod pull;
mod requests;
mod scopes;
mod search;
mod source;
mod vendor;
mod writeback;
