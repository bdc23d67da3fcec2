//! `token.*`: refresh token families, rotation and reuse detection.

use authstore::domain::Policy;
use authstore::rpc::api::TokenApiClient;
use authstore::types::*;

use super::backend;
use crate::support::{Options, TestApp, error_of, field_of};

fn rotate(token: &str) -> TokenRotate {
    TokenRotate { token: token.into(), client_id: "app".into(), ..Default::default() }
}

async fn active_in(app: &TestApp, grant_id: &str) -> Vec<TokenInfo> {
    TokenApiClient::list(&app.client, TokenList { grant_id: Some(grant_id.into()), ..Default::default() }.into())
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn rotation_replaces_the_token_and_keeps_the_family() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    let first = app.issue_token("app", "alice", None).await;
    assert_eq!(first.token.len(), 43);
    let info = TokenApiClient::get(&app.client, TokenRef { token: first.token.clone() }.into()).await.unwrap();
    assert_eq!((info.token_id.as_str(), info.grant_id.as_str()), (first.token_id.as_str(), first.grant_id.as_str()));
    assert_eq!((info.expires_at - info.issued_at).num_days(), 30, "default TTL is 30 days");

    app.advance(10);
    let second = app.client.rotate(rotate(&first.token).into()).await.unwrap();
    assert_eq!(second.grant_id, first.grant_id);
    assert_ne!(second.token, first.token);
    let old = TokenApiClient::get(&app.client, TokenRef { token: first.token.clone() }.into()).await;
    assert_eq!(error_of(old), (1003, "rotated".into()));
    let active = active_in(&app, &first.grant_id).await;
    assert_eq!(active.iter().map(|t| t.token_id.as_str()).collect::<Vec<_>>(), vec![second.token_id.as_str()]);
}

// RFC 9700 §4.14.2: a rotated refresh token presented again means one copy was stolen; the
// family is revoked.
#[tokio::test]
async fn reusing_a_rotated_token_in_strict_mode_revokes_the_family() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    let first = app.issue_token("app", "alice", None).await;
    let second = app.client.rotate(rotate(&first.token).into()).await.unwrap();
    let reuse = app.client.rotate(rotate(&first.token).into()).await;
    assert_eq!(error_of(reuse), (1003, "reuse_detected".into()));
    let successor = TokenApiClient::get(&app.client, TokenRef { token: second.token.clone() }.into()).await;
    assert_eq!(error_of(successor), (1003, "revoked".into()));
    let successor_rotate = app.client.rotate(rotate(&second.token).into()).await;
    assert_eq!(error_of(successor_rotate), (1003, "revoked".into()));
    assert!(active_in(&app, &first.grant_id).await.is_empty());
}

#[tokio::test]
async fn inside_the_grace_window_reuse_reissues_and_the_family_keeps_one_active_token() {
    let app = TestApp::spawn_with(Options {
        policy: Policy { rotation_grace_secs: 30, ..Policy::default() },
        backend: backend(),
        ..Options::default()
    })
    .await;
    app.register_client("app").await;
    let first = app.issue_token("app", "alice", None).await;
    let second = app.client.rotate(rotate(&first.token).into()).await.unwrap();
    app.advance(5);
    // The client lost the response and retries with the old token.
    let third = app.client.rotate(rotate(&first.token).into()).await.unwrap();
    let previous = TokenApiClient::get(&app.client, TokenRef { token: second.token.clone() }.into()).await;
    assert_eq!(error_of(previous), (1003, "revoked".into()), "the unused successor is replaced");
    let active = active_in(&app, &first.grant_id).await;
    assert_eq!(active.iter().map(|t| t.token_id.clone()).collect::<Vec<_>>(), vec![third.token_id.clone()]);

    // Once the successor has been used, or the window has passed, reuse is theft.
    app.client.rotate(rotate(&third.token).into()).await.unwrap();
    let reuse = app.client.rotate(rotate(&first.token).into()).await;
    assert_eq!(error_of(reuse), (1003, "reuse_detected".into()));
    assert!(active_in(&app, &first.grant_id).await.is_empty());
}

#[tokio::test]
async fn rotation_checks_client_scope_and_expiry() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    app.register_client("other").await;
    let token = app.issue_token("app", "alice", None).await;
    let wrong = app.client.rotate(TokenRotate { client_id: "other".into(), ..rotate(&token.token) }.into()).await;
    assert_eq!(error_of(wrong), (1003, "client_mismatch".into()));
    let wider =
        app.client.rotate(TokenRotate { scope: Some("read admin".into()), ..rotate(&token.token) }.into()).await;
    assert_eq!(field_of(wider), "scope");
    let narrowed =
        app.client.rotate(TokenRotate { scope: Some("read".into()), ..rotate(&token.token) }.into()).await.unwrap();
    let info = TokenApiClient::get(&app.client, TokenRef { token: narrowed.token.clone() }.into()).await.unwrap();
    assert_eq!(info.scope.as_deref(), Some("read"));

    app.advance(30 * 86_400);
    let expired = app.client.rotate(rotate(&narrowed.token).into()).await;
    assert_eq!(error_of(expired), (1003, "expired".into()));
    let unknown = app.client.rotate(rotate("no-such-token-0000000000000000000000").into()).await;
    assert_eq!(error_of(unknown), (1001, "not_found".into()));
}

#[tokio::test]
async fn revoke_counts_tokens_by_token_grant_client_and_user() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    app.register_client("other").await;
    let a1 = app.issue_token("app", "alice", None).await;
    let _a2 = app.issue_token("app", "alice", None).await;
    let _b1 = app.issue_token("app", "bob", None).await;
    let _o1 = app.issue_token("other", "alice", None).await;
    let _o2 = app.issue_token("other", "carol", None).await;

    let by_token =
        app.client.revoke(TokenRevoke { token: Some(a1.token.clone()), ..Default::default() }.into()).await.unwrap();
    assert_eq!(by_token.revoked, 1);
    let by_client_user = app
        .client
        .revoke(
            TokenRevoke { client_id: Some("app".into()), user_id: Some("alice".into()), ..Default::default() }.into(),
        )
        .await
        .unwrap();
    assert_eq!(by_client_user.revoked, 1, "alice's second app token");
    let by_user =
        app.client.revoke(TokenRevoke { user_id: Some("alice".into()), ..Default::default() }.into()).await.unwrap();
    assert_eq!(by_user.revoked, 1, "alice's token at the other client");
    let by_client =
        app.client.revoke(TokenRevoke { client_id: Some("other".into()), ..Default::default() }.into()).await.unwrap();
    assert_eq!(by_client.revoked, 1, "carol's");
    let remaining = TokenApiClient::list(&app.client, TokenList::default().into()).await.unwrap();
    assert_eq!(remaining.items.iter().map(|t| t.user_id.as_str()).collect::<Vec<_>>(), vec!["bob"]);

    let unknown =
        app.client.revoke(TokenRevoke { token: Some("x".repeat(43)), ..Default::default() }.into()).await.unwrap();
    assert_eq!(unknown.revoked, 0, "RFC 7009: an unknown token is not an error");
    let ambiguous = app
        .client
        .revoke(TokenRevoke { token: Some(a1.token), grant_id: Some(a1.grant_id), ..Default::default() }.into())
        .await;
    assert_eq!(field_of(ambiguous), "token");
}

#[tokio::test]
async fn joining_a_grant_supersedes_its_active_token() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    let first = app.issue_token("app", "alice", None).await;
    let second = app.issue_token("app", "alice", Some(first.grant_id.clone())).await;
    assert_eq!(second.grant_id, first.grant_id);
    let old = TokenApiClient::get(&app.client, TokenRef { token: first.token.clone() }.into()).await;
    assert_eq!(error_of(old), (1003, "revoked".into()));
    let mismatch = TokenApiClient::issue(
        &app.client,
        TokenIssue {
            client_id: "app".into(),
            user_id: "mallory".into(),
            grant_id: Some(first.grant_id),
            ..Default::default()
        }
        .into(),
    )
    .await;
    assert_eq!(field_of(mismatch), "user_id");
    let unknown_client = TokenApiClient::issue(
        &app.client,
        TokenIssue { client_id: "ghost".into(), user_id: "alice".into(), ..Default::default() }.into(),
    )
    .await;
    assert_eq!(error_of(unknown_client), (1004, "unknown_client".into()));
}

#[tokio::test]
async fn list_pages_through_active_tokens_without_values_or_hashes() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.issue_token("app", "alice", None).await.token_id);
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = TokenApiClient::list(
            &app.client,
            TokenList { user_id: Some("alice".into()), cursor: cursor.clone(), limit: Some(2), ..Default::default() }
                .into(),
        )
        .await
        .unwrap();
        let raw = serde_json::to_string(&page).unwrap();
        assert!(!raw.contains("\"token\"") && !raw.contains("hash"), "{raw}");
        seen.extend(page.items.into_iter().map(|t| t.token_id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}
