//! Handlers for the `code.*` methods.

use std::sync::Arc;

use jsonrpsee::core::{RpcResult, async_trait};

use super::api::CodeApiServer;
use super::context::Context;
use super::params::Params;
use crate::domain::code;
use crate::types::{CodeConsume, CodeIssue, ConsumedCode, IssuedCode};

pub struct CodeRpc {
    pub(super) cx: Arc<Context>,
}

#[async_trait]
impl CodeApiServer for CodeRpc {
    /// Handler for `code.issue`.
    async fn issue(&self, params: Params<CodeIssue>) -> RpcResult<IssuedCode> {
        let mut p = params.into_inner()?;
        let now = self.cx.now();
        let call = self.cx.call("code.issue", p.idempotency_key.take(), &p, now)?;
        let issue = code::issue(p, &self.cx.policy, now, &call.mint)?;
        self.cx.run(move |cx| async move { cx.store.code_issue(&issue, call.keyed.as_ref(), now).await }).await
    }

    /// Handler for `code.consume`.
    async fn consume(&self, params: Params<CodeConsume>) -> RpcResult<ConsumedCode> {
        let mut p = params.into_inner()?;
        code::consume_params(&p)?;
        let now = self.cx.now();
        let call = self.cx.call("code.consume", p.idempotency_key.take(), &p, now)?;
        let consumption = code::consumption(p, &self.cx.policy, now);
        self.cx.run(move |cx| async move { cx.store.code_consume(&consumption, call.keyed.as_ref()).await }).await
    }
}
