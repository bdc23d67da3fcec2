"""The protected MCP server: two tools behind bearer tokens from auth_server.py.

The MCP SDK does the transport (streamable HTTP), the 401 + WWW-Authenticate challenge, the
RFC 9728 protected-resource metadata and the scope and audience checks; this file supplies
the token verifier. A token is accepted when its signature, issuer, audience and expiry
hold and its grant has not been revoked. Revocations reach this process over its one
authstore WebSocket (`token.subscribe`, kinds revoked and reuse_detected, resumed by cursor
across reconnects). A token minted after the subscription started needs nothing more: any
revocation of its grant comes later, through the stream. An older token's grant, first seen
by this process, is looked up once with `token.list`, which covers revocations from before
it started, so a restart forgets nothing.
Run `python resource_server.py --help` for the flags.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

import access_tokens
from authstore_client import AuthstoreClient

log = logging.getLogger("resource")

# `revoked` events that end one token of a family that lives on: a repeated `token.issue`
# into the grant (`superseded`) and a reissue inside the rotation grace window (`grace`).
# Every other reason (requested, reuse_detected, code_replay, client_deleted, and any reason
# this file does not know yet) ends the family, and with it the grant.
FAMILY_LIVES_ON = {"superseded", "grace"}


class GrantCheckingVerifier:
    def __init__(self, key: bytes, issuer: str, resource: str, store: AuthstoreClient | None,
                 clock_skew: float = 5.0):
        self.key, self.issuer, self.resource, self.store = key, issuer, resource, store
        self.clock_skew = clock_skew
        # When the stream of revocations began covering every grant (UNIX seconds); None until
        # subscribed. Moved forward after a gap in the stream.
        self.subscribed_at: float | None = None
        # Derived from authstore, rebuilt after a restart: grants seen revoked, and grants
        # confirmed live since this process started.
        self.revoked: set[str] = set()
        self.live: set[str] = set()

    async def start(self) -> None:
        if self.store is None:
            return
        await self.store.start()
        # Start "from now" holding a cursor to resume from: everything after `head` is replayed.
        # The time is taken before `head` is read, so it errs early.
        started = time.time()
        head = (await self.store.call("server.info")).get("head")
        params = {"kinds": ["revoked", "reuse_detected"]} | ({"since": head} if head else {})
        await self.store.subscribe("token.subscribe", params, self.on_event, self.on_gap)
        if head:
            self.subscribed_at = started

    async def on_event(self, event: dict) -> None:
        if event["kind"] == "revoked" and event.get("reason") in FAMILY_LIVES_ON:
            return  # one token replaced; the grant is as live as before
        if event["grant_id"] not in self.revoked:
            log.info("grant revoked (%s, %s)", event["kind"], event.get("reason"))
        self.revoked.add(event["grant_id"])

    async def on_gap(self) -> None:
        # Events may have been missed (a cursor expired or ahead of a restored log, or a drop
        # before any cursor): whatever was believed live only from the stream's silence is
        # re-checked, and only tokens minted from now on skip the check. The revocation set
        # stays valid. The client calls this after reading the new `head`.
        self.live.clear()
        self.subscribed_at = time.time() if self.subscribed_at is not None else None

    async def verify_token(self, token: str) -> AccessToken | None:
        claims = access_tokens.verify(self.key, token, issuer=self.issuer, audience=self.resource)
        if claims is None:
            return None
        grant = claims["grant_id"]
        if self.store is not None and grant not in self.live and grant not in self.revoked \
                and not self.minted_while_subscribed(claims):
            # Fails closed: if authstore cannot answer, the token is refused.
            try:
                found = await self.store.call("token.list", {"grant_id": grant, "limit": 1})
            except Exception as e:  # noqa: BLE001 - any failure means "not known to be live"
                log.warning("grant check failed: %s", e)
                return None
            # An empty list also means "never had a refresh token" (a client registered without
            # `refresh_token`): such tokens minted before this process subscribed are refused
            # until they expire (docs/portal-integration.md).
            (self.live if found["items"] else self.revoked).add(grant)
        if grant in self.revoked:  # checked last: an event may have arrived meanwhile
            return None
        return AccessToken(token=token, client_id=claims["client_id"], scopes=claims["scope"].split(),
                           expires_at=claims["exp"], resource=claims["aud"], subject=claims["sub"],
                           claims=claims)

    def minted_while_subscribed(self, claims: dict) -> bool:
        """Minted after the stream began covering its grant (with a margin for the clock skew
        between the two servers, and for `iat` being whole seconds): any revocation of the
        grant reaches this process as an event, so no lookup is needed. This is also what
        lets a grant without refresh tokens through: `token.list` cannot tell it from a
        revoked one."""
        iat = claims.get("iat")
        return (self.subscribed_at is not None and isinstance(iat, (int, float))
                and iat > self.subscribed_at + self.clock_skew)


def build(args: argparse.Namespace) -> tuple[MCPServer, GrantCheckingVerifier]:
    store = None
    if args.store == "authstore":
        api_key = open(args.authstore_api_key_file).read().strip() if args.authstore_api_key_file else None
        store = AuthstoreClient(args.authstore, api_key)
    verifier = GrantCheckingVerifier(access_tokens.load_key(args.signing_key_file),
                                     args.issuer.rstrip("/"), args.resource, store,
                                     clock_skew=args.clock_skew)
    mcp = MCPServer("authstore-demo", token_verifier=verifier, auth=AuthSettings(
        issuer_url=args.issuer, resource_server_url=args.resource, required_scopes=["mcp:tools"],
        validate_token_resource=True))

    @mcp.tool()
    def whoami() -> str:
        """The user and client the presented token was issued to."""
        token = get_access_token()
        return f"user={token.subject} client={token.client_id}" if token else "anonymous"

    @mcp.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return mcp, verifier


async def serve(args: argparse.Namespace) -> None:
    mcp, verifier = build(args)
    host, _, port = args.listen.rpartition(":")
    # Stateless: no MCP session lives in this process, so a restart costs the client nothing.
    app = mcp.streamable_http_app(stateless_http=True, json_response=True, host=host)
    await verifier.start()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=int(port), log_level="warning"))
    await server.serve()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listen", default="127.0.0.1:9100", help="HOST:PORT")
    p.add_argument("--resource", help="this server's MCP URL (default http://LISTEN/mcp)")
    p.add_argument("--issuer", required=True, help="the authorization server's issuer URL")
    p.add_argument("--store", choices=["authstore", "memory"], default="authstore",
                   help="memory: no revocation checks (control for tests)")
    p.add_argument("--authstore", default="ws://127.0.0.1:8750", help="authstore WebSocket URL")
    p.add_argument("--authstore-api-key-file")
    p.add_argument("--signing-key-file", required=True, help="HS256 key shared with the authorization server")
    p.add_argument("--clock-skew", type=float, default=5.0,
                   help="seconds the authorization server's clock may run ahead of this one's: "
                        "an access token issued later than that after the revocation stream "
                        "began needs no grant lookup")
    args = p.parse_args()
    args.resource = args.resource or f"http://{args.listen}/mcp"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
