"""`--store memory`: the portal's state in this process's dicts, as a typical in-memory MCP
authorization server keeps it. It answers the few authstore methods the authorization
server uses, with authstore's error codes, so the portal runs unchanged on top of it.

It exists only as the control of the end-to-end suite: every restart forgets every client,
session, code and refresh token, so a deploy logs every client out.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any

from authstore_client import INVALID_CLIENT, INVALID_GRANT, NOT_FOUND, AuthstoreError


def _secret() -> str:
    return secrets.token_urlsafe(32)


class MemoryStore:
    def __init__(self) -> None:
        self.clients: dict[str, dict] = {}
        self.secrets: dict[str, str] = {}
        self.sessions: dict[str, dict] = {}
        self.codes: dict[str, dict] = {}
        self.tokens: dict[str, dict] = {}  # refresh token -> record

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        handler = getattr(self, method.replace(".", "_"))
        return handler(**(params or {}))

    # clients
    def client_register(self, **meta: Any) -> dict:
        client_id = meta.pop("client_id", None) or secrets.token_urlsafe(16)
        meta.setdefault("token_endpoint_auth_method", "client_secret_basic")
        meta.setdefault("grant_types", ["authorization_code"])
        meta.setdefault("response_types", ["code"])
        client = {"client_id": client_id, "client_id_issued_at": int(time.time()),
                  "client_secret_expires_at": 0, **meta}
        self.clients[client_id] = client
        if meta["token_endpoint_auth_method"] != "none":
            self.secrets[client_id] = _secret()
            return {**client, "client_secret": self.secrets[client_id]}
        return client

    def client_get(self, client_id: str) -> dict:
        if client_id not in self.clients:
            raise AuthstoreError(NOT_FOUND, "not_found", {"reason": "not_found"})
        return self.clients[client_id]

    def client_authenticate(self, client_id: str, client_secret: str) -> dict:
        known = self.secrets.get(client_id)
        if known is None or not secrets.compare_digest(known, client_secret):
            raise AuthstoreError(INVALID_CLIENT, "invalid_client", {"reason": "invalid_secret"})
        return {"authenticated": True, "client": self.clients[client_id]}

    def client_cache_document(self, client_id: str, document: dict, max_age_secs: int = 86400) -> dict:
        self.clients[client_id] = {**document, "client_id": client_id, "document_stale": False}
        return self.clients[client_id]

    # sessions
    def session_put(self, **s: Any) -> dict:
        self.client_get(s["client_id"])
        s.setdefault("id", secrets.token_urlsafe(16))
        self.sessions[s["id"]] = s
        return s

    def session_get(self, id: str) -> dict:
        if id not in self.sessions:
            raise AuthstoreError(NOT_FOUND, "not_found", {"reason": "not_found"})
        return self.sessions[id]

    # codes
    def code_issue(self, session_id: str, user_id: str) -> dict:
        s = self.sessions.pop(session_id, None)
        if s is None:
            raise AuthstoreError(NOT_FOUND, "not_found", {"reason": "not_found"})
        code, grant_id = _secret(), secrets.token_urlsafe(16)
        self.codes[code] = {**s, "user_id": user_id, "grant_id": grant_id, "exp": time.time() + 60}
        return {"code": code, "grant_id": grant_id, **{k: s.get(k) for k in
                ("client_id", "redirect_uri", "state", "scope", "resource")}}

    def code_consume(self, code: str, client_id: str, redirect_uri: str, code_verifier: str,
                     resource: str | None = None) -> dict:
        c = self.codes.pop(code, None)
        if c is None or c["exp"] < time.time():
            raise AuthstoreError(INVALID_GRANT, "invalid_grant", {"reason": "consumed"})
        challenge = base64.urlsafe_b64encode(hashlib.sha256(code_verifier.encode()).digest()).rstrip(b"=").decode()
        if (c["client_id"], c["redirect_uri"], c["code_challenge"]) != (client_id, redirect_uri, challenge):
            raise AuthstoreError(INVALID_GRANT, "invalid_grant", {"reason": "pkce_mismatch"})
        return {k: c.get(k) for k in ("grant_id", "client_id", "user_id", "scope", "resource", "redirect_uri")}

    # refresh tokens
    def token_issue(self, client_id: str, user_id: str, grant_id: str, scope: str | None = None,
                    resource: str | None = None) -> dict:
        token = _secret()
        self.tokens[token] = {"client_id": client_id, "user_id": user_id, "grant_id": grant_id,
                              "scope": scope, "resource": resource, "token_id": secrets.token_urlsafe(16)}
        return {"token": token, **self.tokens[token]}

    def token_get(self, token: str) -> dict:
        if token not in self.tokens:
            raise AuthstoreError(INVALID_GRANT, "invalid_grant", {"reason": "revoked"})
        return self.tokens[token]

    def token_rotate(self, token: str, client_id: str, scope: str | None = None) -> dict:
        old = self.tokens.pop(token, None)
        if old is None or old["client_id"] != client_id:
            raise AuthstoreError(INVALID_GRANT, "invalid_grant", {"reason": "revoked"})
        return self.token_issue(old["client_id"], old["user_id"], old["grant_id"],
                                scope or old["scope"], old["resource"])

    def token_revoke(self, grant_id: str | None = None, token: str | None = None) -> dict:
        if token is not None:  # the token's whole family
            grant_id = self.tokens[token]["grant_id"] if token in self.tokens else None
        gone = [t for t, r in self.tokens.items() if r["grant_id"] == grant_id]
        for t in gone:
            del self.tokens[t]
        return {"revoked": len(gone)}
