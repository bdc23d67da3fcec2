//! Handlers for the `token.*` methods.

use std::sync::Arc;

use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::{RpcResult, SubscriptionResult, async_trait};

use super::api::TokenApiServer;
use super::context::Context;
use super::params::Params;
use super::subscription::{self, Stream};
use crate::domain::ids::{ClientId, GrantId, UserId};
use crate::domain::{cursor, token, validate};
use crate::store::TokenFilter;
use crate::types::{
    IssuedToken, Page, Revoked, Subscribe, TokenInfo, TokenIssue, TokenList, TokenRef, TokenRevoke, TokenRotate,
};

pub struct TokenRpc {
    pub(super) cx: Arc<Context>,
}

#[async_trait]
impl TokenApiServer for TokenRpc {
    /// Handler for `token.issue`.
    async fn issue(&self, params: Params<TokenIssue>) -> RpcResult<IssuedToken> {
        let mut p = params.into_inner()?;
        let now = self.cx.now();
        let call = self.cx.call("token.issue", p.idempotency_key.take(), &p, now)?;
        let new = token::issue(p, &self.cx.policy, now, &call.mint)?;
        self.cx.run(move |cx| async move { cx.store.token_issue(new, call.keyed.as_ref(), now).await }).await
    }

    /// Handler for `token.get`.
    async fn get(&self, params: Params<TokenRef>) -> RpcResult<TokenInfo> {
        let p = params.into_inner()?;
        let get = token::get(&p.token, self.cx.now())?;
        Ok(self.cx.run(move |cx| async move { cx.store.token_get(&get).await }).await?.into())
    }

    /// Handler for `token.rotate`.
    async fn rotate(&self, params: Params<TokenRotate>) -> RpcResult<IssuedToken> {
        let mut p = params.into_inner()?;
        token::rotate_params(&p)?;
        let now = self.cx.now();
        let call = self.cx.call("token.rotate", p.idempotency_key.take(), &p, now)?;
        let rotate = token::rotate(p, &self.cx.policy, now, &call.mint);
        self.cx.run(move |cx| async move { cx.store.token_rotate(&rotate, call.keyed.as_ref()).await }).await
    }

    /// Handler for `token.revoke`.
    async fn revoke(&self, params: Params<TokenRevoke>) -> RpcResult<Revoked> {
        let mut p = params.into_inner()?;
        let now = self.cx.now();
        let call = self.cx.call("token.revoke", p.idempotency_key.take(), &p, now)?;
        let scope = token::revoke_scope(p)?;
        let revoked =
            self.cx.run(move |cx| async move { cx.store.token_revoke(scope, call.keyed.as_ref(), now).await }).await?;
        Ok(Revoked { revoked })
    }

    /// Handler for `token.list`.
    async fn list(&self, params: Params<TokenList>) -> RpcResult<Page<TokenInfo>> {
        let p = params.into_inner()?;
        let client_id = p.client_id.map(|c| ClientId::parse("client_id", c)).transpose()?;
        let grant_id = p.grant_id.map(|g| GrantId::parse("grant_id", g)).transpose()?;
        let user_id = p.user_id.map(|u| UserId::parse("user_id", u)).transpose()?;
        let limit = validate::limit(p.limit)?;
        let after = p.cursor.as_deref().map(cursor::decode).transpose()?;
        let filter = TokenFilter { user_id, client_id, grant_id };
        let now = self.cx.now();
        let rows = self.cx.run(move |cx| async move { cx.store.token_list(&filter, after, limit, now).await }).await?;
        let (items, next_cursor) = cursor::page(rows, limit, |t| &t.token_id);
        Ok(Page { items: items.into_iter().map(TokenInfo::from).collect(), next_cursor })
    }

    /// Handler for `token.subscribe`.
    async fn subscribe_events(
        &self,
        pending: PendingSubscriptionSink,
        params: Params<Subscribe>,
    ) -> SubscriptionResult {
        subscription::serve(self.cx.clone(), pending, params, Stream::Token).await
    }
}
