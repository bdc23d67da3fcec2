//! The integration suite: one binary, real servers, real WebSockets, real SurrealDB.
//!
//! The method tests under `methods/` run twice: in `mem` against embedded `mem://`, and in
//! `ws` against a real SurrealDB server process over WebSocket.

mod durability;
mod errors;
mod mem;
mod remote;
mod support;
mod ws;
