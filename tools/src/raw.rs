//! The raw SurrealDB ceiling: the store's own statements, one query per call, run in-process on
//! a SurrealDB connection of the tool's own, from the same number of tasks: no WebSocket, no
//! JSON-RPC, no group commit. What a method reaches over the wire divided by this is the cost
//! (or gain) of everything authstore adds around its statements.
//!
//! Per call, as the store runs them without group commit: `session.put` reads the client and
//! upserts the session; `session.get` and `token.get` read one record; `code.consume` reads the
//! code, decides in-process (PKCE) and burns it with a conditional update. The read workloads'
//! records and the codes are preloaded in bulk.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use authstore::clock::{Clock, SystemClock};
use authstore::domain::code::{self, Consume};
use authstore::domain::{Policy, session as session_rules};
use surrealdb::types::Object;

use crate::bench::{CHALLENGE, Outcome, REDIRECT, Until, consume, drive, public_client, session};
use crate::surreal::{self, Db, SEED_CHUNK, query, record, seeded_session, seeded_token};
use authstore::store::{CODE_BURN, SESSION_PUT, decode_code};

/// The dataset name of the preloaded sessions and tokens.
const PRELOADED: &str = "raw";

/// A point read, as the store makes it without group commit.
const ROW: &str = "SELECT * FROM ONLY $rid";

/// Runs the raw counterparts of `workloads` against a fresh database at `url`.
pub async fn run(
    url: &str,
    workloads: &[String],
    workers: usize,
    seconds: u64,
    preload: usize,
) -> anyhow::Result<Vec<Outcome>> {
    let db = surreal::open(url, "bench_raw").await.context("opening the raw database")?;
    let clock = Arc::new(SystemClock);
    let policy = Arc::new(Policy::default());
    let client_id = format!("raw-{}", crate::run_id());
    let incarnation = register(&db, &client_id, clock.now()).await?;
    let duration = Until::Elapsed(Duration::from_secs(seconds));
    let pick = |worker: usize, i: u64, n: usize| (worker.wrapping_mul(7919) + i as usize * 104_729) % n.max(1);
    let mut outcomes = Vec::new();
    let mut seeded = false;
    for workload in workloads {
        let (db, clock, policy, cid) = (db.clone(), clock.clone(), policy.clone(), client_id.clone());
        if matches!(workload.as_str(), "session.get" | "token.get") && !seeded {
            preload_records(&db, &client_id, preload, clock.now()).await?;
            seeded = true;
        }
        eprintln!("raw {workload}:");
        let name = format!("raw {workload}");
        let outcome = match workload.as_str() {
            "session.put" => {
                let incarnation = incarnation.clone();
                drive(&name, workers, duration, None, false, move |w, i| {
                    let (db, now, incarnation) = (db.clone(), clock.now(), incarnation.clone());
                    let new = session_rules::put(session(&cid, format!("p-{w}-{i}")), &policy, now);
                    async move {
                        let new = new.map_err(|e| e.to_string())?;
                        // The client first (is it registered, is the redirect URI its own?).
                        let client =
                            row(&db, record("client", new.client_id.as_str())).await?.ok_or("unknown client")?;
                        let registered = client["redirect_uris"]
                            .as_array()
                            .is_some_and(|uris| uris.iter().any(|uri| uri.as_str() == Some(new.redirect_uri.as_str())));
                        if !registered {
                            return Err("redirect_uri not registered".to_string());
                        }
                        let mut item = Object::new();
                        item.insert("rid", record("session", new.id.as_str()));
                        item.insert("id", new.id.as_str().to_string());
                        item.insert("client_id", new.client_id.as_str().to_string());
                        item.insert("redirect_uri", new.redirect_uri.as_str().to_string());
                        item.insert("state", new.state);
                        item.insert("code_challenge", new.code_challenge);
                        item.insert("code_challenge_method", new.code_challenge_method);
                        item.insert("scope", new.scope.as_ref().map(|s| s.as_str().to_string()));
                        item.insert("resource", new.resource);
                        item.insert("user_id", new.user_id.as_ref().map(|u| u.as_str().to_string()));
                        item.insert("data", new.data);
                        item.insert("expires_at", new.expires_at);
                        item.insert("now", now);
                        item.insert("client_incarnation", incarnation);
                        write(&db, SESSION_PUT, item).await
                    }
                })
                .await
            }
            "session.get" => {
                drive(&name, workers, duration, None, false, move |w, i| {
                    let (db, id) = (db.clone(), seeded_session(PRELOADED, pick(w, i, preload)));
                    async move { row(&db, record("session", &id)).await.map(|s| s.is_some()) }
                })
                .await
            }
            "token.get" => {
                drive(&name, workers, duration, None, false, move |w, i| {
                    let (db, token) = (db.clone(), seeded_token(PRELOADED, pick(w, i, preload)));
                    // The record is keyed by the token's digest, computed per call as the store does.
                    async move {
                        row(&db, record("token", &authstore::secret::digest(&token))).await.map(|t| t.is_some())
                    }
                })
                .await
            }
            "code.consume" => {
                let codes = Arc::new(preload_codes(&db, &cid, preload, clock.now()).await?);
                drive(&name, workers, duration, None, false, move |w, i| {
                    let (db, now, policy) = (db.clone(), clock.now(), policy.clone());
                    let p = codes.get(w + i as usize * workers).map(|code| consume(&cid, code.clone()));
                    async move {
                        let Some(p) = p else { return Ok(false) };
                        let key = authstore::secret::digest(&p.code);
                        let stored = row(&db, record("code", &key)).await?.ok_or("no such code")?;
                        let stored = decode_code(stored).map_err(|e| e.to_string())?;
                        if code::consume(&stored, &p, now) != Consume::Redeem {
                            return Err("the code was refused".to_string());
                        }
                        let window = chrono::Duration::seconds(policy.code_replay_window_secs as i64);
                        let mut item = Object::new();
                        item.insert("rid", record("code", &key));
                        item.insert("now", now);
                        item.insert("keep_until", stored.expires_at.max(now + window));
                        write(&db, CODE_BURN, item).await
                    }
                })
                .await
            }
            _ => continue,
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// One record, live or not.
async fn row(db: &Db, rid: surrealdb::types::RecordId) -> Result<Option<serde_json::Value>, String> {
    let mut vars = Object::new();
    vars.insert("rid", rid);
    let mut results = query(db, ROW, vars).await?;
    let value: Option<serde_json::Value> = results.take(0).map_err(|e| e.to_string())?;
    Ok(value.filter(|v| !v.is_null()))
}

/// Runs one statement that names its parameters `$item.<name>`; `true` if it returned a row.
async fn write(db: &Db, sql: &str, item: Object) -> Result<bool, String> {
    let mut vars = Object::new();
    vars.insert("item", item);
    let mut results = query(db, sql, vars).await?;
    let value: Option<serde_json::Value> = results.take(0).map_err(|e| e.to_string())?;
    Ok(value.is_some_and(|v| !v.is_null()))
}

/// Registers the tools' public client; returns its incarnation.
async fn register(db: &Db, client_id: &str, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<String> {
    const SQL: &str = "CREATE ONLY $rid SET client_id = $client_id, origin = 'registered', metadata = $metadata, \
        redirect_uris = $redirect_uris, issued_at = $now, updated_at = $now, incarnation = $incarnation RETURN NONE";
    let meta = public_client();
    let incarnation = authstore::secret::generate_id();
    let mut vars = Object::new();
    vars.insert("rid", record("client", client_id));
    vars.insert("client_id", client_id.to_string());
    vars.insert("metadata", serde_json::to_string(&meta)?);
    vars.insert("redirect_uris", meta.redirect_uris);
    vars.insert("now", now);
    vars.insert("incarnation", incarnation.clone());
    query(db, SQL, vars).await.map_err(anyhow::Error::msg).context("registering the raw client")?;
    Ok(incarnation)
}

/// Writes `n` live sessions and tokens for the read workloads.
async fn preload_records(db: &Db, client_id: &str, n: usize, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<()> {
    eprintln!("  preloading {n} sessions and tokens");
    let expires_at = now + chrono::Duration::hours(1);
    for start in (0..n).step_by(SEED_CHUNK) {
        surreal::seed(db, PRELOADED, start, SEED_CHUNK.min(n - start), client_id, now, expires_at).await?;
    }
    Ok(())
}

/// Writes `n` unused codes (S256, for `crate::bench::consume`); returns them.
async fn preload_codes(
    db: &Db,
    client_id: &str,
    n: usize,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Vec<String>> {
    eprintln!("  preloading {n} codes");
    const SQL: &str = "INSERT INTO code $codes RETURN NONE";
    let run = crate::run_id();
    let codes: Vec<String> = (0..n).map(|k| format!("raw-code-{run}-{k}")).collect();
    for chunk in codes.chunks(SEED_CHUNK) {
        let rows: Vec<Object> = chunk
            .iter()
            .map(|code| {
                let mut c = Object::new();
                c.insert("id", record("code", &authstore::secret::digest(code)));
                c.insert("grant_id", format!("grant-{code}"));
                c.insert("client_id", client_id.to_string());
                c.insert("user_id", "alice".to_string());
                c.insert("redirect_uri", REDIRECT.to_string());
                c.insert("code_challenge", CHALLENGE.to_string());
                c.insert("code_challenge_method", "S256".to_string());
                c.insert("scope", "mcp:tools".to_string());
                c.insert("issued_at", now);
                c.insert("expires_at", now + chrono::Duration::minutes(10));
                c
            })
            .collect();
        let mut vars = Object::new();
        vars.insert("codes", rows);
        query(db, SQL, vars).await.map_err(anyhow::Error::msg).context("preloading codes")?;
    }
    Ok(codes)
}
