//! The wire interface: one `#[rpc]` trait per namespace. The macro generates the server traits
//! implemented in this module's siblings and the typed clients the tests use.
//!
//! Every method takes its params as one object (see [`Params`]); `docs/api.md` describes each.

use jsonrpsee::core::{RpcResult, SubscriptionResult};
use jsonrpsee::proc_macros::rpc;

use super::params::Params;
use crate::types::*;

#[rpc(server, client, namespace = "client", namespace_separator = ".")]
pub trait ClientApi {
    /// Registers a client (RFC 7591). Confidential clients get their secret in this answer only.
    #[method(name = "register")]
    async fn register(&self, params: Params<ClientRegister>) -> RpcResult<Client>;

    /// A stored client; `document_stale` tells when a cached metadata document needs a refetch.
    #[method(name = "get")]
    async fn get(&self, params: Params<ClientRef>) -> RpcResult<Client>;

    /// Clients in id order, one page at a time.
    #[method(name = "list")]
    async fn list(&self, params: Params<ClientList>) -> RpcResult<Page<Client>>;

    /// Replaces a registered client's metadata; may rotate its secret.
    #[method(name = "update")]
    async fn update(&self, params: Params<ClientUpdate>) -> RpcResult<Client>;

    /// Checks a client secret in constant time.
    #[method(name = "authenticate")]
    async fn authenticate(&self, params: Params<ClientAuthenticate>) -> RpcResult<Authenticated>;

    /// Deletes a client and everything that hangs off it.
    #[method(name = "delete")]
    async fn delete(&self, params: Params<ClientDelete>) -> RpcResult<Deleted>;

    /// Stores a client ID metadata document fetched by the portal.
    #[method(name = "cache_document")]
    async fn cache_document(&self, params: Params<ClientCacheDocument>) -> RpcResult<Client>;
}

#[rpc(server, client, namespace = "session", namespace_separator = ".")]
pub trait SessionApi {
    /// Creates or replaces a pending authorization session.
    #[method(name = "put")]
    async fn put(&self, params: Params<SessionPut>) -> RpcResult<Session>;

    /// A live session.
    #[method(name = "get")]
    async fn get(&self, params: Params<SessionRef>) -> RpcResult<Session>;

    /// Changes some fields of a live session.
    #[method(name = "update")]
    async fn update(&self, params: Params<SessionUpdate>) -> RpcResult<Session>;

    /// Deletes a session.
    #[method(name = "delete")]
    async fn delete(&self, params: Params<SessionDelete>) -> RpcResult<Deleted>;

    /// Live sessions, one page at a time.
    #[method(name = "list")]
    async fn list(&self, params: Params<SessionList>) -> RpcResult<Page<Session>>;

    /// Removes matching sessions (every expired one when unfiltered).
    #[method(name = "purge")]
    async fn purge(&self, params: Params<SessionPurge>) -> RpcResult<Purged>;

    /// Session lifecycle events (`session.event`), replayed from `since` and then live.
    #[subscription(name = "subscribe" => "event", unsubscribe = "unsubscribe", item = SessionEvent)]
    async fn subscribe_events(&self, params: Params<Subscribe>) -> SubscriptionResult;
}

#[rpc(server, client, namespace = "code", namespace_separator = ".")]
pub trait CodeApi {
    /// Mints a single-use authorization code bound to a PKCE challenge.
    #[method(name = "issue")]
    async fn issue(&self, params: Params<CodeIssue>) -> RpcResult<IssuedCode>;

    /// Redeems a code, verifying client, redirect URI, resource and PKCE in one step.
    #[method(name = "consume")]
    async fn consume(&self, params: Params<CodeConsume>) -> RpcResult<ConsumedCode>;
}

#[rpc(server, client, namespace = "token", namespace_separator = ".")]
pub trait TokenApi {
    /// Mints a refresh token, in a new family or an existing grant's.
    #[method(name = "issue")]
    async fn issue(&self, params: Params<TokenIssue>) -> RpcResult<IssuedToken>;

    /// An active token's metadata.
    #[method(name = "get")]
    async fn get(&self, params: Params<TokenRef>) -> RpcResult<TokenInfo>;

    /// Replaces a refresh token with its successor.
    #[method(name = "rotate")]
    async fn rotate(&self, params: Params<TokenRotate>) -> RpcResult<IssuedToken>;

    /// Revokes families by token, grant, client (and user) or user.
    #[method(name = "revoke")]
    async fn revoke(&self, params: Params<TokenRevoke>) -> RpcResult<Revoked>;

    /// Active tokens' metadata, one page at a time.
    #[method(name = "list")]
    async fn list(&self, params: Params<TokenList>) -> RpcResult<Page<TokenInfo>>;

    /// Token lifecycle events (`token.event`), replayed from `since` and then live.
    #[subscription(name = "subscribe" => "event", unsubscribe = "unsubscribe", item = TokenEvent)]
    async fn subscribe_events(&self, params: Params<Subscribe>) -> SubscriptionResult;
}

#[rpc(server, client, namespace = "server", namespace_separator = ".")]
pub trait ServerApi {
    /// Liveness over RPC; touches nothing.
    #[method(name = "ping")]
    async fn ping(&self) -> RpcResult<String>;

    /// Version, storage kind and uptime.
    #[method(name = "info")]
    async fn info(&self) -> RpcResult<ServerInfo>;

    /// Live counts per kind.
    #[method(name = "stats")]
    async fn stats(&self) -> RpcResult<ServerStats>;
}
