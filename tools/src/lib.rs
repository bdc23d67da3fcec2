//! The tools that print numbers rather than pass or fail, run as `authstore-tools`: clients of
//! a running (or spawned) `authstore serve`, not part of the server.
//!
//! - `bench`: load over real WebSockets, N connections × M calls in flight, against the
//!   transport ceiling (`server.ping`), the raw SurrealDB ceiling (`raw`) and Redis.
//! - `soak`: mixed load while the server is killed with SIGKILL and restarted, then a check of
//!   everything that was acknowledged; `soak --history` runs `history` instead.
//! - `burst`: malformed frames as fast as the server answers them (or, `--never-read`, from
//!   clients that read no answer), for what a burst leaves in its memory.
//! - `engine`: where a lone call's time goes inside SurrealDB, one part taken away at a time.
//! - `query`: how long given SurrealQL statements take on a (stopped server's) database.
//! - `scale`: seeds a million live records straight into SurrealKV (`surreal`), then measures
//!   restart, reads, expiry and memory at that size.
//! - `history`: a workload recorder and linearizability checker, also run by the tests.
//!
//! The soak and scale tools start the `authstore` binary: `AUTHSTORE_BIN` if set, otherwise the
//! one next to `authstore-tools` (`cargo build --release --locked -p authstore -p authstore-tools`).

pub mod bench;
pub mod burst;
pub mod engine;
pub mod history;
pub mod query;
mod raw;
pub mod scale;
pub mod soak;
mod surreal;

use std::path::PathBuf;

use anyhow::Context as _;

/// The `authstore` binary the soak and scale tools start.
pub fn server_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("AUTHSTORE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let tools = std::env::current_exe().context("finding the authstore-tools binary")?;
    let path = tools.with_file_name(format!("authstore{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        anyhow::bail!(
            "no authstore binary at {}: build it next to authstore-tools \
             (cargo build --release --locked -p authstore -p authstore-tools) or set AUTHSTORE_BIN",
            path.display()
        );
    }
    Ok(path)
}

/// A random run id made only of letters and digits.
fn run_id() -> String {
    authstore::secret::generate_id().replace(['-', '_'], "x")
}
