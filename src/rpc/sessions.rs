//! Handlers for the `session.*` methods.

use std::sync::Arc;

use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::core::{RpcResult, SubscriptionResult, async_trait};

use super::api::SessionApiServer;
use super::context::Context;
use super::params::Params;
use super::subscription::{self, Stream};
use crate::domain::ids::{ClientId, SessionId, UserId};
use crate::domain::{cursor, session, validate};
use crate::store::SessionFilter;
use crate::types::{
    Deleted, Page, Purged, Session, SessionDelete, SessionList, SessionPurge, SessionPut, SessionRef, SessionUpdate,
    Subscribe,
};

pub struct SessionRpc {
    pub(super) cx: Arc<Context>,
}

#[async_trait]
impl SessionApiServer for SessionRpc {
    /// Handler for `session.put`.
    async fn put(&self, params: Params<SessionPut>) -> RpcResult<Session> {
        let mut p = params.into_inner()?;
        let now = self.cx.now();
        let call = self.cx.call("session.put", p.idempotency_key.take(), &p, now)?;
        let new = session::put(p, &self.cx.policy, now)?;
        let put = self.cx.run(move |cx| async move { cx.store.session_put(new, call.keyed.as_ref(), now).await });
        Ok(put.await?.into())
    }

    /// Handler for `session.get`.
    async fn get(&self, params: Params<SessionRef>) -> RpcResult<Session> {
        let p = params.into_inner()?;
        let get = session::get(p.id, self.cx.now())?;
        Ok(self.cx.run(move |cx| async move { cx.store.session_get(&get).await }).await?.into())
    }

    /// Handler for `session.update`.
    async fn update(&self, params: Params<SessionUpdate>) -> RpcResult<Session> {
        let mut p = params.into_inner()?;
        let now = self.cx.now();
        let call = self.cx.call("session.update", p.idempotency_key.take(), &p, now)?;
        let change = session::update(p, &self.cx.policy, now)?;
        let updated =
            self.cx.run(move |cx| async move { cx.store.session_update(change, call.keyed.as_ref(), now).await });
        Ok(updated.await?.into())
    }

    /// Handler for `session.delete`.
    async fn delete(&self, params: Params<SessionDelete>) -> RpcResult<Deleted> {
        let mut p = params.into_inner()?;
        let id = SessionId::parse("id", p.id.clone())?;
        let now = self.cx.now();
        let call = self.cx.call("session.delete", p.idempotency_key.take(), &p, now)?;
        let deleted =
            self.cx.run(move |cx| async move { cx.store.session_delete(&id, call.keyed.as_ref(), now).await }).await?;
        Ok(Deleted { deleted })
    }

    /// Handler for `session.list`.
    async fn list(&self, params: Params<SessionList>) -> RpcResult<Page<Session>> {
        let p = params.into_inner()?;
        let filter = filter(p.client_id, p.user_id)?;
        let limit = validate::limit(p.limit)?;
        let after = p.cursor.as_deref().map(cursor::decode).transpose()?;
        let now = self.cx.now();
        let rows =
            self.cx.run(move |cx| async move { cx.store.session_list(&filter, after, limit, now).await }).await?;
        let (items, next_cursor) = cursor::page(rows, limit, |s| &s.id);
        Ok(Page { items: items.into_iter().map(Session::from).collect(), next_cursor })
    }

    /// Handler for `session.purge`.
    async fn purge(&self, params: Params<SessionPurge>) -> RpcResult<Purged> {
        let mut p = params.into_inner()?;
        let now = self.cx.now();
        let call = self.cx.call("session.purge", p.idempotency_key.take(), &p, now)?;
        let filter = filter(p.client_id, p.user_id)?;
        let purged = self
            .cx
            .run(move |cx| async move { cx.store.session_purge(&filter, call.keyed.as_ref(), now).await })
            .await?;
        Ok(Purged { purged })
    }

    /// Handler for `session.subscribe`.
    async fn subscribe_events(
        &self,
        pending: PendingSubscriptionSink,
        params: Params<Subscribe>,
    ) -> SubscriptionResult {
        subscription::serve(self.cx.clone(), pending, params, Stream::Session).await
    }
}

fn filter(client_id: Option<String>, user_id: Option<String>) -> Result<SessionFilter, crate::error::Error> {
    Ok(SessionFilter {
        client_id: client_id.map(|c| ClientId::parse("client_id", c)).transpose()?,
        user_id: user_id.map(|u| UserId::parse("user_id", u)).transpose()?,
    })
}
