//! `server.stats`: counts read from COUNT indexes and index keys, less what is past its deadline
//! and not yet removed. They must equal what is live, through every kind of change.

use authstore::rpc::api::{ClientApiClient, CodeApiClient, ServerApiClient, SessionApiClient, TokenApiClient};
use authstore::types::*;

use super::backend;
use crate::support::{CHALLENGE, REDIRECT, TestApp};

/// (clients, sessions, codes, tokens) as `server.stats` counts them.
async fn counts(app: &TestApp) -> (u64, u64, u64, u64) {
    let s = ServerApiClient::stats(&app.client).await.unwrap();
    (s.clients, s.sessions, s.codes, s.tokens)
}

// The test harness runs no expiry scheduler: records past their deadline stay stored, and
// must not be counted.
#[tokio::test]
async fn stats_count_what_is_live_through_every_change_and_past_every_deadline() {
    let app = TestApp::spawn_on(backend()).await;
    assert_eq!(counts(&app).await, (0, 0, 0, 0));
    app.register_client("app").await;
    app.register_client("other").await;
    let put = |id: &str, ttl: u64| SessionPut {
        id: Some(id.into()),
        client_id: "app".into(),
        redirect_uri: REDIRECT.into(),
        ttl_secs: Some(ttl),
        ..Default::default()
    };
    for (id, ttl) in [("ten", 10), ("twenty", 20), ("thirty", 30)] {
        SessionApiClient::put(&app.client, put(id, ttl).into()).await.unwrap();
    }
    // Putting a session again replaces it.
    SessionApiClient::put(&app.client, put("thirty", 30).into()).await.unwrap();
    let consumed = app.issue_code("app", "alice").await;
    app.issue_code("app", "bob").await;
    CodeApiClient::consume(&app.client, TestApp::consume_params(&consumed.code, "app").into()).await.unwrap();
    let rotated = app.issue_token("app", "alice", None).await;
    let revoked = app.issue_token("other", "bob", None).await;
    app.issue_token("other", "carol", None).await;
    let rotate = TokenRotate { token: rotated.token.clone(), client_id: "app".into(), ..Default::default() };
    TokenApiClient::rotate(&app.client, rotate.into()).await.unwrap();
    let revoke = TokenRevoke { token: Some(revoked.token.clone()), ..Default::default() };
    TokenApiClient::revoke(&app.client, revoke.into()).await.unwrap();
    SessionApiClient::delete(&app.client, SessionDelete { id: "twenty".into(), idempotency_key: None }.into())
        .await
        .unwrap();
    // Tokens: the rotated one's successor and carol's; codes: bob's.
    assert_eq!(counts(&app).await, (2, 2, 1, 2));

    app.advance(15);
    assert_eq!(counts(&app).await, (2, 1, 1, 2), "a session past its deadline is not counted");
    app.advance(60);
    assert_eq!(counts(&app).await, (2, 0, 0, 2), "nor a code past its deadline");
    app.advance(31 * 86_400);
    assert_eq!(counts(&app).await, (2, 0, 0, 0), "nor a token past its deadline");
}

/// A small deterministic generator: each seed replays the same history.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

const CLIENTS: [&str; 2] = ["app", "other"];
const USERS: [&str; 3] = ["alice", "bob", "carol"];

/// Live tokens as `token.list` finds them (its rows: active and before their deadline), user by
/// user, page by page: the count `server.stats` must equal.
async fn listed_tokens(app: &TestApp) -> u64 {
    let mut total = 0;
    for user in USERS {
        let mut cursor = None;
        loop {
            let list = TokenList { user_id: Some(user.into()), cursor, limit: Some(50), ..Default::default() };
            let page = TokenApiClient::list(&app.client, list.into()).await.unwrap();
            total += page.items.len() as u64;
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
    }
    total
}

/// `server.stats` counts tokens through their families (live families less revoked ones), so
/// every way a token stops being live must keep that count equal to the tokens themselves:
/// rotation, reuse of a rotated token (inside the grace window and after), each revocation
/// scope, a replayed code, a deleted client, joining a family, and deadlines passing.
#[tokio::test]
async fn stats_count_the_listed_tokens_through_a_random_history() {
    let app = TestApp::spawn_on(backend()).await;
    for client in CLIENTS {
        app.register_client(client).await;
    }
    // Each path once, in order, before the random ones: reuse of a rotated token revokes its
    // family.
    let first = app.issue_token("app", "alice", None).await;
    let rotate =
        |t: &IssuedToken| TokenRotate { token: t.token.clone(), client_id: t.client_id.clone(), ..Default::default() };
    TokenApiClient::rotate(&app.client, rotate(&first).into()).await.unwrap();
    assert_eq!(counts(&app).await.3, 1);
    assert!(TokenApiClient::rotate(&app.client, rotate(&first).into()).await.is_err(), "reuse is refused");
    assert_eq!((counts(&app).await.3, listed_tokens(&app).await), (0, 0), "reuse revoked the family");

    for seed in [0x2545_f491_4f6c_dd1d_u64, 0x9e37_79b9_7f4a_7c15] {
        let mut rng = Rng(seed);
        // Every token ever issued (presented again at random, whatever became of it), and every
        // consumed code (replayed at random).
        let mut tokens: Vec<IssuedToken> = Vec::new();
        let mut codes: Vec<(String, &str)> = Vec::new();
        for step in 0..120 {
            let client = CLIENTS[rng.below(CLIENTS.len())];
            let user = USERS[rng.below(USERS.len())];
            let ttl = Some([120, 3_600, 3_600, 86_400][rng.below(4)]);
            let op = rng.below(10);
            match op {
                // A new grant, or a token joining an existing one.
                0 | 1 => {
                    let grant_id = (op == 1 && !tokens.is_empty()).then(|| {
                        let t = &tokens[rng.below(tokens.len())];
                        t.grant_id.clone()
                    });
                    let (client, user) = match grant_id.as_ref().and_then(|g| tokens.iter().find(|t| &t.grant_id == g))
                    {
                        Some(t) => (t.client_id.clone(), t.user_id.clone()),
                        None => (client.to_string(), user.to_string()),
                    };
                    let issue =
                        TokenIssue { client_id: client, user_id: user, grant_id, ttl_secs: ttl, ..Default::default() };
                    tokens.extend(TokenApiClient::issue(&app.client, issue.into()).await.ok());
                }
                // Any token presented for rotation: active, rotated (reuse), revoked or gone.
                2..=4 if !tokens.is_empty() => {
                    let t = tokens[rng.below(tokens.len())].clone();
                    let rotate =
                        TokenRotate { token: t.token, client_id: t.client_id, ttl_secs: ttl, ..Default::default() };
                    tokens.extend(TokenApiClient::rotate(&app.client, rotate.into()).await.ok());
                }
                5 if !tokens.is_empty() => {
                    let t = &tokens[rng.below(tokens.len())];
                    let revoke = match rng.below(5) {
                        0 => TokenRevoke { token: Some(t.token.clone()), ..Default::default() },
                        1 => TokenRevoke { grant_id: Some(t.grant_id.clone()), ..Default::default() },
                        2 => TokenRevoke { client_id: Some(t.client_id.clone()), ..Default::default() },
                        3 => TokenRevoke {
                            client_id: Some(t.client_id.clone()),
                            user_id: Some(t.user_id.clone()),
                            ..Default::default()
                        },
                        _ => TokenRevoke { user_id: Some(t.user_id.clone()), ..Default::default() },
                    };
                    TokenApiClient::revoke(&app.client, revoke.into()).await.unwrap();
                }
                // A code flow into a new grant; its code may be replayed later.
                6 => {
                    let Ok(code) = CodeApiClient::issue(
                        &app.client,
                        CodeIssue {
                            client_id: Some(client.into()),
                            user_id: Some(user.into()),
                            redirect_uri: Some(REDIRECT.into()),
                            code_challenge: Some(CHALLENGE.into()),
                            ..Default::default()
                        }
                        .into(),
                    )
                    .await
                    else {
                        continue;
                    };
                    let consume = TestApp::consume_params(&code.code, client);
                    if let Ok(grant) = CodeApiClient::consume(&app.client, consume.into()).await {
                        // Only some grants get a token: a replay may revoke a family with none.
                        if rng.below(2) == 0 {
                            let issue = TokenIssue {
                                client_id: client.into(),
                                user_id: user.into(),
                                grant_id: Some(grant.grant_id),
                                ttl_secs: ttl,
                                ..Default::default()
                            };
                            tokens.push(TokenApiClient::issue(&app.client, issue.into()).await.unwrap());
                        }
                        codes.push((code.code, client));
                    }
                }
                7 if !codes.is_empty() => {
                    let (code, client) = &codes[rng.below(codes.len())];
                    let replay = TestApp::consume_params(code, client);
                    assert!(CodeApiClient::consume(&app.client, replay.into()).await.is_err(), "a code is single-use");
                }
                8 if rng.below(4) == 0 => {
                    let delete = ClientDelete { client_id: client.into(), idempotency_key: None };
                    ClientApiClient::delete(&app.client, delete.into()).await.unwrap();
                    app.register_client(client).await;
                }
                _ => app.advance(rng.below(200) as i64),
            }
            let stats = ServerApiClient::stats(&app.client).await.unwrap();
            assert_eq!(stats.tokens, listed_tokens(&app).await, "seed {seed:#x}, step {step}, op {op}");
        }
        // Past every deadline of this round.
        app.advance(2 * 86_400);
        assert_eq!(counts(&app).await.3, 0, "seed {seed:#x}: no token outlives its deadline");
    }
}
