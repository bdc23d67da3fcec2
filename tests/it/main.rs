//! The integration suite: one binary, real servers, real WebSockets, real SurrealDB.
//!
//! The method tests under `methods/` run twice: in `mem` against embedded `mem://`, and in
//! `ws` against a real SurrealDB server process over WebSocket. Loading the same files twice is
//! the point, hence `duplicate_mod`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods, clippy::duplicate_mod)]

mod adversary;
mod bulk;
mod deploy;
mod discover;
mod durability;
mod errors;
mod fuzz;
mod history;
mod instances;
mod mem;
mod operations;
mod outage;
mod process;
mod remote;
mod scheduler;
mod schema;
mod sequencer;
mod slow;
mod support;
mod wal;
mod ws;
