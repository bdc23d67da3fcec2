use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use authstore::Application;
use authstore::clock::SystemClock;
use authstore::config::{Cli, Command, Config};
use clap::Parser;

/// jemalloc for every allocation in the process, SurrealDB's included (docs/benchmarks.md,
/// "Allocator"). Built with background threads: freed memory is returned on a timer, not only
/// when the thread that freed it next allocates.
#[cfg(all(feature = "jemalloc", unix, not(target_env = "musl")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// SurrealDB evaluates queries on the caller's stack; its own server uses 10 MiB threads in
/// release builds and 20 MiB in debug builds.
const STACK_BYTES: usize = if cfg!(debug_assertions) { 20 << 20 } else { 10 << 20 };

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Serve(args) = cli.command;
    authstore::telemetry::init(args.log_format);
    let config = match Config::try_from(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("authstore: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_stack_size(STACK_BYTES).build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("authstore: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        if let Some(accept) = &config.wal_repair {
            authstore::store::repair_wal(&config.store.location, accept)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("repairing the write-ahead log at {:?}", config.store.location))?;
        }
        let app = Application::build(config, Arc::new(SystemClock)).await?;
        app.run_until_stopped(shutdown_signal()).await
    });
    // Tasks still waiting on the database (its client reconnecting) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "authstore failed");
            eprintln!("authstore: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
