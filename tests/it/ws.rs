//! The same method tests against a real SurrealDB server process over WebSocket.

pub fn backend() -> crate::support::Backend {
    crate::support::Backend::remote()
}

#[path = "methods/clients.rs"]
mod clients;
#[path = "methods/codes.rs"]
mod codes;
#[path = "methods/concurrency.rs"]
mod concurrency;
#[path = "methods/events.rs"]
mod events;
#[path = "methods/idempotency.rs"]
mod idempotency;
#[path = "methods/sessions.rs"]
mod sessions;
#[path = "methods/stats.rs"]
mod stats;
#[path = "methods/tokens.rs"]
mod tokens;
