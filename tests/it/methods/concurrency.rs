//! Single use and rotation under real concurrency: many connections, one instant.

use std::sync::Arc;

use authstore::domain::Policy;
use authstore::rpc::api::{CodeApiClient, TokenApiClient};
use authstore::types::*;
use jsonrpsee::ws_client::WsClient;
use tokio::sync::Barrier;

use super::backend;
use crate::support::{Options, TestApp, error_of};

const ROUNDS: usize = 50;

async fn connections(app: &TestApp, n: usize) -> Vec<Arc<WsClient>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(Arc::new(app.connect().await));
    }
    clients
}

/// Runs `call` once per connection, all released at the same instant; returns the results.
async fn at_once<T, F, Fut>(clients: &[Arc<WsClient>], call: F) -> Vec<Result<T, jsonrpsee::core::client::Error>>
where
    F: Fn(Arc<WsClient>) -> Fut,
    Fut: std::future::Future<Output = Result<T, jsonrpsee::core::client::Error>> + Send + 'static,
    T: Send + 'static,
{
    let barrier = Arc::new(Barrier::new(clients.len()));
    let tasks: Vec<_> = clients
        .iter()
        .map(|client| {
            let barrier = barrier.clone();
            let call = call(client.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                call.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    results
}

/// Rounds of the two-caller races: a pair of callers presenting one secret (a client that
/// retries) is the common case in real traffic, and the one that once gave two winners.
const PAIR_ROUNDS: usize = 100;

/// `n` connections redeem one code at the same instant, `rounds` times: exactly one wins, the
/// others see the code consumed (RFC 6749 §4.1.2).
async fn consume_race(app: &TestApp, n: usize, rounds: usize) {
    app.register_client("app").await;
    let clients = connections(app, n).await;
    for round in 0..rounds {
        let code = app.issue_code("app", "alice").await.code;
        let results = at_once(&clients, |client| {
            let params = TestApp::consume_params(&code, "app");
            async move { client.consume(params.into()).await }
        })
        .await;
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "{n} callers, round {round}: {winners} winners");
        for loser in results.into_iter().filter(|r| r.is_err()) {
            assert_eq!(error_of(loser), (1003, "consumed".into()), "round {round}: losers see the code as consumed");
        }
    }
}

/// `n` connections rotate one token at the same instant, `rounds` times, in strict mode
/// (RFC 9700 §4.14.2): exactly one new token; every other presentation is reuse, whatever its
/// clock said when its call arrived, so the family ends revoked.
async fn strict_rotation_race(app: &TestApp, n: usize, rounds: usize) {
    app.register_client("app").await;
    let clients = connections(app, n).await;
    for round in 0..rounds {
        let token = app.issue_token("app", "alice", None).await;
        let results = at_once(&clients, |client| {
            let params = TokenRotate { token: token.token.clone(), client_id: "app".into(), ..Default::default() };
            async move { client.rotate(params.into()).await }
        })
        .await;
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(winners, 1, "{n} callers, round {round}: {winners} rotations succeeded");
        for loser in results.into_iter().filter(|r| r.is_err()) {
            let (code, reason) = error_of(loser);
            assert_eq!(code, 1003, "round {round}");
            assert!(matches!(reason.as_str(), "reuse_detected" | "revoked"), "round {round}: {reason}");
        }
        let active = TokenApiClient::list(
            &app.client,
            TokenList { grant_id: Some(token.grant_id), ..Default::default() }.into(),
        )
        .await
        .unwrap();
        assert!(active.items.is_empty(), "{n} callers, round {round}: {} active tokens", active.items.len());
    }
}

/// `n` connections rotate one token at the same instant inside the grace window: any may be
/// answered, but the family keeps exactly one active token, and it is one that was handed out.
async fn grace_rotation_race(app: &TestApp, n: usize, rounds: usize) {
    app.register_client("app").await;
    let clients = connections(app, n).await;
    for round in 0..rounds {
        let token = app.issue_token("app", "alice", None).await;
        let results = at_once(&clients, |client| {
            let params = TokenRotate { token: token.token.clone(), client_id: "app".into(), ..Default::default() };
            async move { client.rotate(params.into()).await }
        })
        .await;
        let issued: Vec<IssuedToken> = results.into_iter().filter_map(Result::ok).collect();
        assert!(!issued.is_empty(), "{n} callers, round {round}: at least one rotation succeeds");
        let active = TokenApiClient::list(
            &app.client,
            TokenList { grant_id: Some(token.grant_id), ..Default::default() }.into(),
        )
        .await
        .unwrap();
        assert_eq!(active.items.len(), 1, "{n} callers, round {round}: a family never has two active tokens");
        assert!(issued.iter().any(|t| t.token_id == active.items[0].token_id), "round {round}: survivor handed out");
    }
}

fn grace_app() -> Options {
    Options {
        policy: Policy { rotation_grace_secs: 60, ..Policy::default() },
        backend: backend(),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_callers_consuming_one_code_exactly_one_wins() {
    consume_race(&TestApp::spawn_on(backend()).await, 2, PAIR_ROUNDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_connections_consume_one_code_and_exactly_one_wins_every_round() {
    consume_race(&TestApp::spawn_on(backend()).await, 64, ROUNDS).await;
}

// The pair is the case that once gave two winners: the loser re-read after the winner's commit
// and decided at its own arrival time, earlier than the winner's stamp. The real clock makes
// that ordering common.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_callers_rotating_one_token_never_both_win_in_strict_mode() {
    let app = TestApp::spawn_with(Options { real_clock: true, backend: backend(), ..Options::default() }).await;
    strict_rotation_race(&app, 2, PAIR_ROUNDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_rotations_yield_one_token_in_strict_mode() {
    strict_rotation_race(&TestApp::spawn_on(backend()).await, 32, ROUNDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_callers_rotating_inside_the_grace_window_leave_exactly_one_active_token() {
    grace_rotation_race(&TestApp::spawn_with(grace_app()).await, 2, PAIR_ROUNDS / 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotations_inside_the_grace_window_leave_exactly_one_active_token() {
    grace_rotation_race(&TestApp::spawn_with(grace_app()).await, 32, ROUNDS / 5).await;
}
