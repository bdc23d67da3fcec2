//! `authstore-tools bench | burst | engine | query | soak | scale`.

use std::process::ExitCode;

use authstore_tools::bench::BenchArgs;
use authstore_tools::burst::BurstArgs;
use authstore_tools::engine::EngineArgs;
use authstore_tools::query::QueryArgs;
use authstore_tools::scale::ScaleArgs;
use authstore_tools::soak::SoakArgs;
use clap::{Parser, Subcommand};

/// SurrealDB evaluates queries on the caller's stack, and the tools may run it in-process
/// (`bench --raw`, `scale`'s seeding): the server's stack sizes (10 MiB release, 20 MiB debug).
const STACK_BYTES: usize = if cfg!(debug_assertions) { 20 << 20 } else { 10 << 20 };

#[derive(Debug, Parser)]
#[command(name = "authstore-tools", version, about = "Load, soak and scale tools for authstore")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Drive a running server (and optionally Redis) with load and print figures.
    Bench(BenchArgs),
    /// Send malformed frames as fast as the server answers them (for memory after a burst).
    Burst(BurstArgs),
    /// Time a lone write inside SurrealDB, in-process, with one part taken away at a time.
    Engine(EngineArgs),
    /// Time SurrealQL statements on a database, in-process (a stopped server's directory).
    Query(QueryArgs),
    /// Run mixed load while killing and restarting the server, then check what was acknowledged.
    Soak(SoakArgs),
    /// Seed a million live records, then measure reads, restart, expiry and memory at that size.
    Scale(ScaleArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(args) => run("bench", authstore_tools::bench::run(args)),
        Command::Burst(args) => run("burst", authstore_tools::burst::run(args)),
        Command::Engine(args) => run("engine", authstore_tools::engine::run(args)),
        Command::Query(args) => run("query", authstore_tools::query::run(args)),
        Command::Soak(args) => run("soak", authstore_tools::soak::run(args)),
        Command::Scale(args) => run("scale", authstore_tools::scale::run(args)),
    }
}

/// Runs one tool to completion.
fn run(name: &str, job: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(STACK_BYTES).build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("authstore-tools {name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authstore-tools {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
