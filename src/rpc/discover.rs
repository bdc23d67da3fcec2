//! `rpc.discover`: an OpenRPC 1.x document describing every method, generated from the same
//! Rust types the server decodes and encodes.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use super::error::{
    CONFLICT, CURSOR_EXPIRED, INVALID_CLIENT, INVALID_GRANT, INVALID_PARAMS, NOT_FOUND, TOO_MANY_SUBSCRIPTIONS,
    UNAVAILABLE,
};
use crate::types::*;

/// One method's description.
struct Method {
    name: &'static str,
    summary: &'static str,
    params: Option<Schema>,
    result: Schema,
    errors: &'static [i32],
    notification: Option<(&'static str, Schema)>,
}

fn schema<T: JsonSchema>() -> Schema {
    // Self-contained schemas: every subschema inlined, no references to resolve.
    let settings = SchemaSettings::draft07().with(|s| s.inline_subschemas = true);
    settings.into_generator().into_root_schema_for::<T>()
}

fn call<P: JsonSchema, R: JsonSchema>(name: &'static str, summary: &'static str, errors: &'static [i32]) -> Method {
    Method { name, summary, params: Some(schema::<P>()), result: schema::<R>(), errors, notification: None }
}

const READ: &[i32] = &[INVALID_PARAMS, NOT_FOUND, UNAVAILABLE];
const WRITE: &[i32] = &[INVALID_PARAMS, NOT_FOUND, INVALID_CLIENT, UNAVAILABLE];
const GRANT: &[i32] = &[INVALID_PARAMS, NOT_FOUND, INVALID_GRANT, INVALID_CLIENT, UNAVAILABLE];

fn methods() -> Vec<Method> {
    let subscribe = |name, summary, notification, item: Schema| Method {
        name,
        summary,
        params: Some(schema::<Subscribe>()),
        result: schema::<u64>(),
        errors: &[INVALID_PARAMS, CURSOR_EXPIRED, UNAVAILABLE, TOO_MANY_SUBSCRIPTIONS],
        notification: Some((notification, item)),
    };
    let unsubscribe = |name, summary| Method {
        name,
        summary,
        params: None,
        result: schema::<bool>(),
        errors: &[],
        notification: None,
    };
    vec![
        call::<ClientRegister, Client>(
            "client.register",
            "Registers a client (RFC 7591).",
            &[INVALID_PARAMS, CONFLICT, UNAVAILABLE],
        ),
        call::<ClientRef, Client>("client.get", "A stored client.", READ),
        call::<ClientList, Page<Client>>("client.list", "Clients in id order, one page at a time.", READ),
        call::<ClientUpdate, Client>("client.update", "Replaces a registered client's metadata.", READ),
        call::<ClientAuthenticate, Authenticated>(
            "client.authenticate",
            "Checks a client secret in constant time.",
            &[INVALID_PARAMS, INVALID_CLIENT, UNAVAILABLE],
        ),
        call::<ClientDelete, Deleted>("client.delete", "Deletes a client, its sessions, codes and tokens.", READ),
        call::<ClientCacheDocument, Client>(
            "client.cache_document",
            "Stores a client ID metadata document.",
            &[INVALID_PARAMS, CONFLICT, UNAVAILABLE],
        ),
        call::<SessionPut, Session>("session.put", "Creates or replaces a pending authorization session.", WRITE),
        call::<SessionRef, Session>("session.get", "A live session.", READ),
        call::<SessionUpdate, Session>("session.update", "Changes some fields of a live session.", READ),
        call::<SessionDelete, Deleted>("session.delete", "Deletes a session.", READ),
        call::<SessionList, Page<Session>>("session.list", "Live sessions, one page at a time.", READ),
        call::<SessionPurge, Purged>("session.purge", "Removes matching sessions.", READ),
        subscribe("session.subscribe", "Session lifecycle events.", "session.event", schema::<SessionEvent>()),
        unsubscribe("session.unsubscribe", "Ends a session subscription."),
        call::<CodeIssue, IssuedCode>("code.issue", "Mints a single-use authorization code.", WRITE),
        call::<CodeConsume, ConsumedCode>("code.consume", "Redeems a code with its PKCE verifier.", GRANT),
        call::<TokenIssue, IssuedToken>("token.issue", "Mints a refresh token.", GRANT),
        call::<TokenRef, TokenInfo>("token.get", "An active token's metadata.", GRANT),
        call::<TokenRotate, IssuedToken>("token.rotate", "Replaces a refresh token with its successor.", GRANT),
        call::<TokenRevoke, Revoked>("token.revoke", "Revokes token families.", READ),
        call::<TokenList, Page<TokenInfo>>("token.list", "Active tokens' metadata, one page at a time.", READ),
        subscribe("token.subscribe", "Token lifecycle events.", "token.event", schema::<TokenEvent>()),
        unsubscribe("token.unsubscribe", "Ends a token subscription."),
        Method {
            name: "server.ping",
            summary: "Liveness over RPC.",
            params: None,
            result: schema::<String>(),
            errors: &[],
            notification: None,
        },
        Method {
            name: "server.info",
            summary: "Version, contract, storage kind, uptime, and the event log's head and oldest cursors.",
            params: None,
            result: schema::<ServerInfo>(),
            errors: &[],
            notification: None,
        },
        Method {
            name: "server.stats",
            summary: "Live counts per kind.",
            params: None,
            result: schema::<ServerStats>(),
            errors: &[UNAVAILABLE],
            notification: None,
        },
        Method {
            name: "rpc.discover",
            summary: "This document.",
            params: None,
            result: schema::<Value>(),
            errors: &[],
            notification: None,
        },
    ]
}

fn error_message(code: i32) -> &'static str {
    match code {
        INVALID_PARAMS => "invalid params",
        NOT_FOUND => "not_found",
        CONFLICT => "conflict",
        INVALID_GRANT => "invalid_grant",
        INVALID_CLIENT => "invalid_client",
        UNAVAILABLE => "unavailable",
        CURSOR_EXPIRED => "cursor_expired",
        TOO_MANY_SUBSCRIPTIONS => "too many subscriptions",
        _ => "error",
    }
}

/// A params object's fields as OpenRPC content descriptors.
fn params(schema: &Schema) -> Vec<Value> {
    let object = schema.as_value();
    let required: Vec<&str> =
        object.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let Some(properties) = object.get("properties").and_then(Value::as_object) else { return Vec::new() };
    properties
        .iter()
        .map(|(name, field)| {
            let mut field = field.clone();
            let description = field.as_object_mut().and_then(|f| f.remove("description"));
            let mut descriptor = Map::new();
            descriptor.insert("name".into(), json!(name));
            if let Some(description) = description {
                descriptor.insert("description".into(), description);
            }
            descriptor.insert("required".into(), json!(required.contains(&name.as_str())));
            descriptor.insert("schema".into(), strip(field));
            Value::Object(descriptor)
        })
        .collect()
}

/// A schema without the root-only keys (`$schema`, `title`) that OpenRPC does not need.
fn strip(mut schema: Value) -> Value {
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
        object.remove("title");
    }
    schema
}

/// The OpenRPC document for this server.
pub fn document() -> Value {
    let methods: Vec<Value> = methods()
        .into_iter()
        .map(|m| {
            let mut method = json!({
                "name": m.name,
                "summary": m.summary,
                "paramStructure": "by-name",
                "params": m.params.as_ref().map(params).unwrap_or_default(),
                "result": { "name": "result", "schema": strip(m.result.to_value()) },
                "errors": m.errors.iter().map(|c| json!({ "code": c, "message": error_message(*c) })).collect::<Vec<_>>(),
            });
            if let Some((notification, item)) = m.notification {
                method["x-notification"] =
                    json!({ "method": notification, "params": { "subscription": "integer", "result": strip(item.to_value()) } });
            }
            method
        })
        .collect();
    json!({
        "openrpc": "1.3.2",
        "info": {
            "title": "authstore",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Durable OAuth 2.1 / MCP authorization state over JSON-RPC. Params are one object per call.",
        },
        "methods": methods,
    })
}
