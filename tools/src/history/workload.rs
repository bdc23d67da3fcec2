//! The workload: random operations on a tiny key space from many connections, with races.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonrpsee::core::client::{ClientT, Error as ClientError, SubscriptionClientT};
use jsonrpsee::rpc_params;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use serde_json::{Value, json};

use super::{Feed, History, Outcome, Recorder};

pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const WRONG_VERIFIER: &str = "wrong-verifier-wrong-verifier-wrong-verifier-0";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

const CODE_SLOTS: usize = 3;
const FAMILY_SLOTS: usize = 3;
const SESSIONS: usize = 4;
const USERS: usize = 2;
const KEEP: usize = 4;

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// WebSocket connections, spread round-robin over the endpoints.
    pub connections: usize,
    /// Tasks issuing operations at the same time.
    pub workers: usize,
    pub api_key: Option<String>,
    /// After this long a call's outcome is unknown.
    pub request_timeout: Duration,
    /// Prefix of every id, so runs on one database never share keys.
    pub run: String,
    /// The server's rotation grace window (0 = strict).
    pub grace_secs: u64,
    pub seed: u64,
    /// Subscribe to both event streams on every endpoint.
    pub feeds: bool,
    /// [`super::run_once`] keeps the load going (up to four times the duration asked) until
    /// this many races of two or more callers on one code or token have run.
    pub min_races: u64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        let mut bytes = [0u8; 8];
        let _ = getrandom::fill(&mut bytes);
        WorkloadConfig {
            connections: 8,
            workers: 6,
            api_key: None,
            request_timeout: Duration::from_secs(15),
            run: format!("h{}", crate::run_id()),
            grace_secs: 0,
            seed: u64::from_le_bytes(bytes),
            feeds: true,
            min_races: 40,
        }
    }
}

/// A small xorshift generator: reproducible from the seed, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The shared key space: what the workers know to present.
#[derive(Default)]
struct Keys {
    /// Per slot, the newest codes: (code, client).
    codes: Vec<Vec<(String, String)>>,
    families: Vec<Family>,
    /// Grants from redeemed codes: (grant, client, user).
    grants: Vec<(String, String, String)>,
}

#[derive(Default, Clone)]
struct Family {
    client: String,
    user: String,
    grant: Option<String>,
    tokens: Vec<String>,
    /// A call answered that the family is revoked.
    dead: bool,
}

/// Runs the workload and keeps its history.
pub struct Workload {
    pub config: WorkloadConfig,
    recorder: Recorder,
    keys: Arc<Mutex<Keys>>,
    counter: AtomicU64,
    races: AtomicU64,
    conns: Mutex<Vec<Option<Arc<WsClient>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Workload {
    pub fn new(config: WorkloadConfig) -> Arc<Self> {
        let keys = Keys {
            codes: vec![Vec::new(); CODE_SLOTS],
            families: vec![Family::default(); FAMILY_SLOTS],
            grants: Vec::new(),
        };
        Arc::new(Workload {
            conns: Mutex::new(vec![None; config.connections.max(1)]),
            config,
            recorder: Recorder::default(),
            keys: Arc::new(Mutex::new(keys)),
            counter: AtomicU64::new(0),
            races: AtomicU64::new(0),
        })
    }

    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Races of two or more callers run so far.
    pub fn races(&self) -> u64 {
        self.races.load(Ordering::Relaxed)
    }

    pub fn stable_client(&self) -> String {
        format!("{}-a", self.config.run)
    }

    pub fn volatile_client(&self) -> String {
        format!("{}-b", self.config.run)
    }

    fn user(&self, i: usize) -> String {
        format!("{}-u{i}", self.config.run)
    }

    fn session_id(&self, i: usize) -> String {
        format!("{}-s{i}", self.config.run)
    }

    /// The history so far, with the feeds given.
    pub fn history(&self, feeds: Vec<Feed>) -> History {
        History { ops: self.recorder.ops(), feeds, grace_secs: self.config.grace_secs }
    }

    /// Registers both clients (recorded, like every other call).
    pub async fn setup(self: &Arc<Self>, endpoints: &[String]) -> anyhow::Result<()> {
        let client = connect_retry(&endpoints[0], self.config.api_key.as_deref(), Duration::from_secs(60)).await?;
        let client = Arc::new(client);
        for id in [self.stable_client(), self.volatile_client()] {
            // A server that just started can be slow to answer its first calls.
            let mut attempts = 0;
            loop {
                let outcome = self.call(&client, usize::MAX, "client.register", register_params(&id)).await;
                attempts += 1;
                match outcome {
                    Outcome::Ok(_) => break,
                    Outcome::Err { reason, .. } if reason == "already_exists" => break,
                    Outcome::Unknown(_) if attempts < 8 => continue,
                    other => anyhow::bail!("registering {id}: {other:?}"),
                }
            }
        }
        Ok(())
    }

    /// One recorded call.
    async fn call(&self, client: &WsClient, conn: usize, method: &'static str, params: Value) -> Outcome {
        let start = self.recorder.now();
        let answer = tokio::time::timeout(
            self.config.request_timeout,
            client.request::<Value, _>(method, rpc_params![params.clone()]),
        )
        .await;
        let outcome = match answer {
            Ok(Ok(value)) => Outcome::Ok(value),
            Ok(Err(ClientError::Call(e))) => {
                let reason = e
                    .data()
                    .and_then(|d| serde_json::from_str::<Value>(d.get()).ok())
                    .and_then(|d| d.get("reason").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_default();
                Outcome::Err { code: i64::from(e.code()), reason }
            }
            Ok(Err(e)) => Outcome::Unknown(e.to_string()),
            Err(_) => Outcome::Unknown("timed out".into()),
        };
        self.recorder.push(conn, method, params, start, outcome.clone());
        outcome
    }

    /// Connection `i` (reconnecting if it died); `None` while its server is unreachable.
    async fn conn(&self, i: usize, endpoints: &[String]) -> Option<Arc<WsClient>> {
        let i = i % self.config.connections.max(1);
        if let Some(c) = lock(&self.conns)[i].clone().filter(|c| c.is_connected()) {
            return Some(c);
        }
        let url = &endpoints[i % endpoints.len()];
        let client = Arc::new(connect(url, self.config.api_key.as_deref()).await.ok()?);
        lock(&self.conns)[i] = Some(client.clone());
        Some(client)
    }

    /// Drops every connection (after the servers behind them were restarted).
    pub fn disconnect(&self) {
        lock(&self.conns).iter_mut().for_each(|c| *c = None);
    }

    /// Runs `workers` tasks of random operations for `duration`.
    pub async fn phase(self: &Arc<Self>, endpoints: &[String], duration: Duration) {
        let deadline = Instant::now() + duration;
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for w in 0..self.config.workers.max(1) {
            let (this, endpoints, stop) = (self.clone(), endpoints.to_vec(), stop.clone());
            let seed = self.config.seed ^ (w as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F) ^ self.recorder.now();
            tasks.push(tokio::spawn(async move {
                let mut rng = Rng::new(seed);
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                    if !this.step(w, &mut rng, &endpoints).await {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
        // A call in flight at the deadline ends by its timeout at the latest.
        tokio::time::sleep_until((deadline).into()).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            let _ = task.await;
        }
    }

    /// One random action; false when no connection was available.
    async fn step(&self, w: usize, rng: &mut Rng, endpoints: &[String]) -> bool {
        let n = self.config.connections.max(1);
        let own = w % n;
        let Some(client) = self.conn(own, endpoints).await else { return false };
        let roll = rng.below(100);
        match roll {
            0..=8 => self.code_issue(&client, own, rng).await,
            9..=22 => return self.code_race(rng, endpoints).await,
            23..=29 => self.token_issue(&client, own, rng).await,
            30..=59 => return self.rotate_race(rng, endpoints).await,
            60..=69 => self.token_get(&client, own, rng).await,
            70..=72 => self.token_revoke(&client, own, rng).await,
            73..=98 => self.session_op(&client, own, rng).await,
            _ => self.client_churn(&client, own).await,
        }
        true
    }

    fn pick_client(&self, rng: &mut Rng) -> String {
        if rng.chance(70) { self.stable_client() } else { self.volatile_client() }
    }

    async fn code_issue(&self, client: &WsClient, conn: usize, rng: &mut Rng) {
        let slot = rng.below(CODE_SLOTS);
        let client_id = self.pick_client(rng);
        let user = self.user(rng.below(USERS));
        let mut params = json!({
            "client_id": client_id, "user_id": user, "redirect_uri": REDIRECT,
            "code_challenge": CHALLENGE, "ttl_secs": 600,
        });
        if rng.chance(25) {
            // From a pending session: consumes it (the session's client must match).
            params = json!({"session_id": self.session_id(rng.below(SESSIONS)), "user_id": user, "ttl_secs": 600});
        }
        let from_session = params.get("session_id").is_some();
        let outcome = self.call(client, conn, "code.issue", params).await;
        if let Outcome::Ok(v) = outcome
            && let Some(code) = v.get("code").and_then(Value::as_str)
        {
            let client_id = if from_session {
                v.get("client_id").and_then(Value::as_str).unwrap_or(&client_id).to_string()
            } else {
                client_id
            };
            let mut keys = lock(&self.keys);
            let codes = &mut keys.codes[slot];
            codes.push((code.to_string(), client_id));
            if codes.len() > KEEP {
                codes.remove(0);
            }
        }
    }

    /// Callers for a race: mostly two (a retrying client), sometimes one or a crowd.
    fn race_width(&self, rng: &mut Rng) -> usize {
        match rng.below(100) {
            0..=64 => 2,
            65..=79 => 1,
            _ => 3 + rng.below(4),
        }
    }

    /// Distinct connections for `k` racing callers.
    async fn racers(&self, k: usize, rng: &mut Rng, endpoints: &[String]) -> Vec<(usize, Arc<WsClient>)> {
        let n = self.config.connections.max(1);
        let first = rng.below(n);
        let mut out = Vec::new();
        for j in 0..k.min(n) {
            let i = (first + j * (1 + n / k.max(1))) % n;
            if out.iter().any(|(c, _)| *c == i) {
                continue;
            }
            if let Some(client) = self.conn(i, endpoints).await {
                out.push((i, client));
            }
        }
        out
    }

    async fn code_race(&self, rng: &mut Rng, endpoints: &[String]) -> bool {
        let slot = rng.below(CODE_SLOTS);
        let picked = {
            let keys = lock(&self.keys);
            let codes = &keys.codes[slot];
            if codes.is_empty() {
                None
            } else if rng.chance(75) {
                codes.last().cloned()
            } else {
                Some(codes[rng.below(codes.len())].clone())
            }
        };
        let Some((code, client_id)) = picked else { return true };
        let k = self.race_width(rng);
        let racers = self.racers(k, rng, endpoints).await;
        if racers.is_empty() {
            return false;
        }
        if racers.len() > 1 {
            self.races.fetch_add(1, Ordering::Relaxed);
        }
        let calls = racers.iter().map(|(i, c)| {
            let verifier = if rng.chance(12) { WRONG_VERIFIER } else { VERIFIER };
            let params =
                json!({"code": code, "client_id": client_id, "redirect_uri": REDIRECT, "code_verifier": verifier});
            self.call(c, *i, "code.consume", params)
        });
        let calls: Vec<_> = calls.collect();
        let outcomes = futures::future::join_all(calls).await;
        for outcome in outcomes {
            if let Outcome::Ok(v) = outcome
                && let (Some(grant), Some(user)) =
                    (v.get("grant_id").and_then(Value::as_str), v.get("user_id").and_then(Value::as_str))
            {
                let mut keys = lock(&self.keys);
                keys.grants.push((grant.to_string(), client_id.clone(), user.to_string()));
                if keys.grants.len() > KEEP {
                    keys.grants.remove(0);
                }
            }
        }
        true
    }

    async fn token_issue(&self, client: &WsClient, conn: usize, rng: &mut Rng) {
        let slot = rng.below(FAMILY_SLOTS);
        self.issue_into(client, conn, slot, rng.below(100), rng).await;
    }

    async fn new_family(&self, client: &WsClient, conn: usize, slot: usize, rng: &mut Rng) {
        self.issue_into(client, conn, slot, 100, rng).await;
    }

    /// `choice` < 30: into the slot's family; < 60: into a redeemed code's grant; else new.
    async fn issue_into(&self, client: &WsClient, conn: usize, slot: usize, choice: usize, rng: &mut Rng) {
        let (family, params) = {
            let keys = lock(&self.keys);
            let current = keys.families[slot].clone();
            if choice < 30 && current.grant.is_some() {
                // Into the slot's own family: supersedes its active token.
                let p = json!({"client_id": current.client, "user_id": current.user, "grant_id": current.grant});
                (current, p)
            } else if choice < 60 && !keys.grants.is_empty() {
                let (grant, client_id, user) = keys.grants[rng.below(keys.grants.len())].clone();
                let p = json!({"client_id": client_id, "user_id": user, "grant_id": grant});
                (Family { client: client_id, user, grant: Some(grant), ..Family::default() }, p)
            } else {
                let client_id = self.pick_client(rng);
                let user = self.user(rng.below(USERS));
                let p = json!({"client_id": client_id, "user_id": user});
                (Family { client: client_id, user, grant: None, ..Family::default() }, p)
            }
        };
        let outcome = self.call(client, conn, "token.issue", params).await;
        if let Outcome::Ok(v) = outcome
            && let (Some(token), Some(grant)) =
                (v.get("token").and_then(Value::as_str), v.get("grant_id").and_then(Value::as_str))
        {
            let mut keys = lock(&self.keys);
            let slot = &mut keys.families[slot];
            if slot.grant.as_deref() != Some(grant) {
                *slot = Family { grant: Some(grant.to_string()), ..family };
            }
            slot.tokens.push(token.to_string());
            slot.dead = false;
            if slot.tokens.len() > KEEP {
                slot.tokens.remove(0);
            }
        }
    }

    /// A random known token of a random family: the newest mostly, an older one sometimes.
    fn pick_token(&self, rng: &mut Rng, newest: u64) -> Option<(usize, Family, String)> {
        let slot = rng.below(FAMILY_SLOTS);
        let keys = lock(&self.keys);
        let family = keys.families[slot].clone();
        let token =
            if rng.chance(newest) { family.tokens.last() } else { family.tokens.get(rng.below(family.tokens.len())) };
        let token = token.cloned()?;
        Some((slot, family, token))
    }

    async fn rotate_race(&self, rng: &mut Rng, endpoints: &[String]) -> bool {
        let Some((slot, family, token)) = self.pick_token(rng, 92) else { return true };
        if family.dead && rng.chance(80) {
            // Most races should be on a live family: start a new one in this slot.
            let n = self.config.connections.max(1);
            let own = rng.below(n);
            let Some(client) = self.conn(own, endpoints).await else { return false };
            self.new_family(&client, own, slot, rng).await;
            return true;
        }
        let k = self.race_width(rng);
        let racers = self.racers(k, rng, endpoints).await;
        if racers.is_empty() {
            return false;
        }
        if racers.len() > 1 {
            self.races.fetch_add(1, Ordering::Relaxed);
        }
        let calls: Vec<_> = racers
            .iter()
            .map(|(i, c)| {
                let params = json!({"token": token, "client_id": family.client});
                self.call(c, *i, "token.rotate", params)
            })
            .collect();
        let outcomes = futures::future::join_all(calls).await;
        let mut keys = lock(&self.keys);
        let revoked = |o: &Outcome| matches!(o.reason(), Some("revoked" | "reuse_detected"));
        if outcomes.iter().any(revoked) && keys.families[slot].grant == family.grant {
            keys.families[slot].dead = true;
        }
        for outcome in outcomes {
            if let Outcome::Ok(v) = outcome
                && let Some(next) = v.get("token").and_then(Value::as_str)
            {
                let slot = &mut keys.families[slot];
                if slot.grant == family.grant {
                    slot.tokens.push(next.to_string());
                    if slot.tokens.len() > KEEP {
                        slot.tokens.remove(0);
                    }
                }
            }
        }
        true
    }

    async fn token_get(&self, client: &WsClient, conn: usize, rng: &mut Rng) {
        let Some((_, _, token)) = self.pick_token(rng, 70) else { return };
        self.call(client, conn, "token.get", json!({"token": token})).await;
    }

    async fn token_revoke(&self, client: &WsClient, conn: usize, rng: &mut Rng) {
        let Some((_, family, token)) = self.pick_token(rng, 50) else { return };
        let params = match rng.below(10) {
            0..=3 => json!({"token": token}),
            4..=8 => json!({"grant_id": family.grant}),
            _ => json!({"user_id": family.user}),
        };
        self.call(client, conn, "token.revoke", params).await;
    }

    async fn session_op(&self, client: &WsClient, conn: usize, rng: &mut Rng) {
        let id = self.session_id(rng.below(SESSIONS));
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let (method, params) = match rng.below(100) {
            0..=29 => (
                "session.put",
                json!({"id": id, "client_id": self.pick_client(rng), "redirect_uri": REDIRECT,
                       "code_challenge": CHALLENGE, "data": {"n": n}, "ttl_secs": 3600}),
            ),
            30..=64 => ("session.get", json!({"id": id})),
            65..=79 => ("session.update", json!({"id": id, "data": {"n": n}, "user_id": self.user(rng.below(USERS))})),
            80..=93 => ("session.delete", json!({"id": id})),
            _ => ("session.purge", json!({"client_id": self.pick_client(rng)})),
        };
        self.call(client, conn, method, params).await;
    }

    /// Deletes the volatile client and registers it again under the same id.
    async fn client_churn(&self, client: &WsClient, conn: usize) {
        let id = self.volatile_client();
        self.call(client, conn, "client.delete", json!({"client_id": id})).await;
        self.call(client, conn, "client.register", register_params(&id)).await;
    }

    /// After the load: reads every session and the newest tokens of every family ever minted,
    /// and replays every redeemed code, so a lost acknowledged write cannot hide.
    pub async fn sweep(self: &Arc<Self>, endpoints: &[String]) {
        let Ok(client) = connect_retry(&endpoints[0], self.config.api_key.as_deref(), Duration::from_secs(60)).await
        else {
            return;
        };
        let conn = usize::MAX - 1;
        for i in 0..SESSIONS {
            self.call(&client, conn, "session.get", json!({"id": self.session_id(i)})).await;
        }
        let ops = self.recorder.ops();
        let mut tokens: Vec<String> = ops
            .iter()
            .filter(|o| matches!(o.method, "token.issue" | "token.rotate"))
            .filter_map(|o| o.outcome.ok().and_then(|v| v.get("token")).and_then(Value::as_str).map(str::to_string))
            .collect();
        tokens.reverse();
        tokens.truncate(400);
        for token in tokens {
            self.call(&client, conn, "token.get", json!({"token": token})).await;
        }
        let redeemed: Vec<(String, String)> = ops
            .iter()
            .filter(|o| o.method == "code.consume" && o.outcome.is_ok())
            .filter_map(|o| Some((o.param("code")?.to_string(), o.param("client_id")?.to_string())))
            .collect();
        for (code, client_id) in redeemed.into_iter().rev().take(200) {
            let params =
                json!({"code": code, "client_id": client_id, "redirect_uri": REDIRECT, "code_verifier": VERIFIER});
            self.call(&client, conn, "code.consume", params).await;
        }
    }

    /// Starts the subscribers: on every endpoint, every token event, every session event, and
    /// the token events of the stable client.
    pub fn start_feeds(self: &Arc<Self>, endpoints: &[String]) -> Feeds {
        let stop = Arc::new(AtomicBool::new(false));
        let last_event = Arc::new(Mutex::new(Instant::now()));
        let mut tasks = Vec::new();
        if self.config.feeds {
            for (e, url) in endpoints.iter().enumerate() {
                for (stream, filter) in [("token", None), ("session", None), ("token", Some(self.stable_client()))] {
                    let feed = Feed {
                        name: format!("{stream}@{e}{}", if filter.is_some() { "/client" } else { "" }),
                        stream,
                        client_id: filter,
                        ..Feed::default()
                    };
                    let (url, key, stop, last) =
                        (url.clone(), self.config.api_key.clone(), stop.clone(), last_event.clone());
                    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
                    tasks.push((tokio::spawn(follow(feed, url, key, stop, last, ready_tx)), ready_rx));
                }
            }
        }
        Feeds { stop, last_event, tasks }
    }
}

/// Running subscribers.
pub struct Feeds {
    stop: Arc<AtomicBool>,
    last_event: Arc<Mutex<Instant>>,
    tasks: Vec<(tokio::task::JoinHandle<Feed>, tokio::sync::oneshot::Receiver<()>)>,
}

impl Feeds {
    /// Waits until every subscriber has subscribed once.
    pub async fn ready(&mut self) {
        for (_, ready) in &mut self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(60), ready).await;
        }
    }

    /// Waits until no event has arrived for a while (everything committed was delivered), then
    /// stops the subscribers and returns what they received.
    pub async fn finish(self) -> Vec<Feed> {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let quiet = lock(&self.last_event).elapsed();
            if quiet > Duration::from_millis(1500) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let mut feeds = Vec::new();
        for (task, _) in self.tasks {
            if let Ok(feed) = task.await {
                feeds.push(feed);
            }
        }
        feeds
    }
}

/// One subscriber: subscribes (from the start of the log), records events, and resumes with
/// `since` whenever its subscription or connection ends, until stopped.
async fn follow(
    mut feed: Feed,
    url: String,
    api_key: Option<String>,
    stop: Arc<AtomicBool>,
    last_event: Arc<Mutex<Instant>>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Feed {
    let mut ready = Some(ready);
    let mut since = "0".to_string();
    let mut first = true;
    while !stop.load(Ordering::Relaxed) {
        let Ok(client) = connect(&url, api_key.as_deref()).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut params = json!({"since": since});
        if let Some(c) = &feed.client_id {
            params["client_id"] = json!(c);
        }
        let method = if feed.stream == "token" { "token.subscribe" } else { "session.subscribe" };
        let unsubscribe = if feed.stream == "token" { "token.unsubscribe" } else { "session.unsubscribe" };
        let sub = client.subscribe::<Value, _>(method, rpc_params![params], unsubscribe).await;
        let mut sub = match sub {
            Ok(sub) => sub,
            Err(ClientError::Call(e)) => {
                feed.failures.push(format!("{method} since {since}: {} {}", e.code(), e.message()));
                if let Some(oldest) = e
                    .data()
                    .and_then(|d| serde_json::from_str::<Value>(d.get()).ok())
                    .and_then(|d| d.get("oldest").and_then(Value::as_str).map(str::to_string))
                {
                    since = oldest;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !first {
            feed.resumes += 1;
        }
        first = false;
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        loop {
            if stop.load(Ordering::Relaxed) {
                return feed;
            }
            match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(event))) => {
                    if let Some(c) = event.get("cursor").and_then(Value::as_str) {
                        since = c.to_string();
                    }
                    feed.events.push(event);
                    *lock(&last_event) = Instant::now();
                }
                // Closed (by the server, with a last error notification) or the connection died.
                Ok(Some(Err(_))) | Ok(None) => break,
            }
        }
    }
    feed
}

fn register_params(client_id: &str) -> Value {
    json!({
        "client_id": client_id,
        "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
    })
}

pub async fn connect(url: &str, api_key: Option<&str>) -> anyhow::Result<WsClient> {
    let mut headers = http::HeaderMap::new();
    if let Some(key) = api_key {
        headers.insert(http::header::AUTHORIZATION, format!("Bearer {key}").parse()?);
    }
    Ok(WsClientBuilder::default()
        .set_headers(headers)
        .max_concurrent_requests(64)
        .request_timeout(Duration::from_secs(120))
        .connection_timeout(Duration::from_secs(5))
        .build(url)
        .await?)
}

/// Connects, retrying while the server comes up.
pub async fn connect_retry(url: &str, api_key: Option<&str>, limit: Duration) -> anyhow::Result<WsClient> {
    let started = Instant::now();
    loop {
        match connect(url, api_key).await {
            Ok(c) => return Ok(c),
            Err(_) if started.elapsed() < limit => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => return Err(e),
        }
    }
}
