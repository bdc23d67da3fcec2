"""A minimal OAuth 2.1 authorization server for MCP whose only state is authstore.

Every client, pending authorization, code and refresh token lives in authstore; this process
keeps nothing between requests, so it can be restarted (or run twice) at any point of a flow.
Run `python auth_server.py --help` for the flags.

The handlers are written out rather than taken from the MCP SDK's `create_auth_routes`:
the SDK's token handler checks PKCE itself and compares client secrets in plaintext, and its
provider interface splits a code exchange into load-then-exchange, whereas authstore decides
PKCE, keeps only secret digests and must see every redemption in one atomic `code.consume`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import html
import ipaddress
import json
import logging
import socket
import time
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

import httpx
import uvicorn
from mcp.shared.auth import OAuthMetadata
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

import access_tokens
from authstore_client import (BUSY, CONFLICT, INVALID_CLIENT, INVALID_GRANT, INVALID_PARAMS,
                              NOT_FOUND, UNAVAILABLE, AuthstoreClient, AuthstoreError)
from memory_store import MemoryStore

log = logging.getLogger("portal")

SCOPES = ["mcp:tools"]
# RFC 7591 metadata that authstore stores; anything else a client sends is ignored (§3.2.1).
CLIENT_METADATA = {"redirect_uris", "token_endpoint_auth_method", "grant_types", "response_types",
                   "client_name", "client_uri", "logo_uri", "scope", "contacts", "tos_uri",
                   "policy_uri", "software_id", "software_version"}
MAX_DOCUMENT_BYTES = 64 * 1024
REQUEST_TOO_LARGE = -32007  # jsonrpsee
RETRY_AFTER = "5"


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str | None = None):
        super().__init__(error)
        self.status, self.error, self.description = status, error, description

    def response(self) -> JSONResponse:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        headers = {"Cache-Control": "no-store"}
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="token"'
        if self.status == 503:
            headers["Retry-After"] = RETRY_AFTER
        return JSONResponse(body, self.status, headers)


def unavailable(e: AuthstoreError) -> bool:
    """1005, or -32009 busy (not executed; the client already retried once)."""
    return e.code in (UNAVAILABLE, BUSY)


def from_store(e: AuthstoreError) -> OAuthError:
    """authstore's error as the token and revocation endpoints' OAuth error (RFC 6749 §5.2),
    per the table in docs/portal-integration.md, "Errors"."""
    if e.code in (INVALID_GRANT, NOT_FOUND):  # a code or refresh token that is unusable or unknown
        return OAuthError(400, "invalid_grant", e.reason)
    if e.code == INVALID_CLIENT:
        return OAuthError(401, "invalid_client")
    if e.code == INVALID_PARAMS and e.field != "idempotency_key":  # that one is our bug: 500
        if e.field == "scope":
            return OAuthError(400, "invalid_scope", e.data.get("detail"))
        if e.field == "resource":
            return OAuthError(400, "invalid_target", e.data.get("detail"))  # RFC 8707
        return OAuthError(400, "invalid_request", e.field or None)
    if e.code == REQUEST_TOO_LARGE:
        return OAuthError(400, "invalid_request")
    if unavailable(e):
        return OAuthError(503, "temporarily_unavailable")
    return OAuthError(500, "server_error")


def grant_types(client: dict[str, Any]) -> list[str]:
    return client.get("grant_types") or ["authorization_code"]  # RFC 7591 §2 default


def response_types(client: dict[str, Any]) -> list[str]:
    return client.get("response_types") or ["code"]  # RFC 7591 §2 default


def single_redirect_uri(client: dict[str, Any]) -> str | None:
    """The redirect URI to use when a request names none: the client's only one."""
    registered = client.get("redirect_uris") or []
    return registered[0] if len(registered) == 1 else None


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def page(status: int, text: str, retry_after: bool = False) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><title>Authorization</title><p>{html.escape(text)}</p>", status,
                        {"Retry-After": RETRY_AFTER} if retry_after else None)


def is_document_url(client_id: str) -> bool:
    """A client ID metadata document URL: https, with a path."""
    parts = urlsplit(client_id)
    return parts.scheme == "https" and bool(parts.hostname) and parts.path not in ("", "/")


class AuthServer:
    def __init__(self, args: argparse.Namespace, store: AuthstoreClient | MemoryStore):
        self.store = store
        self.issuer = args.issuer.rstrip("/")
        self.resource = args.resource
        self.key = access_tokens.load_key(args.signing_key_file)
        self.access_ttl = args.access_token_ttl
        self.auto_user = args.auto_approve_user
        self.document_ca = args.client_document_ca

    # ---- metadata (RFC 8414) -----------------------------------------------------------------

    async def metadata(self, request: Request) -> JSONResponse:
        # The SDK's model, filled here: its `build_metadata` offers no `none` client
        # authentication (every MCP client is public) and neither RFC 9207 nor CIMD support.
        auth_methods = ["none", "client_secret_basic", "client_secret_post"]
        return JSONResponse(OAuthMetadata(
            issuer=self.issuer,
            authorization_endpoint=f"{self.issuer}/authorize",
            token_endpoint=f"{self.issuer}/token",
            registration_endpoint=f"{self.issuer}/register",
            revocation_endpoint=f"{self.issuer}/revoke",
            scopes_supported=SCOPES,
            response_types_supported=["code"],
            grant_types_supported=["authorization_code", "refresh_token"],
            code_challenge_methods_supported=["S256"],
            token_endpoint_auth_methods_supported=auth_methods,
            revocation_endpoint_auth_methods_supported=auth_methods,
            authorization_response_iss_parameter_supported=True,
            client_id_metadata_document_supported=True,
        ).model_dump(mode="json", exclude_none=True))

    # ---- registration (RFC 7591) -------------------------------------------------------------

    async def register(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"error": "invalid_client_metadata"}, 400)
        meta = {k: v for k, v in body.items() if k in CLIENT_METADATA and v is not None}
        try:
            client = await self.store.call("client.register", meta)
        except AuthstoreError as e:
            if e.code == INVALID_PARAMS and e.field != "idempotency_key":
                field = e.field
                error = "invalid_redirect_uri" if field.startswith("redirect_uri") else "invalid_client_metadata"
                return JSONResponse({"error": error, "error_description": e.data.get("detail", field)}, 400)
            if e.code in (CONFLICT, REQUEST_TOO_LARGE):
                return JSONResponse({"error": "invalid_client_metadata"}, 400)
            if unavailable(e):
                return OAuthError(503, "temporarily_unavailable").response()
            return OAuthError(500, "server_error").response()
        return JSONResponse(client, 201, {"Cache-Control": "no-store"})

    async def resolve_client(self, client_id: str) -> dict[str, Any]:
        """A registered client, or a client ID metadata document fetched and cached on first use."""
        try:
            client = await self.store.call("client.get", {"client_id": client_id})
            if not client.get("document_stale"):
                return client
        except AuthstoreError as e:
            if e.code != NOT_FOUND or not is_document_url(client_id):
                raise
        if not is_document_url(client_id):
            raise ValueError("a stale document whose id is not an https URL with a path")
        document, max_age = await self.fetch_client_document(client_id)
        return await self.store.call("client.cache_document",
                                     {"client_id": client_id, "document": document, "max_age_secs": max_age})

    async def fetch_client_document(self, url: str) -> tuple[dict[str, Any], int]:
        # No redirects, a size cap, a timeout, and only public addresses: the URL is chosen by
        # whoever calls /authorize, who must not make this server fetch from its own network.
        target, headers = await self.pinned_request(url)
        async with httpx.AsyncClient(verify=self.document_ca or True, timeout=5,
                                     follow_redirects=False) as http:
            extensions = {"sni_hostname": urlsplit(url).hostname} if headers else {}
            async with http.stream("GET", target, headers={"Accept": "application/json", **headers},
                                   extensions=extensions) as r:
                body = b""
                async for chunk in r.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise ValueError("client metadata document too large")
        if r.status_code != 200:
            raise ValueError(f"client metadata document: HTTP {r.status_code}")
        doc = json.loads(body)
        if not isinstance(doc, dict) or doc.get("client_id") != url:
            raise ValueError("client metadata document must name its own URL as client_id")
        if doc.get("token_endpoint_auth_method", "none") != "none":
            raise ValueError("only public clients (token_endpoint_auth_method none) are supported")
        document = {k: v for k, v in doc.items() if k in CLIENT_METADATA | {"client_id"}}
        document["token_endpoint_auth_method"] = "none"
        max_age = 86400
        for part in r.headers.get("cache-control", "").split(","):
            name, _, value = part.strip().partition("=")
            if name == "max-age" and value.isdigit():
                max_age = min(max(int(value), 300), 86400)
        return document, max_age

    async def pinned_request(self, url: str) -> tuple[str, dict[str, str]]:
        """`url` with its host replaced by an address it resolves to, checked to be public, and
        the `Host` header to send: the address checked is the address connected to (no second
        lookup that DNS rebinding could answer differently). TLS is still verified against the
        name (`sni_hostname`). With `--client-document-ca` (tests only, which serve documents
        from loopback) the URL is used as it is."""
        if self.document_ca:
            return url, {}
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 443
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [info[4][0] for info in infos]
        if not addresses or not all(is_public_address(a) for a in addresses):
            raise ValueError(f"client metadata document host {host} is not a public address")
        address = addresses[0]
        literal = f"[{address}]" if ":" in address else address
        netloc = literal if parts.port is None else f"{literal}:{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc)), {"Host": parts.netloc.rpartition("@")[2]}

    # ---- authorization endpoint --------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        q = request.query_params if request.method == "GET" else await request.form()
        client_id, redirect_uri, state = q.get("client_id"), q.get("redirect_uri"), q.get("state")
        if not client_id:
            return page(400, "The request names no client.")
        try:
            client = await self.resolve_client(client_id)
        except AuthstoreError as e:
            if unavailable(e):
                return page(503, "Please try again in a moment.", retry_after=True)
            if e.code in (NOT_FOUND, INVALID_PARAMS, CONFLICT, INVALID_CLIENT, REQUEST_TOO_LARGE) \
                    and e.field != "idempotency_key":
                return page(400, "Unknown client.")  # not registered, or an invalid document
            log.error("authorize: client lookup failed: %s", e)
            return page(500, "Something went wrong on our side.")
        except (ValueError, OSError, httpx.HTTPError) as e:
            log.info("authorize: client metadata document refused: %s", e)
            return page(400, "Unknown client.")
        registered = client.get("redirect_uris", [])
        if redirect_uri is None:
            # Only a client with a single registered URI may leave it out; /token then uses the
            # same one (single_redirect_uri). With several, which one is meant is unknown.
            redirect_uri = single_redirect_uri(client)
            if redirect_uri is None:
                return page(400, "The request names no redirect URI, and the client has several.")
        if redirect_uri not in registered:
            # Never redirect to an unregistered URI (RFC 6749 §4.1.2.1): show the error instead.
            return page(400, "The redirect URI is not registered for this client.")

        def back(error: str, description: str | None = None) -> Response:
            return self.redirect(redirect_uri, error=error, error_description=description, state=state)

        if q.get("response_type") != "code" or "code" not in response_types(client):
            return back("unsupported_response_type")
        if "authorization_code" not in grant_types(client):
            return back("unauthorized_client")
        if not q.get("code_challenge") or q.get("code_challenge_method", "S256") != "S256":
            return back("invalid_request", "PKCE with S256 is required")
        # What we serve, narrowed to what the client registered (when it registered a scope).
        allowed = set(SCOPES) & set((client.get("scope") or " ".join(SCOPES)).split())
        scope = q.get("scope") or " ".join(s for s in SCOPES if s in allowed)
        if not scope or not set(scope.split()) <= allowed:
            return back("invalid_scope")
        resource = q.get("resource") or self.resource
        if resource.rstrip("/") != self.resource.rstrip("/"):
            return back("invalid_target")
        session = {"client_id": client_id, "redirect_uri": redirect_uri, "scope": scope,
                   "code_challenge": q["code_challenge"], "code_challenge_method": "S256",
                   "resource": resource}
        if state is not None:
            session["state"] = state
        try:
            session = await self.store.call("session.put", session)
        except AuthstoreError as e:
            if e.code == INVALID_PARAMS and e.field != "idempotency_key":
                return back("invalid_request", e.field or None)
            if unavailable(e):
                return back("temporarily_unavailable")
            if e.code == REQUEST_TOO_LARGE:
                return page(400, "The request is too large.")
            log.error("authorize: session.put failed: %s", e)
            return page(500, "Something went wrong on our side.")
        # The consent step is a separate request; the session lives in authstore meanwhile, so
        # any instance (or this one after a restart) can finish it.
        return RedirectResponse(f"/consent?{urlencode({'session': session['id']})}", 302)

    async def consent(self, request: Request) -> Response:
        form = await request.form() if request.method == "POST" else request.query_params
        session_id = form.get("session", "")
        if request.method == "GET" and self.auto_user:
            return await self.approve(session_id, self.auto_user)
        if request.method == "POST" and form.get("action") == "approve":
            return await self.approve(session_id, form.get("user", "").strip())
        try:
            session = await self.store.call("session.get", {"id": session_id})
        except AuthstoreError as e:
            return self.session_error(e)
        if request.method == "POST":  # denied
            try:
                await self.store.call("session.delete", {"id": session_id})
            except AuthstoreError:
                pass  # it expires on its own
            return self.redirect(session["redirect_uri"], error="access_denied", state=session.get("state"))
        # Stands in for the operator's login and consent screen.
        return HTMLResponse(
            "<!doctype html><title>Authorize</title><form method=post>"
            f"<p>Allow <b>{html.escape(session['client_id'])}</b> to use {html.escape(session['scope'] or '')}?"
            f"<input type=hidden name=session value='{html.escape(session_id)}'>"
            "<p>User <input name=user required> <button name=action value=approve>Allow</button>"
            " <button name=action value=deny>Deny</button></form>")

    async def approve(self, session_id: str, user_id: str) -> Response:
        if not user_id:
            return page(400, "No user.")
        try:
            # Consumes the session in the same transaction (a second click finds it gone) and
            # answers what the redirect needs.
            issued = await self.store.call("code.issue", {"session_id": session_id, "user_id": user_id})
        except AuthstoreError as e:
            return self.session_error(e)
        return self.redirect(issued["redirect_uri"], code=issued["code"], state=issued.get("state"))

    @staticmethod
    def session_error(e: AuthstoreError) -> Response:
        if e.code == NOT_FOUND:
            return page(400, "This authorization request has expired or was already used. "
                             "Start again from your application.")
        if e.code == INVALID_CLIENT:
            return page(400, "This application is no longer registered.")
        if unavailable(e):
            return page(503, "Please try again in a moment.", retry_after=True)
        log.error("consent: authstore call failed: %s", e)
        return page(500, "Something went wrong on our side.")

    def redirect(self, redirect_uri: str, **params: str | None) -> RedirectResponse:
        params["iss"] = self.issuer  # RFC 9207
        query = urlencode({k: v for k, v in params.items() if v is not None})
        return RedirectResponse(f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{query}", 302)

    # ---- token endpoint ----------------------------------------------------------------------

    async def authenticate_client(self, request: Request, form: Any) -> dict[str, Any]:
        """The calling client, authenticated the way it registered (`token_endpoint_auth_method`):
        `client_secret_basic` with a Basic header, `client_secret_post` with form fields, `none`
        with neither. A secret is checked by authstore (it keeps only digests)."""
        client_id, secret = form.get("client_id"), form.get("client_secret") or None  # "" = absent
        method = "client_secret_post" if secret is not None else "none"
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            if secret is not None:  # one method per request (RFC 6749 §2.3)
                raise OAuthError(400, "invalid_request", "more than one client authentication method")
            try:
                raw_id, _, raw_secret = base64.b64decode(header[6:], validate=True).decode().partition(":")
            except ValueError:
                raise OAuthError(401, "invalid_client") from None
            raw_id, secret = unquote(raw_id), unquote(raw_secret)  # RFC 6749 §2.3.1
            if client_id is not None and client_id != raw_id:
                raise OAuthError(401, "invalid_client")
            client_id, method = raw_id, "client_secret_basic"
        if not client_id:
            raise OAuthError(401, "invalid_client")
        try:
            if method == "none":
                client = await self.store.call("client.get", {"client_id": client_id})
            else:
                client = (await self.store.call("client.authenticate",
                                                {"client_id": client_id, "client_secret": secret}))["client"]
        except AuthstoreError as e:
            raise (OAuthError(401, "invalid_client") if e.code in (NOT_FOUND, INVALID_CLIENT)
                   else from_store(e)) from None
        # authstore checked the secret; which method the client may use is the portal's check
        # (a confidential client without a secret, or a secret sent another way than registered).
        if client.get("token_endpoint_auth_method", "client_secret_basic") != method:
            raise OAuthError(401, "invalid_client", f"this client authenticates with "
                             f"{client.get('token_endpoint_auth_method')}")
        return client

    async def token(self, request: Request) -> Response:
        form = await request.form()
        grant_type = form.get("grant_type")
        try:
            client = await self.authenticate_client(request, form)
            if grant_type == "authorization_code":
                return await self.exchange_code(client, form)
            if grant_type == "refresh_token":
                return await self.refresh(client, form)
            raise OAuthError(400, "unsupported_grant_type")
        except AuthstoreError as e:
            err = from_store(e)
            log.info("token: %s refused: %s (%s)", grant_type, err.error, e.reason)
            return err.response()
        except OAuthError as e:
            return e.response()

    async def exchange_code(self, client: dict[str, Any], form: Any) -> Response:
        if "authorization_code" not in grant_types(client):
            raise OAuthError(400, "unauthorized_client")
        # As at /authorize: a request without redirect_uri means the client's only one.
        redirect_uri = form.get("redirect_uri") or single_redirect_uri(client)
        if not (form.get("code") and form.get("code_verifier") and redirect_uri):
            raise OAuthError(400, "invalid_request", "code, redirect_uri and code_verifier are required")
        # One atomic call: authstore checks the client, redirect URI, resource and PKCE
        # verifier, burns the code on any failure, and revokes the grant on a replay.
        params = {"code": form["code"], "client_id": client["client_id"],
                  "redirect_uri": redirect_uri, "code_verifier": form["code_verifier"]}
        if form.get("resource"):
            params["resource"] = form["resource"]
        grant = await self.store.call("code.consume", params)
        refresh = None
        if "refresh_token" in client.get("grant_types", []):
            refresh = (await self.store.call("token.issue", {
                "client_id": grant["client_id"], "user_id": grant["user_id"], "grant_id": grant["grant_id"],
                "scope": grant["scope"], "resource": grant["resource"]}))["token"]
        return self.token_response(grant, refresh)

    async def refresh(self, client: dict[str, Any], form: Any) -> Response:
        if "refresh_token" not in grant_types(client):
            raise OAuthError(400, "unauthorized_client")
        if not form.get("refresh_token"):
            raise OAuthError(400, "invalid_request", "refresh_token is required")
        # Every presented token goes to authstore, rotated ones included: that is how reuse of
        # a stolen token is detected and its whole family revoked.
        params = {"token": form["refresh_token"], "client_id": client["client_id"]}
        if form.get("scope"):
            params["scope"] = form["scope"]
        rotated = await self.store.call("token.rotate", params)
        return self.token_response(rotated, rotated["token"])

    def token_response(self, grant: dict[str, Any], refresh_token: str | None) -> JSONResponse:
        access = access_tokens.mint(
            self.key, issuer=self.issuer, audience=grant.get("resource") or self.resource,
            client_id=grant["client_id"], user_id=grant["user_id"], scope=grant.get("scope"),
            grant_id=grant["grant_id"], ttl=self.access_ttl)
        body = {"access_token": access, "token_type": "Bearer", "expires_in": self.access_ttl,
                "scope": grant.get("scope") or ""}
        if refresh_token:
            body["refresh_token"] = refresh_token
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    # ---- revocation (RFC 7009) ---------------------------------------------------------------

    async def revoke(self, request: Request) -> Response:
        form = await request.form()
        try:
            client = await self.authenticate_client(request, form)
            token = form.get("token")
            if not token:
                raise OAuthError(400, "invalid_request")
            # An access token is self-contained: revoking it revokes its grant.
            claims = access_tokens.verify(self.key, token, issuer=self.issuer, audience=None)
            if claims is not None:
                if claims["client_id"] != client["client_id"]:
                    # RFC 7009 §2.1: the server refuses a token issued to another client.
                    raise OAuthError(400, "unauthorized_client")
                await self.store.call("token.revoke", {"grant_id": claims["grant_id"]})
            else:
                try:
                    meta = await self.store.call("token.get", {"token": token})
                except AuthstoreError as e:
                    if e.code not in (INVALID_GRANT, NOT_FOUND):
                        raise
                    meta = None  # unknown or already inactive: nothing to do (RFC 7009 §2.2)
                if meta is not None:
                    if meta["client_id"] != client["client_id"]:
                        # RFC 7009 §2.1: the server refuses a token issued to another client.
                        raise OAuthError(400, "unauthorized_client")
                    # Revokes the whole family, also if the token is rotated in between.
                    await self.store.call("token.revoke", {"token": token})
        except AuthstoreError as e:
            if e.code in (INVALID_GRANT, NOT_FOUND):  # gone in between: nothing to revoke
                return Response(status_code=200, headers={"Cache-Control": "no-store"})
            err = from_store(e)
            if err.error in ("invalid_scope", "invalid_target"):
                err = OAuthError(400, "invalid_request")
            return err.response()
        except OAuthError as e:
            return e.response()
        return Response(status_code=200, headers={"Cache-Control": "no-store"})


async def access_log(request: Request, call_next: Any) -> Response:
    """Method, path (never the query: it can carry codes and states) and status."""
    started = time.perf_counter()
    response = await call_next(request)
    log.info("%s %s %d %.1fms", request.method, request.url.path, response.status_code,
             (time.perf_counter() - started) * 1000)
    return response


def build_app(args: argparse.Namespace) -> Starlette:
    if args.store == "memory":
        store: AuthstoreClient | MemoryStore = MemoryStore()
    else:
        api_key = open(args.authstore_api_key_file).read().strip() if args.authstore_api_key_file else None
        store = AuthstoreClient(args.authstore, api_key)
    server = AuthServer(args, store)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await store.start()
        log.info("authorization server %s on store %s", server.issuer, args.store)
        yield
        await store.close()

    return Starlette(routes=[
        Route("/.well-known/oauth-authorization-server", server.metadata),
        Route("/register", server.register, methods=["POST"]),
        Route("/authorize", server.authorize, methods=["GET", "POST"]),
        Route("/consent", server.consent, methods=["GET", "POST"]),
        Route("/token", server.token, methods=["POST"]),
        Route("/revoke", server.revoke, methods=["POST"]),
    ], middleware=[Middleware(BaseHTTPMiddleware, dispatch=access_log)], lifespan=lifespan)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", default="127.0.0.1:9000", help="HOST:PORT")
    p.add_argument("--issuer", help="this server's public URL (default http://LISTEN)")
    p.add_argument("--resource", required=True, help="the protected MCP server's URL (RFC 8707 resource)")
    p.add_argument("--store", choices=["authstore", "memory"], default="authstore",
                   help="memory: keep state in this process (control for tests; lost on restart)")
    p.add_argument("--authstore", default="ws://127.0.0.1:8750", help="authstore WebSocket URL")
    p.add_argument("--authstore-api-key-file")
    p.add_argument("--signing-key-file", required=True, help="HS256 key shared with the resource server")
    p.add_argument("--access-token-ttl", type=int, default=300, help="seconds")
    p.add_argument("--auto-approve-user", help="TESTS ONLY: approve every request as this user")
    p.add_argument("--client-document-ca", help="TESTS ONLY: CA bundle for fetching client ID metadata documents")
    args = p.parse_args()
    host, _, port = args.listen.rpartition(":")
    args.issuer = args.issuer or f"http://{args.listen}"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(build_app(args), host=host, port=int(port), log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
