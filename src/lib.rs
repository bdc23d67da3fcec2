//! authstore keeps an OAuth 2.1 / MCP authorization portal's state safe: pending sessions,
//! single-use PKCE codes, rotated refresh tokens and registered clients, served as JSON-RPC
//! over WebSocket and stored in SurrealDB.
//!
//! # Layout
//!
//! Read in this order:
//!
//! - `types`: the contract's params and results (plain serde data).
//! - `error`: what a failed call can be told, independent of transport.
//! - `domain`: pure rules (validation, PKCE, consume and rotation decisions); time is a
//!   parameter.
//! - `store`: SurrealDB; the only place that writes SurrealQL. One transaction per change,
//!   events in the same transaction.
//! - `rpc`: the `#[rpc]` traits, their handlers and the single error mapping.
//! - `background`: the expiry scheduler, the event sequencer, the hub's reader, the pruner;
//!   `tasks`: the named, owned tasks they (and the store's group-commit workers) run as.
//! - `hub`: this instance's live broadcast of the event log, which subscriptions follow
//!   (`rpc::subscription` serves one; `store`'s `event_log` is the log itself).
//! - `http`: `/health`, `/ready`, `/metrics` and API-key authentication, before JSON-RPC;
//!   `metrics`: the Prometheus registry.
//! - `app`: assembles store and server and runs the accept loop; `stall`: the socket wrapper
//!   that closes a connection whose client stops reading; `config`: flags and env;
//!   `telemetry`: logging.
//! - `clock`, `secret`: time and secrets, each behind one small module.
//!
//! The load, soak and scale tools are clients of the server, not part of it: the
//! `authstore-tools` package in `tools/`.

pub mod app;
pub mod background;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod rpc;
pub mod secret;
pub mod stall;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod types;

pub use app::Application;
