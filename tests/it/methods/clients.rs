//! `client.*`: RFC 7591 registration and client ID metadata documents.

use authstore::rpc::api::{ClientApiClient, CodeApiClient, SessionApiClient, TokenApiClient};
use authstore::types::*;
use serde_json::json;

use super::backend;
use crate::support::{CHALLENGE, REDIRECT, TestApp, error_of, field_of};

fn confidential(client_id: &str) -> ClientRegister {
    ClientRegister {
        client_id: Some(client_id.into()),
        metadata: ClientMetadata {
            redirect_uris: vec!["https://app.example/cb".into()],
            client_name: Some("Example".into()),
            contacts: Some(vec!["ops@app.example".into()]),
            ..Default::default()
        },
        client_secret: None,
        idempotency_key: None,
    }
}

#[tokio::test]
async fn a_confidential_client_sees_its_secret_once_and_authenticates_with_it() {
    let app = TestApp::spawn_on(backend()).await;
    let registered = app.client.register(confidential("conf").into()).await.unwrap();
    assert_eq!(registered.metadata.token_endpoint_auth_method.as_deref(), Some("client_secret_basic"));
    assert_eq!(registered.client_secret_expires_at, 0);
    let secret = registered.client_secret.clone().expect("a secret for a confidential client");
    assert_eq!(secret.len(), 43);

    let fetched = ClientApiClient::get(&app.client, ClientRef { client_id: "conf".into() }.into()).await.unwrap();
    assert!(fetched.client_secret.is_none(), "the plaintext appears only when created");
    assert_eq!(fetched.metadata.client_name.as_deref(), Some("Example"));

    let ok = app
        .client
        .authenticate(ClientAuthenticate { client_id: "conf".into(), client_secret: secret.clone() }.into())
        .await;
    assert!(ok.unwrap().authenticated);
    let bad = app
        .client
        .authenticate(ClientAuthenticate { client_id: "conf".into(), client_secret: "wrong".into() }.into())
        .await;
    assert_eq!(error_of(bad), (1004, "invalid_secret".into()));
    let unknown = app
        .client
        .authenticate(ClientAuthenticate { client_id: "nope".into(), client_secret: secret.clone() }.into())
        .await;
    assert_eq!(error_of(unknown), (1004, "unknown_client".into()));

    let rotated = ClientApiClient::update(
        &app.client,
        ClientUpdate {
            client_id: "conf".into(),
            metadata: confidential("conf").metadata,
            rotate_secret: Some(true),
            idempotency_key: None,
        }
        .into(),
    )
    .await
    .unwrap();
    let new_secret = rotated.client_secret.expect("rotation returns the new secret");
    assert_ne!(new_secret, secret);
    let old =
        app.client.authenticate(ClientAuthenticate { client_id: "conf".into(), client_secret: secret }.into()).await;
    assert_eq!(error_of(old), (1004, "invalid_secret".into()));
    app.client
        .authenticate(ClientAuthenticate { client_id: "conf".into(), client_secret: new_secret }.into())
        .await
        .unwrap();

    let taken = app.client.register(confidential("conf").into()).await;
    assert_eq!(error_of(taken), (1002, "already_exists".into()));
}

#[tokio::test]
async fn inconsistent_or_unsafe_metadata_is_refused_with_the_field_named() {
    let app = TestApp::spawn_on(backend()).await;
    let with = |f: fn(&mut ClientMetadata)| {
        let mut register = confidential("x");
        f(&mut register.metadata);
        register
    };
    let cases: Vec<(ClientRegister, &str)> = vec![
        (with(|m| m.redirect_uris = vec![]), "redirect_uris"),
        (with(|m| m.redirect_uris = vec!["http://app.example/cb".into()]), "redirect_uris"),
        (with(|m| m.redirect_uris = vec!["https://app.example/cb#frag".into()]), "redirect_uris"),
        (with(|m| m.grant_types = Some(vec!["refresh_token".into()])), "grant_types"),
        (with(|m| m.grant_types = Some(vec!["implicit".into()])), "grant_types"),
        (with(|m| m.token_endpoint_auth_method = Some("private_key_jwt".into())), "token_endpoint_auth_method"),
        (with(|m| m.logo_uri = Some("not a uri".into())), "logo_uri"),
    ];
    for (register, field) in cases {
        assert_eq!(field_of(app.client.register(register.into()).await), field);
    }
}

#[tokio::test]
async fn deleting_a_client_purges_its_sessions_codes_and_tokens() {
    let app = TestApp::spawn_on(backend()).await;
    app.register_client("app").await;
    app.register_client("bystander").await;
    app.client
        .put(
            SessionPut {
                id: Some("s".into()),
                client_id: "app".into(),
                redirect_uri: REDIRECT.into(),
                code_challenge: Some(CHALLENGE.into()),
                ..Default::default()
            }
            .into(),
        )
        .await
        .unwrap();
    let code = app.issue_code("app", "alice").await;
    let token = app.issue_token("app", "alice", None).await;
    let other = app.issue_token("bystander", "alice", None).await;

    let deleted =
        ClientApiClient::delete(&app.client, ClientDelete { client_id: "app".into(), idempotency_key: None }.into())
            .await
            .unwrap();
    assert!(deleted.deleted);
    assert_eq!(error_of(SessionApiClient::get(&app.client, SessionRef { id: "s".into() }.into()).await).0, 1001);
    assert_eq!(error_of(app.client.consume(TestApp::consume_params(&code.code, "app").into()).await).0, 1001);
    let revoked = TokenApiClient::get(&app.client, TokenRef { token: token.token }.into()).await;
    assert_eq!(error_of(revoked), (1003, "revoked".into()));
    TokenApiClient::get(&app.client, TokenRef { token: other.token }.into())
        .await
        .expect("other clients are untouched");
    let again =
        ClientApiClient::delete(&app.client, ClientDelete { client_id: "app".into(), idempotency_key: None }.into())
            .await
            .unwrap();
    assert!(!again.deleted);
    let gone = CodeApiClient::issue(
        &app.client,
        CodeIssue {
            client_id: Some("app".into()),
            user_id: Some("alice".into()),
            redirect_uri: Some(REDIRECT.into()),
            code_challenge: Some(CHALLENGE.into()),
            ..Default::default()
        }
        .into(),
    )
    .await;
    assert_eq!(error_of(gone), (1004, "unknown_client".into()));
}

#[tokio::test]
async fn a_cached_metadata_document_serves_until_stale_and_never_gets_a_secret() {
    let app = TestApp::spawn_on(backend()).await;
    let url = "https://mcp-client.example/oauth/client.json";
    let document = json!({
        "client_id": url,
        "client_name": "MCP Client",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_method": "none",
    });
    let cached = app
        .client
        .cache_document(
            ClientCacheDocument {
                client_id: url.into(),
                document: document.clone(),
                max_age_secs: Some(60),
                idempotency_key: None,
            }
            .into(),
        )
        .await
        .unwrap();
    assert_eq!(cached.document_stale, Some(false));
    assert!(cached.client_secret.is_none());

    app.advance(61);
    let stale = ClientApiClient::get(&app.client, ClientRef { client_id: url.into() }.into()).await.unwrap();
    assert_eq!(stale.document_stale, Some(true));
    let refreshed = app
        .client
        .cache_document(
            ClientCacheDocument {
                client_id: url.into(),
                document: document.clone(),
                max_age_secs: None,
                idempotency_key: None,
            }
            .into(),
        )
        .await
        .unwrap();
    assert_eq!(refreshed.document_stale, Some(false));
    assert_eq!(refreshed.client_id_issued_at, cached.client_id_issued_at);

    // Sessions work against the cached document like against a registered client.
    app.client
        .put(
            SessionPut {
                client_id: url.into(),
                redirect_uri: "http://127.0.0.1:61000/callback".into(),
                code_challenge: Some(CHALLENGE.into()),
                ..Default::default()
            }
            .into(),
        )
        .await
        .unwrap();

    let mismatched = app
        .client
        .cache_document(
            ClientCacheDocument {
                client_id: "https://mcp-client.example/other.json".into(),
                document,
                max_age_secs: None,
                idempotency_key: None,
            }
            .into(),
        )
        .await;
    assert_eq!(field_of(mismatched), "document.client_id");
    let secretive = app
        .client
        .cache_document(
            ClientCacheDocument {
                client_id: url.into(),
                document: json!({"client_id": url, "redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "client_secret_post"}),
                max_age_secs: None,
                idempotency_key: None,
            }
            .into(),
        )
        .await;
    assert_eq!(field_of(secretive), "token_endpoint_auth_method");
}

#[tokio::test]
async fn list_pages_through_clients() {
    let app = TestApp::spawn_on(backend()).await;
    for i in 0..5 {
        app.register_client(&format!("c{i}")).await;
    }
    let first = ClientApiClient::list(&app.client, ClientList { cursor: None, limit: Some(3) }.into()).await.unwrap();
    assert_eq!(first.items.len(), 3);
    let second = ClientApiClient::list(&app.client, ClientList { cursor: first.next_cursor, limit: Some(3) }.into())
        .await
        .unwrap();
    assert_eq!(second.items.iter().map(|c| c.client_id.as_str()).collect::<Vec<_>>(), vec!["c3", "c4"]);
    assert!(second.next_cursor.is_none());
}

/// Rounds of each client.delete race.
const DELETE_RACES: usize = 50;

async fn delete_client(client: &jsonrpsee::ws_client::WsClient, client_id: &str) -> bool {
    ClientApiClient::delete(client, ClientDelete { client_id: client_id.into(), idempotency_key: None }.into())
        .await
        .expect("client.delete")
        .deleted
}

/// client.delete after a delay that differs every round (0 to 20 ms), so that over the rounds
/// the delete lands before, inside and after the racing call's transaction.
async fn delete_client_after(client: &jsonrpsee::ws_client::WsClient, round: usize) -> bool {
    tokio::time::sleep(std::time::Duration::from_micros((round as u64 * 7919) % 20_000)).await;
    delete_client(client, "app").await
}

// client.delete cascades to the client's tokens. A token.issue racing it must either land
// before the delete (and be revoked by it) or find the client gone; a token that survives
// the delete would be inherited by the next client registered under the same client_id.
#[tokio::test]
async fn a_token_issued_while_its_client_is_deleted_never_outlives_the_client() {
    let app = TestApp::spawn_on(backend()).await;
    let (issuer, deleter) = (app.connect().await, app.connect().await);
    let mut issued_first = 0;
    for round in 0..DELETE_RACES {
        app.register_client("app").await;
        let issue = TokenIssue { client_id: "app".into(), user_id: "alice".into(), ..Default::default() };
        let (token, deleted) =
            tokio::join!(TokenApiClient::issue(&issuer, issue.into()), delete_client_after(&deleter, round));
        assert!(deleted, "round {round}");
        let Ok(token) = token else { continue };
        issued_first += 1;
        app.register_client("app").await;
        let seen = TokenApiClient::get(&app.client, TokenRef { token: token.token.clone() }.into()).await;
        assert!(seen.is_err(), "round {round}: a token of the deleted client is active for its successor");
        let listed =
            TokenApiClient::list(&app.client, TokenList { client_id: Some("app".into()), ..Default::default() }.into())
                .await
                .unwrap();
        assert!(listed.items.is_empty(), "round {round}: {} tokens inherited", listed.items.len());
        assert!(delete_client(&app.client, "app").await);
    }
    assert!(issued_first > 0, "no token.issue ever won the race: nothing was tested");
}

// The same for codes: a code issued while its client is deleted cannot be redeemed by a client
// registered again under the same client_id.
#[tokio::test]
async fn a_code_issued_while_its_client_is_deleted_never_outlives_the_client() {
    let app = TestApp::spawn_on(backend()).await;
    let (issuer, deleter) = (app.connect().await, app.connect().await);
    for round in 0..DELETE_RACES {
        app.register_client("app").await;
        let issue = CodeIssue {
            client_id: Some("app".into()),
            user_id: Some("alice".into()),
            redirect_uri: Some(REDIRECT.into()),
            code_challenge: Some(CHALLENGE.into()),
            ..Default::default()
        };
        let (code, deleted) =
            tokio::join!(CodeApiClient::issue(&issuer, issue.into()), delete_client_after(&deleter, round));
        assert!(deleted, "round {round}");
        app.register_client("app").await;
        if let Ok(code) = code {
            let consumed = CodeApiClient::consume(&app.client, TestApp::consume_params(&code.code, "app").into()).await;
            assert!(consumed.is_err(), "round {round}: a code of the deleted client was redeemed by its successor");
        }
        assert!(delete_client(&app.client, "app").await);
    }
}

// A session put while its client is deleted may survive the cascade (it expires on its own),
// but a client registered again under the same client_id cannot turn it into a code.
#[tokio::test]
async fn a_session_of_a_deleted_client_cannot_mint_a_code_for_its_successor() {
    let app = TestApp::spawn_on(backend()).await;
    let (putter, deleter) = (app.connect().await, app.connect().await);
    for round in 0..DELETE_RACES {
        app.register_client("app").await;
        let put = SessionPut {
            client_id: "app".into(),
            redirect_uri: REDIRECT.into(),
            code_challenge: Some(CHALLENGE.into()),
            user_id: Some("alice".into()),
            ..Default::default()
        };
        let (session, deleted) =
            tokio::join!(SessionApiClient::put(&putter, put.into()), delete_client_after(&deleter, round));
        assert!(deleted, "round {round}");
        app.register_client("app").await;
        if let Ok(session) = session {
            let issue = CodeIssue { session_id: Some(session.id), ..Default::default() };
            let code = CodeApiClient::issue(&app.client, issue.into()).await;
            assert!(code.is_err(), "round {round}: a session of the deleted client became a code for its successor");
        }
        assert!(delete_client(&app.client, "app").await);
    }
}
