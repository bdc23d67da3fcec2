//! SurrealDB without the server, for the tools that write straight into a database:
//! `scale`'s seeding and `bench --raw`. Their rows match `schema/001_tables.surql`, which is
//! applied first, so that a server started on the same data reads them as its own.
//!
//! An embedded directory is opened as SurrealDB opens it, under SurrealKV's own `LOCK`: a tool
//! pointed at a directory a server holds fails to open it, and a server started on a directory
//! a tool holds refuses to start (`docs/operations.md`).

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use surrealdb::engine::any::{self, Any};
use surrealdb::types::{Object, RecordId};
use surrealdb::{IndexedResults, Surreal};

/// The schema the server applies at start.
const SCHEMA: &str = include_str!("../../schema/001_tables.surql");

/// Records per seeding transaction.
pub(crate) const SEED_CHUNK: usize = 2_000;

pub(crate) type Db = Surreal<Any>;

/// Opens `url` (`surrealkv://PATH`, `mem://` or `ws://HOST:PORT`) on namespace `authstore` and
/// `database`, and applies the schema.
pub(crate) async fn open(url: &str, database: &str) -> anyhow::Result<Db> {
    let endpoint = match url.strip_prefix("surrealkv://") {
        Some("") => anyhow::bail!("surrealkv:// needs a directory, e.g. surrealkv:///tmp/raw"),
        // A path with its own settings (`?sync=never`) keeps them.
        Some(path) if path.contains('?') => format!("surrealkv://{path}"),
        // An fsync per commit, as the server runs it.
        Some(path) => format!("surrealkv://{path}?sync=every"),
        None if url == "memory" => "mem://".to_string(),
        None => url.to_string(),
    };
    let db = any::connect(endpoint).await.with_context(|| format!("opening {url}"))?;
    db.use_ns("authstore").use_db(database).await?;
    query(&db, SCHEMA, Object::new()).await.map_err(anyhow::Error::msg).context("applying the schema")?;
    Ok(db)
}

/// Runs `sql` with `vars` bound; any statement's error fails the whole.
pub(crate) async fn query(db: &Db, sql: &str, vars: Object) -> Result<IndexedResults, String> {
    let results = db.query(sql).bind(vars).await.map_err(|e| e.to_string())?;
    results.check().map_err(|e| e.to_string())
}

pub(crate) fn record(table: &str, key: &str) -> RecordId {
    RecordId::new(table, key.to_string())
}

/// The refresh token seeded as number `k` of the dataset `prefix`; `token.get` on it finds the
/// seeded row.
pub(crate) fn seeded_token(prefix: &str, k: usize) -> String {
    format!("{prefix}-token-{k}")
}

/// The session seeded as number `k` of the dataset `prefix`.
pub(crate) fn seeded_session(prefix: &str, k: usize) -> String {
    format!("{prefix}-session-{k}")
}

/// Writes sessions and tokens `start..start + count` of the dataset `prefix` (each token in its
/// own family) for `client_id`, live until `expires_at`, in one transaction.
pub(crate) async fn seed(
    db: &Db,
    prefix: &str,
    start: usize,
    count: usize,
    client_id: &str,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> anyhow::Result<()> {
    let (mut sessions, mut families, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
    for k in start..start + count {
        let id = seeded_session(prefix, k);
        let user_id = format!("user-{}", k % 10_000);
        let mut s = Object::new();
        s.insert("id", record("session", &id));
        s.insert("session_id", id);
        s.insert("client_id", client_id.to_string());
        s.insert("redirect_uri", crate::bench::REDIRECT.to_string());
        s.insert("scope", "mcp:tools".to_string());
        s.insert("user_id", user_id.clone());
        s.insert("created_at", now);
        s.insert("updated_at", now);
        s.insert("expires_at", expires_at);
        s.insert("rev", 1i64);
        sessions.push(s);

        // Tokens are keyed by their digest, as the server looks them up.
        let hash = authstore::secret::digest(&seeded_token(prefix, k));
        let grant_id = format!("{prefix}-grant-{k}");
        let mut f = Object::new();
        f.insert("id", record("family", &grant_id));
        f.insert("grant_id", grant_id.clone());
        f.insert("client_id", client_id.to_string());
        f.insert("user_id", user_id.clone());
        f.insert("created_at", now);
        f.insert("expires_at", expires_at);
        f.insert("active_token", hash.clone());
        f.insert("rev", 1i64);
        families.push(f);

        let mut t = Object::new();
        t.insert("id", record("token", &hash));
        t.insert("hash", hash);
        t.insert("token_id", format!("{prefix}-tid-{k}"));
        t.insert("grant_id", grant_id);
        t.insert("client_id", client_id.to_string());
        t.insert("user_id", user_id);
        t.insert("scope", "mcp:tools".to_string());
        t.insert("issued_at", now);
        t.insert("expires_at", expires_at);
        t.insert("status", "active".to_string());
        t.insert("rev", 1i64);
        tokens.push(t);
    }
    const SQL: &str = "BEGIN; INSERT INTO session $sessions RETURN NONE; INSERT INTO family $families RETURN NONE; \
        INSERT INTO token $tokens RETURN NONE; COMMIT;";
    let mut vars = Object::new();
    vars.insert("sessions", sessions);
    vars.insert("families", families);
    vars.insert("tokens", tokens);
    query(db, SQL, vars).await.map_err(anyhow::Error::msg).context("seeding")?;
    Ok(())
}
