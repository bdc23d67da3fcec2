//! The raw SurrealDB ceiling: the store's own statements, one query per call, called
//! in-process from the same number of tasks: no WebSocket, no JSON-RPC, no group commit. What
//! a method reaches over the wire divided by this is the cost (or gain) of everything
//! authstore adds around its statements.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::{Outcome, Until, code_issue, consume, drive, session};
use crate::clock::{Clock, SystemClock};
use crate::domain::{Policy, code, session as session_rules, token};
use crate::secret::Mint;
use crate::store::{Location, Store, StoreConfig, StoreError};
use crate::types::TokenIssue;

/// Runs the raw counterparts of `workloads` against a fresh database at `url`.
pub async fn run(
    url: &str,
    workloads: &[String],
    workers: usize,
    seconds: u64,
    preload: usize,
) -> anyhow::Result<Vec<Outcome>> {
    let location = Location::parse(url).map_err(anyhow::Error::msg)?;
    let config = StoreConfig {
        location,
        namespace: "authstore".into(),
        database: "bench_raw".into(),
        username: None,
        password: None,
    };
    let store = Store::open(&config).await.context("opening the raw database")?.unbatched();
    let clock = Arc::new(SystemClock);
    let policy = Arc::new(Policy::default());
    let client_id = format!("raw-{}", crate::secret::generate_id().replace(['-', '_'], "x"));
    super::register_directly(&store, &client_id, clock.now()).await?;
    let duration = Until::Elapsed(Duration::from_secs(seconds));
    let pick = |worker: usize, i: u64, n: usize| (worker.wrapping_mul(7919) + i as usize * 104_729) % n.max(1);
    let mut outcomes = Vec::new();
    for workload in workloads {
        let (store, clock, policy, cid) = (store.clone(), clock.clone(), policy.clone(), client_id.clone());
        eprintln!("raw {workload}:");
        let name = format!("raw {workload}");
        let outcome = match workload.as_str() {
            "session.put" => {
                drive(&name, workers, duration, None, false, move |w, i| {
                    let (store, now) = (store.clone(), clock.now());
                    let new = session_rules::put(session(&cid, format!("p-{w}-{i}")), &policy, now);
                    async move {
                        let new = new.map_err(|e| e.to_string())?;
                        store.session_put(new, None, now).await.map(|_| true).map_err(|e| e.to_string())
                    }
                })
                .await
            }
            "session.get" => {
                let ids: Arc<Vec<String>> = Arc::new((0..preload).map(|k| format!("g-{k}")).collect());
                let (s2, c2, p2, cid2, ids2) = (store.clone(), clock.clone(), policy.clone(), cid.clone(), ids.clone());
                drive("preload", workers, Until::Count(ids.len() as u64), None, true, move |w, i| {
                    let (store, now) = (s2.clone(), c2.now());
                    let new = ids2
                        .get(w + i as usize * workers)
                        .map(|id| session_rules::put(session(&cid2, id.clone()), &p2, now));
                    async move {
                        let Some(new) = new else { return Ok(false) };
                        let new = new.map_err(|e| e.to_string())?;
                        store.session_put(new, None, now).await.map(|_| true).map_err(|e| e.to_string())
                    }
                })
                .await;
                drive(&name, workers, duration, None, false, move |w, i| {
                    let (store, id) = (store.clone(), ids[pick(w, i, ids.len())].clone());
                    let get = session_rules::get(id, clock.now());
                    async move {
                        let get = get.map_err(|e| e.to_string())?;
                        match store.session_get(&get).await {
                            Ok(_) => Ok(true),
                            Err(StoreError::Rejected(_)) => Ok(false),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                })
                .await
            }
            "token.get" => {
                let (s2, c2, p2, cid2) = (store.clone(), clock.clone(), policy.clone(), cid.clone());
                let tokens = super::collect(workers, preload, move |w| {
                    let (store, now) = (s2.clone(), c2.now());
                    let issue = TokenIssue { client_id: cid2.clone(), user_id: format!("u{w}"), ..Default::default() };
                    let new = token::issue(issue, &p2, now, &Mint::Random);
                    async move {
                        let new = new.map_err(|e| e.to_string())?;
                        store.token_issue(new, None, now).await.map(|t| t.token).map_err(|e| e.to_string())
                    }
                })
                .await;
                drive(&name, workers, duration, None, false, move |w, i| {
                    let (store, now, t) = (store.clone(), clock.now(), tokens[pick(w, i, tokens.len())].clone());
                    async move {
                        let get = token::get(&t, now).map_err(|e| e.to_string())?;
                        store.token_get(&get).await.map(|_| true).map_err(|e| e.to_string())
                    }
                })
                .await
            }
            "code.consume" => {
                let (s2, c2, p2, cid2) = (store.clone(), clock.clone(), policy.clone(), cid.clone());
                let codes = super::collect(workers, preload, move |_| {
                    let (store, now, p2) = (s2.clone(), c2.now(), p2.clone());
                    let issue = code::issue(code_issue(&cid2), &p2, now, &Mint::Random);
                    async move {
                        let issue = issue.map_err(|e| e.to_string())?;
                        store.code_issue(&issue, None, now).await.map(|c| c.code).map_err(|e| e.to_string())
                    }
                })
                .await;
                drive(&name, workers, duration, None, false, move |w, i| {
                    let (store, now, policy) = (store.clone(), clock.now(), policy.clone());
                    let p = codes
                        .get(w + i as usize * workers)
                        .map(|code| code::consumption(consume(&cid, code.clone()), &policy, now));
                    async move {
                        let Some(p) = p else { return Ok(false) };
                        store.code_consume(&p, None).await.map(|_| true).map_err(|e| e.to_string())
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
