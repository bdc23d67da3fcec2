//! `authstore-surreal`: the official SurrealDB server (`surreal start ...`), built from the
//! `surrealdb-server` crate for the remote-mode tests (`tests/it/remote.rs` starts it). It is a
//! Cargo example on a dev-dependency, so only `cargo test` compiles it.
#![recursion_limit = "256"]
fn main() -> std::process::ExitCode {
    surrealdb_server::init(surrealdb_server::core::CommunityComposer())
}
