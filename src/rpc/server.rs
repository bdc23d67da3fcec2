//! Handlers for the `server.*` methods.

use std::sync::Arc;

use jsonrpsee::core::{RpcResult, async_trait};

use super::api::ServerApiServer;
use super::context::Context;
use crate::types::{ServerInfo, ServerStats};

/// The wire contract `server.info` names.
const CONTRACT: &str = "v1";

pub struct ServerRpc {
    pub(super) cx: Arc<Context>,
}

#[async_trait]
impl ServerApiServer for ServerRpc {
    /// Handler for `server.ping`.
    async fn ping(&self) -> RpcResult<String> {
        Ok("pong".to_string())
    }

    /// Handler for `server.info`.
    async fn info(&self) -> RpcResult<ServerInfo> {
        let uptime = (self.cx.now() - self.cx.started_at).num_seconds().max(0) as u64;
        let bounds = self.cx.run(|cx| async move { cx.store.log_bounds().await }).await?;
        Ok(ServerInfo {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            storage: self.cx.store.kind().to_string(),
            started_at: self.cx.started_at,
            uptime_secs: uptime,
            contract: CONTRACT.to_string(),
            head: bounds.head.to_string(),
            oldest: bounds.resume_from().to_string(),
        })
    }

    /// Handler for `server.stats`.
    async fn stats(&self) -> RpcResult<ServerStats> {
        let now = self.cx.now();
        self.cx.run(move |cx| async move { cx.store.stats(now).await }).await
    }
}
