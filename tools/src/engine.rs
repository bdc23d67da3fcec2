//! Where a lone call's time goes inside SurrealDB: `authstore-tools engine`.
//!
//! One call at a time, in-process, on a fresh SurrealKV directory (fsync per commit) with the
//! server's schema: the store's own statements, then the same work with one part taken away at
//! a time (the fsync, the secondary indexes, the typed schema, the returned document, the
//! statement's SET list), so each row's difference from `session.put` is what that part costs.
//! Every variant writes a new session each call, as `session.put` does, with the same values.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use authstore::clock::{Clock, SystemClock};
use authstore::store::SESSION_PUT;
use clap::Args;
use hdrhistogram::Histogram;
use surrealdb::types::Object;

use crate::surreal::{self, Db, query, record};

#[derive(Debug, Args)]
pub struct EngineArgs {
    /// A directory for the databases (two are created under it).
    #[arg(long)]
    pub dir: String,
    /// Calls per variant.
    #[arg(long, default_value_t = 5_000)]
    pub calls: u64,
}

/// A session table like the schema's `session`, under another name, with `what` changed.
fn session_table(name: &str, schemafull: bool, secondary_indexes: bool) -> String {
    let schema = include_str!("../../schema/001_tables.surql");
    let mut sql = String::new();
    for line in schema.lines().filter(|l| l.contains(" ON session ") || l.contains("TABLE IF NOT EXISTS session ")) {
        let line = line.replace(" ON session ", &format!(" ON {name} ")).replace(
            "TABLE IF NOT EXISTS session SCHEMAFULL",
            &format!("TABLE IF NOT EXISTS {name} {}", if schemafull { "SCHEMAFULL" } else { "SCHEMALESS" }),
        );
        let line = line.replace("INDEX IF NOT EXISTS session_", &format!("INDEX IF NOT EXISTS {name}_"));
        let secondary = line.contains("_client ON") || line.contains("_user ON");
        let typed_field = line.starts_with("DEFINE FIELD");
        if (secondary && !secondary_indexes) || (typed_field && !schemafull) {
            continue;
        }
        sql.push_str(&line);
        sql.push('\n');
    }
    sql
}

/// The variants, each a statement over `$item` and the table it writes.
fn variants() -> Vec<(&'static str, String)> {
    let upsert = |table: &str| SESSION_PUT.replace("$item.rid", &format!("type::record('{table}', $item.id)"));
    vec![
        ("RETURN true (SDK and executor floor)", "RETURN true".to_string()),
        ("SELECT * FROM ONLY (point read)", "SELECT * FROM ONLY $item.rid".to_string()),
        ("session.put's UPSERT, as stored", SESSION_PUT.to_string()),
        ("  RETURN NONE instead of AFTER", SESSION_PUT.replace("RETURN AFTER", "RETURN NONE")),
        ("  without the 2 secondary indexes", upsert("session_nosecondary")),
        ("  SCHEMALESS (no typed fields)", upsert("session_schemaless")),
        (
            "  CREATE CONTENT, no indexes, SCHEMALESS",
            "CREATE type::record('session_bare', $item.id) CONTENT $item.doc RETURN NONE".to_string(),
        ),
    ]
}

pub async fn run(args: EngineArgs) -> anyhow::Result<()> {
    let every = surreal::open(&format!("surrealkv://{}/every", args.dir), "engine").await.context("opening")?;
    let never = surreal::open(&format!("surrealkv://{}/never?sync=never", args.dir), "engine")
        .await
        .context("opening the unsynced database")?;
    for db in [&every, &never] {
        let tables = [
            session_table("session_nosecondary", true, false),
            session_table("session_schemaless", false, true),
            "DEFINE TABLE IF NOT EXISTS session_bare SCHEMALESS;".to_string(),
        ];
        query(db, &tables.concat(), Object::new()).await.map_err(anyhow::Error::msg)?;
    }
    println!("One call at a time, {} calls per row, SurrealKV in-process (fsync per commit unless noted).", args.calls);
    println!();
    println!("| variant | p50 µs | mean µs | p99 µs |");
    println!("|---|---|---|---|");
    let mut n = 0u64;
    for (label, sql) in variants() {
        let h = measure(&every, &sql, args.calls, &mut n).await?;
        row(label, &h);
    }
    let h = measure(&never, SESSION_PUT, args.calls, &mut n).await?;
    row("session.put's UPSERT, sync=never (no fsync)", &h);
    Ok(())
}

fn row(label: &str, h: &Histogram<u64>) {
    println!("| {label} | {} | {:.0} | {} |", h.value_at_quantile(0.5), h.mean(), h.value_at_quantile(0.99));
}

/// Runs `sql` `calls` times, each with a new session's values bound as `$item`.
async fn measure(db: &Db, sql: &str, calls: u64, n: &mut u64) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    // A warm-up of a tenth, not recorded.
    for i in 0..calls + calls / 10 {
        *n += 1;
        let vars = item(*n);
        let start = Instant::now();
        query(db, sql, vars).await.map_err(anyhow::Error::msg)?;
        if i >= calls / 10 {
            h.record(start.elapsed().max(Duration::from_micros(1)).as_micros() as u64)?;
        }
    }
    Ok(h)
}

/// The values `session.put` binds for a new session, as `$item`, and the same document as
/// `$item.doc` (for the CONTENT variant).
fn item(n: u64) -> Object {
    let now = SystemClock.now();
    let id = format!("engine-{n}");
    let mut doc = Object::new();
    doc.insert("session_id", id.clone());
    doc.insert("client_id", "engine-client".to_string());
    doc.insert("redirect_uri", crate::bench::REDIRECT.to_string());
    doc.insert("state", "af0ifjsldkj".to_string());
    doc.insert("code_challenge", crate::bench::CHALLENGE.to_string());
    doc.insert("code_challenge_method", "S256".to_string());
    doc.insert("scope", "mcp:tools".to_string());
    doc.insert("resource", "https://mcp.example.com/".to_string());
    doc.insert("user_id", None::<String>);
    doc.insert("data", None::<String>);
    doc.insert("created_at", now);
    doc.insert("updated_at", now);
    doc.insert("expires_at", now + chrono::Duration::seconds(600));
    doc.insert("rev", 1i64);
    doc.insert("client_incarnation", "i-1".to_string());
    let mut item = doc.clone();
    item.insert("id", id.clone());
    item.insert("now", now);
    item.insert("rid", record("session", &id));
    item.insert("doc", doc);
    let mut vars = Object::new();
    vars.insert("item", item);
    vars
}
