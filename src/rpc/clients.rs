//! Handlers for the `client.*` methods.

use std::sync::Arc;

use jsonrpsee::core::{RpcResult, async_trait};

use super::api::ClientApiServer;
use super::context::Context;
use super::params::Params;
use super::wire;
use crate::domain::{client, cursor, validate};
use crate::error::Error;
use crate::types::{
    Authenticated, Client, ClientAuthenticate, ClientCacheDocument, ClientDelete, ClientList, ClientRef,
    ClientRegister, ClientUpdate, Deleted, Page,
};

pub struct ClientRpc {
    pub(super) cx: Arc<Context>,
}

#[async_trait]
impl ClientApiServer for ClientRpc {
    /// Handler for `client.register`.
    async fn register(&self, params: Params<ClientRegister>) -> RpcResult<Client> {
        let mut p = params.into_inner()?;
        let now = self.cx.now();
        let call = self.cx.call("client.register", p.idempotency_key.take(), &p, now)?;
        let new = client::register(p, &call.mint)?;
        let registered =
            self.cx.run(move |cx| async move { cx.store.client_register(new, call.keyed.as_ref(), now).await });
        Ok(wire::client(registered.await?, now))
    }

    /// Handler for `client.get`.
    async fn get(&self, params: Params<ClientRef>) -> RpcResult<Client> {
        let p = params.into_inner()?;
        client_id_syntax(&p.client_id)?;
        let now = self.cx.now();
        let found = self.cx.run(move |cx| async move { cx.store.client_get(&p.client_id).await }).await?;
        Ok(wire::client(found, now))
    }

    /// Handler for `client.list`.
    async fn list(&self, params: Params<ClientList>) -> RpcResult<Page<Client>> {
        let p = params.into_inner()?;
        let limit = validate::limit(p.limit)?;
        let after = p.cursor.as_deref().map(cursor::decode).transpose()?;
        let now = self.cx.now();
        let rows = self.cx.run(move |cx| async move { cx.store.client_list(after, limit).await }).await?;
        let (items, next_cursor) = cursor::page(rows, limit, |c| &c.client_id);
        Ok(Page { items: items.into_iter().map(|c| wire::client(c, now)).collect(), next_cursor })
    }

    /// Handler for `client.update`.
    async fn update(&self, params: Params<ClientUpdate>) -> RpcResult<Client> {
        let mut p = params.into_inner()?;
        client_id_syntax(&p.client_id)?;
        let now = self.cx.now();
        let call = self.cx.call("client.update", p.idempotency_key.take(), &p, now)?;
        let update = client::update(p.client_id, p.metadata, p.rotate_secret.unwrap_or(false), &call.mint)?;
        let updated =
            self.cx.run(move |cx| async move { cx.store.client_update(&update, call.keyed.as_ref(), now).await });
        Ok(wire::client(updated.await?, now))
    }

    /// Handler for `client.authenticate`.
    async fn authenticate(&self, params: Params<ClientAuthenticate>) -> RpcResult<Authenticated> {
        let p = params.into_inner()?;
        client_id_syntax(&p.client_id)?;
        let auth = client::authenticate(p.client_id, &p.client_secret)?;
        let now = self.cx.now();
        let client = self.cx.run(move |cx| async move { cx.store.client_authenticate(&auth).await }).await?;
        Ok(Authenticated { authenticated: true, client: wire::client(client, now) })
    }

    /// Handler for `client.delete`.
    async fn delete(&self, params: Params<ClientDelete>) -> RpcResult<Deleted> {
        let mut p = params.into_inner()?;
        client_id_syntax(&p.client_id)?;
        let now = self.cx.now();
        let call = self.cx.call("client.delete", p.idempotency_key.take(), &p, now)?;
        let deleted = self
            .cx
            .run(move |cx| async move { cx.store.client_delete(&p.client_id, call.keyed.as_ref(), now).await })
            .await?;
        Ok(Deleted { deleted })
    }

    /// Handler for `client.cache_document`.
    async fn cache_document(&self, params: Params<ClientCacheDocument>) -> RpcResult<Client> {
        let mut p = params.into_inner()?;
        client::document_url("client_id", &p.client_id)?;
        let now = self.cx.now();
        let call = self.cx.call("client.cache_document", p.idempotency_key.take(), &p, now)?;
        let doc = client::cache_document(p, self.cx.policy.document_max_age_secs)?;
        let cached =
            self.cx.run(move |cx| async move { cx.store.client_cache_document(doc, call.keyed.as_ref(), now).await });
        Ok(wire::client(cached.await?, now))
    }
}

/// A client id is either one we issued/accepted or a document URL; both fit the id limits
/// except long URLs, which fit the URI limit.
fn client_id_syntax(client_id: &str) -> Result<(), Error> {
    if client_id.starts_with("https://") {
        validate::absolute_uri("client_id", client_id).map(drop)
    } else {
        validate::id("client_id", client_id)
    }
}
