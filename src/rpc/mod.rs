//! The wire layer: JSON-RPC 2.0 over WebSocket and HTTP POST, with jsonrpsee.
//!
//! `api` declares the methods; one file per namespace implements them by validating params
//! with `domain` and calling the `store`; `error` is the only mapping from errors to JSON-RPC.

pub mod api;
mod clients;
mod codes;
mod context;
pub mod discover;
pub mod error;
pub mod middleware;
pub mod params;
mod server;
mod sessions;
mod subscription;
mod tokens;
mod wire;

use std::sync::Arc;

use jsonrpsee::RpcModule;

pub use context::Context;
pub use params::Params;

use api::{ClientApiServer, CodeApiServer, ServerApiServer, SessionApiServer, TokenApiServer};

/// Every method, ready to serve.
pub fn module(cx: Arc<Context>) -> Result<RpcModule<()>, jsonrpsee::core::RegisterMethodError> {
    let mut module = RpcModule::new(());
    module.merge(clients::ClientRpc { cx: cx.clone() }.into_rpc())?;
    module.merge(sessions::SessionRpc { cx: cx.clone() }.into_rpc())?;
    module.merge(codes::CodeRpc { cx: cx.clone() }.into_rpc())?;
    module.merge(tokens::TokenRpc { cx: cx.clone() }.into_rpc())?;
    module.merge(server::ServerRpc { cx }.into_rpc())?;
    let document = discover::document();
    module.register_method("rpc.discover", move |_, _, _| document.clone())?;
    Ok(module)
}
