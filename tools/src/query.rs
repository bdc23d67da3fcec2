//! `authstore-tools query`: how long SurrealQL statements take on a database, in-process.
//!
//! For questions like "does this count read index keys or rows?" on a real dataset (the
//! million records `scale` seeds): each statement runs `--repeat` times, with `$now` bound to
//! the current time, and prints its time and the start of its result. Stop the server first:
//! an embedded directory belongs to one process.

use std::time::Instant;

use anyhow::Context as _;
use authstore::clock::{Clock, SystemClock};
use clap::Args;
use surrealdb::types::{Object, Value};

use crate::surreal;

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The database: `surrealkv://PATH` (opened as SurrealDB opens it, under SurrealKV's own
    /// `LOCK`: stop the server first), `ws://HOST:PORT`.
    #[arg(long)]
    pub db: String,
    /// The database name within namespace `authstore` (the server's default).
    #[arg(long, default_value = "authstore")]
    pub database: String,
    /// Runs of each statement.
    #[arg(long, default_value_t = 2)]
    pub repeat: usize,
    /// The statements, each run on its own.
    #[arg(required = true)]
    pub statements: Vec<String>,
}

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let db = surreal::open(&args.db, &args.database).await?;
    let now = SystemClock.now();
    for sql in &args.statements {
        for _ in 0..args.repeat.max(1) {
            let mut vars = Object::new();
            vars.insert("now".to_string(), Value::Datetime(now.into()));
            let started = Instant::now();
            let mut results = surreal::query(&db, sql, vars).await.map_err(anyhow::Error::msg).context("running")?;
            let ms = started.elapsed().as_secs_f64() * 1e3;
            let value: Value = results.take(0).map_err(|e| anyhow::anyhow!("{e}"))?;
            let shown = format!("{value:?}");
            let cut = shown.char_indices().nth(300).map_or(shown.len(), |(i, _)| i);
            println!("{ms:>10.1} ms  {sql}\n              {}", &shown[..cut]);
        }
    }
    Ok(())
}
